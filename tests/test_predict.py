"""predict.py: one pass from raw videos to submission.csv, equal to the stage scripts' chain; every input
gets a row whatever goes wrong on it; resumed work belongs to the same checkpoint and settings."""
import csv
import dataclasses
import filecmp
import json
import math
import os
import re
import shutil
import sys

import av
import numpy as np
import pandas as pd
import pytest
import torch

import DetectionPipeline as dp
from faces import nets as fp_nets, pipeline as fp
import create_audio_embedding as cae
import extract_audio as ea
import make_sample_dataset as sample
import predict
from audio_clips import dfdc_part, garble_audio, remux, run_script
from common import config
from conftest import testdata
from model import audio_only_logit, prior_shift, sigmoid

HEADS = ['1.mp4', '2.mp4', '3.mp4', '4.mp4', '5.mp4']


def read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def labels(path):
    return {row['filename']: float(row['label']) for row in read_csv(path)}


def fallbacks_of(out):
    """The fallbacks file beside submission `out`: {filename: row}."""
    return {row['filename']: row for row in read_csv(os.path.splitext(out)[0] + '.fallbacks.csv')}


def voiced_clip(path, size, seed=0):
    """A 1 s clip of one grey size x size picture (no face) and a voice (AAC): H.264 in MP4."""
    sample.write_clip(str(path), [np.full((size, size, 3), 70, np.uint8)] * 30, (size, size),
                      sample.voice(140, 3.0, 16000, seed), 30, 16000)
    return path


def audio_only(src, dst):
    """dst = src's audio stream alone, packet by packet (not re-encoded): an .mp4 with no video stream."""
    with av.open(str(src)) as inp, av.open(str(dst), 'w') as out:
        stream = out.add_stream_from_template(inp.streams.audio[0])
        for packet in inp.demux(inp.streams.audio[0]):
            if packet.dts is not None:  # not the demuxer's flush packet
                packet.stream = stream
                out.mux(packet)
    return dst


def run_main(monkeypatch, *args):
    """predict.py's command line in this process (its networks patched where a test needs it); the
    settings of predict, DetectionPipeline and create_audio_embedding are restored after the test."""
    for module in (predict, dp, cae):
        for name, value in config.constants(module).items():
            monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(sys, 'argv', ['predict.py', *map(str, args)])
    with torch.no_grad():
        config.cli(predict.main)


def counts(stdout):
    """(videos predicted now, fallbacks, of them after an unexpected error) from the summary line."""
    m = re.search(r'(\d+) predicted now.*; (\d+) fallbacks, (\d+) of them after an unexpected error', stdout)
    assert m, stdout
    return tuple(map(int, m.groups()))


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    """The stage scripts, one after the other, on real clips; then a checkpoint trained on them and
    test.py's predictions for them."""
    heads = testdata('talking_heads')
    tmp = tmp_path_factory.mktemp('chain')
    data = tmp / 'data'
    labels = {n: ('FAKE' if i % 2 else 'REAL') for i, n in enumerate(HEADS)}
    dfdc_part(str(data / 'part'), {n: os.path.join(heads, n) for n in HEADS}, labels)
    # on the CPU, as predict.py below: on a GPU the decoding workers mix videos in the networks' float16
    # batches, so two runs agree to ~1e-3, not to the 1e-4 asked here (README: reproducibility)
    steps = [
        ('create_video_embeddings.py', f'--data_dir={data}', f'--output={tmp / "video.pkl"}', '--face_weights=none',
         '--device=cpu'),
        ('extract_audio.py', f'--data_dir={data}', f'--audio_dir={tmp / "audio"}'),
        ('create_audio_embedding.py', f'--audio_dir={tmp / "audio"}', f'--output={tmp / "audio.pkl"}',
         '--device=cpu'),
        ('merge_embeddings.py', f'--video_table={tmp / "video.pkl"}', f'--audio_table={tmp / "audio.pkl"}',
         f'--output={tmp / "merged.pkl"}'),
        ('training.py', f'--dataset={tmp / "merged.pkl"}', f'--out_dir={tmp / "run"}', '--max_epochs=3',
         '--val_fraction=0.6'),  # 2 of the 3 reals held out (the 2 fakes are one group): a prior of 2/3, not 0.5
        # every video, the held-out ones and the others: predict.py's are compared with all of them
        ('test.py', f'--dataset={tmp / "merged.pkl"}', f'--checkpoint={tmp / "run" / "best.pt"}',
         f'--report={tmp / "report.json"}', '--subset=all'),
    ]
    for step in steps:
        r = run_script(*step)
        assert r.returncode == 0, (step[0], r.stdout[-1500:], r.stderr[-1500:])
    recorded_as(tmp / 'run' / 'best.pt', tmp / 'run' / 'fast.pt', frame_step=30)  # for FAST's quicker runs
    return tmp


def recorded_as(ckpt, path, **face):
    """`ckpt` at `path`, the same network, as if its training table's faces had been made with the
    DetectionPipeline settings `face`: predict.py makes its faces so."""
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    settings = json.loads(state['dataset']['attrs']['face_settings'])
    settings.update({f'--{k}': v for k, v in face.items()})
    state['dataset']['attrs']['face_settings'] = json.dumps(settings)
    torch.save(state, path)
    return path


def test_predict_equals_the_stage_chain_on_real_clips(chain):
    heads = testdata('talking_heads')
    out = chain / 'submission.csv'
    r = run_script('predict.py', f'--input={heads}', f'--checkpoint={chain / "run" / "best.pt"}',
                   f'--output={out}', '--face_weights=none', '--device=cpu')
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(out)
    assert [row['filename'] for row in rows] == HEADS
    ours = {row['filename']: float(row['label']) for row in rows}
    theirs = pd.read_csv(chain / 'report_predictions.csv').set_index('filename')['p_fake']
    for name in HEADS:
        # the same face embeddings (this CPU, each video's crops in the same batches); the network's float32 sums
        # over another batch of windows (~1e-7) and the CSV's 6 decimals: 1e-4 leaves room for an embedding
        # value one bfloat16 step off; another video's probability differs by far more
        assert abs(ours[name] - np.clip(theirs[name], 0.01, 0.99)) < 1e-4, (name, ours[name], theirs[name])
    assert '0 fallbacks' in r.stdout


@pytest.fixture(scope='module')
def odd_run(chain, tmp_path_factory):
    """predict.py, once, on a folder of broken, odd and real files: (folder, submission, completed process)."""
    heads = testdata('talking_heads')
    folder = tmp_path_factory.mktemp('odd') / 'in'
    folder.mkdir()
    good = os.path.join(heads, '2.mp4')
    (folder / 'zero.mp4').write_bytes(b'')
    (folder / 'truncated.mp4').write_bytes(open(good, 'rb').read()[:30000])
    (folder / 'text.mp4').write_text('not a video')
    remux(good, folder / 'silent_video.mp4')  # the video stream only: no audio track
    voiced_clip(folder / 'noface.mp4', 160)
    os.symlink(good, folder / 'vidéo à tester.mp4')
    voiced_clip(folder / 'tiny.mp4', 16, seed=1)  # 16x16: MTCNN raised on it (torch.cat of an empty list)
    os.symlink(folder / 'gone.mp4', folder / 'dangling.mp4')  # a link to nothing
    audio_only(good, folder / 'audio_only.mp4')
    garble_audio(good, folder / 'bad_audio.mp4')  # silent_video.mp4's video, an audio track that breaks at 0.4 s
    out = folder.parent / 'sub.csv'
    r = run_script('predict.py', f'--input={folder}', f'--checkpoint={chain / "run" / "best.pt"}',
                   f'--output={out}', '--face_weights=none', '--device=cpu')
    return folder, out, r


def test_every_bad_file_gets_a_row_and_the_fallbacks_are_reported(odd_run):
    folder, out, r = odd_run
    assert r.returncode == 0, r.stderr[-2000:]
    rows = labels(out)
    assert sorted(rows) == sorted(['zero.mp4', 'truncated.mp4', 'text.mp4', 'silent_video.mp4', 'noface.mp4',
                                   'vidéo à tester.mp4', 'tiny.mp4', 'dangling.mp4', 'audio_only.mp4',
                                   'bad_audio.mp4'])
    assert all(0.01 <= p <= 0.99 for p in rows.values())
    fallbacks = {name: row['fallback'] for name, row in fallbacks_of(out).items()}
    assert set(fallbacks) == {'zero.mp4', 'truncated.mp4', 'text.mp4', 'noface.mp4', 'tiny.mp4', 'dangling.mp4',
                              'audio_only.mp4', 'bad_audio.mp4'}
    assert 'audio-only' in fallbacks['noface.mp4']  # it has a voice
    assert 'unreadable' in fallbacks['zero.mp4'] and '8 fallbacks' in r.stdout


def test_a_video_whose_audio_breaks_is_scored_without_it_and_says_so(odd_run):
    """Its audio track failing to decode was passed over in silence: the video was scored as one without audio,
    and neither the submission's fallbacks nor the summary said so (the stage chain records 'audio failed')."""
    folder, out, r = odd_run
    fallback = fallbacks_of(out)['bad_audio.mp4']
    assert re.fullmatch(r'audio not decoded \(audio decoding failed after 0\.\d+ s: .*Invalid data.*\): scored '
                        r'without it', fallback['fallback']) and fallback['unexpected'] == 'False'
    # the network's own score of the same video stream without audio (silent_video.mp4 has the same packets):
    # the same faces through the same computation, so the same digits
    rows = labels(out)
    assert rows['bad_audio.mp4'] == rows['silent_video.mp4'] and 'silent_video.mp4' not in fallbacks_of(out)


def test_a_video_with_neither_face_nor_voice_gets_the_prior(chain, odd_run):
    """No evidence: PRIOR itself (test.py scores such a video alike). It got the training set's share of
    fakes, which on a set of another share (DFDC's test sets: half) costs log loss."""
    folder, out, r = odd_run
    ckpt = torch.load(chain / 'run' / 'best.pt', map_location='cpu', weights_only=True)
    assert abs(ckpt['prior'] - 0.5) > 0.01  # the old answer would differ
    assert fallbacks_of(out)['text.mp4']['fallback'].endswith('; prior 0.5')
    assert labels(out)['text.mp4'] == 0.5


def test_a_face_embedding_that_is_not_finite_is_a_fallback_not_a_nan_row(chain):
    """inf in a float16 face embedding (a value above 65504) made the network's logit NaN, and the
    submission a NaN row that was not counted as a fallback."""
    predictor = predict.Predictor(str(chain / 'run' / 'best.pt'), 'cpu')
    faces = predictor.pipeline(os.path.join(testdata('talking_heads'), HEADS[0]))
    voice = predict.voice_of(predictor.audio, os.path.join(testdata('talking_heads'), HEADS[0]))
    good = predictor.predict(faces, voice)
    assert not good.fallback and 0 < good.p_fake < 1
    faces.tracks[0].embeddings[3, 7] = np.inf
    bad = predictor.predict(faces, voice)
    assert np.isfinite(bad.p_fake) and bad.unexpected
    assert bad.fallback.startswith('the network gave no finite logit') and 'audio-only model' in bad.fallback


def test_a_tiny_video_costs_only_its_own_row(odd_run):
    """16x16 frames made MTCNN raise a RuntimeError that ended the run: no submission at all. Such a
    frame has no face: the tiny clip gets the no-face fallback row (its voice: the audio-only model), not
    an unexpected error, and the real clips beside it their network's prediction."""
    folder, out, r = odd_run
    assert r.returncode == 0, r.stderr[-2000:]
    rows, fallbacks = labels(out), fallbacks_of(out)
    assert 'tiny.mp4' in rows and fallbacks['tiny.mp4']['unexpected'] == 'False'
    assert re.fullmatch(r'no face found in any of the \d+ frames searched \(of its \d+\); audio-only model',
                        fallbacks['tiny.mp4']['fallback'])
    assert 'vidéo à tester.mp4' in rows and 'vidéo à tester.mp4' not in fallbacks
    assert [name for name, row in fallbacks.items() if row['unexpected'] == 'True'] == []
    assert counts(r.stdout)[1:] == (8, 0)


def test_a_dangling_link_gets_a_row_with_its_reason(odd_run):
    folder, out, r = odd_run
    assert os.path.islink(folder / 'dangling.mp4') and not os.path.exists(folder / 'dangling.mp4')
    assert 'dangling.mp4' in labels(out)
    assert 'file is missing' in fallbacks_of(out)['dangling.mp4']['fallback']


def test_an_audio_only_file_gets_the_audio_only_model_not_the_prior(chain, odd_run):
    """Its probability is the audio-only model's on its track's embedding, moved to PRIOR (0.5: no move)
    and clipped, as for every other fallback with audio; not the prior."""
    folder, out, r = odd_run
    ckpt = torch.load(chain / 'run' / 'best.pt', map_location='cpu', weights_only=True)
    embedder = cae.AudioEmbedder(device='cpu')  # on the device predict.py was given
    # the remux copies the packets: the same samples as the clip's own track
    track = ea.decode_audio(os.path.join(testdata('talking_heads'), '2.mp4'))
    embedding, status = embedder(ea.pcm_to_float(track.pcm))
    assert status in cae.HAS_AUDIO
    expected = np.clip(sigmoid(audio_only_logit(ckpt['audio_only'], embedding) + prior_shift(0.5)), 0.01, 0.99)
    got = labels(out)['audio_only.mp4']
    assert abs(got - expected) < 1e-5, (got, expected)  # the CSV has 6 decimals
    assert abs(got - 0.5) > 1e-3  # not the fallback without evidence
    assert 'no video stream; audio-only model' in fallbacks_of(out)['audio_only.mp4']['fallback']


@pytest.fixture(scope='module')
def small_input(tmp_path_factory):
    """A real talking head and a voiced clip without a face: one prediction of the network, one fallback."""
    folder = tmp_path_factory.mktemp('small') / 'in'
    folder.mkdir()
    os.symlink(os.path.join(testdata('talking_heads'), '2.mp4'), folder / 'head.mp4')
    voiced_clip(folder / 'noface.mp4', 160)
    return folder


# 6 frames of a head: enough for a face; with run/fast.pt, whose training table recorded --frame_step=30
FAST = ['--face_weights=none', '--frame_step=30', '--device=cpu']


@pytest.mark.parametrize('workers', [2, 0])
def test_an_unexpected_error_on_one_video_is_its_fallback_row_and_the_run_goes_on(
        chain, small_input, tmp_path, monkeypatch, capsys, workers):
    """Any exception but an unreadable video, in decoding or in detection, becomes that
    video's fallback, with the exception's type and message, counted apart; the others are unchanged."""
    folder = tmp_path / 'in'
    folder.mkdir()
    for name in ('head.mp4', 'noface.mp4'):
        os.symlink(os.path.realpath(small_input / name), folder / name)
    for name in ('boom_load.mp4', 'boom_process.mp4'):  # the voice of noface.mp4, so the same fallback
        os.symlink(os.path.realpath(small_input / 'noface.mp4'), folder / name)
    chunks, find_tracks = fp.chunks, fp.find_tracks

    class Marked(np.ndarray):
        """boom_process.mp4's frames: detection fails on them."""

    def broken_chunks(path, *args):
        name = os.path.basename(path)
        if name == 'boom_load.mp4':
            raise KeyError('the loader broke')
        for indices, frames, n in chunks(path, *args):
            yield indices, (frames.view(Marked) if name == 'boom_process.mp4' else frames), n

    def broken_find_tracks(frames, *args):
        if isinstance(frames, Marked):
            raise RuntimeError('torch.cat(): expected a non-empty list of Tensors')
        return find_tracks(frames, *args)

    monkeypatch.setattr(fp, 'chunks', broken_chunks)
    monkeypatch.setattr(fp, 'find_tracks', broken_find_tracks)
    out = tmp_path / 'sub.csv'
    # in two decoding workers (forked: the broken functions are theirs too), and in this process
    run_main(monkeypatch, f'--input={folder}', f'--checkpoint={chain / "run" / "fast.pt"}', f'--output={out}',
             f'--workers={workers}', *FAST)
    stdout = capsys.readouterr().out
    rows, fallbacks = labels(out), fallbacks_of(out)
    assert sorted(rows) == ['boom_load.mp4', 'boom_process.mp4', 'head.mp4', 'noface.mp4']
    assert 'head.mp4' not in fallbacks
    assert fallbacks['boom_load.mp4']['fallback'] == "unexpected KeyError: 'the loader broke'; audio-only model"
    assert fallbacks['boom_process.mp4']['fallback'] == ('unexpected RuntimeError: torch.cat(): expected a '
                                                         'non-empty list of Tensors; audio-only model')
    assert {n: r['unexpected'] for n, r in fallbacks.items()} == {
        'boom_load.mp4': 'True', 'boom_process.mp4': 'True', 'noface.mp4': 'False'}
    for name in ('boom_load.mp4', 'boom_process.mp4'):
        assert abs(rows[name] - rows['noface.mp4']) < 1e-6  # the same voice and model: equal to the CSV's digits
    assert counts(stdout) == (4, 3, 2)
    assert "boom_load.mp4: unexpected KeyError: 'the loader broke'" in stdout


def other_checkpoint(ckpt, path, delta):
    """`ckpt` with `delta` added to the network's output bias and to the audio-only model's intercept:
    every logit moves by delta."""
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    last = [k for k in state['state_dict'] if k.startswith('head.') and k.endswith('.bias')][-1]
    state['state_dict'][last] = state['state_dict'][last] + delta
    state['audio_only'] = {**state['audio_only'], 'intercept': state['audio_only']['intercept'] + delta}
    torch.save(state, path)
    return path


def logit(p):
    return math.log(p / (1 - p))


def test_the_face_settings_of_the_training_table_are_predict_pys(chain, tmp_path):
    """The video table records the face settings it was made with, the merge and the checkpoint carry
    them, and predict.py makes its faces with them: a model trained on faces sampled every 15th frame read
    faces sampled every 6th before, silently. A different one given is one line, before any weights."""
    state = torch.load(chain / 'run' / 'best.pt', map_location='cpu', weights_only=True)
    recorded = json.loads(state['dataset']['attrs']['face_settings'])
    assert recorded == dp.numbers(dp.settings(face_weights='none', device='cpu'))
    assert recorded['--frame_step'] == 6 and '--device' not in recorded and '--face_weights' not in recorded
    recorded_as(chain / 'run' / 'best.pt', tmp_path / 'step15.pt', frame_step=15, margin=0.3)
    predictor = predict.Predictor(str(tmp_path / 'step15.pt'), 'cpu')
    assert predictor.pipeline.cfg['frame_step'] == 15 and predictor.pipeline.cfg['margin'] == 0.3
    assert predict.Predictor(str(tmp_path / 'step15.pt'), 'cpu', face={'margin': 0.3}).pipeline.cfg['margin'] == 0.3
    with pytest.raises(config.UserError, match=r'trained on faces made with --frame_step=15; this run has '
                                               r'--frame_step=6: leave them out'):
        predict.Predictor(str(tmp_path / 'step15.pt'), 'cpu', face={'frame_step': 6})


def test_an_audio_setting_other_than_the_training_tables_is_one_line(chain):
    """The audio table records its settings too, and predict.py makes the voice embedding with them; one given
    otherwise (--silence_dbfs=0: every track taken for silence) changed every probability, silently, where
    test.py refuses that table."""
    state = torch.load(chain / 'run' / 'best.pt', map_location='cpu', weights_only=True)
    recorded = json.loads(state['dataset']['attrs']['audio_settings'])
    assert recorded['--silence_dbfs'] == cae.SILENCE_DBFS
    predictor = predict.Predictor(str(chain / 'run' / 'best.pt'), 'cpu', face={'face_weights': 'none'},
                                  audio={'silence_dbfs': cae.SILENCE_DBFS})  # the same value given: taken
    assert predictor.audio_settings['silence_dbfs'] == cae.SILENCE_DBFS
    with pytest.raises(config.UserError, match=rf'trained on audio made with --silence_dbfs={cae.SILENCE_DBFS}; '
                                               r'this run has --silence_dbfs=0.0: leave them out'):
        predict.Predictor(str(chain / 'run' / 'best.pt'), 'cpu', audio={'silence_dbfs': 0.0})


def test_a_rerun_resumes_only_what_the_same_checkpoint_and_settings_made(
        chain, small_input, tmp_path, monkeypatch, capsys):
    """Into the same OUTPUT: the same checkpoint and settings redo nothing; another checkpoint or PRIOR
    used to return the first run's probabilities (exit 0): now one line says the old results are
    discarded, and every probability is the new one's."""
    ckpt = chain / 'run' / 'fast.pt'
    out = tmp_path / 'sub.csv'
    common = [f'--input={small_input}', f'--output={out}', *FAST]
    calls = []
    faces_of = dp.faces_of
    monkeypatch.setattr(dp, 'faces_of', lambda *args, **kw: calls.append(1) or faces_of(*args, **kw))

    run_main(monkeypatch, f'--checkpoint={ckpt}', *common)
    first, said = labels(out), [capsys.readouterr().out]
    assert len(calls) == 2 and all(0.01 < p < 0.99 for p in first.values())  # unclipped: logits compare

    run_main(monkeypatch, f'--checkpoint={ckpt}', *common)  # the same: nothing to do
    said.append(capsys.readouterr().out)
    assert labels(out) == first and len(calls) == 2 and 'discarding' not in said[-1]

    delta = -1.0
    run_main(monkeypatch, f'--checkpoint={other_checkpoint(ckpt, tmp_path / "other.pt", delta)}', *common)
    said.append(capsys.readouterr().out)
    for name, p in labels(out).items():  # fp16 on a GPU moves a logit by up to ~1e-3
        assert abs(p - sigmoid(logit(first[name]) + delta)) < 2e-3, (name, p, first[name])
    assert re.search(r'sub\.csv\.pkl: made with another checkpoint; discarding it', said[-1]), said[-1]

    run_main(monkeypatch, f'--checkpoint={ckpt}', '--prior=0.8', *common)
    said.append(capsys.readouterr().out)
    for name, p in labels(out).items():  # the prior's shift is added in float64: exact to the CSV's digits
        assert abs(p - sigmoid(logit(first[name]) + math.log(0.8 / 0.2))) < 2e-5, (name, p, first[name])
    assert re.search(r'made with another [^;]*--prior[^;]*; discarding it', said[-1]), said[-1]
    assert [counts(s) for s in said] == [(2, 1, 0), (0, 1, 0), (2, 1, 0), (2, 1, 0)]
    assert len(calls) == 6


def test_a_new_run_removes_the_submissions_of_the_checkpoint_it_replaces(chain, small_input, tmp_path, monkeypatch):
    """predict.py's submission.csv in a run folder stood beside a new best.pt after training.py started over, as if
    the new model's (break-it pass 8, D5): a new run now removes it and the files beside it, found by the digest of
    best.pt that its table records; a submission of another checkpoint stays."""
    import training
    out = tmp_path / 'run'
    cfg = training.settings(dataset=str(chain / 'merged.pkl'), out_dir=str(out), max_epochs=1, crop=4, project=8,
                            hidden=8, fc=0, progress=False)
    training.run(cfg, log=lambda *_: None)
    recorded_as(out / 'best.pt', out / 'best.pt', frame_step=30)  # FAST's faces
    run_main(monkeypatch, f'--checkpoint={out / "best.pt"}', f'--input={small_input}', f'--output={out / "sub.csv"}',
             *FAST)
    run_main(monkeypatch, f'--checkpoint={chain / "run" / "fast.pt"}', f'--input={small_input}',
             f'--output={out / "other.csv"}', *FAST)
    made = ['sub.csv', 'sub.fallbacks.csv', 'sub.csv.pkl', 'sub.csv.pkl.failures.csv']
    assert all((out / name).exists() for name in made + ['other.csv', 'other.csv.pkl'])
    lines = []
    training.run({**cfg, 'resume': False, 'seed': 1}, log=lines.append)
    assert not any((out / name).exists() for name in made), lines
    assert (out / 'other.csv').exists() and (out / 'other.csv.pkl').exists() and (out / 'best.pt').exists()
    assert any(line.startswith('a new run in ') and ', '.join(made) in line for line in lines), lines


def test_an_output_that_is_a_folder_or_not_writable_is_one_line_before_any_work(
        chain, small_input, tmp_path, monkeypatch, capsys):
    def no_networks(*args, **kwargs):
        raise AssertionError('the networks were loaded before the output was checked')

    monkeypatch.setattr(predict, 'Predictor', no_networks)
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    checkpoint = tmp_path / 'fast.pt'  # its copy: overwritten by the CSV before the fix, exit 0
    shutil.copy(chain / 'run' / 'fast.pt', checkpoint)
    for out, says in [(tmp_path, 'is a folder'), (blocker / 'sub.csv', 'is a file, where --output needs a folder'),
                      (f'{tmp_path / "new"}/', 'ends with a /'),  # failed after the work, which was lost
                      (checkpoint, 'is a file this run reads'), (tmp_path / 'metadata.json', 'a part\'s labels')]:
        with pytest.raises(SystemExit) as exit_:
            run_main(monkeypatch, f'--input={small_input}', f'--checkpoint={checkpoint}', f'--output={out}', *FAST)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count('\n') == 1 and says in err and str(out) in err, err
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'fast.pt']  # nothing written
    assert filecmp.cmp(checkpoint, chain / 'run' / 'fast.pt', shallow=False)


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


# ----------------------------------------------------------------------------- issue 12
def files_under(folder):
    """Every path under `folder`, relative to it (links included, not followed)."""
    return sorted(os.path.relpath(os.path.join(top, name), folder)
                  for top, dirs, files in os.walk(folder) for name in dirs + files)


def test_the_checkpoints_face_weights_are_used_without_the_flag(chain, small_input, tmp_path, monkeypatch, capsys):
    """A model trained on --face_weights=none predicted only with the flag repeated (else: vggface2's download,
    then a mismatch). Without it the checkpoint's are used; a rerun with the flag given finds the same
    settings (it resumes with nothing to do, where other settings would discard the first run's rows)."""
    out = tmp_path / 'sub.csv'
    fast = [a for a in FAST if not a.startswith('--face_weights')]
    run_main(monkeypatch, f'--input={small_input}', f'--checkpoint={chain / "run" / "fast.pt"}', f'--output={out}',
             *fast)
    first = labels(out)
    assert sorted(first) == ['head.mp4', 'noface.mp4'] and 'head.mp4' not in fallbacks_of(out)
    assert counts(capsys.readouterr().out) == (2, 1, 0)
    run_main(monkeypatch, f'--input={small_input}', f'--checkpoint={chain / "run" / "fast.pt"}', f'--output={out}',
             *FAST)
    said = capsys.readouterr().out
    assert counts(said) == (0, 1, 0) and 'discarding' not in said and labels(out) == first


def test_an_explicit_face_weights_flag_that_differs_from_the_checkpoint_is_one_line_before_any_weights(
        chain, small_input, tmp_path, monkeypatch, capsys):
    def no_weights(*args, **kwargs):
        raise AssertionError('face weights were loaded before the check')

    monkeypatch.setattr(fp_nets, 'face_embedder', no_weights)
    with pytest.raises(SystemExit) as exit_:
        run_main(monkeypatch, f'--input={small_input / "head.mp4"}', f'--checkpoint={chain / "run" / "best.pt"}',
                 '--face_weights=vggface2', '--device=cpu')
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count('\n') == 1, err
    assert "'untrained(seed=0)'" in err and "'vggface2'" in err and '--face_weights' in err, err


@pytest.mark.parametrize('attr, name, flag, recorded', [
    ('video_embedder', 'file:my_faces.pt', '--face_weights=/path/to/my_faces.pt',
     {'face_weights': '/elsewhere/my_faces.pt'}),
    ('audio_encoder', 'resemblyzer-0.1.4(file:my_voice.pt)', '--voice_weights=/path/to/my_voice.pt',
     {'audio_settings': {'--voice_weights': '/elsewhere/my_voice.pt'}}),
    ('audio_encoder', 'cnn:resnet18:file:my_cnn.pth:logmel128x512/160:80dB', '--cnn_weights=/path/to/my_cnn.pth',
     {'audio_settings': {'--audio_encoder': 'cnn', '--cnn_weights': '/elsewhere/my_cnn.pth'}}),
])
def test_a_weights_file_known_by_name_only_is_one_line_that_says_which_flag_to_give(
        chain, small_input, tmp_path, monkeypatch, capsys, attr, name, flag, recorded):
    """The training table recorded a weights file (its settings: common.stage's made_with) that this machine
    does not have."""
    state = torch.load(chain / 'run' / 'best.pt', map_location='cpu', weights_only=True)
    state['dataset']['attrs'][attr] = name
    for k, v in recorded.items():
        attrs = state['dataset']['attrs']
        attrs[k] = v if isinstance(v, str) else json.dumps({**json.loads(attrs[k]), **v})
    ckpt = tmp_path / 'file.pt'
    torch.save(state, ckpt)
    with pytest.raises(SystemExit) as exit_:
        run_main(monkeypatch, f'--input={small_input / "head.mp4"}', f'--checkpoint={ckpt}', '--device=cpu')
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count('\n') == 1 and flag in err, err
    assert files_under(tmp_path) == ['file.pt']


def test_the_checkpoint_records_the_settings_that_make_its_embedders(chain):
    """The tables record the settings they were made with (common.stage's made_with), not only their
    embedders' names, and the merge and the checkpoint carry them: the embedders they make have the names
    recorded beside them. predict.py parsed the names back into settings before."""
    attrs = torch.load(chain / 'run' / 'best.pt', map_location='cpu', weights_only=True)['dataset']['attrs']
    audio = {k[2:]: v for k, v in json.loads(attrs['audio_settings']).items()}
    assert audio == {'audio_encoder': 'resemblyzer', 'voice_weights': 'resemblyzer', 'silence_dbfs': -60.0}
    assert cae.AudioEmbedder(**audio, device='cpu').name == attrs['audio_encoder']
    assert attrs['face_weights'] == 'none' and attrs['video_embedder'] == 'untrained(seed=0)'
    cnn = cae.numbers(config.settings(cae, audio_encoder='cnn'))
    assert '--n_mels' in cnn and '--cnn_weights' in cnn and '--voice_weights' not in cnn and '--device' not in cnn


def test_the_audio_embedder_of_a_cnn_checkpoint_is_rebuilt_from_its_name(chain, tmp_path, monkeypatch):
    """Settings the user did not give come from the checkpoint, every one its table recorded: the embedder
    they make has the checkpoint's name (else Predictor would refuse it); one the user gave is kept."""
    name = 'cnn:resnet18:untrained(seed=0):logmel64x400/160:70dB'
    state = torch.load(chain / 'run' / 'best.pt', map_location='cpu', weights_only=True)
    state['dataset']['attrs']['audio_encoder'] = name
    state['dataset']['attrs']['audio_settings'] = json.dumps(
        {'--audio_encoder': 'cnn', '--cnn_weights': 'none', '--n_mels': 64, '--n_fft': 400, '--top_db': 70.0})
    torch.save(state, tmp_path / 'cnn.pt')
    # its network still reads Resemblyzer's 256 values, not the CNN's 512: the sizes' check would refuse it
    monkeypatch.setattr(predict, 'check_dims', lambda *args: None)
    predictor = predict.Predictor(str(tmp_path / 'cnn.pt'), 'cpu')
    assert predictor.audio.name == name and predictor.pipeline.embedder_name == 'untrained(seed=0)'
    assert [predictor.audio.cfg[k] for k in ('audio_encoder', 'n_mels', 'n_fft', 'top_db')] == ['cnn', 64, 400, 70.0]
    assert predictor.pipeline.cfg['face_weights'] == 'none'
    # --n_mels=32: another embedder than the checkpoint's, refused by the setting it differs in
    with pytest.raises(config.UserError, match=r"^the checkpoint was trained on audio made with --n_mels=64; this run "
                                               r"has --n_mels=32: leave them out to take the checkpoint's$"):
        predict.Predictor(str(tmp_path / 'cnn.pt'), 'cpu', audio={'n_mels': 32})


def test_a_tree_with_one_file_name_in_two_folders_gets_two_rows_and_resumes(
        chain, small_input, tmp_path, monkeypatch, capsys):
    """INPUT's subfolders are walked; a row's filename is the path relative to INPUT. Killed after the first
    of the two same-named videos, a rerun predicts only the second (their journal records differ by folder:
    keyed by the file name alone, the second was taken for done and had no row)."""
    tree = tmp_path / 'tree'
    for part, src in (('dfdc_train_part_0', 'head.mp4'), ('dfdc_train_part_1', 'noface.mp4')):
        (tree / part).mkdir(parents=True)
        os.symlink(os.path.realpath(small_input / src), tree / part / 'same.mp4')
    (tree / 'dfdc_train_part_1' / 'metadata.json').write_text('{}')  # not a video: no row
    out = tmp_path / 'sub.csv'
    args = [f'--input={tree}', f'--checkpoint={chain / "run" / "fast.pt"}', f'--output={out}', *FAST]
    stream = predict.Predictor.stream

    def killed_after_one(self, paths):
        for k, item in enumerate(stream(self, paths)):
            if k == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(predict.Predictor, 'stream', killed_after_one)
    with pytest.raises(SystemExit) as stopped:  # Ctrl-C: config.cli's one line, the shell's code for it
        run_main(monkeypatch, *args)
    assert stopped.value.code == 130
    assert not out.exists()
    monkeypatch.setattr(predict.Predictor, 'stream', stream)
    capsys.readouterr()
    run_main(monkeypatch, *args)
    assert counts(capsys.readouterr().out) == (1, 1, 0)
    rows = labels(out)
    assert list(rows) == ['dfdc_train_part_0/same.mp4', 'dfdc_train_part_1/same.mp4']
    assert set(fallbacks_of(out)) == {'dfdc_train_part_1/same.mp4'}  # the voiced clip without a face
    # the same videos as a flat folder: bare names, the same probabilities
    flat = tmp_path / 'flat.csv'
    run_main(monkeypatch, f'--input={small_input}', f'--checkpoint={chain / "run" / "fast.pt"}', f'--output={flat}',
             *FAST)
    # the same computation in this process: equal to the CSV's 6 digits
    assert abs(labels(flat)['head.mp4'] - rows['dfdc_train_part_0/same.mp4']) < 1e-6
    assert abs(labels(flat)['noface.mp4'] - rows['dfdc_train_part_1/same.mp4']) < 1e-6


def test_one_file_without_output_prints_its_probability_and_writes_nothing(
        chain, small_input, tmp_path, monkeypatch, capsys):
    """Before, one video left submission.csv, its .fallbacks.csv, .pkl and .pkl.failures.csv in the working
    folder."""
    folder = tmp_path / 'in'
    folder.mkdir()
    os.symlink(os.path.realpath(small_input / 'head.mp4'), folder / 'one.mp4')
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    run_main(monkeypatch, f'--input={folder / "one.mp4"}', f'--checkpoint={chain / "run" / "fast.pt"}', *FAST)
    said = capsys.readouterr().out
    assert re.search(r'^one\.mp4: p\(FAKE\) = 0\.\d{4}$', said, re.M), said
    assert files_under(tmp_path) == before


def png_size(path):
    """(width, height) of a PNG, from its header; AssertionError where it is not one."""
    data = open(path, 'rb').read(24)
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and data[12:16] == b'IHDR', path
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def test_explain_draws_every_video_and_the_windows_average_to_its_score(
        chain, small_input, tmp_path, monkeypatch, capsys):
    """One PNG a video, in INPUT's tree, the fallbacks' too; the windows drawn are the network's: the mean of
    their logits, moved to PRIOR and clipped, is the video's probability in the submission."""
    import explain
    tree = tmp_path / 'in'
    (tree / 'sub').mkdir(parents=True)
    os.symlink(os.path.realpath(small_input / 'head.mp4'), tree / 'head.mp4')
    os.symlink(os.path.realpath(small_input / 'noface.mp4'), tree / 'sub' / 'noface.mp4')
    (tree / 'sub' / 'head.mp4').write_text('not a video')
    drawn = {}
    draw = explain.draw

    def recorded(png, path, name, result, *args):
        drawn[name] = (result, args)
        draw(png, path, name, result, *args)

    monkeypatch.setattr(explain, 'draw', recorded)
    figures, out = tmp_path / 'figures', tmp_path / 'sub.csv'
    # every 4th frame: 32 faces of the head, three windows of the checkpoint's 20
    step4 = recorded_as(chain / 'run' / 'best.pt', tmp_path / 'step4.pt', frame_step=4)
    run_main(monkeypatch, f'--input={tree}', f'--checkpoint={step4}', f'--output={out}',
             f'--explain={figures}', '--device=cpu')
    assert files_under(figures) == ['head.mp4.png', 'sub', 'sub/head.mp4.png', 'sub/noface.mp4.png']
    for name in ('head.mp4.png', 'sub/head.mp4.png', 'sub/noface.mp4.png'):
        width, height = png_size(figures / name)
        assert width > 300 and height > 150 and os.path.getsize(figures / name) > 5000, name
    result, (faces, cfg, windows, crop, shift) = drawn['head.mp4']
    track = faces.tracks[0]
    starts, logits = windows
    assert list(starts) == [0, 10, 12] and crop == 20 and len(track.frames) == 32
    assert np.ptp(logits) > 0  # the windows differ
    p = np.clip(sigmoid(np.mean(logits) + shift), 0.01, 0.99)
    # the same float64 arithmetic (1e-9), and the CSV's 6 digits (1e-6)
    assert abs(p - result.p_fake) < 1e-9 and abs(labels(out)['head.mp4'] - p) < 1e-6
    assert drawn['sub/noface.mp4'][1][2] is None and 'no face found' in drawn['sub/noface.mp4'][0].fallback
    assert drawn['sub/head.mp4'][1][0] is None  # unreadable: no frame count
    # the figure of a video without a face says what the failures file says (VideoFaces.no_face: how many frames
    # were searched), not 'no face found in 32 frames'
    from common import metrics
    texts = []
    monkeypatch.setattr(metrics, 'save_figure', lambda fig, png: texts.append(fig.axes[0].texts[0].get_text()))
    noface = drawn['sub/noface.mp4']
    draw(str(tmp_path / 'x.png'), str(tree / 'sub' / 'noface.mp4'), 'sub/noface.mp4', noface[0], *noface[1])
    draw(str(tmp_path / 'y.png'), str(tree / 'sub' / 'head.mp4'), 'sub/head.mp4', drawn['sub/head.mp4'][0],
         *drawn['sub/head.mp4'][1])
    assert re.fullmatch(r'no face found in any of the \d+ frames searched \(of its \d+\)', texts[0])
    assert texts[0] in noface[0].fallback
    assert texts[1] == 'the video could not be read'
    # web.py shows no verdict where the number is the prior itself: the unreadable file, not the audio-only model's
    assert drawn['sub/head.mp4'][0].prior and not result.prior
    assert noface[0].prior == noface[0].fallback.endswith('; prior 0.5'), noface[0]
    # the crops are the track's faces, decoded again
    strip = explain.face_strip(str(tree / 'head.mp4'), track, cfg)
    assert len(strip) == explain.N_CROPS and all(face.shape == (160, 160, 3) for _, face in strip)
    assert [index for index, _ in strip] == sorted({int(track.frames[k]) for k in
                                                    np.linspace(0, 31, explain.N_CROPS).round().astype(int)})
    # the plot's 'frame' label clears the crops' 'frame N' titles below it (it was drawn over them)
    boxes = []

    def extents(fig, png):
        fig.canvas.draw()  # places the label below the tick labels, as saving does
        renderer = fig.canvas.get_renderer()
        boxes.append([fig.axes[0].xaxis.label.get_window_extent(renderer)]
                     + [ax.title.get_window_extent(renderer) for ax in fig.axes[1:]])
    monkeypatch.setattr(metrics, 'save_figure', extents)
    draw(str(tmp_path / 'z.png'), str(tree / 'head.mp4'), 'head.mp4', result, faces, cfg, windows, crop, shift)
    # and where the track is short: 5 faces, 5 wide crops (GenD's head scores each face)
    few = dataclasses.replace(faces, tracks=[dataclasses.replace(track, **{
        name: getattr(track, name)[:5] for name in ('frames', 'boxes', 'detected', 'embeddings')})])
    draw(str(tmp_path / 'z.png'), str(tree / 'head.mp4'), 'head.mp4', result, few, cfg, None, 1, shift)
    for (label, *titles), n in zip(boxes, (explain.N_CROPS, 5)):
        assert len(titles) == n and not any(label.overlaps(title) for title in titles), (label, titles)


def test_list_inputs_walks_subfolders_and_links_to_folders_once(tmp_path):
    """No networks: which files a tree gives, with their folders, in the order of the submission."""
    root = tmp_path / 'in'
    (root / 'b' / 'deep').mkdir(parents=True)
    (root / 'a').mkdir()
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    for path in (root / 'top.mp4', root / 'a' / 'x.mp4', root / 'b' / 'x.MOV', root / 'b' / 'deep' / 'y.avi',
                 root / 'a' / 'notes.txt', elsewhere / 'z.mp4'):
        path.write_bytes(b'')
    os.symlink(root, root / 'b' / 'loop')          # back up the tree: not walked twice
    os.symlink(elsewhere, root / 'linked')         # a folder elsewhere: walked
    os.symlink(tmp_path / 'gone.mp4', root / 'a' / 'dangling.mp4')
    found = predict.list_inputs(str(root))
    assert [(folder, name) for _, folder, name in found] == [
        ('a', 'dangling.mp4'), ('a', 'x.mp4'), ('b/deep', 'y.avi'), ('b', 'x.MOV'), ('linked', 'z.mp4'),
        ('', 'top.mp4')]  # by the path relative to INPUT: b/deep/y.avi before b/x.MOV
    assert all(path == os.path.join(root, *folder.split('/'), name) if folder else path == os.path.join(root, name)
               for path, folder, name in found)
    assert predict.list_inputs(str(root / 'top.mp4')) == [(str(root / 'top.mp4'), '', 'top.mp4')]


def test_a_checkpoint_of_other_embedding_sizes_is_one_line_before_any_video(tmp_path):
    """A checkpoint whose training table recorded no embedder (an older or synthetic one) gives no name to
    check: the sizes still do. Its network reads 6-d faces and 2-d audio, FaceNet and Resemblyzer make 512 and
    256: one line, exit 2, no submission (it was every video an 'unexpected' fallback, the models' work spent)."""
    from test_training import fast_checkpoint
    ckpt = fast_checkpoint(tmp_path / 'best.pt')
    run = run_script('predict.py', f'--input={testdata("dfdc_sample")}', f'--checkpoint={ckpt}',
                     f'--output={tmp_path}/submission.csv', '--face_weights=none', '--frame_step=30')
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0] == ('error: --face_encoder=facenet: embeddings of 512 (video) and 256 (audio) values, the '
                        'checkpoint was trained on 6 and 2'), lines[0]
    assert not (tmp_path / 'submission.csv').exists()
