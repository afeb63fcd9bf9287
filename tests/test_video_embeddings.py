"""create_video_embeddings.py end to end: labels, bad input, resuming."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, testdata

SCRIPT = os.path.join(ROOT, 'create_video_embeddings.py')


def run(*args, env=None):
    """The stage on the CPU (on a GPU its batches mix videos: README, reproducibility)."""
    return subprocess.run([sys.executable, SCRIPT, '--device=cpu', *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=600)


def failures(output):
    """{folder/filename: reason} of OUTPUT.failures.csv."""
    with open(str(output) + '.failures.csv', newline='') as f:
        return {f"{row['folder']}/{row['filename']}": row['reason'] for row in csv.DictReader(f)}


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
    """The project's own sample dataset (4 small clips), made once."""
    folder = tmp_path_factory.mktemp('sample')
    subprocess.run([sys.executable, 'make_sample_dataset.py', f'--output_dir={folder}'], cwd=ROOT,
                   check=True, capture_output=True)
    return folder


def test_dfdc_sample_gives_four_rows_with_the_metadata_labels(tmp_path):
    data = testdata('dfdc_sample')
    out = tmp_path / 'OUT.pkl'
    r = run(f'--data_dir={data}', f'--output={out}', '--face_weights=none')
    assert r.returncode == 0, r.stderr
    table = pd.read_pickle(out)
    meta = json.load(open(os.path.join(data, 'metadata.json')))
    assert sorted(table.filename) == sorted(meta)
    for row in table.itertuples():
        assert row.label == (1 if meta[row.filename]['label'] == 'FAKE' else 0)
        assert row.original == meta[row.filename]['original'] or meta[row.filename]['original'] is None
        assert row.video_embedding.dtype == np.float16 and row.video_embedding.shape[1] == 512
        assert len(row.frames) == len(row.video_embedding) and (row.frames % 6 == 0).all()
        assert row.embedder == 'untrained(seed=0)'
    full = table[table.filename == 'lynaeydofd.mp4'].iloc[0]
    assert len(full.frames) == 50 and full.n_frames == 300
    assert all(len(f) >= 40 for f in table.frames)  # about 50 faces per 300-frame clip
    assert not os.path.exists(str(out) + '.parts')


def test_bad_inputs_are_recorded_and_the_good_videos_embedded(tmp_path, sample):
    data = tmp_path / 'data'
    part, broken = data / 'dfdc_train_part_0', data / 'dfdc_train_part_1'
    part.mkdir(parents=True)
    broken.mkdir()
    good = sample / 'astronaut_real.mp4'
    os.symlink(good, part / 'good.mp4')
    (part / 'empty.mp4').write_bytes(b'')
    (part / 'truncated.mp4').write_bytes(good.read_bytes()[:20000])
    (part / 'text.mp4').write_text('this is not a video\n')
    (part / 'unlisted.mp4').write_bytes(b'')
    import make_sample_dataset as s
    s.write_clip(str(part / 'noface.mp4'), [np.full((128, 128, 3), 90, np.uint8)] * 12, (128, 128),
                 np.zeros(8000, np.float32), 12, 16000)
    entry = {'label': 'REAL', 'split': 'train', 'original': None}
    meta = {n: entry for n in ['good.mp4', 'empty.mp4', 'truncated.mp4', 'text.mp4', 'noface.mp4',
                                'missing.mp4']}
    (part / 'metadata.json').write_text(json.dumps(meta))
    (broken / 'metadata.json').write_text('{"a.mp4": {"label": "FA')
    out = tmp_path / 'OUT.pkl'
    r = run(f'--data_dir={data}', f'--output={out}', '--face_weights=none')
    assert r.returncode == 0, r.stderr
    table = pd.read_pickle(out)
    assert table.filename.tolist() == ['good.mp4'] and table.folder.tolist() == ['dfdc_train_part_0']
    reasons = {k.replace('dfdc_train_part_0/', ''): r for k, r in failures(out).items()}
    assert set(reasons) == {'empty.mp4', 'truncated.mp4', 'text.mp4', 'noface.mp4', 'missing.mp4',
                            'dfdc_train_part_1/metadata.json'}
    assert 'empty' in reasons['empty.mp4'] and 'missing' in reasons['missing.mp4']
    assert 'not a readable video' in reasons['text.mp4'] and 'no face' in reasons['noface.mp4']
    assert 'not readable JSON' in reasons['dfdc_train_part_1/metadata.json']
    assert reasons['truncated.mp4'] and not any(r.startswith('unexpected') for r in reasons.values())
    assert '1 without a metadata entry skipped' in r.stdout or '1 skipped without' in r.stdout


def test_the_sample_is_made_again_for_other_settings_and_bad_ones_are_one_line(tmp_path):
    def make(*args):
        return subprocess.run([sys.executable, 'make_sample_dataset.py', f'--output_dir={tmp_path}', *args],
                              cwd=ROOT, capture_output=True, text=True)
    import av
    assert make('--seconds=0.5').returncode == 0
    assert 'there already' in make('--seconds=0.5').stdout
    # what a run killed while writing a clip leaves (atomic_path's temporary) was never removed
    (tmp_path / '.camera_fake.mp4.k1ll3d00.tmp').write_bytes(b'half a clip')
    run = make('--seconds=1', '--fps=25', '--sample_rate=16000')  # was 'there already', the 0.5 s clips kept
    assert run.returncode == 0 and 'there already' not in run.stdout, run.stderr
    with av.open(str(tmp_path / 'camera_fake.mp4')) as clip:
        assert (clip.streams.video[0].frames, clip.streams.audio[0].sample_rate) == (25, 16000)
    assert [n for n in os.listdir(tmp_path) if n.endswith('.tmp')] == []
    (tmp_path / 'file').write_text('x')
    run = subprocess.run([sys.executable, 'make_sample_dataset.py', f'--output_dir={tmp_path / "file"}'], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr == (f'error: {tmp_path / "file"} is a file, where --output_dir needs a '
                                                  f'folder; give another --output_dir\n')  # was 'File exists'
    for args, says in ((['--sample_rate=10000'], "--sample_rate must be one of AAC's"),
                       (['--seconds=0.01'], '--seconds=0.01 at --fps=30 is no frame')):
        run = make(*args)  # were an FFmpeg traceback, and four clips without a frame
        assert run.returncode == 2 and run.stderr.startswith(f'error: {says}') and run.stderr.count('\n') == 1
    # a DFDC part given for the output folder: its metadata.json, which ours replaced, is left as it is
    part = tmp_path / 'dfdc_train_part_0'
    part.mkdir()
    with open(testdata('dfdc_sample', 'metadata.json'), 'rb') as f:
        (part / 'metadata.json').write_bytes(theirs := f.read())
    run = subprocess.run([sys.executable, 'make_sample_dataset.py', f'--output_dir={part}'], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2 and "lists other videos than the sample's (" in run.stderr, run.stderr
    assert "e.g. 'abofeumbvv.mp4')" in run.stderr and run.stderr.count('\n') == 1
    assert (part / 'metadata.json').read_bytes() == theirs and sorted(os.listdir(part)) == ['metadata.json']
    # a list: one line (was "lists other videos than the sample's ('list')"); an empty object ({}: was an
    # IndexError's traceback) or some of the sample's own clips (was refused as 'other videos') are made again
    (sample := tmp_path / 'sample.json').write_bytes((tmp_path / 'metadata.json').read_bytes())
    (tmp_path / 'metadata.json').write_text('[]')
    run = make('--seconds=1', '--fps=25', '--sample_rate=16000')
    assert run.returncode == 2 and run.stderr == (f'error: {tmp_path / "metadata.json"} is not a metadata.json '
                                                  f'(JSON [], not an object of videos): give another --output_dir\n')
    # ... and so is one whose entries lost their labels (was 'there already': the next stage failed every video)
    for listed in ({}, {'astronaut_real.mp4': {'label': 'REAL'}}, dict.fromkeys(json.loads(sample.read_text()))):
        (tmp_path / 'metadata.json').write_text(json.dumps(listed))
        run = make('--seconds=1', '--fps=25', '--sample_rate=16000')
        assert run.returncode == 0 and 'metadata.json written' in run.stdout, run.stderr
        assert (tmp_path / 'metadata.json').read_text() == sample.read_text()


def test_missing_data_dir_is_one_line_and_exit_2(tmp_path):
    r = run(f'--data_dir={tmp_path / "nowhere"}', f'--output={tmp_path / "o.pkl"}', '--face_weights=none')
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0
    assert 'does not exist' in r.stderr
    # empty: it said 'error: data folder  does not exist', no name between the two spaces
    r = run('--data_dir=', f'--output={tmp_path / "o.pkl"}', '--face_weights=none')
    assert r.returncode == 2 and r.stderr.strip() == 'error: --data_dir is empty: give the folder that holds the videos'


def test_refuses_without_weights_unless_told(tmp_path, sample):
    env = dict(os.environ, TORCH_HOME=str(tmp_path), https_proxy='http://127.0.0.1:9',
               HTTPS_PROXY='http://127.0.0.1:9')
    r = run(f'--data_dir={sample}', f'--output={tmp_path / "o.pkl"}', env=env)
    assert r.returncode == 2 and '--face_weights=none' in r.stderr
    assert r.stderr.strip().count('\n') == 0 and 'Traceback' not in r.stderr
    # a weights file or device that is not there: refused before the plan line says what it will do
    for bad, said in [(['--device=cpu', '--face_weights=/no.pt'], "--face_weights='/no.pt': not a file"),
                      (['--device=tpu'], "--device takes 'auto', 'cpu', 'cuda' or 'cuda:N', not 'tpu'")]:
        r = subprocess.run([sys.executable, SCRIPT, f'--data_dir={sample}', f'--output={tmp_path / "o.pkl"}', *bad],
                           cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 2 and said in r.stderr and r.stderr.strip().count('\n') == 0, r.stderr
        assert 'videos to embed' not in r.stdout, r.stdout


def test_killed_run_resumes_without_duplicates_or_losses(tmp_path, sample):
    reference = tmp_path / 'ref.pkl'
    assert run(f'--data_dir={sample}', f'--output={reference}', '--face_weights=none').returncode == 0
    out = tmp_path / 'OUT.pkl'
    proc = subprocess.Popen([sys.executable, SCRIPT, '--device=cpu', f'--data_dir={sample}', f'--output={out}',
                             '--face_weights=none'], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parts = str(out) + '.parts'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(parts) and any(n.endswith('.pkl') for n in os.listdir(parts)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(out), 'the run finished before it could be killed'
    done_before = len([n for n in os.listdir(parts) if n.endswith('.pkl')])
    assert 1 <= done_before < 4
    # what a kill during the final writes leaves (atomic_path's temporaries): the merge sweeps them
    for name in ('.OUT.pkl.k1ll3d00.tmp', '.OUT.pkl.failures.csv.k1ll3d00.tmp'):
        (tmp_path / name).write_bytes(b'half')
    r = run(f'--data_dir={sample}', f'--output={out}', '--face_weights=none')
    assert r.returncode == 0 and f'{4 - done_before} videos to embed' in r.stdout
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('.')) == []
    a, b = pd.read_pickle(out), pd.read_pickle(reference)
    assert a.filename.tolist() == b.filename.tolist() == sorted(set(b.filename))
    for x, y in zip(a.video_embedding, b.video_embedding):
        np.testing.assert_array_equal(x, y)
    # a rerun with nothing new does nothing and keeps the table
    r = run(f'--data_dir={sample}', f'--output={out}', '--face_weights=none')
    assert '0 videos to embed' in r.stdout and len(pd.read_pickle(out)) == 4


def test_a_rerun_with_other_face_settings_is_refused_not_mixed(tmp_path, sample):
    """The table records what its faces depend on; a rerun into it with another --frame_step (or other
    weights) said '0 videos to embed' and kept the old rows as if made with the new settings. Now it is one
    line naming what differs, before any work; the same settings resume as before."""
    out = tmp_path / 'v.pkl'
    common = [f'--data_dir={sample}', f'--output={out}', '--face_weights=none']
    r = run(*common, '--frame_step=30')
    assert r.returncode == 0, r.stderr
    made_with = pd.read_pickle(out).attrs['made_with']
    assert made_with['--frame_step'] == 30 and made_with['embedder'] == 'untrained(seed=0)'
    assert '--device' not in made_with and '--workers' not in made_with  # where, not what
    r = run(*common, '--frame_step=15')
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert f'{out} was made with other settings (--frame_step 30 then, 15 now)' in r.stderr
    r = run(*common, '--frame_step=30', '--workers=2')
    assert r.returncode == 0 and '0 videos to embed' in r.stdout, r.stderr


def test_a_video_replaced_or_relabelled_since_is_done_again_not_returned_stale(tmp_path, sample):
    """A rerun said '0 videos to embed' and kept the old rows of a file replaced by another at the same path
    (its frames, size, embeddings) and the old label of an entry corrected in metadata.json. Each is done
    again and replaces its rows; nothing else is redone, and nothing is duplicated."""
    import shutil
    data, out = tmp_path / 'data', tmp_path / 'v.pkl'
    shutil.copytree(sample, data)
    common = [f'--data_dir={data}', f'--output={out}', '--face_weights=none', '--frame_step=30']
    assert run(*common).returncode == 0
    before = pd.read_pickle(out).set_index('filename')
    assert before.loc['camera_fake.mp4', 'label'] == 1
    os.remove(data / 'astronaut_fake.mp4')
    shutil.copy(testdata('talking_heads', '5.mp4'), data / 'astronaut_fake.mp4')  # another clip, same name
    meta = json.loads((data / 'metadata.json').read_text())
    meta['camera_fake.mp4'] = {'label': 'REAL', 'original': None}  # a label corrected
    (data / 'metadata.json').write_text(json.dumps(meta))
    r = run(*common)
    assert r.returncode == 0, r.stderr
    assert '2 videos changed since they were done (their file or metadata entry), e.g. astronaut_fake.mp4' in r.stdout
    assert '2 videos to embed (2 done before' in r.stdout
    after = pd.read_pickle(out)
    assert sorted(after.filename) == sorted(before.index)  # one row each: replaced, not added
    after = after.set_index('filename')
    assert after.loc['camera_fake.mp4', 'label'] == 0 and pd.isna(after.loc['camera_fake.mp4', 'original'])
    assert (after.loc['astronaut_fake.mp4', 'width'], after.loc['astronaut_fake.mp4', 'n_frames']) != (
        before.loc['astronaut_fake.mp4', 'width'], before.loc['astronaut_fake.mp4', 'n_frames'])
    for name in ('astronaut_real.mp4', 'camera_real.mp4'):  # untouched: the same rows
        np.testing.assert_array_equal(after.loc[name, 'video_embedding'], before.loc[name, 'video_embedding'])
    r = run(*common)
    assert '0 videos to embed' in r.stdout and 'changed since' not in r.stdout


def test_a_failed_video_replaced_since_is_tried_again(tmp_path, sample):
    """A video that failed (a corrupt file) and is then replaced by a good one at the same path: the rerun
    tries it again (the failures file recorded what it was made from), without --retry_failed; the
    failures file no longer lists it."""
    import shutil
    data, out = tmp_path / 'data', tmp_path / 'v.pkl'
    shutil.copytree(sample, data)
    common = [f'--data_dir={data}', f'--output={out}', '--face_weights=none', '--frame_step=30']
    good = (data / 'camera_real.mp4').read_bytes()
    (data / 'camera_real.mp4').write_bytes(b'not a video\n' * 100)
    assert run(*common).returncode == 0
    failures = pd.read_csv(f'{out}.failures.csv')
    assert list(failures.filename) == ['camera_real.mp4'] and failures.source.notna().all()
    assert 'camera_real.mp4' not in set(pd.read_pickle(out).filename)
    (data / 'camera_real.mp4').write_bytes(good)
    r = run(*common)
    assert r.returncode == 0, r.stderr
    assert '1 videos changed since they were done (their file or metadata entry), e.g. camera_real.mp4' in r.stdout
    assert 'camera_real.mp4' in set(pd.read_pickle(out).filename)
    assert pd.read_csv(f'{out}.failures.csv').empty
