"""The shared --name=value override helper."""
import subprocess
import sys
import types

import pytest

from common import config
from conftest import ROOT


def namespace():
    return {'DATA_DIR': 'data', 'STEPS': 3, 'RATE': 0.5, 'FLAG': False, 'lower': 1, 'OBJ': [1]}


def test_overrides_each_type_and_reports_them(capsys):
    ns = namespace()
    changed = config.apply(['--data_dir=/x', '--steps=7', '--rate=2', '--flag=true'], ns)
    assert ns['DATA_DIR'] == '/x' and ns['STEPS'] == 7 and ns['RATE'] == 2.0 and ns['FLAG'] is True
    assert isinstance(ns['RATE'], float)
    assert changed == {'DATA_DIR': '/x', 'STEPS': 7, 'RATE': 2.0, 'FLAG': True}
    out = capsys.readouterr().out
    assert "override: STEPS = 7" in out and "override: DATA_DIR = '/x'" in out


@pytest.mark.parametrize('arg, message', [
    ('--nope=1', 'unknown setting --nope'),
    ('--steps=2.5', '--steps takes an integer'),
    ('--rate=fast', '--rate takes a number'),
    ('--flag=maybe', '--flag takes true or false'),
    ('--lower=2', 'unknown setting --lower'),   # only UPPER_CASE constants are settings
    ('--obj=2', 'unknown setting --obj'),       # ... of plain types
    ('steps=2', 'arguments are --name=value'),
])
def test_rejects_unknown_names_and_wrong_types(arg, message):
    with pytest.raises(config.UserError, match=message):
        config.apply([arg], namespace())


def test_first_namespace_with_the_name_wins_and_modules_work():
    mod = types.ModuleType('m')
    mod.STEPS, mod.DEPTH = 1, 2
    ns = namespace()
    config.apply(['--steps=5', '--depth=9'], ns, mod, quiet=True)
    assert ns['STEPS'] == 5 and mod.STEPS == 1 and mod.DEPTH == 9


def test_script_exits_2_with_one_line_on_a_bad_setting():
    run = subprocess.run([sys.executable, 'DetectionPipeline.py', '--frame_stp=3'], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count('\n') == 0 and 'unknown setting --frame_stp' in run.stderr
