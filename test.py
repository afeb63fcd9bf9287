"""Score a trained checkpoint on a merged embedding table.

Reads CHECKPOINT (training.py's best.pt: the network is rebuilt from the file alone) and DATASET (a merged
table, through its embedding cache, as training.py reads it). Writes:
  REPORT                       JSON: log_loss, balanced_log_loss, roc_auc, accuracy, n_videos, per-class
                               figures, the confusion matrix, and what was scored how (common/metrics.py)
  REPORT minus .json + _roc.png          the ROC curve (absent where the set has a single class)
  REPORT minus .json + _predictions.csv  filename, folder, label, p_fake, logit, no_face for every video (CSV,
                                         quoted where a file name holds a comma, a quote or a newline)
Each video's prediction is the checkpoint's evaluation choice (the mean of the logits of all its windows),
shifted for PRIOR, then clipped to the checkpoint's clip range (or CLIP_LO/CLIP_HI) for the log losses.
A video without any face embedding cannot be scored by the network: it gets p = 0.5 and is counted.
Settings that do not fit together (the clip range) and a REPORT that cannot be written are refused before
any work, in one line.

    python test.py --dataset=MERGED.pkl --checkpoint=runs/lstm/best.pt --report=runs/lstm/report.json
"""
import csv
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from common import config, metrics
from common.device import pick_device
from common.lazytable import open_table
from common.stage import atomic_path, write_text
from model import load_checkpoint, predict_logits, prior_shift, sigmoid, steady_malloc

# ----------------------------------------------------------------------------- config
DATASET = ''                # the merged table to score (pandas pickle of merge_embeddings.py)
CHECKPOINT = ''             # training.py's best.pt
REPORT = ''                 # the JSON report to write ('': CHECKPOINT's folder/report.json)
CACHE_DIR = ''              # where the embedding cache goes ('': beside DATASET, as DATASET.cache/)
SUBSET = 'all'              # 'all' videos | 'val': those the checkpoint held out | 'train': the others
PRIOR = 0.5                 # share of fakes expected in the scored set: logits shift by logit(PRIOR)
CLIP_LO = -1.0              # clip range of the log losses (< 0: the checkpoint's, [0.01, 0.99] by default)
CLIP_HI = -1.0
THRESHOLD = 0.5             # p_fake above this counts as FAKE for the accuracy
BATCH_SIZE = 512            # windows per batch
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1'
AMP = True                  # mixed precision (float16) on CUDA
THREADS = 1                 # CPU threads of torch (0: its default, one per core); why 1: see training.py
# -----------------------------------------------------------------------------


class ScoringError(config.UserError):
    """Bad input: one clear line, exit code 2."""


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
    net, ckpt = load_checkpoint(cfg['checkpoint'], device)
    lo, hi = ckpt['clip'] if cfg['clip_lo'] < 0 else (cfg['clip_lo'], cfg['clip_hi'])
    with open_table(cfg['dataset'], cfg['cache_dir'], log=log) as table:
        _check_compatible(ckpt, table, cfg['dataset'])
        indices = _subset(cfg['subset'], ckpt, table)
        labels = table.labels[indices]
        if (labels < 0).any():
            raise ScoringError(f'{cfg["dataset"]}: {int((labels < 0).sum())} videos have no label; '
                            f'test.py scores labelled videos (predict.py predicts unlabelled ones)')
        ev = ckpt['evaluation']
        bar = lambda batches: tqdm(batches, desc='scoring', unit='batch', leave=False, mininterval=1.0,  # noqa: E731
                                   disable=None)  # None: only where the output is a terminal
        logits = predict_logits(net, table, indices, device, ev['crop'], ev['stride'], cfg['batch_size'],
                                cfg['amp'], progress=bar)
        no_face = np.isnan(logits)
        # the network estimates log-odds on a 50/50 set (its loss was class-balanced); move them to PRIOR
        logits = np.where(no_face, 0.0, logits + prior_shift(cfg['prior']))
        p = sigmoid(logits)
        rep = metrics.report(labels, p, lo, hi, cfg['threshold'])
        rep.update({
            'n_no_face': int(no_face.sum()),
            'no_face_note': 'videos without a face embedding are predicted 0.5',
            'dataset': os.path.abspath(cfg['dataset']),
            'subset': cfg['subset'],
            'checkpoint': os.path.abspath(cfg['checkpoint']),
            'checkpoint_epoch': ckpt.get('epoch'),
            'evaluation': ev,
            'prior_scored_set': cfg['prior'],
            'prior_training_set': ckpt.get('prior'),
            'embedder': table.attrs,
        })
        write_text(json.dumps(rep, indent=1), report_path)
        roc_path = stem + '_roc.png'
        if metrics.save_roc_png(labels, p, roc_path, title=f'ROC: {os.path.basename(cfg["dataset"])}'):
            rep['roc_png'] = roc_path
        _write_predictions(stem + '_predictions.csv', table.filenames[indices], table.folders[indices], labels, p,
                           logits, no_face)
    auc = 'n/a (' + rep['roc_auc_note'] + ')' if rep['roc_auc'] is None else f'{rep["roc_auc"]:.4f}'
    log(f'{rep["n_videos"]} videos ({rep["n_fake"]} fake, {rep["n_real"]} real): log_loss {rep["log_loss"]:.4f}, '
        f'balanced_log_loss {rep["balanced_log_loss"]:.4f}, roc_auc {auc}, accuracy {rep["accuracy"]:.4f}')
    log(f'report: {report_path}')
    return rep


def _check(cfg):
    """Before any work: what the ranges of single settings cannot say, and whether the report's files
    can be written (else the scoring is lost at the end). Returns (report path, stem of its companions)."""
    if not cfg['dataset'] or not cfg['checkpoint']:
        raise ScoringError('give the table and the checkpoint: --dataset=MERGED.pkl --checkpoint=best.pt')
    lo, hi = cfg['clip_lo'], cfg['clip_hi']
    if (lo < 0) != (hi < 0) or lo >= 0 and not lo < hi:
        raise ScoringError(f'--clip_lo and --clip_hi must satisfy 0 <= clip_lo < clip_hi <= 1 (or both be '
                           f'below 0: the checkpoint\'s range), not {lo} and {hi}')
    report_path = cfg['report'] or os.path.join(os.path.dirname(os.path.abspath(cfg['checkpoint'])), 'report.json')
    stem = report_path[:-5] if report_path.endswith('.json') else report_path
    for path in (report_path, stem + '_roc.png', stem + '_predictions.csv'):
        config.writable_file(path, '--report')
    return report_path, stem


def _check_compatible(ckpt, table, path):
    net = ckpt['network']
    if (net['video_dim'], net['audio_dim']) != (table.video_dim, table.audio_dim):
        raise ScoringError(f'{path}: embeddings of {table.video_dim} (video) and {table.audio_dim} (audio) values, '
                        f'the checkpoint was trained on {net["video_dim"]} and {net["audio_dim"]}')
    trained = ckpt.get('dataset', {}).get('attrs', {})
    for key in ('embedder', 'audio_encoder'):
        if key in trained and key in table.attrs and trained[key] != table.attrs[key]:
            raise ScoringError(f'{path}: made with {key} {table.attrs[key]!r}, the checkpoint with {trained[key]!r}')


def _subset(subset, ckpt, table):
    everything = np.arange(len(table))
    if subset == 'all':
        return everything
    if subset not in ('val', 'train'):
        raise ScoringError(f"--subset takes 'all', 'val' or 'train', not {subset!r}")
    split = ckpt['split']
    held_out = (np.isin(table.keys.astype(str), split['val_keys']) if 'val_keys' in split  # folder/filename
                else np.isin(table.filenames.astype(str), split['val_filenames']))  # older checkpoints
    chosen = everything[held_out] if subset == 'val' else everything[~held_out]
    if len(chosen) == 0:
        raise ScoringError(f'--subset={subset}: no video of the table is on that side of the checkpoint\'s split')
    return chosen


def _write_predictions(path, filenames, folders, labels, p, logits, no_face):
    """The CSV, quoted where needed (a comma, a quote or a newline in a file name)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8', newline='') as f:
            out = csv.writer(f)
            out.writerow(['filename', 'folder', 'label', 'p_fake', 'logit', 'no_face'])
            for name, folder, label, p_, logit, none in zip(filenames, folders, labels, p, logits, no_face):
                out.writerow([name, folder, int(label), f'{p_:.6f}', f'{logit:.6f}', int(none)])


def main():
    config.configure(globals())
    run(settings())


if __name__ == '__main__':
    config.cli(main)
