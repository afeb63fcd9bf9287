"""test.py's figures per group of videos, as the field reports them: per dataset folder, per manipulation
method (FaceForensics++'s Deepfakes, Face2Face, FaceSwap, NeuralTextures, ...; Celeb-DF-v2's folders) and
per split (Celeb-DF-v2's test list is split 'test': make_metadata.py), video-level ROC AUC first.

A group that holds both classes is scored on its own videos. A group of one class, such as an FF++ method's
folder of fakes, has its ROC AUC taken against every video of the other class in the scored set (the field's
per-method AUC: a method's fakes against the real videos), and says so in `roc_auc_of`; its other figures are
its own videos'. The methods are read from the folder paths with make_metadata.py's names of the layouts.
"""
import numpy as np

import make_metadata as mm
from common import metrics

OWN = 'the group\'s videos'
AGAINST = {1: "the group's fakes against every real video scored",
           0: "the group's real videos against every fake scored"}


def method_of(folder):
    """The manipulation method a video's folder (relative to the data folder, any depth) names:
    FaceForensics++'s manipulated_sequences/<Method>/... -> Method, original_sequences/... -> 'original';
    Celeb-DF-v2's Celeb-synthesis, Celeb-real, YouTube-real -> that folder's name as spelled; None where the
    path names none (DFDC's parts: their figures are per folder)."""
    parts = str(folder).replace('\\', '/').split('/')
    for i, part in enumerate(parts):
        if mm.FF_TOPS.get(part) == 'FAKE' and i + 1 < len(parts):
            return parts[i + 1]
        if mm.FF_TOPS.get(part) == 'REAL':
            return 'original'
        if part.lower() in mm.CELEB_FOLDERS:
            return part
    return None


def figures(y, p, mask, lo=metrics.CLIP[0], hi=metrics.CLIP[1], threshold=0.5):
    """The figures of the videos `mask` picks out of the scored set (y, p), ROC AUC first (see the module)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, np.float64)
    own = set(np.unique(y[mask]).tolist())
    against = mask if own != {0} and own != {1} else mask | (y != own.pop())
    auc, why = metrics.roc_auc(y[against], p[against])
    out = {'roc_auc': auc}
    if why:
        out['roc_auc_note'] = why
    out['roc_auc_of'] = OWN if against is mask else AGAINST[int(y[mask][0])]
    out.update(n_videos=int(mask.sum()), n_fake=int((y[mask] == 1).sum()), n_real=int((y[mask] == 0).sum()),
               balanced_log_loss=metrics.balanced_log_loss(y[mask], p[mask], lo, hi),
               accuracy=float(((p[mask] > threshold) == y[mask]).mean()) if mask.any() else None,
               mean_p_fake=float(p[mask].mean()) if mask.any() else None)
    return out


def by(y, p, groups, lo=metrics.CLIP[0], hi=metrics.CLIP[1], threshold=0.5):
    """{group: figures} for each value of `groups` (one per video; None and '' are left out), sorted."""
    groups = np.asarray([g if isinstance(g, str) else '' for g in groups], object)
    return {g: figures(y, p, groups == g, lo, hi, threshold) for g in sorted(set(groups.tolist()) - {''})}


def breakdown(y, p, folders, splits=None, lo=metrics.CLIP[0], hi=metrics.CLIP[1], threshold=0.5):
    """The report's breakdown: by_folder, by_method (folders that name none left out), and by_split where the
    table records splits (None: an older table)."""
    out = {'by_folder': by(y, p, folders, lo, hi, threshold),
           'by_method': by(y, p, [method_of(f) for f in folders], lo, hi, threshold)}
    if splits is not None:
        out['by_split'] = by(y, p, splits, lo, hi, threshold)
    return out


def of_store(table, indices, y, p, lo=metrics.CLIP[0], hi=metrics.CLIP[1], threshold=0.5):
    """breakdown() of the Store's videos `indices`, scored y and p."""
    splits = None if table.split is None else table.split[indices]
    return breakdown(y, p, table.folders[indices], splits, lo, hi, threshold)


def summary(parts):
    """A line of the groups' ROC AUCs: by method where the folders name methods, else by folder; and one by split
    where the table has several (Celeb-DF-v2's test list: the figure the field reports is its 'test')."""
    keys = ['by_method' if parts['by_method'] else 'by_folder'] + (['by_split'] if len(parts.get('by_split', ())) > 1
                                                                   else [])
    return '\n'.join(f'roc_auc {key.replace("_", " ")} (videos): ' + ', '.join(
        f'{g} {"n/a" if f["roc_auc"] is None else format(f["roc_auc"], ".4f")} ({f["n_videos"]})'
        for g, f in parts[key].items()) for key in keys)
