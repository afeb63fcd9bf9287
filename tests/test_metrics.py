"""common/metrics.py: scikit-learn's figures with DFDC's clipping and the balanced log loss."""
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from common import metrics


def test_clipping_bounds_a_confident_mistake():
    y, p = [1, 0], [0.0, 0.0]                           # a fake called certainly real
    assert metrics.log_loss(y, p) == pytest.approx(-(math.log(0.01) + math.log(0.99)) / 2)
    assert metrics.log_loss(y, p, 0.1, 0.9) == pytest.approx(-(math.log(0.1) + math.log(0.9)) / 2)
    with pytest.raises(ValueError):
        metrics.clip(p, 0.6, 0.4)


def test_balanced_log_loss_is_the_mean_of_the_classes():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.84).astype(int)            # DFDC's share of fakes
    p = np.clip(rng.random(200), 0.01, 0.99)
    real = sk_log_loss(y[y == 0], p[y == 0], labels=[0, 1])
    fake = sk_log_loss(y[y == 1], p[y == 1], labels=[0, 1])
    assert metrics.balanced_log_loss(y, p) == pytest.approx((real + fake) / 2)
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p))
    # on a 50/50 set the two agree
    y2 = np.r_[np.zeros(50), np.ones(50)].astype(int)
    assert metrics.balanced_log_loss(y2, p[:100]) == pytest.approx(metrics.log_loss(y2, p[:100]))


def test_report_of_a_single_class_says_why_auc_is_missing():
    rep = metrics.report([1, 1, 1], [0.9, 0.2, 0.7])
    assert rep['roc_auc'] is None and 'only fake' in rep['roc_auc_note']
    assert rep['n_videos'] == 3 and rep['accuracy'] == pytest.approx(2 / 3)
    assert rep['per_class']['real']['n'] == 0 and rep['per_class']['real']['log_loss'] is None
    assert rep['balanced_log_loss'] == pytest.approx(rep['per_class']['fake']['log_loss'])
    assert not metrics.save_roc_png([1, 1], [0.2, 0.3], '/nonexistent/roc.png')


def test_report_figures(tmp_path):
    y, p = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    rep = metrics.report(y, p)
    assert rep['roc_auc'] == pytest.approx(0.75)
    assert rep['accuracy'] == pytest.approx(0.5)
    assert rep['confusion']['rows_true_cols_predicted'] == [[1, 1], [1, 1]]
    assert metrics.save_roc_png(y, p, tmp_path / 'roc.png')
    assert (tmp_path / 'roc.png').read_bytes()[:4] == b'\x89PNG'
