"""A verdict without training: with no --checkpoint, GenD's own head scores a video (the mean over its faces
of P(FAKE)) in predict.py and in test.py; other encoders are refused in one line."""
import csv
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import DetectionPipeline as dp
from common import config, store
from conftest import ROOT, script_module, testdata
from gend_models import tiny_gend, tiny_gend_dinov3, tiny_gend_pe
from model import synthetic_table

scoring = script_module('test')
torch.set_num_threads(1)  # steadier on a shared 2-core machine
CLIP = (0.01, 0.99)  # model.HEAD's clip range, training.py's default
# the test's own pipeline and predict.py run the same float32 (no AMP) kernels on the same frames with the same
# thread count (predict()), so they find the same boxes and logits; what is left is the CSV's 6 decimals (5e-7).
# With another thread count MTCNN's boxes move by a fraction of a pixel, and with them the aligned crops: a
# face's logit moved by up to 1.5e-3 and the mean P(FAKE) by up to 2e-5 (AVX2 kernels), where leaving out one
# of the 10 faces moves it by 3e-5 or more
TOLERANCE = 1e-6
FAST = ('--face_encoder=gend', '--device=cpu', '--amp=false', '--frame_step=30')


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


@pytest.fixture(scope='module', params=['gend', 'gend_dinov3', 'gend_pe'])
def weights(request, tmp_path_factory):
    """(encoder, a tiny GenD checkpoint of it whose head is scaled up and centred): its faces' P(FAKE) differ by
    1e-3 and more instead of sitting at 0.5 +- 0.01, so a score of other faces is told from the right one."""
    folder = tmp_path_factory.mktemp(request.param)
    make = {'gend': tiny_gend, 'gend_dinov3': tiny_gend_dinov3, 'gend_pe': tiny_gend_pe}[request.param]
    _, head = make(folder)
    make(folder, extra={'model.linear.weight': head.weight.detach() * 10,
                        'model.linear.bias': torch.zeros(2)})
    return request.param, folder


def predict(*args):
    """predict.py run with this process's thread count (TOLERANCE)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, 'predict.py'), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900, env={**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())})


def test_predict_without_a_checkpoint_gives_the_mean_of_the_heads_probabilities(weights, tmp_path):
    encoder, weights = weights
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')
    r = predict(f'--input={clip}', f'--face_weights={weights}', f'--output={tmp_path / "sub.csv"}', *FAST[1:],
                f'--face_encoder={encoder}')
    assert r.returncode == 0, r.stderr[-2000:]
    # the head's weights named (the scorer line did not say which: untrained ones gave a verdict unremarked)
    assert f"scorer: the face encoder's own head (no checkpoint: GenD's mean P(FAKE) over the faces), weights " \
           f"{encoder}:file:{weights.name}\n" in r.stdout
    [row] = list(csv.DictReader(open(tmp_path / 'sub.csv')))
    # the same faces, computed here: each face's FAKE logit from the pipeline, P(FAKE) = its sigmoid
    [track] = dp.DetectionPipeline(face_encoder=encoder, face_weights=str(weights), device='cpu', amp=False,
                                   frame_step=30)(clip).tracks
    faces_p = sigmoid(track.logits)
    assert len(faces_p) >= 5 and faces_p.std() > 1e-3  # the scaled head: faces differ
    expected = float(np.clip(faces_p.mean(), *CLIP))
    assert CLIP[0] < expected < CLIP[1]  # the mean itself, not the clip's bound
    assert abs(float(row['label']) - expected) <= TOLERANCE, (row, expected)


def test_predict_without_a_checkpoint_refuses_an_encoder_without_a_head(tmp_path):
    r = predict(f'--input={testdata("dfdc_sample", "lynaeydofd.mp4")}', '--face_weights=none', '--device=cpu')
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and '--face_encoder=gend' in lines[0], r.stderr


def test_test_py_scores_a_gend_table_without_a_checkpoint(tmp_path):
    """A merged table with GenD's frame_logits (as create_video_embeddings.py --face_encoder=gend writes
    them): each video's p_fake is the mean of its faces' P(FAKE); the AUC is scikit-learn's of them."""
    rng = np.random.default_rng(5)
    table = synthetic_table(40, faces=8, video_dim=16, audio_dim=4, seed=5)
    table['frame_logits'] = [rng.normal(1.5 * (2 * label - 1), 2.0, len(faces)).astype(np.float32)
                             for label, faces in zip(table['label'], table['video_embedding'])]
    store.save(table, str(tmp_path / 'merged.pkl'))
    lines = []
    rep = scoring.run(scoring.settings(dataset=str(tmp_path / 'merged.pkl'), checkpoint='',
                                       report=str(tmp_path / 'r.json')), log=lines.append)
    expected = np.array([sigmoid(x).mean() for x in table['frame_logits']])  # test.py clips for its log losses only
    back = pd.read_csv(tmp_path / 'r_predictions.csv', keep_default_na=False)
    by_name = dict(zip(back['filename'], back['p_fake']))
    got = np.array([by_name[name] for name in table['filename']])
    np.testing.assert_allclose(got, expected, atol=1e-6)  # the CSV's 6 decimals
    assert rep['scorer'].startswith("the face encoder's own head") and rep['checkpoint'] is None
    assert rep['roc_auc'] == pytest.approx(roc_auc_score(table['label'], expected), abs=1e-9)
    assert any("scorer: the face encoder's own head" in line for line in lines)
    with pytest.raises(config.UserError, match=r'^--subset=val: no checkpoint, no split; give --subset=all'):
        scoring.run(scoring.settings(dataset=str(tmp_path / 'merged.pkl'), checkpoint='', subset='val',
                                     report=str(tmp_path / 'r.json')), log=lambda *_: None)  # it said 'the checkpoint'


def test_test_py_without_a_checkpoint_refuses_a_table_without_a_head(tmp_path):
    store.save(synthetic_table(10, faces=4, video_dim=16, audio_dim=4, seed=6), str(tmp_path / 'merged.pkl'))
    with pytest.raises(config.UserError, match='give --checkpoint'):
        scoring.run(scoring.settings(dataset=str(tmp_path / 'merged.pkl'), checkpoint='',
                                     report=str(tmp_path / 'r.json')), log=lambda *_: None)



def test_explain_draws_the_heads_scores_and_the_faces_it_read_of_a_video_without_its_broken_audio(
        weights, tmp_path, monkeypatch):
    """A video whose audio track breaks is scored by GenD's head, which reads no audio: no note (a network that
    reads audio notes it: test_predict.py). Its figure draws the faces' scores that make its probability, and a
    note of a scored video is called a note in the title (it said 'the network did not score this video', as for
    a video without a face, under 'fallback: ...'). Each face's P(FAKE) is the sigmoid of its FAKE logit, their mean
    the video's p(FAKE) (float64 on the same logits: 1e-12). The strip's crops are the faces the encoder read,
    aligned on their landmarks (they were FaceNet's box crops): the encoder gives each the track's FAKE logit
    at its frame (the same float32 operations, in batches of other sizes: ~1e-6 of logits of order 2 at most;
    measured 0 here; a box crop's differ by 0.047-0.086)."""
    import explain
    import predict as predict_py
    from audio_clips import garble_audio
    encoder, weights = weights
    video = garble_audio(os.path.join(testdata('talking_heads'), '2.mp4'), tmp_path / 'bad_audio.mp4')
    drawn, draw = [], explain.draw
    monkeypatch.setattr(explain, 'draw', lambda png, path, name, result, *args: drawn.append((result, args)))
    predictor = predict_py.Predictor('', 'cpu', face={'face_encoder': encoder, 'face_weights': str(weights),
                                                      'frame_step': 30, 'amp': False})
    with torch.no_grad():
        _, _, result = predict_py.score_video(predictor, str(video), str(tmp_path / 'bad_audio.png'))
    [(drawn_result, (faces, cfg, windows, crop, shift))] = drawn
    track = faces.tracks[0]
    assert result is drawn_result and not result.unexpected
    assert result.fallback == '' and result.scored
    assert windows is not None and crop == 1 and len(track.frames) >= 5 and result.scored
    starts, logits = windows
    np.testing.assert_array_equal(starts, np.arange(len(track.frames)))
    assert abs(sigmoid(logits + shift).mean() - result.p_fake) < 1e-12
    from common import metrics
    titles = []  # the figure's title calls it a note, not a fallback
    monkeypatch.setattr(metrics, 'save_figure', lambda fig, png: titles.append(fig.axes[0].get_title()))
    noted = result._replace(fallback='audio not decoded (broken): scored without it')  # as predict() notes it
    draw(str(tmp_path / 'bad_audio.png'), str(video), 'bad_audio.mp4', noted, faces, cfg, windows, crop, shift)
    assert '\nnote: audio not decoded (' in titles[0] and 'fallback' not in titles[0]
    strip = explain.face_strip(str(video), track, cfg)
    assert len(strip) == len(track.frames) and all(face.shape == (256, 256, 3) for _, face in strip)
    with torch.no_grad():
        seen = predictor.pipeline.nets.embed(np.stack([face for _, face in strip]))['logit']
    at = [list(track.frames).index(index) for index, _ in strip]
    np.testing.assert_allclose(seen, track.logits[at], atol=1e-4, rtol=0)
