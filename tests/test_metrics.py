"""common/metrics.py: scikit-learn's figures with DFDC's clipping, the balanced log loss, EER and ECE."""
import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score
from sklearn.metrics import log_loss as sk_log_loss

from common import metrics

# Every figure here is float64 arithmetic on a few numbers, the same on every CPU to the last bits or two:
# pytest.approx's default (1e-6 relative) is rounding with a wide margin, and abs=1e-12 where the exact value
# is 0 or a short fraction. A wrong formula moves them by far more.


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


def test_average_precision_is_sklearns():
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    assert metrics.average_precision(y, p)[0] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    # by hand: fakes at ranks 1 and 3 of the scores, precisions 1 and 2/3 at recalls 1/2 and 1
    assert metrics.average_precision([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])[0] == pytest.approx(5 / 6, abs=1e-12)


@pytest.mark.parametrize('y, p, eer', [
    ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.0),                  # perfectly separated
    ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 1.0),                  # perfectly wrong
    ([0, 1], [0.5, 0.5], 0.5),                                  # a tie: the ROC's diagonal, crossed half way
    ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5),                  # the ROC passes through (0.5, 0.5)
    # ROC (0,0) (0,.5) (1/3,.5) (1/3,1) (1,1): FPR - FNR goes from -1/6 to 1/3 on the segment FPR = 1/3
    ([0, 0, 0, 1, 1], [0.1, 0.2, 0.7, 0.6, 0.9], 1 / 3),
])
def test_equal_error_rate_by_hand(y, p, eer):
    assert metrics.equal_error_rate(y, p)[0] == pytest.approx(eer, abs=1e-12)


def test_expected_calibration_error_by_hand(tmp_path):
    assert metrics.CALIBRATION_BINS == 10
    # bin [0, 0.1]: two videos, mean p 0.05, half fake; bin (0.9, 1]: three, mean 0.95, two thirds fake
    y, p = [0, 1, 1, 0, 1], [0.05, 0.05, 0.95, 0.95, 0.95]
    assert metrics.expected_calibration_error(y, p)[0] == pytest.approx(2 / 5 * 0.45 + 3 / 5 * (0.95 - 2 / 3),
                                                                        abs=1e-12)
    assert metrics.expected_calibration_error([0, 0, 0, 1], [0.25] * 4)[0] == pytest.approx(0, abs=1e-12)
    # the bins are calibration_curve's, closed on the right: 0.1 is in the first, 0.15 in the second
    assert metrics.expected_calibration_error([1, 0], [0.1, 0.15])[0] == pytest.approx(0.45 + 0.075, abs=1e-12)
    share, mean_p, counts, lower = metrics.calibration(y, p)
    sk_share, sk_mean = calibration_curve(y, p, n_bins=10)
    assert np.allclose(share, sk_share) and np.allclose(mean_p, sk_mean) and counts.tolist() == [2, 3]
    assert lower == pytest.approx([0.0, 0.9])
    rep = metrics.report(y, p)
    assert rep['ece'] == pytest.approx(0.35, abs=1e-12) and rep['calibration_bins'] == 10
    assert metrics.save_calibration_png(y, p, tmp_path / 'cal.png', title='calibration: subset=val')
    assert (tmp_path / 'cal.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not metrics.save_calibration_png([], [], tmp_path / 'none.png') and not (tmp_path / 'none.png').exists()


def test_a_single_class_leaves_ap_and_eer_undefined_but_not_the_ece():
    rep = metrics.report([0, 0, 0], [0.2, 0.1, 0.7])
    for key in ('roc_auc', 'average_precision', 'eer'):
        assert rep[key] is None and rep[key + '_note'] == 'undefined: the set has only real videos'
    # each video in its own bin, none of them fake
    assert rep['ece'] == pytest.approx((0.2 + 0.1 + 0.7) / 3, abs=1e-12) and 'ece_note' not in rep
    assert metrics.report([], [])['ece'] is None and metrics.report([], [])['ece_note'] == 'undefined: no videos'
