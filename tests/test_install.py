"""INSTALL CHECK (issue 12): the requirements install from wheels alone, with no C compiler.

Run it alone with `pytest tests/test_install.py` (or `-k wheels_only`). A dry run of pip with
--only-binary=:all:, in a fresh virtual environment, of requirements.txt and then requirements-nodeps.txt
with --no-deps, as test.sh and main.sh install them: it fails where a requirement has no wheel for this
platform (an sdist pip would have to build), and skips, with pip's message, only where pip could not
reach the package registry."""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(ROOT, 'requirements.txt')
NODEPS = os.path.join(ROOT, 'requirements-nodeps.txt')  # installed with --no-deps: see the file
# what pip prints when an index cannot be reached (urllib3's NewConnectionError, "connection error:",
# "connection broken by", a timeout); a missing wheel reads "No matching distribution found" instead
UNREACHABLE = re.compile(r'connection (error|broken|refused|timed out)|NewConnectionError|ProxyError|'
                         r'Failed to establish a new connection|ConnectTimeout|ReadTimeout', re.IGNORECASE)


@pytest.fixture(scope='module')
def venv_python(tmp_path_factory):
    """A fresh virtual environment's interpreter, with the pip it bundles, as test.sh makes .venv."""
    path = tmp_path_factory.mktemp('install') / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(path)], check=True, timeout=120)
    return str(path / 'bin' / 'python')


def dry_run(python, requirements, report, *options):
    """pip's dry run of `pip install -r requirements` from wheels only: its report, parsed; pytest skips
    where the registry is unreachable and fails on any other error, with pip's output."""
    cmd = [python, '-m', 'pip', 'install', '--disable-pip-version-check', '--dry-run', '--ignore-installed',
           '--only-binary=:all:', '--report', str(report),
           # where the registry is unreachable, pip's default 5 retries with back-off for every
           # requirement would take minutes before it says so
           '--retries=1', '--timeout=30', *options, '-r', str(requirements)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    if done.returncode != 0 and UNREACHABLE.search(out):
        lines = [line for line in out.splitlines() if UNREACHABLE.search(line)]
        pytest.skip(f'the package registry is unreachable: {lines[-1].strip()}')
    assert done.returncode == 0, f'{" ".join(cmd)} failed:\n{out[-4000:]}'
    with open(report) as f:
        return json.load(f)['install']


def test_requirements_install_from_wheels_only(venv_python, tmp_path):
    installs = dry_run(venv_python, REQUIREMENTS, tmp_path / 'report.json')
    names = {item['metadata']['name'].lower() for item in installs}
    # the module webrtcvad comes from webrtcvad-wheels: the webrtcvad distribution is an sdist only
    assert 'webrtcvad-wheels' in names and 'webrtcvad' not in names
    assert 'resemblyzer' not in names  # it is the --no-deps file's
    # --only-binary=:all: already refuses sdists: this says which file pip would take for each
    urls = [item['download_info']['url'] for item in installs]
    assert [url for url in urls if not url.endswith('.whl')] == []

    nodeps = dry_run(venv_python, NODEPS, tmp_path / 'report-nodeps.json', '--no-deps')
    assert [(item['metadata']['name'], item['metadata']['version']) for item in nodeps] == \
        [('Resemblyzer', '0.1.4')]
    # every dependency Resemblyzer declares is installed by requirements.txt, but its webrtcvad, whose
    # module webrtcvad-wheels provides
    declared = {re.match(r'[A-Za-z0-9._-]+', requirement).group().lower()
                for requirement in nodeps[0]['metadata']['requires_dist']}
    assert declared - names == {'webrtcvad'}


def test_wheels_only_check_fails_on_an_sdist_only_requirement(venv_python, tmp_path):
    # the check above must be able to fail: webrtcvad 2.0.10 (Resemblyzer's declared dependency) has no wheel
    requirements = tmp_path / 'requirements.txt'
    with open(REQUIREMENTS) as f:
        requirements.write_text(f.read() + 'webrtcvad==2.0.10\n')
    with pytest.raises(AssertionError, match='No matching distribution found for webrtcvad==2.0.10'):
        dry_run(venv_python, requirements, tmp_path / 'report.json')
