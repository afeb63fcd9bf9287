"""What a stage does with what goes wrong: an unexpected error on one video, the same file name in two parts,
a dataset where no video succeeds, corrupt tables and part files, metadata names that are paths, an output
that cannot be written or a full disk, and two runs on one output. Real clips and real processes."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pandas as pd
import pytest

import create_audio_embedding as cae
import create_video_embeddings as cve
import DetectionPipeline as dp
from faces import pipeline as fp
import extract_audio as ea
from audio_clips import dfdc_part, run_script
from common.dataset import plan
from common.stage import UNEXPECTED, Journal, read_failures
from conftest import ROOT, testdata
from face_checks import EMBEDDING_RTOL, assert_same_embeddings, embedding_errors

HEADS = [f'{i}.mp4' for i in range(1, 6)]  # talking heads, 500-850 px: the quickest real faces


def head(i):
    return testdata('talking_heads', f'{i}.mp4')


def failures_csv(output):
    """{folder/filename: reason} of OUTPUT.failures.csv, read as a user would."""
    with open(f'{output}.failures.csv', newline='', encoding='utf-8') as f:
        return {f"{row['folder']}/{row['filename']}": row['reason'] for row in csv.DictReader(f)}


def one_line_exit_2(r, *words):
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    line = r.stderr.strip()
    assert '\n' not in line and line.startswith('error: ') and 'Traceback' not in r.stderr, r.stderr
    for word in words:
        assert str(word) in line, (word, line)
    return line


def tiny_clip(path, size=16, frames=24):
    """A real H.264 clip of size x size pixels (noise): MTCNN's image pyramid has no level for it."""
    rng = np.random.default_rng(0)
    with av.open(str(path), 'w') as out:
        stream = out.add_stream('libx264', rate=24)
        stream.width, stream.height, stream.pix_fmt = size, size, 'yuv420p'
        for _ in range(frames):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
        out.mux(stream.encode(None))
    return path


# ----------------------------------------------------------------------------- 1: one video never costs the rest
def test_a_tiny_video_beside_a_good_one_fails_alone_and_the_rerun_goes_on(tmp_path):
    """A 16x16 clip made MTCNN raise (RuntimeError, not a VideoError) and the stage die, at every rerun."""
    data = tmp_path / 'data'
    good = 'yhffcuhhjy.mp4'  # the DFDC sample's 720p clip
    dfdc_part(str(data / 'part'), {good: testdata('dfdc_sample', good),
                                   'tiny.mp4': tiny_clip(tmp_path / 'tiny.mp4')})
    out = tmp_path / 'video.pkl'
    args = ('create_video_embeddings.py', f'--data_dir={data}', f'--output={out}', '--face_weights=none')
    r = run_script(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pd.read_pickle(out).filename.tolist() == [good]
    # a frame too small for MTCNN's pyramid has no face: that outcome, not a crash recorded as unexpected
    # searched: every 6th of its 24 frames (0, 6, 12, 18)
    assert failures_csv(out) == {'part/tiny.mp4': 'no face found in any of the 4 frames searched (of its 24)'}
    assert 'unexpected' not in r.stdout
    r = run_script(*args, '--retry_failed=true')  # tries the tiny one again: it fails again, the run ends well
    assert r.returncode == 0 and '1 videos to embed' in r.stdout, r.stderr[-3000:]
    assert pd.read_pickle(out).filename.tolist() == [good] and list(failures_csv(out)) == ['part/tiny.mp4']


@pytest.mark.parametrize('workers', [0, 2])
def test_unexpected_errors_in_decoding_and_detection_are_recorded_counted_and_the_rest_embedded(
        tmp_path, monkeypatch, capsys, workers):
    """Independent of what the pipeline raises today: a decoder that raises a RuntimeError for one video
    and a detector that raises an IndexError for another, in this process or in decoding workers; the
    third video gets its row."""
    data = tmp_path / 'data'
    dfdc_part(str(data / 'p'), {'a.mp4': head(1), 'b.mp4': head(1), 'c.mp4': head(1)})
    chunks, find_tracks = fp.chunks, fp.find_tracks

    class Marked(np.ndarray):
        """b.mp4's frames: detection fails on them."""

    def a_fails(path, *args):
        if path.endswith('a.mp4'):
            raise RuntimeError('boom in decoding')
        for indices, frames, n in chunks(path, *args):
            yield indices, (frames.view(Marked) if path.endswith('b.mp4') else frames), n

    def b_fails(frames, *args):
        if isinstance(frames, Marked):
            raise IndexError('boom in detection')
        return find_tracks(frames, *args)
    monkeypatch.setattr(fp, 'chunks', a_fails)
    monkeypatch.setattr(fp, 'find_tracks', b_fails)
    monkeypatch.setattr(cve, 'OUTPUT', str(tmp_path / 'video.pkl'))
    monkeypatch.setattr(cve, 'DATA_DIR', str(data))
    # forked workers (workers=2): the broken functions are theirs too
    cve.embed(*plan(str(data)), face={'workers': workers, 'face_weights': 'none', 'device': 'cpu'})
    assert pd.read_pickle(tmp_path / 'video.pkl').filename.tolist() == ['c.mp4']
    assert failures_csv(tmp_path / 'video.pkl') == {
        'p/a.mp4': f'{UNEXPECTED}RuntimeError: boom in decoding',
        'p/b.mp4': f'{UNEXPECTED}IndexError: boom in detection'}
    out = capsys.readouterr().out
    assert '2 failed' in out and '2 of the failures are unexpected errors' in out


# ----------------------------------------------------------------------------- 3: one name in two parts
@pytest.fixture(scope='module')
def two_parts(tmp_path_factory, face_weights):
    """Parts a and b both hold x.mp4 and y.mp4 (other clips); b/y.mp4 is not a video. Every stage run."""
    root = tmp_path_factory.mktemp('two_parts')
    data = root / 'data'
    dfdc_part(str(data / 'a'), {'x.mp4': head(1), 'y.mp4': head(3)})
    dfdc_part(str(data / 'b'), {'x.mp4': head(2), 'y.mp4': b'this is not a video\n'})
    paths = {k: root / f'{k}.pkl' for k in ('video', 'audio', 'merged')}
    for args in [('create_video_embeddings.py', f'--data_dir={data}', f'--output={paths["video"]}',
                  f'--face_weights={face_weights}'),  # embeddings that tell two people apart
                 ('extract_audio.py', f'--data_dir={data}', f'--audio_dir={root / "audio"}'),
                 ('create_audio_embedding.py', f'--audio_dir={root / "audio"}', f'--output={paths["audio"]}'),
                 ('merge_embeddings.py', f'--video_table={paths["video"]}', f'--audio_table={paths["audio"]}',
                  f'--output={paths["merged"]}')]:
        r = run_script(*args)
        assert r.returncode == 0, (args, r.stderr[-3000:])
    return {'root': root, 'data': data, 'audio_dir': root / 'audio', 'merge_stdout': r.stdout,
            'face_weights': face_weights, **paths}


def keys(table):
    return sorted(f'{f}/{n}' for f, n in zip(table.folder, table.filename))


def test_the_same_name_in_two_parts_gives_both_videos_rows_and_the_failure_its_own(two_parts):
    video, audio = pd.read_pickle(two_parts['video']), pd.read_pickle(two_parts['audio'])
    assert keys(video) == keys(audio) == ['a/x.mp4', 'a/y.mp4', 'b/x.mp4']
    for output in (two_parts['video'], two_parts['audio']):
        assert list(failures_csv(output)) == ['b/y.mp4'], output
    # each x.mp4's row holds its own clip's faces, not the other part's: within rounding of what the
    # pipeline gives that clip here, and not within it of the other clip's (tests/face_checks.py)
    by = video.set_index(['folder', 'filename']).video_embedding
    pipeline = dp.DetectionPipeline(face_weights=two_parts['face_weights'], device='cpu')
    clips = {folder: pipeline(head(clip)).tracks[0].embeddings for folder, clip in (('a', 1), ('b', 2))}
    for folder, other in (('a', 'b'), ('b', 'a')):
        assert_same_embeddings(by[(folder, 'x.mp4')], clips[folder])
        n = min(len(clips[folder]), len(clips[other]))
        assert embedding_errors(by[(folder, 'x.mp4')][:n], clips[other][:n]).min() > EMBEDDING_RTOL
    # the WAVs mirror the parts: each holds its own clip's samples
    for folder, clip in (('a', 1), ('b', 2)):
        wav = ea.read_wav(os.path.join(two_parts['audio_dir'], ea.wav_name('x.mp4', folder)))
        np.testing.assert_array_equal(wav, ea.pcm_to_float(ea.decode_audio(head(clip)).pcm))


def test_the_merge_joins_on_folder_and_file_name(two_parts):
    merged, audio = pd.read_pickle(two_parts['merged']), pd.read_pickle(two_parts['audio'])
    assert keys(merged) == ['a/x.mp4', 'a/y.mp4', 'b/x.mp4'] and merged.has_audio.all()
    source = audio.set_index(['folder', 'filename']).audio_embedding
    for row in merged.itertuples():
        np.testing.assert_array_equal(row.audio_embedding, source[(row.folder, row.filename)])
    # two voices' embeddings differ by far more than float32 rounding (they are equal above, bit for bit)
    assert np.abs(source[('a', 'x.mp4')] - source[('b', 'x.mp4')]).max() > 1e-3
    assert '3 matched' in two_parts['merge_stdout']


def test_a_killed_run_on_two_parts_resumes_to_the_whole_index(two_parts, tmp_path):
    """What a run killed after a/x.mp4 and b/y.mp4 (a failure) leaves; the rerun does a/y.mp4 and b/x.mp4.
    Keyed by name alone, b/y.mp4's failure stood for a/y.mp4 too and b/x.mp4 was a/x.mp4."""
    audio_dir = tmp_path / 'audio'
    journal = Journal(audio_dir / ea.INDEX)
    journal.add({'filename': 'x.mp4', 'folder': 'a',
                 'row': ea.extract(os.path.join(two_parts['data'], 'a', 'x.mp4'), 'a', str(audio_dir))})
    reference = read_failures(os.path.join(two_parts['audio_dir'], ea.INDEX + '.failures.csv'))
    journal.fail('y.mp4', 'b', reference['b/y.mp4'][1])
    r = run_script('extract_audio.py', f'--data_dir={two_parts["data"]}', f'--audio_dir={audio_dir}')
    assert r.returncode == 0 and '2 videos to extract' in r.stdout, (r.stdout, r.stderr[-2000:])
    (a, a_failed), (b, b_failed) = cae.read_index(str(audio_dir)), cae.read_index(str(two_parts['audio_dir']))
    # the part written by hand above records no source (what the video was made from): the rerun's do
    assert a.source.isna().tolist() == [True, False, False] and b.source.notna().all()
    assert a.drop(columns='source').equals(b.drop(columns='source'))
    assert a_failed == b_failed and keys(a) == ['a/x.mp4', 'a/y.mp4', 'b/x.mp4']


# ----------------------------------------------------------------------------- 4: no video succeeds
def test_a_dataset_where_no_video_succeeds_keeps_its_columns_reruns_and_merges_in_one_line(tmp_path):
    data = tmp_path / 'data'
    dfdc_part(str(data / 'p'), {'text.mp4': b'this is not a video\n', 'zero.mp4': b''})
    video, audio, merged, audio_dir = (tmp_path / n for n in ('video.pkl', 'audio.pkl', 'merged.pkl', 'audio'))
    for _ in range(2):  # the rerun read a table without columns: KeyError 'filename'
        for args in [('create_video_embeddings.py', f'--data_dir={data}', f'--output={video}',
                      '--face_weights=none'),
                     ('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio_dir}'),
                     ('create_audio_embedding.py', f'--audio_dir={audio_dir}', f'--output={audio}')]:
            r = run_script(*args)  # the table and its failures written, then exit 2: a chain of stages stops
            assert r.returncode == 2 and '2 failed' in r.stdout, (args, r.stdout, r.stderr[-3000:])
            assert r.stderr.splitlines()[-1].startswith('error: every video failed (2, reasons in ')  # after tqdm's
    for path, columns in ((video, cve.COLUMNS), (audio_dir / ea.INDEX, ea.COLUMNS), (audio, cae.COLUMNS)):
        table = pd.read_pickle(path)
        assert len(table) == 0 and table.columns.tolist() == list(columns), path
        assert sorted(failures_csv(path)) == ['p/text.mp4', 'p/zero.mp4']
    r = run_script('merge_embeddings.py', f'--video_table={video}', f'--audio_table={audio}',
                   f'--output={merged}')
    one_line_exit_2(r, video, 'has no rows')
    assert not merged.exists()


# ----------------------------------------------------------------------------- 6: corrupt inputs
def truncated_table(path):
    """A real table's pickle, cut in half (what a copy that ran out of disk leaves)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pd.DataFrame({'filename': [f'{i}.mp4' for i in range(200)], 'folder': 'p'}).to_pickle(path)
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


@pytest.fixture(scope='module')
def failed_only(tmp_path_factory):
    """A part whose one video is empty, run through both audio steps: an index and a table without rows."""
    root = tmp_path_factory.mktemp('failed_only')
    dfdc_part(str(root / 'data' / 'p'), {'zero.mp4': b''})
    r = run_script('extract_audio.py', f'--data_dir={root / "data"}', f'--audio_dir={root / "audio"}')
    assert r.returncode == 2 and r.stderr.splitlines()[-1].startswith('error: every video failed (1, '), r.stderr
    return root


@pytest.mark.parametrize('case', ['video output', 'index', 'index read by the embedding', 'audio output',
                                  'part file', 'video table', 'audio table', 'text as a table'])
def test_a_corrupt_table_or_part_is_one_line_naming_the_file_and_what_to_do(case, failed_only, tmp_path):
    data, audio_dir = failed_only / 'data', tmp_path / 'audio'
    good = tmp_path / 'good.pkl'
    pd.DataFrame({'filename': ['a.mp4'], 'folder': ['p']}).to_pickle(good)
    if case == 'video output':
        bad = truncated_table(tmp_path / 'video.pkl')
        args = ('create_video_embeddings.py', f'--data_dir={data}', f'--output={bad}', '--face_weights=none')
    elif case in ('index', 'index read by the embedding'):
        bad = truncated_table(audio_dir / ea.INDEX)
        args = (('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio_dir}') if case == 'index' else
                ('create_audio_embedding.py', f'--audio_dir={audio_dir}', f'--output={tmp_path / "a.pkl"}'))
    elif case == 'audio output':
        bad = truncated_table(tmp_path / 'audio.pkl')
        args = ('create_audio_embedding.py', f'--audio_dir={failed_only / "audio"}', f'--output={bad}')
    elif case == 'part file':  # parts are written atomically: one like this is damage, said as such
        bad = audio_dir / (ea.INDEX + '.parts') / '0123456789abcdef.pkl'
        os.makedirs(bad.parent)
        bad.write_bytes(b'\x80\x05garbage')
        args = ('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio_dir}')
    else:
        bad = tmp_path / 'bad.pkl'
        if case == 'text as a table':
            bad.write_text('filename,folder\na.mp4,p\n')
        else:
            truncated_table(bad)
        video, audio = (bad, good) if case != 'audio table' else (good, bad)
        args = ('merge_embeddings.py', f'--video_table={video}', f'--audio_table={audio}',
                f'--output={tmp_path / "m.pkl"}')
    line = one_line_exit_2(run_script(*args), bad)
    assert 'delete it' in line or 'make it again' in line, line


# ----------------------------------------------------------------------------- 10: names that are paths
def test_metadata_names_that_are_paths_are_refused_and_the_run_goes_on(tmp_path):
    data, audio_dir = tmp_path / 'data', tmp_path / 'audio'
    (data / 'p' / 'sub').mkdir(parents=True)
    for target in (data / 'outside.mp4', data / 'p' / 'sub' / 'x.mp4', data / 'p' / 'good.mp4'):
        os.symlink(head(4), target)  # each a real clip: followed, it would be extracted
    entry = {'label': 'REAL'}
    names = ['../outside.mp4', str(data / 'outside.mp4'), 'sub/x.mp4', 'good.mp4']
    (data / 'p' / 'metadata.json').write_text(json.dumps({n: entry for n in names}))
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio_dir}')
    assert r.returncode == 0, r.stderr[-2000:]
    index, failed = cae.read_index(str(audio_dir))
    assert index.filename.tolist() == ['good.mp4']
    reasons = failures_csv(audio_dir / ea.INDEX)
    assert sorted(reasons) == sorted(f'p/{n}' for n in names[:3])
    assert all('names a path' in reason for reason in reasons.values())
    assert sorted(os.listdir(tmp_path)) == ['audio', 'data']  # no WAV written outside AUDIO_DIR
    wavs = [os.path.join(d, n) for d, _, files in os.walk(audio_dir) for n in files if n.endswith('.wav')]
    assert wavs == [str(audio_dir / 'p' / 'good.mp4.wav')]


def test_a_failure_of_metadata_json_fixed_since_is_gone_and_its_videos_done(tmp_path):
    """A metadata.json that was not JSON, then an entry without a label, stayed failures after the file was
    fixed (only --retry_failed cleared them), the entry quoted with its old label; the corrected entry's video was
    never done, where the README says a corrected label is done again."""
    data, audio_dir = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'a.mp4': head(1), 'b.mp4': head(2)})
    meta = data / 'p' / 'metadata.json'
    args = ('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio_dir}')
    meta.write_text('{"a.mp4": {"label": "REAL",}')
    r = run_script(*args)
    assert r.returncode == 2 and list(failures_csv(audio_dir / ea.INDEX)) == ['p/metadata.json'], r.stderr[-2000:]
    meta.write_text('{"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "Real?"}}')
    r = run_script(*args)
    assert r.returncode == 0 and '1 videos to extract' in r.stdout, r.stdout[-2000:]
    reasons = failures_csv(audio_dir / ea.INDEX)
    assert list(reasons) == ['p/b.mp4'] and "'Real?'" in reasons['p/b.mp4'], reasons
    meta.write_text('{"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE"}}')
    r = run_script(*args)
    assert r.returncode == 0 and '1 videos to extract' in r.stdout, r.stdout[-2000:]
    assert failures_csv(audio_dir / ea.INDEX) == {}
    assert pd.read_pickle(audio_dir / ea.INDEX).filename.tolist() == ['a.mp4', 'b.mp4']
    assert '0 videos to extract' in run_script(*args).stdout  # and then nothing is done again


# ----------------------------------------------------------------------------- 5: outputs that cannot be written
@pytest.mark.parametrize('script', ['create_video_embeddings.py', 'extract_audio.py', 'create_audio_embedding.py',
                                    'merge_embeddings.py'])
@pytest.mark.parametrize('what', ['a folder', 'under a file'])
def test_an_output_that_cannot_be_written_is_one_line_before_any_work(script, what, failed_only, tmp_path):
    (tmp_path / 'file').write_text('in the way\n')
    output = tmp_path / 'folder' if what == 'a folder' else tmp_path / 'file' / 'out.pkl'
    output.mkdir(exist_ok=True) if what == 'a folder' else None
    args = {'create_video_embeddings.py': [f'--data_dir={failed_only / "data"}', f'--output={output}',
                                           '--face_weights=none'],
            'extract_audio.py': [f'--data_dir={failed_only / "data"}', f'--audio_dir={output}'],
            'create_audio_embedding.py': [f'--audio_dir={failed_only / "audio"}', f'--output={output}'],
            'merge_embeddings.py': [f'--video_table={tmp_path / "v.pkl"}', f'--audio_table={tmp_path / "a.pkl"}',
                                    f'--output={output}']}[script]
    if script == 'extract_audio.py':  # its output is AUDIO_DIR/index.pkl
        output = output / ea.INDEX
        if what == 'a folder':
            output.mkdir()
    r = run_script(script, *args)
    one_line_exit_2(r, output if what == 'a folder' else tmp_path / 'file')
    assert not os.path.exists(f'{output}.parts') and 'videos' not in r.stdout  # no work began


def test_an_output_named_like_the_datas_labels_or_a_video_is_one_line_and_leaves_nothing(tmp_path):
    """--output=DATA/p/metadata.json was read as a table ('not a readable pickle ... delete it'), which told the
    user to delete the labels, and left metadata.json.lock and metadata.json.parts/ in the data folder."""
    data = tmp_path / 'data'
    dfdc_part(str(data / 'p'), {'a.mp4': head(1)})
    before = sorted(os.listdir(data / 'p'))
    for script, args in [('create_video_embeddings.py', ['--output={}', '--face_weights=none']),
                         ('extract_audio.py', [f'--audio_dir={data / "p"}', '--index={}'])]:
        for name in ('metadata.json', 'a.mp4'):
            r = run_script(script, f'--data_dir={data}', *(a.format(data / 'p' / name) for a in args))
            said = one_line_exit_2(r, f'{data / "p" / name} is named like a video or a part\'s labels: give another')
            assert 'delete' not in said
    assert sorted(os.listdir(data / 'p')) == before


# ----------------------------------------------------------------------------- 11: two runs on one output
def extraction(data, audio_dir, **env):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'extract_audio.py'), f'--data_dir={data}',
                             f'--audio_dir={audio_dir}'], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **env))


def paused_after_a_video(proc, parts):
    """SIGSTOP `proc` once it has recorded a video: it holds the output and cannot finish meanwhile."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and any(n.endswith('.pkl') for n in os.listdir(parts)):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGSTOP)
    assert proc.poll() is None, 'the run finished before it could be paused'


def test_a_second_run_on_the_same_output_is_refused_and_the_first_completes(tmp_path):
    """It was two runs removing each other's parts (FileNotFoundError); a killed run's claim ends with it."""
    names = {f'c{k}_{n}': head(i + 1) for k in range(4) for i, n in enumerate(HEADS)}
    data, audio_dir = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), names)
    parts = audio_dir / (ea.INDEX + '.parts')
    first = extraction(data, audio_dir)
    paused_after_a_video(first, parts)
    try:
        second = extraction(data, audio_dir)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 2 and err.count('\n') == 1 and 'another run' in err, err
        assert str(audio_dir / ea.INDEX) in err
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    index, failed = cae.read_index(str(audio_dir))
    assert index.filename.tolist() == sorted(names) and failed == {}
    # killed outright, a run's claim goes with it: the rerun is not refused
    killed = extraction(data, tmp_path / 'again')
    paused_after_a_video(killed, tmp_path / 'again' / (ea.INDEX + '.parts'))
    killed.kill()
    killed.communicate()
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={tmp_path / "again"}')
    assert r.returncode == 0, r.stderr[-2000:]
    assert cae.read_index(str(tmp_path / 'again'))[0].equals(index)


def test_the_processes_of_one_run_share_the_output(tmp_path):
    """Two ranks of one torchrun run (one id), at the same time: rank 1 works beside a paused rank 0."""
    names = {f'c{k}_{n}': head(i + 1) for k in range(2) for i, n in enumerate(HEADS)}
    data, audio_dir = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), names)
    env = dict(WORLD_SIZE='2', LOCAL_WORLD_SIZE='2', TORCHELASTIC_RUN_ID='one-run')
    rank0 = extraction(data, audio_dir, RANK='0', **env)
    paused_after_a_video(rank0, audio_dir / (ea.INDEX + '.parts'))
    try:
        out, err = extraction(data, audio_dir, RANK='1', **env).communicate(timeout=300)
        assert 'rank 1/2: share done' in out, err[-2000:]
    finally:
        rank0.send_signal(signal.SIGCONT)
    out, err = rank0.communicate(timeout=300)
    assert rank0.returncode == 0, err[-2000:]
    assert cae.read_index(str(audio_dir))[0].filename.tolist() == sorted(names)


def test_a_journal_of_records_without_a_folder_as_predict_keeps_them(tmp_path):
    """predict.py's records have no folder: their key is the file name, in done() and after finish()."""
    journal = Journal(tmp_path / 'p.pkl')
    journal.add({'filename': 'a.mp4', 'rows': [{'filename': 'a.mp4', 'folder': '', 'label': 0.25}]})
    assert journal.done() == {'a.mp4'}
    table, failures = journal.finish(lambda rec: rec['rows'], sort_by=('filename',))
    assert table.filename.tolist() == ['a.mp4'] and failures == {}
    assert Journal(tmp_path / 'p.pkl').done() == {'a.mp4'}
