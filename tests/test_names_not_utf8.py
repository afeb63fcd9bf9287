"""A file name that is not UTF-8 (a Latin-1 'caf\\xe9.mp4' of an old archive) beside good ones, through every
stage, training, test.py and predict.py: every output is written and names that very file by its bytes
(common.stage.NAMES); one such name on a broken file is that file's recorded failure, bytes and all. And
predict.py's inputs: .ts and .mpg files get their rows, files not named like a video are counted.
Real clips (linked into a temporary folder), the scripts run as a user runs them."""
import csv
import os

import av
import numpy as np
import pandas as pd
import pytest

from audio_clips import dfdc_part, run_script
from common.stage import NAMES
from conftest import testdata

CAFE = os.fsdecode(b'caf\xe9.mp4')  # 'caf\udce9.mp4': how Python holds the Latin-1 name
BROKEN = os.fsdecode(b'd\xe9fectueux.mp4')  # a Latin-1 name on a file that is no video
HEADS = ['1.mp4', '2.mp4', '3.mp4', '4.mp4', '5.mp4']


def read_csv(path):
    with open(path, newline='', encoding='utf-8', errors=NAMES) as f:
        return list(csv.DictReader(f))


def to_mpeg2(src, dst):
    """dst: src's pictures as MPEG-2 video in an MPEG program stream (.mpg), as DVDs and old archives hold."""
    with av.open(str(src)) as inp, av.open(str(dst), 'w') as out:
        vin = inp.streams.video[0]
        stream = out.add_stream('mpeg2video', rate=25)
        stream.width, stream.height, stream.pix_fmt = vin.codec_context.width, vin.codec_context.height, 'yuv420p'
        stream.bit_rate = 4_000_000
        for i, frame in enumerate(inp.decode(vin)):
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format='rgb24'), format='rgb24')
            picture.pts = i
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def to_transport_stream(src, dst):
    """dst: src's streams copied packet by packet into an MPEG transport stream (.ts), as broadcasts hold."""
    with av.open(str(src)) as inp, av.open(str(dst), 'w') as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], inp.streams.audio[0])}
        for packet in inp.demux(*[inp.streams[i] for i in streams]):
            if packet.dts is not None:  # not the demuxer's flush packet
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    """Every stage, training, test.py (every video) and predict.py, on a DFDC part of five talking heads, the
    second named CAFE, and a broken file named BROKEN; predict.py's input also holds a .ts, a .mpg and a text
    file and a metadata.json. Returns (folder, {step: completed process})."""
    heads = testdata('talking_heads')
    tmp = tmp_path_factory.mktemp('latin1')
    names = ['a.mp4', CAFE, 'c.mp4', 'd.mp4', 'e.mp4']
    files = {name: os.path.join(heads, h) for name, h in zip(names, HEADS)}
    labels = {name: ('FAKE' if i % 2 else 'REAL') for i, name in enumerate(names)}
    dfdc_part(str(tmp / 'data' / 'part'), {**files, BROKEN: b'not a video'}, {**labels, BROKEN: 'REAL'})
    inp = tmp / 'in'
    inp.mkdir()
    for name in ('a.mp4', CAFE):
        os.symlink(files[name], inp / name)
    (inp / BROKEN).write_bytes(b'not a video')
    to_transport_stream(os.path.join(heads, '3.mp4'), inp / 'x.ts')
    to_mpeg2(os.path.join(heads, '4.mp4'), inp / 'x.mpg')
    (inp / 'notes.txt').write_text('not a video, not named like one')
    (inp / 'metadata.json').write_text('{}')  # a DFDC part's own file: not counted as passed over
    steps = {
        'video': ('create_video_embeddings.py', f'--data_dir={tmp / "data"}', f'--output={tmp / "video.pkl"}',
                  '--face_weights=none', '--device=cpu'),
        'extract': ('extract_audio.py', f'--data_dir={tmp / "data"}', f'--audio_dir={tmp / "audio"}'),
        'audio': ('create_audio_embedding.py', f'--audio_dir={tmp / "audio"}', f'--output={tmp / "audio.pkl"}',
                  '--device=cpu'),
        'merge': ('merge_embeddings.py', f'--video_table={tmp / "video.pkl"}', f'--audio_table={tmp / "audio.pkl"}',
                  f'--output={tmp / "merged.pkl"}'),
        'train': ('training.py', f'--dataset={tmp / "merged.pkl"}', f'--out_dir={tmp / "run"}', '--max_epochs=2',
                  '--val_fraction=0.4'),
        'test': ('test.py', f'--dataset={tmp / "merged.pkl"}', f'--checkpoint={tmp / "run" / "best.pt"}',
                 f'--report={tmp / "report.json"}', '--subset=all'),
        'predict': ('predict.py', f'--input={inp}', f'--checkpoint={tmp / "run" / "best.pt"}',
                    f'--output={tmp / "submission.csv"}', '--face_weights=none', '--device=cpu'),
        'explain': ('predict.py', f'--input={inp / CAFE}', f'--checkpoint={tmp / "run" / "best.pt"}',
                    f'--explain={tmp / "figures"}', '--face_weights=none', '--device=cpu'),
        'extract again': ('extract_audio.py', f'--data_dir={tmp / "data"}', f'--audio_dir={tmp / "audio"}'),
    }
    done = {}
    for step, args in steps.items():
        done[step] = run_script(*args)
        assert done[step].returncode == 0, (step, done[step].stdout[-2000:], done[step].stderr[-2000:])
    return tmp, done


def test_every_stage_holds_the_latin1_name_and_records_the_broken_one_by_its_bytes(chain):
    tmp, done = chain
    for table in ('video.pkl', 'audio.pkl', 'merged.pkl'):
        rows = pd.read_pickle(tmp / table)
        assert sorted(rows.filename) == sorted(['a.mp4', CAFE, 'c.mp4', 'd.mp4', 'e.mp4']), table
        failures = tmp / f'{table}.failures.csv'
        if table != 'merged.pkl':
            assert [(r['folder'], r['filename']) for r in read_csv(failures)] == [('part', BROKEN)], table
            assert b'd\xe9fectueux.mp4,part,' in failures.read_bytes(), table  # the bytes of the name
    index = pd.read_pickle(tmp / 'audio' / 'index.pkl').set_index('filename')
    assert index.at[CAFE, 'has_track'] and index.at[CAFE, 'samples'] > 16000
    assert os.path.exists(os.path.join(os.fsencode(tmp / 'audio'), b'part', b'caf\xe9.mp4.wav'))
    audio = pd.read_pickle(tmp / 'audio.pkl').set_index('filename')
    assert audio.at[CAFE, 'audio_status'] == 'ok'
    video = pd.read_pickle(tmp / 'video.pkl').set_index('filename')
    assert len(video.at[CAFE, 'video_embedding']) > 10 and video.at[CAFE, 'label'] == 1
    assert 'failed: part/d\\udce9fectueux.mp4' in done['video'].stdout  # printed escaped, as Python's stderr
    assert '0 videos to extract' in done['extract again'].stdout  # the failures file read back: BROKEN done


def test_test_py_and_predict_py_write_the_latin1_name_and_agree_on_it(chain):
    tmp, done = chain
    theirs = {r['filename']: float(r['p_fake']) for r in read_csv(tmp / 'report_predictions.csv')}
    assert sorted(theirs) == sorted(['a.mp4', CAFE, 'c.mp4', 'd.mp4', 'e.mp4'])
    assert b'\ncaf\xe9.mp4,part,1,' in (tmp / 'report_predictions.csv').read_bytes()
    submission = tmp / 'submission.csv'
    ours = {r['filename']: float(r['label']) for r in read_csv(submission)}
    assert sorted(ours) == sorted(['a.mp4', CAFE, BROKEN, 'x.ts', 'x.mpg'])
    assert b'\ncaf\xe9.mp4,0.' in submission.read_bytes()
    for name in ('a.mp4', CAFE):  # the same videos in both: predict.py gives the stage chain's probability
        assert abs(ours[name] - np.clip(theirs[name], 0.01, 0.99)) < 1e-4, (name, ours[name], theirs[name])
    fallbacks = {r['filename']: r['fallback'] for r in read_csv(tmp / 'submission.fallbacks.csv')}
    assert list(fallbacks) == [BROKEN] and 'unreadable video' in fallbacks[BROKEN]
    assert b'd\xe9fectueux.mp4,0.' in (tmp / 'submission.fallbacks.csv').read_bytes()


def test_ts_and_mpg_files_get_their_rows_and_other_files_are_counted(chain):
    """.ts and .mpg files were passed over without a row or a word: the submission lacked them."""
    tmp, done = chain
    rows = {r['filename']: r for r in read_csv(tmp / 'submission.csv')}
    assert {'x.ts', 'x.mpg'} <= set(rows)
    fallbacks = {r['filename'] for r in read_csv(tmp / 'submission.fallbacks.csv')}
    assert not {'x.ts', 'x.mpg'} & fallbacks  # read, faces found: the network's own prediction
    assert f'1 files in {tmp / "in"} not named like a video' in done['predict'].stdout
    assert 'e.g. notes.txt' in done['predict'].stdout and 'metadata.json' not in done['predict'].stdout


def test_one_video_under_the_latin1_name_is_printed_escaped_and_drawn(chain):
    """explain.py's title with the name raised TypeError in matplotlib (no font has a surrogate): the run died."""
    tmp, done = chain
    line = done['explain'].stdout.strip().splitlines()[-1]
    assert line.startswith('caf\\udce9.mp4: p(FAKE) = '), line  # as Python prints the name on stderr
    assert line.endswith(f'(figure: {tmp / "figures"}/caf\\udce9.mp4.png)'), line  # where it is: it said nothing
    submitted = {r['filename']: float(r['label']) for r in read_csv(tmp / 'submission.csv')}[CAFE]
    assert abs(float(line.split(' = ')[1].split()[0]) - submitted) <= 1e-4  # 4 decimals printed
    png = os.path.join(os.fsencode(tmp / 'figures'), b'caf\xe9.mp4.png')
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
