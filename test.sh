#!/usr/bin/env bash
# The tests, from a fresh clone: a virtual environment with requirements.txt (and requirements-nodeps.txt,
# installed without dependencies: see it), then pytest.
# Tests that need the real clips of ../shared/testdata skip, with the reason, where it is absent.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
exec .venv/bin/python -m pytest -q -rs "$@"
