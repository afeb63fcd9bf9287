import importlib.util
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


def script_module(name):
    """A script of the repository as a new module object (test.py under another name: the standard library
    has a `test` package)."""
    spec = importlib.util.spec_from_file_location(f'script_{name}'.replace('/', '_'), os.path.join(ROOT, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def face_weights(tmp_path_factory):
    """A face embedder's weights file whose embeddings tell crops apart (tests/face_checks.py)."""
    from face_checks import calibrated_face_weights
    return calibrated_face_weights(tmp_path_factory.mktemp('weights') / 'calibrated.pt', testdata('faces'))


def pytest_terminal_summary(terminalreporter):
    """The kernels this run's floats came from, to read a tolerance's failure against (.ci/avx2 and .ci/zen4 change
    them)."""
    import torch

    from common.device import cpu_has_bf16, cpu_model
    model = cpu_model()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'
    held = f'oneDNN held to {held}, ' if (held := os.environ.get('ONEDNN_MAX_CPU_ISA')) else ''
    terminalreporter.write_line(f'floats from: CPU {model}, PyTorch kernels {torch.backends.cpu.get_cpu_capability()}, '
                                f'{held}CPU embeddings in {"bfloat16" if cpu_has_bf16() else "float32"}; GPU {gpu}')
