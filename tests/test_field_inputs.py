"""Inputs met in the field: a disk that fills while the WAVs are written, a data tree with a link loop or two links
to one part, and a metadata.json name that is not UTF-8 text. Real clips, real files."""
import contextlib
import csv
import json
import os
import sys

import pandas as pd
import pytest

import extract_audio as ea
from audio_clips import dfdc_part, run_script
from common import config
from common.dataset import plan
from common.stage import Journal, atomic_path
from conftest import testdata


def head(i):
    return testdata('talking_heads', f'{i}.mp4')


def failures_csv(output):
    """{folder/filename: reason} of OUTPUT.failures.csv, read as a user would."""
    with open(f'{output}.failures.csv', newline='', encoding='utf-8') as f:
        return {f"{row['folder']}/{row['filename']}": row['reason'] for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- a full disk
def test_a_disk_full_while_the_wavs_are_written_ends_the_run_and_fails_no_video(tmp_path, monkeypatch, capsys):
    """libsndfile's own write failed with 'System error.' (no errno): every video left got a failure, which a
    rerun skipped, and the run ended with exit 0. /dev/full answers every write with ENOSPC, as a full disk."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'a.mp4': head(2), 'b.mp4': head(3)})

    @contextlib.contextmanager
    def on_a_full_disk(path):
        with atomic_path(path):  # the real one, its temporary file left unwritten
            yield '/dev/full'
    monkeypatch.setattr(ea, 'atomic_path', on_a_full_disk)
    monkeypatch.setattr(ea, 'DATA_DIR', str(data))
    monkeypatch.setattr(ea, 'AUDIO_DIR', str(audio))
    monkeypatch.setattr(sys, 'argv', ['extract_audio.py'])
    with pytest.raises(SystemExit) as exit_:
        config.cli(ea.main)
    assert exit_.value.code == 2
    wav = audio / 'p' / 'a.mp4.wav'
    assert capsys.readouterr().err.splitlines()[-1] == f'error: {wav}: No space left on device'  # after tqdm's bar
    assert Journal(audio / ea.INDEX).done() == set()  # no failure recorded: a rerun does both videos

    # room on the disk again; in this process, which holds the output's lock (common.stage.claim)
    monkeypatch.setattr(ea, 'atomic_path', atomic_path)
    config.cli(ea.main)
    assert '2 videos to extract' in capsys.readouterr().out
    assert pd.read_pickle(audio / ea.INDEX).wav.tolist() == ['p/a.mp4.wav', 'p/b.mp4.wav']
    assert failures_csv(audio / ea.INDEX) == {}


# ----------------------------------------------------------------------------- links in the data tree
def test_a_link_loop_and_a_second_link_to_a_part_list_each_video_once(tmp_path):
    """q/p/up -> .. made every video appear again under p/up/p/up/... (41 times) before the walk gave up."""
    data = tmp_path / 'q'
    dfdc_part(str(data / 'p'), {'a.mp4': head(1), 'b.mp4': head(2)})
    os.symlink('..', data / 'p' / 'up')  # the loop
    todo, failures, skipped = plan(str(data))
    assert [(rel, name) for rel, name, _, _ in todo] == [('p', 'a.mp4'), ('p', 'b.mp4')]
    assert [os.path.realpath(path) for _, _, path, _ in todo] == [os.path.realpath(head(1)),
                                                                   os.path.realpath(head(2))]
    assert failures == [] and skipped == 0
    (data / 'z').mkdir()
    os.symlink(os.path.join('..', 'p'), data / 'z' / 'again')  # the same part once more, reached after p
    assert [(rel, name) for rel, name, _, _ in plan(str(data))[0]] == [('p', 'a.mp4'), ('p', 'b.mp4')]
    os.symlink('.', data / 'a_self')  # the data folder itself: seen already
    assert [(rel, name) for rel, name, _, _ in plan(str(data))[0]] == [('p', 'a.mp4'), ('p', 'b.mp4')]
    os.symlink('p', data / 'a_link')  # the part, reached first by the sorted walk: once, under the link
    assert [(rel, name) for rel, name, _, _ in plan(str(data))[0]] == [('a_link', 'a.mp4'), ('a_link', 'b.mp4')]


# ----------------------------------------------------------------------------- names that are not UTF-8 text
def test_a_metadata_name_with_a_lone_surrogate_is_refused_and_the_run_ends_well_twice(tmp_path):
    """json.load gives "sur\\ud800.mp4" for the escape; writing the failures file then raised UnicodeEncodeError
    at the end of every run, and of every rerun."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'good.mp4': head(4)})
    meta = json.loads((data / 'p' / 'metadata.json').read_text())
    meta['sur\ud800.mp4'] = {'label': 'REAL'}
    text = json.dumps(meta)  # ensure_ascii: the surrogate as the escape \ud800, as a JSON writer may give it
    assert '\\ud800' in text
    (data / 'p' / 'metadata.json').write_text(text)
    for run in range(2):  # the rerun reads the failures file and skips the refused name
        r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}')
        assert r.returncode == 0, r.stderr[-2000:]
        assert pd.read_pickle(audio / ea.INDEX).filename.tolist() == ['good.mp4']
        reasons = failures_csv(audio / ea.INDEX)
        assert list(reasons) == ['p/sur\\ud800.mp4'], reasons  # the name, its surrogate escaped
        assert 'that no file name holds: refused' in reasons['p/sur\\ud800.mp4']
    assert '0 videos to extract' in r.stdout


def test_a_video_named_as_long_as_the_file_system_allows_gets_its_wav_embedding_and_figure(tmp_path):
    """A 250-byte name (a downloaded title) is a legal file name, but NAME.wav's temporary, .NAME.wav.xxxxxxxx.tmp,
    is not: OSError 'File name too long', recorded as an unexpected error (a bug); predict.py's figure the same."""
    long_a, long_b = 'é' * 100 + 'a' * 46 + '.mp4', 'é' * 100 + 'b' * 46 + '.mp4'  # 250 bytes each, one start
    assert len(os.fsencode(long_a)) == 250
    data, audio, out = tmp_path / 'data', tmp_path / 'audio', tmp_path / 'audio.pkl'
    dfdc_part(str(data / 'p'), {long_a: head(2), long_b: head(3)})
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}')
    assert r.returncode == 0 and '0 failed' in r.stdout, r.stdout[-3000:]
    wavs = pd.read_pickle(audio / ea.INDEX).set_index('filename').wav
    assert len(set(wavs)) == 2 and all(w.startswith('p/' + 'é' * 100) and w.endswith('.wav') for w in wavs)
    assert all(len(os.fsencode(os.path.basename(w))) <= 255 - 14 for w in wavs), wavs  # room for the temporary
    r = run_script('create_audio_embedding.py', f'--audio_dir={audio}', f'--output={out}', '--device=cpu')
    assert r.returncode == 0 and sorted(pd.read_pickle(out).filename) == [long_a, long_b], r.stdout[-2000:]
    import pathlib
    from gend_models import tiny_gend
    weights = pathlib.Path(tmp_path / 'gend')
    weights.mkdir()
    tiny_gend(weights)
    r = run_script('predict.py', f'--input={data / "p"}', f'--output={tmp_path / "s.csv"}', '--face_encoder=gend',
                   f'--face_weights={weights}', '--device=cpu', '--frame_step=30', f'--explain={tmp_path / "fig"}')
    assert r.returncode == 0 and '0 fallbacks' in r.stdout, r.stdout[-3000:]
    assert len([n for n in os.listdir(tmp_path / 'fig') if n.endswith('.png')]) == 2


# ----------------------------------------------------------------------------- an audio track that starts late
def test_an_audio_track_muxed_two_seconds_late_keeps_its_silence_first(tmp_path):
    """A clip whose voice starts at 2 s (its audio track's first packet at 2 s, as an editor or a muxer writes a
    late track): the WAV began with the voice, so the lead's loudness (test.py's leading-silence check) was the
    voice's, not the silence the clip plays, and the voice sat 2 s early."""
    import av
    import numpy as np
    path, rate, late = tmp_path / 'late.mp4', 44100, 2.0
    with av.open(head(2)) as inp:
        frames = [f.to_ndarray(format='rgb24')[:840:4, :840:4] for _, f in zip(range(75), inp.decode(video=0))]
    with av.open(head(2)) as inp:
        resampler = av.AudioResampler(format='fltp', layout='mono', rate=rate)
        voice = np.concatenate([g.to_ndarray() for f in inp.decode(audio=0) for g in resampler.resample(f)], 1)
    with av.open(str(path), 'w') as out:
        video = out.add_stream('libx264', rate=25)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], 'yuv420p'
        audio = out.add_stream('aac', rate=rate, layout='mono')
        for rgb in frames:  # 3 s of the clip's pictures
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), 'rgb24')))
        out.mux(video.encode())
        for start in range(0, rate, 1024):  # 1 s of its voice, from 2 s on
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(voice[:, start:start + 1024]), 'fltp', 'mono')
            frame.sample_rate, frame.pts = rate, start + int(late * rate)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    track = ea.decode_audio(str(path))
    lead = np.flatnonzero(track.pcm)[0] / ea.SAMPLE_RATE  # where the first sound is
    assert late - 0.05 < lead < late + 0.05, lead  # AAC's priming moves it by a frame at most (23 ms)
    assert late + 0.95 < len(track.pcm) / ea.SAMPLE_RATE < late + 1.1
    assert ea.leading_rms(track.pcm) == 0.0
    with av.open(head(2)) as clip:  # the real clip's track starts with its video: nothing added
        assert ea.late_start(clip, 0.0) == 0.0
    assert ea.leading_rms(ea.decode_audio(head(2)).pcm) > 0
