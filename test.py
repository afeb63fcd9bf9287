"""Score a trained checkpoint, or without one GenD's own head (--face_encoder=gend), on a merged table.

Reads CHECKPOINT (training.py's best.pt: the network is rebuilt from the file alone) and DATASET (a merged
table, through its training store). Scores the videos the checkpoint held out; where it recorded no split
or held none of this table out, every video (SUBSET='auto'; refused where some are its training videos), said
in one line; SUBSET='test': the videos the table marks 'test' (an official list: Celeb-DF-v2's, FF++'s). A
table made with other face or audio settings than the checkpoint's is refused; a video of several face tracks
(--keep_all_tracks) is scored by its largest, as predict.py scores it. Writes:
  REPORT       JSON: common/metrics.py's figures (log losses, ROC AUC, average precision, EER, ECE, accuracy,
               per class), what was scored how; `breakdown`: the figures per dataset folder, per manipulation
               method (FF++, Celeb-DF-v2) and per split (Celeb-DF-v2's test list), ROC AUC first
               (common/breakdown.py); `shortcuts`: the ROC AUC of the audio-only model, the leading silence
               and the face size alone, and a warning line, also printed, where one comes within 0.02 of the
               model's (common/shortcuts.py)
  REPORT minus .json + _roc.png, _calibration.png (ROC curve, reliability plot with its ECE) and
  _predictions.csv (filename, folder, label, p_fake, logit, no_face of every video scored)
A video's prediction is the checkpoint's evaluation choice (the mean of the logits of its windows), shifted
for PRIOR, clipped to the checkpoint's clip range (or CLIP_LO/CLIP_HI) for the log losses. A video without a
face embedding gets predict.py's fallback (the audio-only model where it has audio, else PRIOR), counted.
Settings that do not fit together and a REPORT that cannot be written are refused first, in one line.

    python test.py --dataset=MERGED.pkl --checkpoint=runs/lstm/best.pt --report=runs/lstm/report.json
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import contextlib
import csv
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from common import breakdown, metrics, shortcuts
from common.device import pick_device
from common.files import NAMES, atomic_path, report_files, report_stem, stamp, write_text
from common.stage import differences
from common.store import FACES, INDEX, open_store, store_dir
from common.weights import HEAD_ENCODERS
from model import (check_dims, check_embedder, fallback_logit, first_tracks, head_logit, load_scorer, predict_logits,
                   prior_shift, recorded_settings, sigmoid, steady_malloc)

# ----------------------------------------------------------------------------- config
DATASET = ''                # the merged table to score (pandas pickle of merge_embeddings.py)
CHECKPOINT = ''             # training.py's best.pt; '': the face encoder's own head (a table of --face_encoder=gend)
REPORT = ''                 # the JSON report to write ('': CHECKPOINT's, else DATASET's, folder/report.json)
SUBSET = 'auto'             # 'auto': 'val' where the checkpoint held videos of the table out, else 'all' |
                            # 'val': those it held out | 'train': those it trained on | 'all' | 'test': those the
                            # table marks 'test' (Celeb-DF-v2's official list: the field's figure)
PRIOR = 0.5                 # share of fakes expected in the scored set: logits shift by logit(PRIOR)
CLIP_LO = -1.0              # clip range of the log losses (< 0: the checkpoint's, [0.01, 0.99] by default)
CLIP_HI = -1.0
THRESHOLD = 0.5             # p_fake above this counts as FAKE for the accuracy
BATCH_SIZE = 512            # windows per batch
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1'
AMP = True                  # mixed precision (float16) on CUDA
THREADS = 1                 # CPU threads of torch (0: its default, one per core); why 1: see training.py
# -----------------------------------------------------------------------------


def main():
    config.configure(globals())
    run(settings())


def settings(**overrides):
    """This script's constants as lower-case settings, with overrides (what tests and benches call)."""
    return config.settings(globals(), **overrides)


def run(cfg, log=print):
    """Score cfg['checkpoint'] on cfg['dataset']; writes the report files and returns the report dict."""
    report_path, stem = _check(cfg)
    steady_malloc()
    if cfg['threads']:
        torch.set_num_threads(cfg['threads'])
    device = pick_device(cfg['device'])
    made = stamp(cfg['checkpoint']) if cfg['checkpoint'] else None  # size and time: training.py matches reports by it
    net, ckpt, scorer = load_scorer(cfg['checkpoint'], device)
    lo, hi = ckpt['clip'] if cfg['clip_lo'] < 0 else (cfg['clip_lo'], cfg['clip_hi'])
    with open_store(cfg['dataset']) as table:
        _check_compatible(ckpt, table, cfg['dataset'])
        indices, subset, scored = _subset(cfg, ckpt, table, _first_tracks(table, log))
        log(scored)
        log(f'scorer: {scorer}')
        labels = table.labels[indices]
        if (labels < 0).any():
            raise config.UserError(f'{cfg["dataset"]}: {int((labels < 0).sum())} videos have no label; '
                                   f'test.py scores labelled videos (predict.py predicts unlabelled ones)')
        logits, no_face = _logits(cfg, net, ckpt, table, indices, device)
        # the network estimates log-odds on a 50/50 set (its loss was class-balanced); move them to PRIOR
        logits = logits + prior_shift(cfg['prior'])
        p = sigmoid(logits)
        rep = metrics.report(labels, p, lo, hi, cfg['threshold'])
        rep.update({
            'n_no_face': int(no_face.sum()),
            'no_face_note': "videos without a face embedding get predict.py's fallback: the audio-only model "
                            'where they have audio, else the prior',
            'dataset': os.path.abspath(cfg['dataset']),
            'subset': subset, 'subset_note': scored,
            'checkpoint': os.path.abspath(cfg['checkpoint']) if cfg['checkpoint'] else None, 'scorer': scorer,
            'checkpoint_epoch': ckpt.get('epoch'), 'checkpoint_stamp': made,
            'evaluation': ckpt['evaluation'],
            'prior_scored_set': cfg['prior'], 'prior_training_set': ckpt.get('prior'),
            'embedder': table.attrs,
            'breakdown': breakdown.of_store(table, indices, labels, p, lo, hi, cfg['threshold']),
            'shortcuts': shortcuts.check(labels, p, shortcuts.cues(table, indices, ckpt.get('audio_only'))),
        })
        # the report last, none meanwhile: a run killed before it leaves none beside another run's files
        with contextlib.suppress(FileNotFoundError):
            os.remove(report_path)
        rep.update(_figures(labels, p, stem, f'{os.path.basename(cfg["dataset"])}, subset={subset} '
                                             f'({len(indices)} videos)'))
        _write_predictions(stem + '_predictions.csv', table.filenames[indices], table.folders[indices], labels, p,
                           logits, no_face)
        write_text(json.dumps(rep, indent=1), report_path)
    _say_if_replaced(cfg['checkpoint'], made, log)
    log(_summary(rep))
    log(f'report: {report_path}')
    return rep


def _say_if_replaced(path, made, log):
    """One line where the checkpoint was replaced while it was scored (a training run's last.pt, or best.pt):
    the report is of the one before (training.py removes it when an epoch next replaces that checkpoint)."""
    if made is not None and (not os.path.exists(path) or stamp(path) != made):
        log(f'warning: {path} was replaced while it was scored (a training run at work?): the report is of the '
            f'checkpoint before; score it again')


def _figures(labels, p, stem, what):
    """{'roc_png': path, 'calibration_png': path} of the figures drawn; one a set leaves undefined (one class)
    is not drawn, and an earlier report's at its path is removed: it would pass for this one's."""
    drawn = {}
    for name, save, title in (('roc', metrics.save_roc_png, 'ROC'),
                              ('calibration', metrics.save_calibration_png, 'calibration')):
        if save(labels, p, f'{stem}_{name}.png', title=f'{title}: {what}'):
            drawn[f'{name}_png'] = f'{stem}_{name}.png'
        elif os.path.exists(f'{stem}_{name}.png'):
            os.remove(f'{stem}_{name}.png')
    return drawn


def _logits(cfg, net, ckpt, table, indices, device):
    """(logits (videos,) of the videos `indices`, no_face (videos,) bool): the network's, and predict.py's
    fallback's for a video without a face; UserError where one with faces has no finite logit."""
    ev = ckpt['evaluation']
    bar = lambda batches: tqdm(batches, desc='scoring', unit='batch', leave=False, mininterval=1.0,  # noqa: E731
                               disable=None)  # None: only where the output is a terminal
    if net is None:  # the encoder's head: its score of each video, made when the faces were
        logits = head_logit(table.head_score[indices])
    else:
        logits = predict_logits(net, table, indices, device, ev['crop'], ev['stride'], cfg['batch_size'],
                                cfg['amp'], progress=bar)
    no_face = table.n_faces[indices] == 0
    broken = ~no_face & ~np.isfinite(logits)
    if broken.any():
        raise config.UserError(f'{cfg["dataset"]}: {int(broken.sum())} videos have no finite logit (e.g. '
                               f'{table.keys[indices[broken][0]]}): their face embeddings hold inf or NaN')
    audio_only = ckpt.get('audio_only')
    logits[no_face] = [fallback_logit(audio_only, table.audio[i], table.has_audio[i]) for i in indices[no_face]]
    return logits, no_face


def _check(cfg):
    """Before any work: what the ranges of single settings cannot say, and whether the report's files
    can be written (else the scoring is lost at the end). Returns (report path, stem of its companions)."""
    if not cfg['dataset']:
        raise config.UserError('give the table (and the checkpoint): --dataset=MERGED.pkl --checkpoint=best.pt')
    lo, hi = cfg['clip_lo'], cfg['clip_hi']
    if (lo < 0) != (hi < 0) or lo >= 0 and not lo < hi:
        raise config.UserError(f'--clip_lo and --clip_hi must satisfy 0 <= clip_lo < clip_hi <= 1 (or both be '
                               f'below 0: the checkpoint\'s range), not {lo} and {hi}')
    beside = cfg['checkpoint'] or cfg['dataset']
    report_path = cfg['report'] or os.path.join(os.path.dirname(os.path.abspath(beside)), 'report.json')
    store = store_dir(cfg['dataset'])  # its files are read too
    for path in report_files(report_path):
        config.writable_file(path, '--report', reads=(cfg['dataset'], cfg['checkpoint'],
                                                      os.path.join(store, INDEX), os.path.join(store, FACES)))
    return report_path, report_stem(report_path)


def _check_compatible(ckpt, table, path):
    if 'network' not in ckpt:  # no checkpoint: the encoder's head scores, where the faces were made with one
        if table.head_score is None:
            raise config.UserError(f'{path}: no face encoder head scored its faces (made with --face_encoder='
                                   f'{" or ".join(HEAD_ENCODERS)} it would have): give --checkpoint=best.pt '
                                   f'(training.py\'s)')
        return
    check_dims(ckpt, table.video_dim, table.audio_dim, path)
    trained, attrs = ckpt.get('dataset', {}).get('attrs', {}), table.attrs
    todo = "make it again with the embedders of the checkpoint's training table"
    if 'embedder' in trained and 'embedder' in attrs:  # face weights by their tensors where both recorded them
        check_embedder(trained, 'face', attrs.get('video_embedder', attrs['embedder']), todo,
                       attrs.get('video_embedder_digest'), f'{path} has')
    if 'audio_encoder' in trained and 'audio_encoder' in attrs:
        check_embedder(trained, 'audio', attrs['audio_encoder'], todo, has=f'{path} has')
    # the settings the embeddings depend on (merge_embeddings.py's face_settings, audio_settings), as predict.py
    # refuses them; the weights' paths may differ between machines (check_embedder above compares the weights)
    for what in ('face', 'audio'):
        then, now = ({k: v for k, v in recorded_settings(attrs, what).items() if not k.endswith('_weights')}
                     for attrs in (trained, table.attrs))
        if then and now and (differ := differences(then, now)):
            then, now = (', '.join(f'{k}={made.get(k)}' for k in differ) for made in (then, now))
            raise config.UserError(f"{path}: made with {now}, the checkpoint's training table with {then}: make it "
                                   f"again with the checkpoint's")


def _first_tracks(table, log):
    """The table's rows less those that are a further face track of a video (--keep_all_tracks): a video is scored
    by its first, the largest, as predict.py scores it, so that every figure counts a video once."""
    first = np.flatnonzero(first_tracks(table.keys))
    if len(first) < len(table):
        log(f'{len(table) - len(first)} rows are further face tracks of {len(first)} videos (--keep_all_tracks): '
            f'each video is scored by its largest, as predict.py scores it')
    return first


def _subset(cfg, ckpt, table, everything):
    """(indices of the videos to score, the subset scored, one line saying which and why); `everything`: the
    rows that can be (_first_tracks).

    'auto' scores every video where the checkpoint recorded no split or held none of this table out (a
    test set it never saw; 'train' where they are all its training videos, an error where some are), and is
    'val' otherwise; --subset=val or train there is an error. 'test': _tested()."""
    given, n, keys = cfg['subset'] != 'auto', len(everything), table.keys[everything].astype(str)
    subset = 'val' if cfg['subset'] == 'auto' else cfg['subset']
    if subset == 'all':
        return everything, 'all', f'scoring all {n} videos of the table (--subset=all)'
    if subset == 'test':
        return _tested(cfg, ckpt, table, everything)
    split = ckpt.get('split') or {}
    why = 'the checkpoint recorded no split' if 'network' in ckpt else 'no checkpoint, no split'
    if 'val_keys' in split:  # folder/filename
        held_out = np.isin(keys, split['val_keys'])
    elif 'val_filenames' in split:  # older checkpoints
        held_out = np.isin(table.filenames[everything].astype(str), split['val_filenames'])
    elif given:
        raise config.UserError(f'--subset={subset}: {why}; give --subset=all')
    else:
        return everything, 'all', f'scoring all {n} videos: {why} (--subset=all)'
    if not held_out.any() and not given:  # the default on a table the checkpoint held nothing out of
        return _unseen(cfg, ckpt, table, everything)
    rejoined = _rejoined(table, everything, held_out, split) if subset == 'val' else np.zeros(n, bool)
    # --subset=train: not those it left out as the table's 'test' either (training.py's --hold_test)
    tested = _marked_test(table, everything) & bool((ckpt.get('made_with') or {}).get('--hold_test'))
    chosen = everything[held_out & ~rejoined] if subset == 'val' else everything[~held_out & ~tested]
    if len(chosen) == 0 and rejoined.any():
        raise config.UserError(f'--subset=val: each of the {int(rejoined.sum())} videos the checkpoint held out is '
                               f'now in a group with its training videos (e.g. {table.keys[everything][rejoined][0]}: '
                               f'an original corrected since it was trained): none is held out; --subset=all scores '
                               f'all')
    if len(chosen) == 0:
        raise config.UserError(f'--subset={subset}: no video of the table is on that side of the checkpoint\'s split')
    if subset == 'val':
        left_out = '' if not rejoined.any() else (
            f'; {int(rejoined.sum())} others it held out are left out: their group now holds training videos (e.g. '
            f'{table.keys[everything][rejoined][0]}: an original corrected since it was trained)')
        return chosen, 'val', (f'scoring the {len(chosen)} videos the checkpoint held out '
                               f'(--subset=all scores every video){left_out}')
    return chosen, 'train', f'scoring the {len(chosen)} videos the checkpoint did not hold out (--subset=train)'


def _unseen(cfg, ckpt, table, everything):
    """_subset()'s answer for 'auto' on a table the checkpoint held none of out: every video, as a test (none of
    them its training videos), or as training figures (all of them); UserError where some are."""
    n, keys, split = len(everything), table.keys[everything].astype(str), ckpt.get('split') or {}
    # its training videos (older checkpoints: whether this is the very table it trained on, by its stamp)
    same_table = (ckpt.get('dataset') or {}).get('key') == {'pickle': table.meta['pickle'], 'n_videos': len(table)}
    trained = np.isin(keys, split['train_keys']) if 'train_keys' in split else np.full(n, same_table)
    if n and trained.all():  # --val_fraction=0, and its own videos (a copy, a merge again): not a test set
        return everything, 'train', (f'scoring all {n} videos: the checkpoint was trained on them and held '
                                     f'none of them out: training figures, not a test')
    if trained.any():
        raise config.UserError(f'{cfg["dataset"]}: {int(trained.sum())} of its {n} videos are the checkpoint\'s '
                               f'training videos (e.g. {keys[trained][0]}), which a test would score: give '
                               f'a table without them, or --subset=all to score every video')
    return everything, 'all', f'scoring all {n} videos: the checkpoint held none of them out (--subset=all)'


def _marked_test(table, indices):
    """(len(indices),) bool: the videos the table marks 'test'."""
    return np.zeros(len(indices), bool) if table.split is None else table.split[indices] == 'test'


def _tested(cfg, ckpt, table, everything):
    """_subset()'s answer for --subset=test: the videos the table marks 'test', as the field scores an official
    list, and how many share a group with the checkpoint's training videos; UserError where the table marks none,
    or the checkpoint trained on some."""
    chosen = everything[_marked_test(table, everything)]
    if not len(chosen):
        raise config.UserError(f'--subset=test: no video of {cfg["dataset"]} is marked \'test\' (make_metadata.py '
                               f'marks Celeb-DF-v2\'s official list, and FF++\'s with --ff_splits)')
    keys, groups, split = table.keys.astype(str), table.groups.astype(str), ckpt.get('split') or {}
    if 'network' in ckpt and 'train_keys' not in split:
        raise config.UserError('--subset=test: the checkpoint does not record the videos it trained on (an older '
                               'training.py\'s): train it again to score a test list')
    trained = np.isin(keys, split.get('train_keys', []))
    if trained[chosen].any():
        raise config.UserError(f'--subset=test: {int(trained[chosen].sum())} of the videos the table marks \'test\' '
                               f'are the checkpoint\'s training videos (e.g. {keys[chosen][trained[chosen]][0]}): it '
                               f'was trained with --hold_test=false, or on a table that marked them otherwise')
    shared = int(np.isin(groups[chosen], groups[trained]).sum())
    return chosen, 'test', (f'scoring the {len(chosen)} videos the table marks \'test\' (an official test list)' +
                            (f'; {shared} of them share a group (an original) with training videos, as the list '
                             f'has them' if shared else ''))


def _rejoined(table, everything, held_out, split):
    """(len(everything),) bool: held-out videos whose group in the table (its originals as they are now) holds a
    video the checkpoint trained on: a metadata.json corrected since joined them, and they would leak."""
    if 'train_keys' not in split:  # older checkpoints
        return np.zeros(len(everything), bool)
    groups = table.groups.astype(str)  # (rows,): every row, a training video's further face tracks too
    trained = np.isin(table.keys.astype(str), split['train_keys'])
    return held_out & np.isin(groups[everything], groups[trained])


def _summary(rep):
    """A line of the breakdown's ROC AUCs, the shortcut check's warning line where it has one, then the report's
    figures in one line; a figure a single class leaves undefined is n/a, with the reason."""
    def figure(key):
        return 'n/a' if rep[key] is None else f'{rep[key]:.4f}'
    reasons = sorted({rep[k + '_note'] for k in ('roc_auc', 'average_precision', 'eer', 'ece') if k + '_note' in rep})
    warning = rep['shortcuts']['warning']
    no_face = (f'\n{rep["n_no_face"]} of the {rep["n_videos"]} videos have no face embedding: scored by predict.py\'s '
               f'fallback (the audio-only model where they have audio, else the prior)' if rep['n_no_face'] else '')
    return (breakdown.summary(rep['breakdown']) + (f'\n{warning}' if warning else '') + no_face + '\n'
            f'{rep["n_videos"]} videos ({rep["n_fake"]} fake, {rep["n_real"]} real): log_loss {figure("log_loss")}, '
            f'balanced_log_loss {figure("balanced_log_loss")}, roc_auc {figure("roc_auc")}, average_precision '
            f'{figure("average_precision")}, eer {figure("eer")}, ece {figure("ece")} ({rep["calibration_bins"]} '
            f'bins), accuracy {figure("accuracy")}' + ''.join(f' (n/a: {why})' for why in reasons))


def _write_predictions(path, filenames, folders, labels, p, logits, no_face):
    """The CSV, quoted where needed (a comma, a quote or a newline in a file name)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8', errors=NAMES, newline='') as f:
            out = csv.writer(f)
            out.writerow(['filename', 'folder', 'label', 'p_fake', 'logit', 'no_face'])
            for name, folder, label, p_, logit, none in zip(filenames, folders, labels, p, logits, no_face):
                out.writerow([name, folder, int(label), f'{p_:.6f}', f'{logit:.6f}', int(none)])


if __name__ == '__main__':
    config.cli(main)
