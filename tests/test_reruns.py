"""Runs again into one output, and what a run refuses to write over. predict.py: a video whose file changed since
its row (another INPUT's file of that name, a file replaced, a file that could not be read made readable) is
predicted again, never returned stale; two runs on one OUTPUT, an OUTPUT named like a video and an INPUT that is
not a video are one line before any work; Ctrl-C is one line and the rerun goes on (GenD's head scores, no
checkpoint, with a tiny random GenD whose head is scaled so that two clips' scores differ). The stages: weights
replaced in place are other settings; processes of one run given other settings are refused; a second merge into
one output is one line."""
import csv
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import DetectionPipeline as dp
from audio_clips import dfdc_part, run_script
from common import config, stage, store
from conftest import ROOT, testdata
from gend_models import tiny_gend
from model import synthetic_table

FAST = ('--face_encoder=gend', '--device=cpu', '--amp=false', '--frame_step=30')


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp('gend')
    _, head = tiny_gend(folder)
    tiny_gend(folder, extra={'model.linear.weight': head.weight.detach() * 10, 'model.linear.bias': torch.zeros(2)})
    return folder


def heads(*numbers):
    return [testdata('talking_heads', f'{n}.mp4') for n in numbers]


def rows(path):
    with open(path, newline='', encoding='utf-8') as f:
        return {r['filename']: float(r['label']) for r in csv.DictReader(f)}


def predict(weights, *args):
    r = run_script('predict.py', f'--face_weights={weights}', *FAST, *args)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def one_line_error(r, *says):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and all(s in lines[0] for s in says), (r.returncode, r.stderr)
    assert 'scorer:' not in r.stdout  # refused before the networks loaded


def test_a_file_changed_since_its_row_is_predicted_again_never_returned_stale(weights, tmp_path):
    """It used to keep a row by its name alone: another INPUT's a.mp4, a file replaced in place, a dangling link
    whose file appeared, each got the first run's probability (0 predicted now)."""
    one, two, later = tmp_path / 'one', tmp_path / 'two', tmp_path / 'later.mp4'
    one.mkdir(), two.mkdir()
    first, second, third = heads(2, 3, 4)
    shutil.copy(first, one / 'a.mp4'), shutil.copy(second, one / 'b.mp4')
    os.symlink(later, one / 'link.mp4')  # nothing there yet: a fallback row
    shutil.copy(second, two / 'a.mp4')  # another file under the first one's name
    out = tmp_path / 'sub.csv'
    predict(weights, f'--input={one}', f'--output={out}')
    before = rows(out)
    assert before['link.mp4'] == 0.5 and before['a.mp4'] != before['b.mp4']  # the scaled head tells them apart

    said = predict(weights, f'--input={two}', f'--output={out}')
    assert '1 videos changed since they were done' in said and '1 predicted now' in said, said
    assert rows(out) == {'a.mp4': before['b.mp4']}  # the same file's score: b's clip, now named a.mp4

    shutil.copy(first, one / 'b.mp4')  # replaced in place by the first clip
    shutil.copy(third, later)  # the link's file appears
    said = predict(weights, f'--input={one}', f'--output={out}')
    assert '3 videos changed since they were done' in said and '3 predicted now' in said, said
    again = rows(out)
    assert again['a.mp4'] == again['b.mp4'] == before['a.mp4'] and again['link.mp4'] != 0.5

    said = predict(weights, f'--input={one}', f'--output={out}')  # nothing changed: nothing to do
    assert '0 predicted now' in said and 'changed since' not in said and rows(out) == again


def test_a_file_made_readable_is_predicted_again(weights, tmp_path):
    """Its fallback row ('Permission denied') used to stay: a chmod changes no size or modification time."""
    # root reads any file: the first run without the capabilities that let it (as a user's process is)
    drop = ['setpriv', '--inh-caps=-dac_override,-dac_read_search',
            '--bounding-set=-dac_override,-dac_read_search'] if os.geteuid() == 0 else []
    if drop and not shutil.which('setpriv'):
        pytest.skip('root reads a file whatever its mode, and setpriv is not here to drop that')
    folder = tmp_path / 'in'
    folder.mkdir()
    shutil.copy(heads(2)[0], folder / 'a.mp4')
    os.chmod(folder / 'a.mp4', 0)
    out = tmp_path / 'sub.csv'
    try:
        r = subprocess.run([*drop, sys.executable, os.path.join(ROOT, 'predict.py'), f'--input={folder}',
                            f'--output={out}', f'--face_weights={weights}', *FAST], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    finally:
        os.chmod(folder / 'a.mp4', 0o644)  # its status-change time moves: the rerun tries it again
    assert r.returncode == 0 and 'Permission denied' in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
    assert rows(out) == {'a.mp4': 0.5}
    said = predict(weights, f'--input={folder}', f'--output={out}')
    assert '1 predicted now' in said and '; 0 fallbacks' in said and rows(out)['a.mp4'] != 0.5, said


def test_the_verdict_is_the_mean_of_the_faces_probabilities_and_only_the_submission_is_clipped(tmp_path):
    """Saturated faces (a head biased to FAKE): the verdict printed (and drawn) is their mean P(FAKE), as test.py
    scores the video, above 0.99; the submission's row is clipped to model.HEAD's [0.01, 0.99], the log loss's
    guard. The verdict used to be clipped too: 0.9900, not the mean it was said to be."""
    weights = tmp_path / 'sure'
    weights.mkdir()
    tiny_gend(weights, extra={'model.linear.bias': torch.tensor([0.0, 8.0])})
    clip = heads(2)[0]
    [track] = dp.DetectionPipeline(face_encoder='gend', face_weights=str(weights), device='cpu', amp=False,
                                   frame_step=30)(clip).tracks
    mean = float(np.mean(1 / (1 + np.exp(-track.logits.astype(np.float64)))))
    assert 0.995 < mean < 0.9999
    for extra in ([], [f'--output={tmp_path / "sub.csv"}']):
        said = predict(weights, f'--input={clip}', *extra)
        assert f'2.mp4: p(FAKE) = {mean:.4f}' in said, (said, mean)  # float32 logits: 1e-6 off at most
    assert rows(tmp_path / 'sub.csv') == {'2.mp4': 0.99}


@pytest.mark.parametrize('launcher', [{}, {'SLURM_ARRAY_JOB_ID': '6', 'SLURM_ARRAY_TASK_ID': '1',
                                          'SLURM_ARRAY_TASK_COUNT': '2'},
                                      {'WORLD_SIZE': '2', 'RANK': '1', 'TORCHELASTIC_RUN_ID': 'r1'}])
def test_a_second_run_on_one_output_is_one_line_before_any_work(weights, tmp_path, monkeypatch, launcher):
    """It used to run beside the first: two models' rows mixed in one submission, or a missing part file. Under a
    SLURM array's or torchrun's environment, it took the other tasks' lock as its own run's, and every task
    predicted every video at once into one output (break-it pass 5): predict.py does not split its videos."""
    out = tmp_path / 'sub.csv'
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    stage.claim(str(out) + '.pkl')  # a run holds it (another process of the array): this test's, until it ends
    r = run_script('predict.py', f'--input={heads(2)[0]}', f'--output={out}', f'--face_weights={weights}', *FAST)
    one_line_error(r, 'is being written by another run')
    assert not out.exists()


def test_an_output_named_like_a_video_or_an_input_that_is_not_one_is_one_line(weights, tmp_path):
    """--output=the input video used to turn it into a CSV; a list file as --input was scored as a video. A folder
    without a video left the output's lock files behind. A refused run writes nothing."""
    video = tmp_path / 'a.mp4'
    shutil.copy(heads(2)[0], video)
    size = video.stat().st_size
    (tmp_path / 'empty').mkdir()
    for args, says in [([f'--input={video}', f'--output={video}'], 'is named like a video'),
                       ([f'--input={tmp_path}', f'--output={tmp_path / "out.mp4"}'], 'is named like a video'),
                       ([f'--input={tmp_path / "list.txt"}'], 'is not named like a video'),
                       ([f'--input={tmp_path / "empty"}', f'--output={tmp_path / "s.csv"}'], 'no video file')]:
        (tmp_path / 'list.txt').write_text(f'{video}\n')
        one_line_error(run_script('predict.py', *args, f'--face_weights={weights}', *FAST), *says)
    assert video.stat().st_size == size and sorted(os.listdir(tmp_path)) == ['a.mp4', 'empty', 'list.txt']
    assert os.listdir(tmp_path / 'empty') == []


def test_a_fallbacks_file_that_cannot_be_written_is_one_line_before_any_work(weights, tmp_path):
    (tmp_path / 'sub.fallbacks.csv').mkdir()
    r = run_script('predict.py', f'--input={heads(2)[0]}', f'--output={tmp_path / "sub.csv"}',
                   f'--face_weights={weights}', *FAST)
    one_line_error(r, 'sub.fallbacks.csv is a folder')
    assert not (tmp_path / 'sub.csv').exists()


def test_a_report_or_table_written_over_an_input_is_one_line(tmp_path):
    """test.py --report=its own --dataset used to overwrite the table with JSON; merge_embeddings.py likewise."""
    table = synthetic_table(6, faces=4, video_dim=8, audio_dim=4, seed=1)
    store.save(table, str(tmp_path / 'merged.pkl'))
    before = (tmp_path / 'merged.pkl').read_bytes()
    merged = str(tmp_path / 'merged.pkl')
    index = tmp_path / 'merged.pkl.store' / 'index.npz'  # the store test.py reads: it was written over, exit 0
    stored = index.read_bytes()
    for script, args in [('test.py', [f'--dataset={merged}', f'--report={merged}']),
                         ('test.py', [f'--dataset={merged}', f'--report={index}']),
                         ('merge_embeddings.py', [f'--video_table={merged}', f'--output={merged}'])]:
        r = run_script(script, *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (script, r.stderr)
        assert 'is a file this run reads' in r.stderr, (script, r.stderr)
    assert (tmp_path / 'merged.pkl').read_bytes() == before and index.read_bytes() == stored


@pytest.mark.parametrize('stop, workers', [(signal.SIGINT, 0), (signal.SIGINT, 2), (signal.SIGTERM, 2)],
                         ids=['sigint-0', 'sigint-2', 'sigterm-2'])
def test_ctrl_c_is_one_line_and_the_same_command_goes_on(weights, tmp_path, stop, workers):
    """Ctrl-C used to print KeyboardInterrupt's traceback, and with decoding workers (a GPU's default) each worker's
    too; what was done is kept, no worker is left, and the rerun does the rest. SIGTERM (a scheduler's stop: SLURM's
    time limit, scancel, to every process of the job) ended the run without a word: now the same, said as such."""
    folder = tmp_path / 'in'
    folder.mkdir()
    for n, path in enumerate(heads(1, 2, 3, 4, 5) * 2):
        os.symlink(path, folder / f'{n}.mp4')
    args = [sys.executable, os.path.join(ROOT, 'predict.py'), f'--input={folder}', f'--output={tmp_path / "s.csv"}',
            f'--face_weights={weights}', *FAST[:-1], '--frame_step=3', f'--workers={workers}']
    # a background job's shell ignores SIGINT, and a child inherits that (Python then installs no handler for it);
    # a session of its own: the terminal sends Ctrl-C's SIGINT to the command's whole process group
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert any('scorer:' in proc.stdout.readline() for _ in range(20))  # the models are loaded
    time.sleep(3)  # inside the videos' work
    started = children(proc.pid)
    assert len(started) == workers, started
    os.killpg(proc.pid, stop)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + stop and 'Traceback' not in err, (proc.returncode, err[-2000:])
    said = 'interrupted' if stop == signal.SIGINT else 'terminated (SIGTERM)'
    assert err.strip().splitlines()[-1] == f'{said}: run the same command again to go on from here', err
    assert not [pid for pid in started if alive(pid)]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and len(rows(tmp_path / 's.csv')) == 10, r.stderr[-2000:]


def children(pid):
    """The process ids whose parent is `pid` (/proc: Linux)."""
    found = []
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/stat') as f:
                if entry.isdigit() and int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            pass
    return found


def alive(pid):
    """Whether process `pid` runs (a zombie, ended and not yet reaped by whoever adopted it, does not)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_a_run_killed_with_its_decoding_workers_alive_is_resumed_by_the_same_command(weights, tmp_path):
    """SIGKILL (the OOM killer's, a scheduler's) on a run with --workers: its forked workers waited for their next
    video for ever, holding the output's lock, and every rerun was 'being written by another run' (a dead pid)."""
    folder = tmp_path / 'in'
    folder.mkdir()
    for n, path in enumerate(heads(1, 2, 3, 4, 5)):
        os.symlink(path, folder / f'{n}.mp4')
    args = [sys.executable, os.path.join(ROOT, 'predict.py'), f'--input={folder}', f'--output={tmp_path / "s.csv"}',
            f'--face_weights={weights}', *FAST[:-1], '--frame_step=3', '--workers=2']
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    workers = []
    try:
        assert any('scorer:' in proc.stdout.readline() for _ in range(20))  # the models are loaded
        for _ in range(600):  # both workers started (forked after the models loaded)
            if len(workers := children(proc.pid)) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, workers
        proc.kill()
        proc.wait()
        for _ in range(300):  # they notice within a second or two; waited for up to 30 s on a loaded machine
            if not any(map(alive, workers)):
                break
            time.sleep(0.1)
        assert not any(map(alive, workers)), 'the workers outlived their run'
    finally:
        for w in workers:  # the test's own processes, by id, where the code under test left them
            if alive(w):
                os.kill(w, signal.SIGKILL)
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and len(rows(tmp_path / 's.csv')) == 5, r.stderr[-2000:]


# ----------------------------------------------------------------------------- the stages
def test_weights_replaced_at_their_path_are_other_settings_and_spellings_of_one_path_are_not(tmp_path):
    """A face table resumed with weights rewritten in place used to hold two models' embeddings without a word;
    './w/' and the absolute path of w, one folder, were two settings."""
    weights = tmp_path / 'w'
    weights.mkdir()
    tiny_gend(weights)
    data = tmp_path / 'data' / 'part'
    dfdc_part(str(data), {'a.mp4': heads(2)[0]})
    out = tmp_path / 'faces.pkl'

    def faces(spelt, *more):
        return run_script('create_video_embeddings.py', f'--data_dir={data.parent}', f'--output={out}',
                          f'--face_weights={spelt}', *FAST, *more)

    r = faces(weights)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'create_video_embeddings.py'), f'--data_dir={data.parent}',
                        f'--output={out}', '--face_weights=./w/', *FAST], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and '0 videos to embed' in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
    tiny_gend(weights, seed=7)  # other weights, at the same path
    r = faces(weights)
    assert r.returncode == 2 and 'made with other settings (face_weights_file' in r.stderr, r.stderr[-2000:]


def test_processes_of_one_run_given_other_settings_are_refused_when_their_parts_meet(tmp_path, capsys):
    """Ranks started together (no parts yet to compare) with other settings used to be merged into one table
    that recorded one rank's settings."""
    out = str(tmp_path / 'out.pkl')
    ours, theirs = (stage.StageRun(out, made_with={'--frame_step': step}) for step in (6, 12))
    ours.add({'filename': 'a.mp4', 'folder': 'p', 'rows': [{'filename': 'a.mp4', 'folder': 'p'}]})
    theirs.add({'filename': 'b.mp4', 'folder': 'p', 'rows': [{'filename': 'b.mp4', 'folder': 'p'}]})
    with pytest.raises(config.UserError, match=r'out\.pkl: a process of this run was given other settings '
                                               r'\(--frame_step\): give every one the same'):
        ours.finish(lambda record: record['rows'])
    assert not os.path.exists(out)
    # and then every command was refused ('made with other settings'), the settings meant as well: the work of
    # the whole run lost. A rerun with either process's settings now does the other's videos again
    with pytest.raises(config.UserError, match=r'made with other settings \(--frame_step 6 then, 18 now'):
        stage.StageRun(out, made_with={'--frame_step': 18})  # neither: refused, as before
    again = stage.StageRun(out, made_with={'--frame_step': 6})
    assert again.before == {'p/a.mp4'} and capsys.readouterr().out == (
        f'{out}: 1 videos were done by a process of this run given other settings (--frame_step): done again with '
        f'these\n')
    assert [item for item in again.todo(['a.mp4', 'b.mp4'], lambda n: ('p', n))] == ['b.mp4']
    again.add({'filename': 'b.mp4', 'folder': 'p', 'rows': [{'filename': 'b.mp4', 'folder': 'p'}]})
    table, _ = again.finish(lambda record: record['rows'])
    assert table.filename.tolist() == ['a.mp4', 'b.mp4'] and table.attrs['made_with'] == {'--frame_step': 6}


def test_an_output_of_other_settings_or_of_another_stage_is_one_short_line(tmp_path):
    """The face table given as the audio stage's --output was one line of ~1,000 characters: its 17 settings as
    'None then', ending with advice to delete it."""
    def refusal(made_with):
        with pytest.raises(config.UserError) as err:
            stage.StageRun(out, made_with=made_with)
        return str(err.value)

    out = str(tmp_path / 'faces.pkl')
    faces = {'embedder': 'untrained(seed=0)', **{f'--setting_{i}': i for i in range(17)}}
    run = stage.StageRun(out, made_with=faces)
    run.add({'filename': 'a.mp4', 'folder': 'p', 'rows': [{'filename': 'a.mp4', 'folder': 'p'}]})
    run.finish(lambda record: record['rows'])
    said = refusal({'embedder': 'resemblyzer (256-d)', '--audio_encoder': 'resemblyzer', '--n_mels': 40})
    assert said == (f'{out} is the output of another stage (made with --setting_0, --setting_1, --setting_10, ...): '
                    f'give another --output')
    said = refusal({**faces, '--setting_3': 4, '--setting_4': 5, '--setting_5': 6, '--setting_6': 7})
    assert said.startswith(f'{out} was made with other settings (--setting_3 3 then, 4 now; --setting_4 4 then, 5 now; '
                           f'--setting_5 5 then, 6 now; and 1 more): give another --output, or delete it') and \
        said.endswith('faces.pkl.failures.csv to make it again with these'), said


def test_a_second_merge_into_one_output_is_one_line(tmp_path):
    """Two merges at once used to end with one of them missing its own temporary file."""
    table = synthetic_table(4, faces=4, video_dim=8, audio_dim=4, seed=2)
    table.to_pickle(tmp_path / 'video.pkl')
    out = tmp_path / 'merged.pkl'
    stage.claim(str(out))  # a merge holds it: this test's process
    r = run_script('merge_embeddings.py', f'--video_table={tmp_path / "video.pkl"}',
                   f'--audio_table={tmp_path / "video.pkl"}', f'--output={out}')
    one_line_error(r, 'is being written by another run')


def test_extract_audios_messages_name_its_own_flag(tmp_path):
    """They said --output, a setting it does not have (its index is --audio_dir's)."""
    data = tmp_path / 'data' / 'part'
    dfdc_part(str(data), {'a.mp4': heads(2)[0]})
    common = [f'--data_dir={data.parent}', f'--audio_dir={tmp_path / "audio"}']
    assert run_script('extract_audio.py', *common).returncode == 0
    r = run_script('extract_audio.py', *common, '--sample_rate=8000')
    one_line_error(r, 'made with other settings', 'give another --audio_dir')


def test_training_on_a_full_disk_is_one_line(tmp_path):
    """torch.save's own writer raised RuntimeError ('unexpected pos ...'): a traceback, exit 1, where every other
    write says which file and why in one line. A file size limit (RLIMIT_FSIZE) fails writes as a full disk does."""
    table = synthetic_table(20, faces=12, video_dim=8, audio_dim=4, seed=3)
    store.save(table, str(tmp_path / 'merged.pkl'))

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # a checkpoint is larger; config.json is not

    r = subprocess.run([sys.executable, os.path.join(ROOT, 'training.py'), f'--dataset={tmp_path / "merged.pkl"}',
                        f'--out_dir={tmp_path / "run"}', '--max_epochs=2', '--crop=4', '--progress=false'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=small_files)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f'error: {tmp_path / "run" / "best.pt"}: File too large'], r.stderr[-2000:]


def test_a_retried_failure_that_is_not_met_again_is_gone(weights, tmp_path):
    """A metadata.json that could not be read is a failure of its own; fixed, and the stage rerun with
    --retry_failed, its videos were embedded but its failure stayed in the failures file and the count."""
    data = tmp_path / 'data'
    dfdc_part(str(data / 'p'), {'a.mp4': heads(2)[0]})
    dfdc_part(str(data / 'q'), {'b.mp4': heads(3)[0]})
    (data / 'q' / 'metadata.json').write_text('{"b.mp4": {"label": "FAKE",}')  # a comma too many
    out = tmp_path / 'faces.pkl'
    args = [f'--data_dir={data}', f'--output={out}', f'--face_weights={weights}', *FAST]
    r = run_script('create_video_embeddings.py', *args)
    assert r.returncode == 0 and 'failed: q/metadata.json' in r.stdout, r.stdout[-2000:]
    assert 'a rerun with --retry_failed tries them again' in r.stdout
    (data / 'q' / 'metadata.json').write_text('{"b.mp4": {"label": "FAKE"}}')
    r = run_script('create_video_embeddings.py', *args, '--retry_failed=true')
    assert r.returncode == 0 and '0 failed' in r.stdout and 'retry_failed' not in r.stdout, r.stdout[-2000:]
    with open(f'{out}.failures.csv', newline='') as f:
        assert list(csv.DictReader(f)) == []
    assert sorted(pd.read_pickle(out)['filename']) == ['a.mp4', 'b.mp4']


def test_predict_does_every_video_in_a_slurm_array_tasks_environment(weights, tmp_path):
    """predict.py is one process (README): a SLURM array task's variables must not give it a share of the videos
    (the stages take one; a submission with half its rows would be the result)."""
    folder = tmp_path / 'in'
    folder.mkdir()
    for n, path in enumerate(heads(2, 3)):
        os.symlink(path, folder / f'{n}.mp4')
    env = {**os.environ, 'SLURM_ARRAY_TASK_COUNT': '2', 'SLURM_ARRAY_TASK_ID': '1', 'SLURM_ARRAY_TASK_MIN': '0'}
    r = run_script('predict.py', f'--input={folder}', f'--output={tmp_path / "s.csv"}', f'--face_weights={weights}',
                   *FAST, env=env)
    assert r.returncode == 0 and '2 predicted now' in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
    assert sorted(rows(tmp_path / 's.csv')) == ['0.mp4', '1.mp4']
    os.remove(folder / '0.mp4')
    os.symlink(heads(4)[0], folder / '0.mp4')  # another clip: predicted again, said as one process says it
    r = run_script('predict.py', f'--input={folder}', f'--output={tmp_path / "s.csv"}', f'--face_weights={weights}',
                   *FAST, env=env)
    assert r.returncode == 0 and '1 predicted now' in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
    assert '\n1 videos changed since they were done' in r.stdout and 'rank' not in r.stdout, r.stdout
