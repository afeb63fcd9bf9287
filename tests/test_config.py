"""The shared --name=value override helper, and the ranges of every script's settings."""
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from common import config
from conftest import ROOT, script_module


def namespace():
    return {'DATA_DIR': 'data', 'STEPS': 3, 'RATE': 0.5, 'FLAG': False, 'lower': 1, 'OBJ': [1]}


def test_overrides_each_type_and_reports_them(capsys):
    ns = namespace()
    changed, lent = config.apply(['--data_dir=/x', '--steps=7', '--rate=2', '--flag=true'], ns)
    assert ns['DATA_DIR'] == '/x' and ns['STEPS'] == 7 and ns['RATE'] == 2.0 and ns['FLAG'] is True
    assert isinstance(ns['RATE'], float)
    assert changed == {'DATA_DIR': '/x', 'STEPS': 7, 'RATE': 2.0, 'FLAG': True} and lent == []
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
    ('--data_dir=~/d', "the shell leaves a ~ after = as it is; give --data_dir ~/d"),  # a folder named ~ was made
])
def test_rejects_unknown_names_and_wrong_types(arg, message):
    with pytest.raises(config.UserError, match=message):
        config.apply([arg], namespace())


def test_a_setting_given_twice_is_refused_in_one_line_not_the_last_taken(tmp_path):
    """predict.py --input=a.mp4 --input=b.mp4 scored b alone, exit 0: the first --input was dropped unsaid."""
    with pytest.raises(config.UserError, match='--steps is given twice; give it once'):
        config.apply(['--steps=5', '--steps', '6'], namespace(), quiet=True)
    run = subprocess.run([sys.executable, 'predict.py', f'--input={ROOT}', f'--input={tmp_path}'], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr == 'error: --input is given twice; give it once\n', run.stderr


def test_the_script_wins_and_a_borrowed_module_gets_its_overrides_as_arguments_unchanged():
    mod = types.ModuleType('m')
    mod.STEPS, mod.DEPTH = 1, 2
    ns = namespace()
    changed, (lent,) = config.apply(['--steps=5', '--depth=9'], ns, mod, quiet=True)
    assert ns['STEPS'] == 5 and (mod.STEPS, mod.DEPTH) == (1, 2) and lent == {'depth': 9}
    assert changed == {'STEPS': 5, 'DEPTH': 9}


def test_script_exits_2_with_one_line_on_a_bad_setting():
    run = subprocess.run([sys.executable, 'DetectionPipeline.py', '--frame_stp=3'], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count('\n') == 0 and 'unknown setting --frame_stp' in run.stderr


# ----------------------------------------------------------------------------- ranges, in every script
SCRIPTS = ('DetectionPipeline', 'create_video_embeddings', 'extract_audio', 'create_audio_embedding',
           'merge_embeddings', 'training', 'test', 'predict', 'model', 'make_sample_dataset')
# the bad values of issue 10, each of them refused by every script (a setting it lacks is unknown to it)
BAD = ('--batch_size=0', '--batch_size=-1', '--frame_step=0', '--crop=0', '--lr=-1', '--hidden=0',
       '--threads=-1', '--prior=0', '--eval_stride=0', '--val_fraction=1.5', '--val_fraction=1.0',
       '--val_fraction=-0.2', '--val_fraction=nan', '--lr=inf', '--face_size=74', '--min_face_size=0',
       '--roi_size=3', '--clip_lo=1.5', '--seed=99999999999999999999',
       '--seed=4294967296')  # 2**32: training's audio-only model (scikit-learn) took no larger seed


@pytest.fixture(scope='module')
def scripts():
    return {name: script_module(name) for name in SCRIPTS}


@pytest.mark.parametrize('name', SCRIPTS)
def test_every_default_is_in_its_range(scripts, name):
    for setting, value in config.constants(scripts[name]).items():
        config.check(setting, value)


@pytest.mark.parametrize('name', SCRIPTS)
def test_every_script_refuses_the_bad_values_in_one_line_before_any_work(scripts, name, monkeypatch, capsys):
    """Through the script's own main(): an accepted value would get past the settings to the unknown
    `--zz_stop` after it, and the line would then name that instead."""
    module = scripts[name]
    before = config.constants(module)
    for arg in BAD:
        setting = arg[2:].split('=')[0]
        monkeypatch.setattr(sys, 'argv', [f'{name}.py', arg, '--zz_stop=1'])
        with pytest.raises(SystemExit) as exit_:
            module.main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, (arg, err)
        # its own setting, or one of a module it exposes, is out of range; else the name is unknown
        assert (err.startswith(f'error: --{setting} must be ') or setting.upper() not in before
                and err.startswith(f'error: unknown setting --{setting};')), (arg, err)
    assert config.constants(module) == before


@pytest.mark.parametrize('args', [
    ('training.py', '--val_fraction=nan'), ('test.py', '--prior=0'), ('predict.py', '--prior=1'),
    ('create_video_embeddings.py', '--batch_size=-1'),  # DetectionPipeline.py's setting, through the stage
])
def test_a_bad_value_is_one_line_and_exit_2(args):
    run = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    setting = args[1][2:].split('=')[0]
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(f'error: --{setting} must be') and len(run.stderr.strip().splitlines()) == 1


def test_a_folder_where_a_file_goes_and_an_unwritable_place_are_one_line(tmp_path):
    (tmp_path / 'dir').mkdir()
    (tmp_path / 'file').write_text('x')
    with pytest.raises(config.UserError, match=f'{tmp_path / "dir"} is a folder, where --report writes a file; '
                       f'give the path of a file in it'):  # not 'remove it': it may be the data
        config.writable_file(str(tmp_path / 'dir'), '--report')
    with pytest.raises(config.UserError, match=f'--report={tmp_path / "new"}/ ends with a /'):
        config.writable_file(f'{tmp_path / "new"}/', '--report')  # not there yet: the write at the end failed
    with pytest.raises(config.UserError, match='--output=- would be a file named -, not standard output'):
        config.writable_file('-')
    # empty (--output=): it was the current folder, 'error: /here is a folder, where --output writes a file'
    with pytest.raises(config.UserError, match='^--output is empty: give the path of a file$'):
        config.writable_file('')
    with pytest.raises(config.UserError, match='^--output_dir is empty: give a folder$'):  # ': cannot write there'
        config.writable_folder('', '--output_dir')
    with pytest.raises(config.UserError, match=f'{tmp_path / "file"} is a file, where --out_dir needs a folder'):
        config.writable_folder(str(tmp_path / 'file'), '--out_dir')
    with pytest.raises(config.UserError, match='cannot write there'):  # a folder under a file
        config.writable_file(str(tmp_path / 'file' / 'sub' / 'r.json'), '--report')
    config.writable_file(str(tmp_path / 'new' / 'r.json'))  # a new folder is made
    assert os.listdir(tmp_path / 'new') == []               # and the probe is gone


# ----------------------------------------------------------------------------- the command line people expect
def test_name_space_value_a_bare_true_false_and_did_you_mean():
    ns = namespace()
    changed, _ = config.apply(['--steps', '7', '--flag', '--rate=-2', '--data_dir', '-x'], ns, quiet=True)
    assert changed == {'STEPS': 7, 'FLAG': True, 'RATE': -2.0, 'DATA_DIR': '-x'}
    with pytest.raises(config.UserError, match='^--steps needs a value: --steps=VALUE$'):
        config.apply(['--steps', '--flag'], namespace())
    with pytest.raises(config.UserError, match=r'^unknown setting --step; did you mean --steps\? -h lists'):
        config.apply(['--step=2'], namespace())
    with pytest.raises(config.UserError, match=r'^unknown setting --zzz; -h lists the settings$'):
        config.apply(['--zzz=2'], namespace())


def test_only_a_config_block_holds_settings_and_a_borrowed_module_lends_only_its_shared_ones(tmp_path):
    """A constant imported by a script (training.py imported model.EVALUATION, which was then accepted
    and ignored) is not a setting; `config: this script only` settings are not lent to other scripts."""
    path = tmp_path / 'lender.py'
    path.write_text('"""doc"""\nOTHER = 1\n'
                    '# ' + '-' * 30 + ' config: this script only\nOUTPUT = "o.pkl"  # where\n# ' + '-' * 30 + '\n'
                    '# ' + '-' * 30 + ' config\nSTEP = 6  # a step\nNAME = "x"\n# ' + '-' * 30 + '\n')
    lender = types.ModuleType('lender')
    lender.__file__ = str(path)
    exec(compile(path.read_text(), str(path), 'exec'), vars(lender))
    assert [(s.name, s.default, s.comment, s.shared) for s in config.declared(str(path))] == [
        ('OUTPUT', '"o.pkl"', 'where', False), ('STEP', '6', 'a step', True), ('NAME', '"x"', '', True)]
    assert config.constants(lender) == {'OUTPUT': 'o.pkl', 'STEP': 6, 'NAME': 'x'}
    assert config.constants(lender, shared_only=True) == {'STEP': 6, 'NAME': 'x'}
    ns = namespace()
    _, (lent,) = config.apply(['--step=3', '--steps=4'], ns, lender, quiet=True)
    assert lent == {'step': 3} and lender.STEP == 6 and ns['STEPS'] == 4
    for name in ('output', 'other'):
        with pytest.raises(config.UserError, match=f'unknown setting --{name};'):
            config.apply([f'--{name}=1'], ns, lender)
    own = tmp_path / 'own.py'  # a file whose only block is its own: it lends nothing
    own.write_text('OTHER = 1\n# ' + '-' * 30 + ' config: this script only\nOUTPUT = "o"  # where\n# ' + '-' * 30 + '\n')
    assert config.constants({'__file__': str(own), 'OUTPUT': 'o', 'OTHER': 1}, shared_only=True) == {}


ALL_SCRIPTS = SCRIPTS + tuple(f'bench/{n}' for n in ('bench_video', 'bench_audio', 'bench_gpu', 'bench_memory',
                                                     'bench_predict', 'bench_scale', 'bench_training'))
NOT_SETTINGS = {'training': ['--evaluation=x'], 'predict': ['--procs=2', '--video=x', '--audio_dir=x'],
                'create_video_embeddings': ['--video=x'], 'model': ['--format=x']}


def help_of(name):
    """`name.py -h` with torch, numpy and pandas unimportable: answered before the heavy imports."""
    code = ("import runpy, sys\nfor m in ('torch', 'numpy', 'pandas', 'cv2', 'av'): sys.modules[m] = None\n"
            f"sys.argv = ['{name}.py', '-h']\nsys.path.insert(0, '.')\nrunpy.run_path('{name}.py', run_name='__main__')")
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)


def test_help_prints_a_comment_that_runs_onto_further_lines_whole():
    # -h printed a setting's comment up to the end of its first line: test.py's --subset lost three of its choices
    for name, tail in [('test', "'val': those it held out | 'train': those it trained on | 'all' | 'test': those "
                                "the table marks 'test' (Celeb-DF-v2's official list: the field's figure)"),
                       ('training', "they are the validation side whatever VAL_FRACTION, which must not be 0)")]:
        run = help_of(name)
        assert run.returncode == 0 and tail in ' '.join(run.stdout.split()), run.stdout
        assert max(map(len, run.stdout.splitlines())) <= 120  # wrapped: a terminal's width, not a line a setting


@pytest.mark.parametrize('name', ALL_SCRIPTS)
def test_help_before_the_heavy_imports_lists_exactly_the_settings_the_script_takes(name, monkeypatch, capsys):
    """-h: the docstring, then each setting with its default and comment; every name listed is accepted
    by the script's main() (it gets past the settings to the unknown --zz_stop), and names it does not
    take are refused."""
    run = help_of(name)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(open(os.path.join(ROOT, f'{name}.py')).read().split('\n')[0].strip('"'))
    listed = [line.split()[0] for line in run.stdout.splitlines() if line.startswith('  --')]
    assert listed and all('=' in arg for arg in listed)
    assert len(set(listed)) == len(listed)
    module = script_module(name)
    for arg in listed + NOT_SETTINGS.get(name, []):
        monkeypatch.setattr(sys, 'argv', [f'{name}.py', arg, '--zz_stop=1'])
        with pytest.raises(SystemExit) as exit_:
            module.main()
        err = capsys.readouterr().err
        stopped_at = 'zz_stop' if arg in listed else arg[2:].split('=')[0]
        assert exit_.value.code == 2 and err.startswith(f'error: unknown setting --{stopped_at};'), (arg, err)


def test_ctrl_c_in_the_heavy_imports_is_one_line_and_130(tmp_path):
    # a script between help_if_asked and cli(): where torch's import takes seconds, and Ctrl-C right after
    # starting a command was an import's traceback; the SIGINT here is the keyboard's, at that moment
    code = ("import os, signal, sys, time; sys.argv = ['training.py']; from common import config; "
            "config.help_if_asked('__main__', 'training.py'); os.kill(os.getpid(), signal.SIGINT); time.sleep(60)")
    run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal starts it
    assert run.returncode == 130 and run.stderr.strip() == 'interrupted before any work', run.stderr


def as_a_script(code):
    """Python code run as a project script from a terminal: help_if_asked as __main__, SIGINT as the keyboard's."""
    code = ("import os, signal, sys, time; sys.argv = ['training.py']; from common import config; "
            "config.help_if_asked('__main__', 'training.py')\n" + code)
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_a_ctrl_c_an_import_drops_still_ends_the_script():
    # a pybind11 module's import (triton's) makes the SystemExit an ImportError, which torch's has_triton_package
    # takes for a missing package: the command went on as if no key had been pressed
    run = as_a_script("try:\n    os.kill(os.getpid(), signal.SIGINT); time.sleep(60)\nexcept BaseException:\n"
                      "    pass\nconfig.cli(lambda: print('main ran'))")
    assert run.returncode == 130 and run.stderr.strip() == 'interrupted before any work', run.stderr
    assert 'main ran' not in run.stdout


def test_a_ctrl_c_a_library_drops_ends_the_run_before_it_saves_a_video(tmp_path):
    # numba's compiler prints and drops a KeyboardInterrupt raised in its ctypes callback: the run went on and
    # exited 0; a video's work can also have turned it into an error, saved as that video's failure
    run = as_a_script("from common.stage import StageRun\ndef main():\n"
                      f"    run = StageRun({str(tmp_path / 'o.pkl')!r})\n"
                      "    try:\n        os.kill(os.getpid(), signal.SIGINT); time.sleep(60)\n"
                      "    except KeyboardInterrupt:\n        pass\n"
                      "    run.fail('a.mp4', '', 'ImportError: initialization failed')\n    print('saved')\n"
                      "config.cli(main)")
    assert run.returncode == 130 and 'Traceback' not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == 'interrupted: run the same command again to go on from here'
    assert 'saved' not in run.stdout and os.listdir(tmp_path / 'o.pkl.parts') == []


def test_interrupt_held_raises_a_ctrl_c_when_its_block_ends():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python starts a script
    went_on = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with config.interrupt_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)  # the handler runs between two bytecodes of this thread, here
                went_on.append(True)
        assert went_on == [True] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_is_a_stop_held_as_ctrl_c_and_said_in_one_line():
    # a scheduler's stop (SLURM's time limit, scancel) ended a script without a word, its `finally`s not run; now it
    # is Ctrl-C's KeyboardInterrupt, held where Ctrl-C is (interrupt_held), said in one line, with the shell's 143
    run = as_a_script("def main():\n    with config.interrupt_held():\n"
                      "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.5); print('held', flush=True)\n"
                      "    print('after')\nconfig.cli(main)")
    assert run.returncode == 143 and 'Traceback' not in run.stderr, (run.returncode, run.stderr)
    assert run.stderr.strip() == 'terminated (SIGTERM): run the same command again to go on from here', run.stderr
    assert run.stdout.split() == ['held']


@pytest.mark.parametrize('name, says', [('network', "error: network.py takes no settings (--hidden=3): training.py's"),
                                        ('explain', 'error: explain.py is a module, not a script: predict.py ')])
def test_the_modules_run_as_scripts_answer_h_and_refuse_a_setting_in_one_line(name, says):
    # explain.py printed nothing and exited 0 whatever it was given; network.py printed the network for -h
    run = subprocess.run([sys.executable, f'{name}.py', '-h'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith(open(os.path.join(ROOT, f'{name}.py')).readline()[3:]), run
    run = subprocess.run([sys.executable, f'{name}.py', '--hidden=3'], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stderr.startswith(says) and run.stderr.count('\n') == 1, run.stderr
