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
# float32 (no AMP) so that the test's own pipeline and predict.py's compute the same logits up to the order of
# their sums (thread counts differ between the two processes): ~1e-6 of a logit of order 1, far below 1e-5 of
# a probability; the CSV's 6 decimals add 5e-7
TOLERANCE = 1e-5
FAST = ('--face_encoder=gend', '--device=cpu', '--amp=false', '--frame_step=30')


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


@pytest.fixture(scope='module', params=['gend', 'gend_dinov3', 'gend_pe'])
def weights(request, tmp_path_factory):
    """(encoder, a tiny GenD checkpoint of it whose head is scaled up and centred): its faces' P(FAKE) differ by
    far more than TOLERANCE instead of sitting at 0.5 +- 0.01, so a score of other faces is told from the
    right one."""
    folder = tmp_path_factory.mktemp(request.param)
    make = {'gend': tiny_gend, 'gend_dinov3': tiny_gend_dinov3, 'gend_pe': tiny_gend_pe}[request.param]
    _, head = make(folder)
    make(folder, extra={'model.linear.weight': head.weight.detach() * 10,
                        'model.linear.bias': torch.zeros(2)})
    return request.param, folder


def predict(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'predict.py'), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)


def test_predict_without_a_checkpoint_gives_the_mean_of_the_heads_probabilities(weights, tmp_path):
    encoder, weights = weights
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')
    r = predict(f'--input={clip}', f'--face_weights={weights}', f'--output={tmp_path / "sub.csv"}', *FAST[1:],
                f'--face_encoder={encoder}')
    assert r.returncode == 0, r.stderr[-2000:]
    assert "scorer: the face encoder's own head" in r.stdout
    [row] = list(csv.DictReader(open(tmp_path / 'sub.csv')))
    # the same faces, computed here: each face's FAKE logit from the pipeline, P(FAKE) = its sigmoid
    [track] = dp.DetectionPipeline(face_encoder=encoder, face_weights=str(weights), device='cpu', amp=False,
                                   frame_step=30)(clip).tracks
    faces_p = sigmoid(track.logits)
    assert len(faces_p) >= 5 and faces_p.std() > 100 * TOLERANCE  # the scaled head: faces differ
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


def test_test_py_without_a_checkpoint_refuses_a_table_without_a_head(tmp_path):
    store.save(synthetic_table(10, faces=4, video_dim=16, audio_dim=4, seed=6), str(tmp_path / 'merged.pkl'))
    with pytest.raises(config.UserError, match='give --checkpoint'):
        scoring.run(scoring.settings(dataset=str(tmp_path / 'merged.pkl'), checkpoint='',
                                     report=str(tmp_path / 'r.json')), log=lambda *_: None)

