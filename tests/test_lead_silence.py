"""The leading-silence cue of test.py's shortcut check: extract_audio.py records the RMS of each track's first
0.5 s, create_audio_embedding.py and merge_embeddings.py carry it, and the store holds it; on real clips it
equals the RMS computed here from the audio decoded here."""
import os

import av
import numpy as np
import pandas as pd
import pytest
from conftest import testdata

import create_audio_embedding as cae
import extract_audio as ea
import merge_embeddings as me
from common import store

CLIPS = [('dfdc_sample', 'lynaeydofd.mp4'), ('dfdc_sample', 'brtujopkby.mp4'), ('talking_heads', '1.mp4')]


def first_half_second_rms(path):
    """The first 0.5 s of the first audio track, decoded here with PyAV at 16 kHz mono int16 (as
    extract_audio.py writes its WAVs), as an RMS in full scale."""
    with av.open(path) as container:
        resampler = av.AudioResampler(format='s16', layout='mono', rate=16000)
        chunks = [out.to_ndarray()[0] for frame in container.decode(audio=0) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
    head = np.concatenate(chunks)[:8000].astype(np.float64) / 32768
    return np.sqrt(np.mean(head ** 2)), head


@pytest.mark.parametrize('folder, name', CLIPS)
def test_the_leading_rms_of_a_real_clip_is_the_rms_of_its_first_half_second(folder, name, tmp_path):
    path = testdata(folder, name)
    want, head = first_half_second_rms(path)
    assert len(head) == 8000 and want > 0  # each of these clips has sound in its first 0.5 s
    row = ea.extract(path, folder, str(tmp_path))
    # the same int16 samples; only the order of a float64 sum of 8000 squares can differ
    assert row['lead_rms'] == pytest.approx(want, rel=1e-12)
    # the WAV's first 0.5 s give it too
    wav = ea.read_wav(os.path.join(tmp_path, row['wav']))
    assert np.sqrt(np.mean(wav[:8000].astype(np.float64) ** 2)) == pytest.approx(row['lead_rms'], rel=1e-12)


def test_leading_rms_of_silence_a_tone_and_nothing():
    rate = 16000
    t = np.arange(rate) / rate
    tone = np.round(16384 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # amplitude 0.5 full scale
    assert ea.leading_rms(tone, rate) == pytest.approx(0.5 / np.sqrt(2), rel=1e-4)  # 220 whole periods in 0.5 s
    late = np.concatenate([np.zeros(rate // 2, np.int16), tone])  # a track that starts with 0.5 s of silence
    assert ea.leading_rms(late, rate) == 0.0
    assert ea.leading_rms(tone[:800], rate) == pytest.approx(np.sqrt(np.mean((tone[:800] / 32768.0) ** 2)), rel=1e-12)
    assert np.isnan(ea.leading_rms(np.zeros(0, np.int16), rate))  # no sample: unknown, not silence


def test_the_leading_rms_reaches_the_store_and_an_older_table_has_none(tmp_path):
    """extract_audio.py's row -> create_audio_embedding.py's row -> merge_embeddings.py's table -> the store;
    a clip without a track has NaN (not 0), and a table made before the column has no lead_rms (None)."""
    path = testdata('dfdc_sample', 'lynaeydofd.mp4')
    row = ea.extract(path, 'part', str(tmp_path))
    no_track = {**ea.extract(path, 'part', str(tmp_path)), 'filename': 'silent.mp4', 'has_track': False,
                'wav': None, 'lead_rms': float('nan')}
    embedder = cae.AudioEmbedder()
    audio = pd.DataFrame([cae.embed_row(embedder, entry, str(tmp_path)) for entry in (row, no_track)])
    video = pd.DataFrame([{'filename': name, 'folder': 'part', 'label': label, 'original': None,
                           'video_embedding': np.zeros((3, 8), np.float16), 'boxes': np.zeros((3, 4), np.float32)}
                          for name, label in (('lynaeydofd.mp4', 0), ('silent.mp4', 1))])
    merged, _ = me.merge(video, audio)
    store.save(merged, str(tmp_path / 'merged.pkl'))
    with store.open_store(str(tmp_path / 'merged.pkl')) as table:
        assert table.lead_rms[0] == pytest.approx(row['lead_rms'], rel=1e-6)  # float32 in the store
        assert np.isnan(table.lead_rms[1])
    # an audio index made before the column: NaN in the audio table; a merged table without it: None
    older = {k: v for k, v in row.items() if k != 'lead_rms'}
    assert np.isnan(cae.embed_row(embedder, older, str(tmp_path))['lead_rms'])
    store.save(merged.drop(columns='lead_rms'), str(tmp_path / 'older.pkl'))
    with store.open_store(str(tmp_path / 'older.pkl')) as table:
        assert table.lead_rms is None and table.face_size is not None
