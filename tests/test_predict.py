"""predict.py: one pass from raw videos to submission.csv, equal to the stage scripts' chain."""
import csv
import os

import numpy as np
import pandas as pd
import pytest

from audio_clips import dfdc_part, remux, run_script
from conftest import testdata

HEADS = ['1.mp4', '2.mp4', '3.mp4', '4.mp4', '5.mp4']


def read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    """The stage scripts, one after the other, on real clips; then a checkpoint trained on them and
    test.py's predictions for them."""
    heads = testdata('talking_heads')
    tmp = tmp_path_factory.mktemp('chain')
    data = tmp / 'data'
    labels = {n: ('FAKE' if i % 2 else 'REAL') for i, n in enumerate(HEADS)}
    dfdc_part(str(data / 'part'), {n: os.path.join(heads, n) for n in HEADS}, labels)
    steps = [
        ('create_video_embeddings.py', f'--data_dir={data}', f'--output={tmp / "video.pkl"}', '--face_weights=none'),
        ('extract_audio.py', f'--data_dir={data}', f'--audio_dir={tmp / "audio"}'),
        ('create_audio_embedding.py', f'--audio_dir={tmp / "audio"}', f'--output={tmp / "audio.pkl"}'),
        ('merge_embeddings.py', f'--video_table={tmp / "video.pkl"}', f'--audio_table={tmp / "audio.pkl"}',
         f'--output={tmp / "merged.pkl"}'),
        ('training.py', f'--dataset={tmp / "merged.pkl"}', f'--out_dir={tmp / "run"}', '--max_epochs=3',
         '--val_fraction=0.4'),
        ('test.py', f'--dataset={tmp / "merged.pkl"}', f'--checkpoint={tmp / "run" / "best.pt"}',
         f'--report={tmp / "report.json"}'),
    ]
    for step in steps:
        r = run_script(*step)
        assert r.returncode == 0, (step[0], r.stdout[-1500:], r.stderr[-1500:])
    return tmp


def test_predict_equals_the_stage_chain_on_real_clips(chain):
    heads = testdata('talking_heads')
    out = chain / 'submission.csv'
    r = run_script('predict.py', f'--input={heads}', f'--checkpoint={chain / "run" / "best.pt"}',
                   f'--output={out}', '--face_weights=none')
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(out)
    assert [row['filename'] for row in rows] == HEADS
    ours = {row['filename']: float(row['label']) for row in rows}
    theirs = pd.read_csv(chain / 'report_predictions.csv').set_index('filename')['p_fake']
    for name in HEADS:
        assert abs(ours[name] - np.clip(theirs[name], 0.01, 0.99)) < 1e-4, (name, ours[name], theirs[name])
    assert '0 fallbacks' in r.stdout


def test_every_bad_file_gets_a_row_and_the_fallbacks_are_reported(chain, tmp_path):
    import make_sample_dataset as sample
    heads = testdata('talking_heads')
    folder = tmp_path / 'in'
    folder.mkdir()
    good = os.path.join(heads, '2.mp4')
    (folder / 'zero.mp4').write_bytes(b'')
    (folder / 'truncated.mp4').write_bytes(open(good, 'rb').read()[:30000])
    (folder / 'text.mp4').write_text('not a video')
    remux(good, folder / 'silent_video.mp4')  # the video stream only: no audio track
    sample.write_clip(str(folder / 'noface.mp4'), [np.full((160, 160, 3), 70, np.uint8)] * 30, (160, 160),
                      sample.voice(140, 3.0, 16000, 0), 30, 16000)
    os.symlink(good, folder / 'vidéo à tester.mp4')
    out = tmp_path / 'sub.csv'
    r = run_script('predict.py', f'--input={folder}', f'--checkpoint={chain / "run" / "best.pt"}',
                   f'--output={out}', '--face_weights=none')
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row['filename']: float(row['label']) for row in read_csv(out)}
    assert sorted(rows) == sorted(['zero.mp4', 'truncated.mp4', 'text.mp4', 'silent_video.mp4', 'noface.mp4',
                                   'vidéo à tester.mp4'])
    assert all(0.01 <= p <= 0.99 for p in rows.values())
    fallbacks = {row['filename']: row['fallback'] for row in read_csv(tmp_path / 'sub.fallbacks.csv')}
    assert set(fallbacks) == {'zero.mp4', 'truncated.mp4', 'text.mp4', 'noface.mp4'}
    assert 'audio-only' in fallbacks['noface.mp4']  # it has a voice
    assert 'training prior' in fallbacks['text.mp4'] and 'unreadable' in fallbacks['zero.mp4']
    assert '4 fallbacks' in r.stdout


def test_one_video_prints_its_probability_and_missing_paths_are_one_line(chain, tmp_path):
    heads = testdata('talking_heads')
    ckpt = chain / 'run' / 'best.pt'
    r = run_script('predict.py', f'--input={os.path.join(heads, "3.mp4")}', f'--checkpoint={ckpt}',
                   f'--output={tmp_path / "one.csv"}', '--face_weights=none')
    assert r.returncode == 0 and '3.mp4: p(FAKE) = 0.' in r.stdout
    for args in ([f'--input={tmp_path / "nothing"}', f'--checkpoint={ckpt}'],
                 [f'--input={heads}', f'--checkpoint={tmp_path / "none.pt"}']):
        r = run_script('predict.py', *args, f'--output={tmp_path / "x.csv"}', '--face_weights=none')
        assert r.returncode == 2 and r.stderr.strip().count('\n') == 0 and 'does not exist' in r.stderr
