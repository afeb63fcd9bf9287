"""The one place that scores predictions: training.py (validation), test.py and predict.py use it.

Every figure is scikit-learn's; this module adds the DFDC conventions around them:
- predictions are clipped to [lo, hi] before the log loss (default [0.01, 0.99], as the winning
  solutions did: one confident mistake costs at most -log(0.01) = 4.6 instead of infinity);
- the balanced log loss is the mean of the log loss over the real videos and the log loss over the fake
  ones: what the plain log loss would be on a 50/50 set, like DFDC's public and private test sets,
  whatever the share of fakes in the set scored (DFDC's training set is ~84% fake);
- a set with a single class has no ROC AUC: it is reported as None with the reason, not as an error.
"""
import numpy as np
from sklearn import metrics as skm

from common.stage import atomic_path

CLIP = (0.01, 0.99)


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


def roc_auc(y, p):
    """(ROC AUC, None) or (None, the reason it is undefined)."""
    y = np.asarray(y)
    present = set(np.unique(y).tolist())
    if present != {0, 1}:
        names = {0: 'real', 1: 'fake'}
        only = ', '.join(names[k] for k in sorted(present)) or 'no'
        return None, f'undefined: the set has only {only} videos'
    return float(skm.roc_auc_score(y, p)), None


def report(y, p, lo=CLIP[0], hi=CLIP[1], threshold=0.5):
    """Every figure of a set of predictions, as a JSON-ready dict."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, np.float64)
    auc, why = roc_auc(y, p)
    predicted = (p > threshold).astype(int)
    per_class = class_log_losses(y, p, lo, hi)
    out = {
        'n_videos': int(len(y)),
        'n_fake': int((y == 1).sum()),
        'n_real': int((y == 0).sum()),
        'log_loss': log_loss(y, p, lo, hi),
        'balanced_log_loss': balanced_log_loss(y, p, lo, hi),
        'roc_auc': auc,
        'accuracy': float(skm.accuracy_score(y, predicted)) if len(y) else None,
        'balanced_accuracy': (float(skm.balanced_accuracy_score(y, predicted))
                              if len(set(y.tolist())) == 2 else None),
        'clip': [lo, hi],
        'threshold': threshold,
        'per_class': {},
    }
    if why:
        out['roc_auc_note'] = why
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


def save_figure(fig, path):
    """A matplotlib figure as a PNG, atomically; the figure is closed."""
    from matplotlib import pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110, bbox_inches='tight')
    plt.close(fig)
