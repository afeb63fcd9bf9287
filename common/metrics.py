"""The one place that scores predictions: training.py (validation), test.py and predict.py use it.

Every figure is scikit-learn's; this module adds the DFDC conventions around them:
- predictions are clipped to [lo, hi] before the log loss (default [0.01, 0.99], as the winning
  solutions did: one confident mistake costs at most -log(0.01) = 4.6 instead of infinity);
- the balanced log loss is the mean of the log loss over the real videos and the log loss over the fake
  ones: what the plain log loss would be on a 50/50 set, like DFDC's public and private test sets,
  whatever the share of fakes in the set scored (DFDC's training set is ~84% fake);
- a set with a single class has no ROC AUC, average precision or equal error rate: each is reported as
  None with the reason, not as an error;
- the equal error rate is where the ROC curve crosses FPR = FNR, interpolated linearly between its points;
- the expected calibration error (ECE) is the sum over CALIBRATION_BINS bins of equal width of
  (videos in the bin / videos) * |mean p in the bin - share of fakes in the bin|, on the unclipped p, in
  the bins of sklearn.calibration.calibration_curve (closed on the right), whose points the plot draws.
"""
import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from common.files import atomic_path

CLIP = (0.01, 0.99)
CALIBRATION_BINS = 10  # bins of equal width over [0, 1], for the ECE and the calibration plot


def clip(p, lo=CLIP[0], hi=CLIP[1]):
    if not 0 <= lo < hi <= 1:
        raise ValueError(f'clip range must satisfy 0 <= lo < hi <= 1, got [{lo}, {hi}]')
    return np.clip(np.asarray(p, np.float64), lo, hi)


def log_loss(y, p, lo=CLIP[0], hi=CLIP[1]):
    """Plain log loss of probabilities p (of FAKE) against labels y, after clipping; None on no videos."""
    y = np.asarray(y)
    if len(y) == 0:
        return None
    return float(skm.log_loss(y, clip(p, lo, hi), labels=[0, 1]))


def class_log_losses(y, p, lo=CLIP[0], hi=CLIP[1]):
    """{0: log loss over the real videos, 1: over the fakes}; a class absent from y is left out."""
    y, p = np.asarray(y), np.asarray(p)
    return {k: log_loss(y[y == k], p[y == k], lo, hi) for k in (0, 1) if (y == k).any()}


def balanced_log_loss(y, p, lo=CLIP[0], hi=CLIP[1]):
    """Mean of the real and the fake log loss (over the classes present); None on no videos."""
    per_class = class_log_losses(y, p, lo, hi)
    return float(np.mean(list(per_class.values()))) if per_class else None


def _single_class(y):
    """None where y has both classes, else why the figures that need both are undefined."""
    present = set(np.unique(np.asarray(y)).tolist())
    if present == {0, 1}:
        return None
    only = ', '.join({0: 'real', 1: 'fake'}[k] for k in sorted(present)) or 'no'
    return f'undefined: the set has only {only} videos'


def roc_auc(y, p):
    """(ROC AUC, None) or (None, the reason it is undefined)."""
    why = _single_class(y)
    return (None, why) if why else (float(skm.roc_auc_score(y, p)), None)


def average_precision(y, p):
    """(average precision of FAKE, None) or (None, the reason it is undefined)."""
    why = _single_class(y)
    return (None, why) if why else (float(skm.average_precision_score(y, p, pos_label=1)), None)


def equal_error_rate(y, p):
    """(EER, None) or (None, the reason it is undefined): the rate where the false positive rate (reals
    called fake) equals the false negative rate (fakes missed), on the ROC curve between its points."""
    why = _single_class(y)
    if why:
        return None, why
    fpr, tpr, _ = skm.roc_curve(y, p)
    gap = fpr - (1 - tpr)  # FPR - FNR: rises from -1 at (0, 0) to 1 at (1, 1), never falls
    i = int(np.flatnonzero(gap >= 0)[0])  # >= 1: gap[0] = -1
    t = -gap[i - 1] / (gap[i] - gap[i - 1])  # where the segment from point i-1 to i crosses gap = 0
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1])), None


def calibration(y, p, bins=CALIBRATION_BINS):
    """(share of fakes, mean p, videos, lower edge) of each non-empty bin, by calibration_curve's bins of
    equal width."""
    y, p = np.asarray(y).astype(int), np.asarray(p, np.float64)
    share, mean_p = calibration_curve(y, p, n_bins=bins, strategy='uniform', pos_label=1)
    # calibration_curve's own binning (closed on the right), for the counts it does not return
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=bins)
    full = counts > 0
    return share, mean_p, counts[full], edges[:-1][full]


def expected_calibration_error(y, p, bins=CALIBRATION_BINS):
    """(ECE, None), or (None, the reason) on no videos; one class suffices (a set of fakes only is
    calibrated where it is called fake with p near 1)."""
    if len(y) == 0:
        return None, 'undefined: no videos'
    share, mean_p, counts, _ = calibration(y, p, bins)
    return float(np.sum(counts / counts.sum() * np.abs(mean_p - share))), None


def report(y, p, lo=CLIP[0], hi=CLIP[1], threshold=0.5):
    """Every figure of a set of predictions, as a JSON-ready dict."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, np.float64)
    auc, why = roc_auc(y, p)
    ap, ap_why = average_precision(y, p)
    eer, eer_why = equal_error_rate(y, p)
    ece, ece_why = expected_calibration_error(y, p)
    predicted = (p > threshold).astype(int)
    per_class = class_log_losses(y, p, lo, hi)
    out = {
        'n_videos': int(len(y)),
        'n_fake': int((y == 1).sum()),
        'n_real': int((y == 0).sum()),
        'log_loss': log_loss(y, p, lo, hi),
        'balanced_log_loss': balanced_log_loss(y, p, lo, hi),
        'roc_auc': auc,
        'average_precision': ap,
        'eer': eer,
        'ece': ece,
        'calibration_bins': CALIBRATION_BINS,
        'accuracy': float(skm.accuracy_score(y, predicted)) if len(y) else None,
        'balanced_accuracy': (float(skm.balanced_accuracy_score(y, predicted))
                              if len(set(y.tolist())) == 2 else None),
        'clip': [lo, hi],
        'threshold': threshold,
        'per_class': {},
    }
    for key, note in (('roc_auc', why), ('average_precision', ap_why), ('eer', eer_why), ('ece', ece_why)):
        if note:
            out[key + '_note'] = note
    for k, name in ((0, 'real'), (1, 'fake')):
        mask = y == k
        out['per_class'][name] = {
            'n': int(mask.sum()),
            'log_loss': per_class.get(k),
            'accuracy': float((predicted[mask] == k).mean()) if mask.any() else None,  # recall of the class
            'mean_p_fake': float(p[mask].mean()) if mask.any() else None,
        }
    if len(y):
        out['confusion'] = {'labels': ['real', 'fake'], 'rows_true_cols_predicted':
                            skm.confusion_matrix(y, predicted, labels=[0, 1]).tolist()}
    return out


def save_roc_png(y, p, path, title='ROC'):
    """The ROC curve as a PNG (written atomically); False, with nothing written, where it is undefined."""
    auc, why = roc_auc(y, p)
    if auc is None:
        return False
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    fpr, tpr, _ = skm.roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f'AUC {auc:.3f}')
    ax.plot([0, 1], [0, 1], ls='--', c='grey', lw=0.8)
    ax.set(xlabel='false positive rate (reals called fake)', ylabel='true positive rate (fakes caught)',
           title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc='lower right')
    save_figure(fig, path)
    return True


def save_calibration_png(y, p, path, title='calibration'):
    """The reliability plot (share of fakes against mean p, per bin; videos per bin below) with its ECE as
    a PNG (written atomically); False, with nothing written, on no videos."""
    ece, _ = expected_calibration_error(y, p)
    if ece is None:
        return False
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    share, mean_p, counts, lower = calibration(y, p)
    fig, (ax, below) = plt.subplots(2, 1, figsize=(5, 6.5), sharex=True, gridspec_kw={'height_ratios': [3, 1]})
    ax.plot([0, 1], [0, 1], ls='--', c='grey', lw=0.8, label='perfectly calibrated')
    ax.plot(mean_p, share, marker='o', label=f'ECE {ece:.3f} ({CALIBRATION_BINS} bins)')
    ax.set(ylabel='share of fakes in the bin', title=title, xlim=(0, 1), ylim=(-0.01, 1.01))
    ax.legend(loc='upper left')
    below.bar(lower, counts, width=1 / CALIBRATION_BINS, align='edge', color='grey', edgecolor='white')
    below.set(xlabel='p_fake (above: the mean of each bin)', ylabel='videos')
    save_figure(fig, path)
    return True


def save_figure(fig, path):
    """A matplotlib figure as a PNG, atomically; the figure is closed."""
    from matplotlib import pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig)
