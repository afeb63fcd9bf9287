import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TESTDATA = os.path.join(os.path.dirname(ROOT), 'shared', 'testdata')


def testdata(*parts):
    """A path under ../shared/testdata; the test is skipped, with the reason, where it is absent."""
    path = os.path.join(TESTDATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f'{path} is absent: the real clips live in ../shared/testdata (see its README)')
    return path
testdata.__test__ = False  # a helper, not a test, despite its name
