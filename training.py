"""Train the detector (network.py) on a merged embedding table.

Reads DATASET, merge_embeddings.py's table, through the training store beside it (common/store.py: faces
read on demand, so memory stays flat however many videos there are). Writes, in OUT_DIR, atomically:
  best.pt       the epoch with the lowest validation loss (what test.py and predict.py read)
  last.pt       the latest epoch with the optimizer's state: a killed run resumes from it (RESUME)
  history.json  one entry per epoch (losses, validation figures, videos per second); history.csv the same
  curves.png    the training curves, the best epoch marked
  config.json   every setting, the versions of python and the libraries, the git commit, the start time;
                a resumed run keeps that first record and appends its own to `resumes`
Epochs are numbered from 1 everywhere. How it trains (the reasons are in model.py's docstring): a split
grouped by `original` (or by DFDC folder), asserted leak-free, of the videos the table does not mark 'test'
(HOLD_TEST); BCEWithLogitsLoss weighted N / (2 N_class) per video; one random window of CROP faces per video
per epoch; validation averages the logits of every window at EVAL_STRIDE; early stopping on the validation
loss; seeded; CUDA in float16 where present.
One process: all of DFDC is seconds an epoch (BENCHMARKS.md), so several would only add machinery.

    python training.py --dataset=MERGED.pkl --out_dir=runs/lstm
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import contextlib
import csv
import functools
import glob
import io
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from common import metrics
from common.device import autocast, pick_device
from common.files import digest, read_pickle, report_files, stamp, submission_files, sweep_temporaries, write_text
from common.stage import claim, differences, env_int
from common.store import open_store
from model import (EVALUATION, LeakError, class_weights, first_tracks, fit_audio_only, load_checkpoint,
                   predict_logits, save_checkpoint, sigmoid, split_indices, steady_malloc, train_batches)
from network import NetworkConfig, build

# ----------------------------------------------------------------------------- config
DATASET = ''                # the merged table (pandas pickle of merge_embeddings.py)
OUT_DIR = 'runs/lstm'       # checkpoints, history, curves
SPLIT = 'original'          # 'original': fakes with their original | 'folder': whole DFDC parts | 'recorded':
                            # the videos the table marks 'val' (FF++'s official pairs: make_metadata --ff_splits)
VAL_FRACTION = 0.2          # share of the reals and of the fakes held out for validation (0: none; unused by
                            # SPLIT=recorded)
VAL_FOLDERS = ''            # SPLIT=folder: comma-separated folders to hold out ('': drawn at random; given,
                            # they are the validation side whatever VAL_FRACTION, which must not be 0)
HOLD_TEST = True            # leave out the videos the table marks 'test' (Celeb-DF-v2's test list, FF++'s with
                            # make_metadata.py --ff_splits), which test.py --subset=test then scores
SEED = 0                    # split, initial weights, order and windows
CROP = 20                   # faces per window (a random window per video per epoch)
EVAL_STRIDE = 10            # validation: a window every EVAL_STRIDE faces, logits averaged per video
PROJECT = 128               # faces go through a Linear layer to this size first (0: none)
DELTAS = True               # the LSTM also reads each step's change from the previous one
HIDDEN = 128                # LSTM hidden size
LAYERS = 1                  # LSTM layers
FC = 64                     # fully connected layer after the join (0: none)
DROPOUT = 0.3               # dropout before the linear layers (and between LSTM layers)
BATCH_SIZE = 64             # videos per training batch
EVAL_BATCH_SIZE = 512       # windows per validation batch
LR = 1e-3                   # AdamW learning rate
WEIGHT_DECAY = 1e-2         # AdamW weight decay
MAX_EPOCHS = 30             # at most this many epochs
PATIENCE = 5                # stop after this many epochs without a better validation loss
MIN_DELTA = 1e-4            # an improvement smaller than this does not count
CLIP_LO = 0.01              # predictions are clipped to [CLIP_LO, CLIP_HI] in the reported log losses
CLIP_HI = 0.99              # (the checkpoint carries them to test.py and predict.py)
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1'
AMP = True                  # mixed precision (float16) on CUDA; the CPU trains in float32
RESUME = True               # continue from OUT_DIR/last.pt when it is a run of the same table and settings
PROGRESS = True             # progress bars (where the output is a terminal)
THREADS = 1                 # CPU threads of torch (0: its default, one per core): a small LSTM gains little from
                            # more, and spinning pools lose 13x on a busy 2-core machine (bench/bench_training.py)
# -----------------------------------------------------------------------------

OUT_FILES = ('best.pt', 'last.pt', 'history.json', 'history.csv', 'curves.png', 'config.json')  # what a run writes
HERE = os.path.dirname(os.path.abspath(__file__))  # the code's folder: its git commit goes into config.json
VERSIONS = ('torch', 'facenet-pytorch', 'numpy')  # the libraries whose versions config.json records, beside python's
# the settings the weights and the recorded figures depend on (the clip: the checkpoint's, which test.py and
# predict.py use, and the history's clipped losses): what a checkpoint records it was made with (beside its table),
# so that a resumed run continues only a run of the same
_SAME_FOR_RESUME = ('split', 'val_fraction', 'val_folders', 'hold_test', 'seed', 'crop', 'eval_stride', 'project',
                    'deltas', 'hidden', 'layers', 'fc', 'dropout', 'batch_size', 'lr', 'weight_decay', 'clip_lo',
                    'clip_hi')


def main():
    config.configure(globals())
    run(settings())


def settings(**overrides):
    """This script's constants as lower-case settings, with overrides (what tests and benches call)."""
    return config.settings(globals(), **overrides)


class Fit(NamedTuple):
    """What every epoch of one run works with."""
    cfg: dict
    table: object       # common.store.Store
    train: np.ndarray   # (videos,) indices of the training side
    val: np.ndarray     # (videos,) of the validation side (may be empty)
    weights: torch.Tensor  # (2,) loss weight of a real and of a fake video
    device: torch.device
    amp: bool
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    log: object


def run(cfg, log=print):
    """Train with the settings dict cfg (see settings()); returns the history (a list of epoch dicts)."""
    started = datetime.now(timezone.utc).isoformat(timespec='seconds')
    _check(cfg)
    torch.manual_seed(cfg['seed'])
    steady_malloc()
    if cfg['threads']:
        torch.set_num_threads(cfg['threads'])
    device = pick_device(cfg['device'])
    # one run a folder (two would mix their files), which then sweeps what a killed run's writers left
    with claim(os.path.join(cfg['out_dir'], 'last.pt'), '--out_dir'), open_store(cfg['dataset']) as table:
        for name in OUT_FILES:
            sweep_temporaries(os.path.join(cfg['out_dir'], name))
        train, val = _split(cfg, table, log)
        w_real, w_fake = class_weights(table.labels[train])  # per row: each face track is trained on
        videos = train[first_tracks(table.keys)[train]]  # with --keep_all_tracks, a row per face track
        log(f'loss weights: real {w_real:.3f}, fake {w_fake:.3f} (N / (2 N_class) of its rows'
            + (f', the {len(train)} face tracks of {len(videos)} videos' if len(videos) < len(train) else '')
            + f'); training prior {table.labels[videos].mean():.3f} fake')
        with _memory(device, '--hidden, --layers, --project and --fc'):
            net = build(NetworkConfig(video_dim=table.video_dim, audio_dim=table.audio_dim, hidden=cfg['hidden'],
                                      layers=cfg['layers'], fc=cfg['fc'], dropout=cfg['dropout'], crop=cfg['crop'],
                                      project=cfg['project'], deltas=cfg['deltas'])).to(device)
        amp = cfg['amp'] and device.type == 'cuda'
        fit = Fit(cfg, table, train, val, torch.tensor([w_real, w_fake], dtype=torch.float32, device=device),
                  device, amp, net, torch.optim.AdamW(net.parameters(), lr=cfg['lr'], weight_decay=cfg['weight_decay']),
                  torch.amp.GradScaler(device.type, enabled=amp), log)
        with _memory(device, '--batch_size, --eval_batch_size and --crop'):
            return _epochs(fit, started)


@contextlib.contextmanager
def _memory(device, sizes):
    """Torch's allocation failure (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError) as one line
    naming the settings that size what did not fit; what an epoch finished is kept (last.pt)."""
    try:
        yield
    except RuntimeError as err:
        if not isinstance(err, torch.OutOfMemoryError) and "can't allocate memory" not in str(err):
            raise
        raise config.UserError(f'out of memory on {device} ({str(err).splitlines()[0]}): '
                               f'give smaller {sizes}') from None


def _check(cfg):
    """Before any work: what the ranges of single settings cannot say, and whether OUT_DIR's files can
    be written (else an epoch's work is lost on its first checkpoint)."""
    if env_int('WORLD_SIZE', '1') > 1:
        raise config.UserError('training runs in one process (all of DFDC is seconds an epoch): start it with '
                               'python, not torchrun')
    if not cfg['dataset']:
        raise config.UserError('give the merged table: --dataset=MERGED.pkl')
    _check_val_folders(cfg)
    if not 0 <= cfg['clip_lo'] < cfg['clip_hi'] <= 1:
        raise config.UserError(f'--clip_lo and --clip_hi must satisfy 0 <= clip_lo < clip_hi <= 1, '
                               f'not {cfg["clip_lo"]} and {cfg["clip_hi"]}')
    for name in OUT_FILES:
        config.writable_file(os.path.join(cfg['out_dir'], name), '--out_dir')


def _check_val_folders(cfg):
    """Refuse a --val_folders that split_indices would not use: it holds out whole folders only where
    --split=folder and only where there is a validation side at all (--val_fraction > 0)."""
    if not cfg['val_folders']:
        return
    if not [f for f in cfg['val_folders'].split(',') if f.strip()]:
        raise config.UserError(f'--val_folders={cfg["val_folders"]!r} names no folder; give the folders to hold '
                               f'out, comma-separated, or leave it empty')
    if cfg['split'] != 'folder':
        raise config.UserError(f'--val_folders holds out whole folders: it needs --split=folder, not '
                               f'--split={cfg["split"]}')
    if cfg['val_fraction'] == 0:
        raise config.UserError('--val_folders holds those folders out for validation, --val_fraction=0 holds '
                               'nothing out: give one or the other (with --val_folders, --val_fraction is unused)')


def _split(cfg, table, log):
    """(train, val) indices: grouped, leak-free, without the videos that have no face."""
    labels = table.labels
    if (labels < 0).any():
        raise config.UserError(f'{cfg["dataset"]}: {int((labels < 0).sum())} videos have no label; '
                               f'training needs a label for every video')
    if table.video_dim == 0:
        raise config.UserError(f'{cfg["dataset"]}: no face embeddings in the table')
    first = first_tracks(table.keys)
    pool = _pool(cfg, table, first, log)  # (videos,): the rows a side is drawn from, a video's first
    try:
        train, val = (pool[side] for side in split_indices(
            labels[pool], table.groups[pool], table.folders[pool], cfg['split'], cfg['val_fraction'], cfg['seed'],
            cfg['val_folders'], None if table.split is None else table.split[pool]))
    except ValueError as err:
        held = '; the videos it marks \'test\' are not drawn from (--hold_test)' if len(pool) < first.sum() else ''
        raise config.UserError(f'cannot split {cfg["dataset"]}: {err}{held}') from None
    except LeakError as err:  # --split=folder where fakes lie in another folder than their original
        raise config.UserError(f'cannot split {cfg["dataset"]} by {cfg["split"]} without a leak: {err}') from None
    _warn_missing_originals(log, table)
    if cfg['split'] == 'original' and (table.labels == 1).any() and (table.groups == table.keys).all():
        log('warning: no fake names its original (metadata.json\'s "original"), so each video is its own group: a '
            'split by video, through which a person\'s faces leak to both sides; --split=folder holds out whole '
            'folders')
    no_faces = table.n_faces == 0
    if no_faces.all():  # no side to draw, no --val_fraction or --seed that helps
        raise config.UserError(f'{cfg["dataset"]}: none of its {len(labels)} videos has a face embedding (see its '
                               f'video table\'s .failures.csv and the face stage\'s settings)')
    if no_faces.any():
        log(f'{int(no_faces.sum())} videos have no face embedding and are left out of training and validation')
        if len(val) and no_faces[val].all():  # else it would train on with no validation, as if none was asked for
            raise config.UserError(f'none of the {len(val)} videos of the validation side has a face embedding: '
                                   f'--val_fraction=0 trains without one, another --seed draws another side')
        train, val = train[~no_faces[train]], val[~no_faces[val]]
    if len(train) == 0:
        raise config.UserError('no video with faces to train on')
    if not first.all():  # the split drew videos (--val_fraction: of videos, not of rows); their tracks follow
        train = np.flatnonzero(np.isin(table.keys, table.keys[train]) & (table.n_faces > 0))
        log(f'{int((~first[train]).sum())} rows are further face tracks of a video (--keep_all_tracks): trained on '
            f'with it; validation scores each video by its largest, as test.py and predict.py do')
    _describe_split(log, labels, table.keys, table.groups, train, val)
    return train, val


def _pool(cfg, table, first, log):
    """The rows training and validation are drawn from: each video's `first`, of those the table does not mark
    'test' with --hold_test."""
    tested = np.zeros(len(table), bool) if table.split is None or not cfg['hold_test'] else table.split == 'test'
    if tested.all():
        raise config.UserError(f'{cfg["dataset"]}: every video is marked \'test\' (an official test list): '
                               f'--hold_test=false trains on them')
    if tested.any():
        log(f'{int((tested & first).sum())} videos the table marks \'test\' (e.g. {table.keys[tested][0]}) are left '
            f'out of training and validation: test.py --subset=test scores them (--hold_test=false trains on them)')
    return np.flatnonzero(~tested & first)


def _epochs(fit, started):
    """The epochs, from the last one of a resumed run; writes the run folder; returns the history."""
    cfg, table, log = fit.cfg, fit.table, fit.log
    last_path, best_path = os.path.join(cfg['out_dir'], 'last.pt'), os.path.join(cfg['out_dir'], 'best.pt')
    dataset_key = {'pickle': table.meta['pickle'], 'n_videos': len(table)}  # its size and mtime: the table trained on
    # common.stage's made_with: what the weights depend on, the table and the settings
    made_with = {'dataset': dataset_key, **{f'--{k}': cfg[k] for k in _SAME_FOR_RESUME}}
    state = {'history': [], 'best_loss': None, 'best_epoch': None, 'bad_epochs': 0, 'finished': False}
    _start(fit, last_path, state, made_with)
    if state['finished']:
        log(f'{cfg["out_dir"]} holds a run that stopped early (best epoch {state["best_epoch"]}); '
            f'--resume=false starts over')
        return state['history']
    done = len(state['history'])  # epochs trained
    if done < cfg['max_epochs']:  # a rerun with nothing to train leaves the record as it is
        _write_record(cfg, fit.device, started, done)
    train, val = fit.train, fit.val
    common = _carried(fit, made_with)
    for epoch in range(done + 1, cfg['max_epochs'] + 1):
        config.catch_up()  # a Ctrl-C or SIGTERM a library dropped (common.config): stop here, not epochs later
        t0 = time.perf_counter()
        train_loss = _train_epoch(fit, epoch)
        seconds = time.perf_counter() - t0
        entry = {'epoch': epoch, 'train_loss': train_loss, 'train_seconds': round(seconds, 3),
                 'videos_per_second': round(len(train) / seconds, 1)}
        if len(val):
            entry.update(_validate(fit, epoch))
        score = entry['val_loss'] if len(val) else train_loss  # no validation side: the last epoch is the best
        entry['best'] = improved = (state['best_loss'] is None or score < state['best_loss'] - cfg['min_delta']
                                    or not len(val))
        if improved:
            state.update(best_loss=score, best_epoch=epoch, bad_epochs=0)
        else:
            state['bad_epochs'] += 1
        state['history'].append(entry)
        state['finished'] = state['bad_epochs'] >= cfg['patience']  # early stop; --max_epochs may grow
        _save_epoch(fit, state, epoch, score if improved else None, common)
        log(_epoch_line(entry, cfg['max_epochs']))
        if state['finished']:
            log(f'early stop: {cfg["patience"]} epochs without a better validation loss')
            break
    if state['best_epoch'] is None:
        raise config.UserError(f'no epoch was trained (--max_epochs={cfg["max_epochs"]})')
    log(f'best checkpoint: {best_path} (epoch {state["best_epoch"]}, '
        f'{"validation" if len(val) else "training"} loss {state["best_loss"]:.4f})')
    return state['history']


def _start(fit, last_path, state, made_with):
    """Resume from last.pt where RESUME and it is there, and bring the history and curves up to it (a kill
    between last.pt and them left them an epoch behind); else clear OUT_DIR of an earlier run's files, which a
    new run killed before its first epoch would leave beside its config.json, to be taken for its own."""
    out_dir = fit.cfg['out_dir']
    if fit.cfg['resume'] and os.path.exists(last_path):
        _resume(fit, last_path, state, made_with)
        _write_history(state['history'], out_dir)
        _plot(state['history'], state['best_epoch'], os.path.join(out_dir, 'curves.png'))
        return
    # and test.py's reports and predict.py's submissions of the earlier best.pt, which would pass for the new one's
    paths = [os.path.join(out_dir, n) for n in OUT_FILES if n != 'config.json']
    paths += _reports_of(out_dir, ('best.pt', 'last.pt'))
    earlier = [p for p in paths if os.path.exists(p)]
    for path in earlier:
        os.remove(path)
    if earlier:
        fit.log(f'a new run in {out_dir}: the earlier run\'s {", ".join(map(os.path.basename, earlier))} removed')


def _reports_of(out_dir, checkpoints):
    """test.py's reports (*.json) in OUT_DIR that score one of its `checkpoints` (names), by the path they record or,
    where nothing is there now (the folder moved since), by its size and time; and the files beside each (common.
    files.report_files): a report beside the new best.pt that replaced its own would be read as the new one's;
    and predict.py's submissions of them (_submissions_of)."""
    paths = [os.path.join(out_dir, name) for name in checkpoints]
    mine = {os.path.realpath(p) for p in paths}
    stamps = [stamp(p) for p in paths if os.path.exists(p)]
    found = []
    for path in sorted(p for p in glob.glob(os.path.join(glob.escape(out_dir), '*')) if p.lower().endswith('.json')):
        if os.path.basename(path) in OUT_FILES or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding='utf-8') as f:
                report = json.load(f)
        except (OSError, ValueError):  # not a report of test.py's (ValueError: not JSON, or not UTF-8)
            continue
        if not (isinstance(report, dict) and isinstance(report.get('checkpoint'), str)
                and {'checkpoint_epoch', 'scorer', 'subset'} <= set(report)):
            continue
        if os.path.realpath(report['checkpoint']) in mine or (
                not os.path.exists(report['checkpoint']) and report.get('checkpoint_stamp') in stamps):
            found += report_files(path)
    return found + _submissions_of(out_dir, [p for p in paths if os.path.exists(p)])


def _submissions_of(out_dir, checkpoints):
    """predict.py's submissions in OUT_DIR made with one of `checkpoints` (paths), by the digest their table
    (OUTPUT.pkl) records, and the files beside each (common.files.submission_files)."""
    # OUTPUT.pkl beside OUTPUT and its failures: never read a merged table kept here
    tables = [p for p in glob.glob(os.path.join(glob.escape(out_dir), '*.pkl'))
              if all(map(os.path.isfile, submission_files(p[:-len('.pkl')])[::3]))]
    digests = {digest(p) for p in checkpoints} if tables else set()
    found = []
    for path in sorted(tables):
        try:
            made = read_pickle(path, '').attrs.get('made_with')
        except config.UserError:  # not a table of predict.py's
            continue
        if isinstance(made, dict) and made.get('checkpoint') in digests:
            found += submission_files(path[:-len('.pkl')])
    return found


def _drop_reports(fit, checkpoints):
    """Remove the reports of the checkpoints an epoch is about to replace (_reports_of), said in one line."""
    if gone := [p for p in _reports_of(fit.cfg['out_dir'], checkpoints) if os.path.exists(p)]:
        for path in gone:
            os.remove(path)
        fit.log(f'{", ".join(map(os.path.basename, gone))} removed: test.py\'s or predict.py\'s of the '
                f'{" and ".join(checkpoints)} this epoch replaces')


def _save_epoch(fit, state, epoch, best_loss, common):
    """The run folder after an epoch: best.pt where it improved (best_loss not None), last.pt, the history
    and the curves."""
    out_dir = fit.cfg['out_dir']
    rng = {'torch_rng': torch.get_rng_state()}  # dropout's draws, so that a resumed run is the same run
    if fit.device.type == 'cuda':
        rng['cuda_rng'] = torch.cuda.get_rng_state(fit.device)
    _drop_reports(fit, ('best.pt', 'last.pt') if best_loss is not None else ('last.pt',))  # before: never stale
    if best_loss is not None:
        save_checkpoint(os.path.join(out_dir, 'best.pt'), fit.net, epoch=epoch, val_loss=best_loss, **common)
    save_checkpoint(os.path.join(out_dir, 'last.pt'), fit.net, epoch=epoch, optimizer=fit.optimizer.state_dict(),
                    scaler=fit.scaler.state_dict(), state=state, **rng, **common)
    _write_history(state['history'], out_dir)
    _plot(state['history'], state['best_epoch'], os.path.join(out_dir, 'curves.png'))


def _write_record(cfg, device, started, done):
    """config.json: how the run was made (settings, versions, git state, start time, first epoch). A
    resumed run (done epochs > 0) keeps the record of the run it continues and appends its own to
    `resumes` (its settings included: --max_epochs, --patience, --min_delta, --device and the like may differ)."""
    path = os.path.join(cfg['out_dir'], 'config.json')
    entry = {'settings': cfg, 'versions': _versions(), 'git': git_state(HERE), 'started': started,
             'first_epoch': done + 1, 'device': str(device)}
    record = {**entry, 'resumes': []}
    if done and os.path.exists(path):  # without it (removed) the resume's record is the only one: first_epoch says so
        try:
            with open(path, encoding='utf-8') as f:
                record = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise config.UserError(f'{path} is not a run record ({err}); remove it to start a new record, '
                                   f'or give --resume=false') from None
        if not isinstance(record, dict) or 'started' not in record:
            raise config.UserError(f'{path} is not a run record; remove it to start a new record, '
                                   f'or give --resume=false')
        record.setdefault('resumes', []).append(entry)  # a record written before resumes were kept has none
    write_text(json.dumps(record, indent=1), path)


def _describe_split(log, labels, keys, groups, train, val):
    def side(idx):
        videos, fake = len(set(keys[idx])), len(set(keys[idx][labels[idx] == 1]))
        tracks = f'{len(idx)} face tracks of ' if len(idx) > videos else ''
        return f'{tracks}{videos} videos ({fake} fake, {videos - fake} real, {len(set(groups[idx]))} groups)'
    log(f'split: train {side(train)}, validation {side(val)}; no group on both sides')
    for name, idx in (('training', train), ('validation', val)):
        present = set(labels[idx].tolist())
        if len(idx) and len(present) < 2:
            only = 'fake' if 1 in present else 'real'
            log(f'warning: the {name} side has only {only} videos '
                f'({"its ROC AUC is undefined" if name == "validation" else "nothing to balance"})')
    if len(val) == 0:
        log('no validation side (--val_fraction=0): every epoch is kept as the best, no early stopping')


def _carried(fit, made_with):
    """What every checkpoint carries beside the weights: enough for test.py and predict.py to use it alone."""
    cfg, table, train, val = fit.cfg, fit.table, fit.train, fit.val
    videos = train[first_tracks(table.keys)[train]]  # a video's further face tracks (--keep_all_tracks) aside
    return {
        'prior': float(table.labels[videos].mean()), 'clip': [cfg['clip_lo'], cfg['clip_hi']],
        'evaluation': {'choice': EVALUATION, 'crop': cfg['crop'], 'stride': cfg['eval_stride']},
        'loss_weights': {'real': float(fit.weights[0]), 'fake': float(fit.weights[1]),
                         'how': 'N / (2 N_class) per row: a video, or a face track (--keep_all_tracks)'},
        'split': {'how': cfg['split'], 'val_fraction': cfg['val_fraction'], 'seed': cfg['seed'],
                  'n_train': int(len(train)), 'n_val': int(len(val)),
                  'val_filenames': [str(f) for f in table.filenames[val]],
                  'val_keys': [str(k) for k in table.keys[val]],  # folder/filename: names may repeat
                  'train_keys': sorted({str(k) for k in table.keys[train]})},  # test.py knows them in any table
        'dataset': {'path': os.path.abspath(cfg['dataset']), 'key': made_with['dataset'], 'attrs': table.attrs},
        'made_with': made_with,
        'audio_only': fit_audio_only(table, train, cfg['seed']),  # predict.py's fallback where no face is found
    }


def _train_epoch(fit, epoch):
    """Epoch `epoch` (from 1) over the training side; returns the mean weighted loss."""
    fit.net.train()
    rng = np.random.default_rng([fit.cfg['seed'], epoch - 1])  # the epoch's order and windows, the same on a resume
    batches = train_batches(fit.table, fit.train, fit.cfg['crop'], fit.cfg['batch_size'], rng)
    bar = _progress(fit.cfg)(batches, total=-(-len(fit.train) // fit.cfg['batch_size']), desc=f'epoch {epoch}')
    total, n = 0.0, 0
    for batch in bar:
        faces, lengths, audio, has_audio, y = batch.to(fit.device)
        with autocast(fit.device, fit.amp):
            logits = fit.net(faces, lengths, audio, has_audio)  # (batch,)
        # mean over the batch of weight(class) * BCE: each batch is an unbiased estimate of the balanced loss
        loss = (F.binary_cross_entropy_with_logits(logits.float(), y, reduction='none') * fit.weights[y.long()]).mean()
        fit.optimizer.zero_grad(set_to_none=True)
        fit.scaler.scale(loss).backward()
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        total += loss.item() * len(y)
        n += len(y)
        bar.set_postfix(loss=f'{total / n:.4f}', refresh=False)
    if not all(bool(torch.isfinite(w).all()) for w in fit.net.parameters()) or not (fit.amp or np.isfinite(total)):
        _diverged(fit, epoch, 'the training loss or the weights are not finite')  # (AMP's scaler skips inf steps)
    return float(total / n)  # a Python float: the checkpoint's history loads with weights_only


def _diverged(fit, epoch, what):
    """A NaN would go on into every later epoch, and the figures: stop, with the previous epoch kept."""
    raise config.UserError(f'epoch {epoch}: {what}: the training diverged (lower --lr, now {fit.cfg["lr"]:g}, or '
                           f'--weight_decay, now {fit.cfg["weight_decay"]:g}, with --resume=false)'
                           f'{"" if epoch == 1 else f"; last.pt holds epoch {epoch - 1}"}')


def _progress(cfg):
    """tqdm over batches where PROGRESS is on and the output is a terminal (disable=None: tqdm checks)."""
    return functools.partial(tqdm, unit='batch', leave=False, mininterval=1.0,
                             disable=None if cfg['progress'] else True)


def _validate(fit, epoch):
    cfg = fit.cfg
    logits = predict_logits(fit.net, fit.table, fit.val, fit.device, cfg['crop'], cfg['eval_stride'],
                            cfg['eval_batch_size'], fit.amp,
                            progress=lambda batches: _progress(cfg)(batches, desc='validation'))
    broken = ~np.isfinite(logits)  # (videos,)
    if broken.any():
        _diverged(fit, epoch, f'{int(broken.sum())} validation videos have no finite logit (e.g. '
                              f'{fit.table.keys[fit.val[broken][0]]}; or their face embeddings hold inf or NaN)')
    y = fit.table.labels[fit.val].astype(np.float32)
    bce = F.binary_cross_entropy_with_logits(torch.from_numpy(logits).float(), torch.from_numpy(y),
                                             reduction='none').numpy()
    # balanced: the mean of the real and the fake mean BCE (of the classes present), like the training loss
    val_loss = float(np.mean([bce[y == k].mean() for k in (0, 1) if (y == k).any()]))
    rep = metrics.report(y, sigmoid(logits), cfg['clip_lo'], cfg['clip_hi'])
    return {'val_loss': val_loss, 'val_log_loss': rep['log_loss'], 'val_balanced_log_loss': rep['balanced_log_loss'],
            'val_roc_auc': rep['roc_auc'], 'val_accuracy': rep['accuracy']}


def _resume(fit, path, state, made_with):
    try:
        _, ckpt = load_checkpoint(path)
    except config.UserError as err:
        raise config.UserError(f'{err}; remove it or give --resume=false') from None
    # a last.pt of an older version recorded no made_with: every name differs, and it is refused
    differ = differences(ckpt.get('made_with'), made_with)
    if differ:
        raise config.UserError(f'{path} is a run of another table or other settings ({", ".join(differ)}); '
                               f'give another --out_dir, or --resume=false to overwrite it')
    if (ckpt.get('split') or {}).get('val_keys', []) != [str(k) for k in fit.table.keys[fit.val]]:
        # the same table and settings, another side drawn (model.py's draw changed since): its weights saw
        # videos this run would validate on
        raise config.UserError(f'{path} held out other videos than this version draws from the same table and '
                               f'settings: --resume=false starts over, or another --out_dir')
    fit.net.load_state_dict(ckpt['state_dict'])
    fit.optimizer.load_state_dict(ckpt['optimizer'])
    fit.scaler.load_state_dict(ckpt['scaler'])
    torch.set_rng_state(ckpt['torch_rng'])
    if 'cuda_rng' in ckpt and fit.device.type == 'cuda':
        torch.cuda.set_rng_state(ckpt['cuda_rng'], fit.device)
    state.update(ckpt['state'])
    if not state['finished']:
        fit.log(f'resuming from {path}: epoch {ckpt["epoch"]} done, best epoch {state["best_epoch"]}')


def _warn_missing_originals(log, table):
    """Say how many videos lead to an original that is not in the table: groups_of makes the last name of
    such a chain its group, the only groups that are not a video of the table."""
    present = set(table.keys)
    outside = np.array([g not in present for g in table.groups], bool)  # (rows,): a video's face tracks alike
    if outside.any():
        missing = sorted(set(table.groups[outside]))
        log(f'warning: {len(set(table.keys[outside]))} videos name an original that is not in the table, directly or '
            f'through a chain of fakes ({len(missing)} missing originals, e.g. {missing[0]}); the videos of each '
            f'missing original are one group (they cannot leak through it)')


def _versions():
    """{name: version} of python and VERSIONS; 'absent' for a library that is not installed."""
    versions = {'python': platform.python_version()}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = 'absent'
    return versions


def git_state(folder):
    """{'commit': HEAD of the git checkout that holds folder, 'dirty': whether its tree has uncommitted
    changes (untracked files that git does not ignore included), 'why': None}; commit and dirty None and
    'why' the reason where git or the checkout is absent."""
    def git(*args):
        out = subprocess.run(['git', *args], cwd=folder, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines() or [f'exit code {out.returncode}']
            raise OSError(f'git {" ".join(args)} in {folder}: {lines[0]}')
        return out.stdout
    try:
        commit = git('rev-parse', 'HEAD').strip()
        dirty = bool(git('status', '--porcelain').strip())
    except (OSError, subprocess.TimeoutExpired) as err:  # no git (FileNotFoundError), no checkout, a stuck git
        return {'commit': None, 'dirty': None, 'why': str(err)}
    return {'commit': commit, 'dirty': dirty, 'why': None}


def _write_history(history, out_dir):
    """history.json and history.csv: the same entries (a CSV's float is Python's repr: the same number)."""
    write_text(json.dumps(history, indent=1), os.path.join(out_dir, 'history.json'))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for e in history for k in e)), lineterminator='\n')
    writer.writeheader()
    writer.writerows(history)  # None (an undefined ROC AUC) is an empty cell
    write_text(text.getvalue(), os.path.join(out_dir, 'history.csv'))


def _epoch_line(e, max_epochs):
    parts = [f'epoch {e["epoch"]}/{max_epochs}', f'train_loss {e["train_loss"]:.4f}']
    for k in ('val_loss', 'val_balanced_log_loss', 'val_roc_auc', 'val_accuracy'):
        if k in e:
            parts.append(f'{k} ' + ('n/a' if e[k] is None else f'{e[k]:.4f}'))
    parts.append(f'{e["videos_per_second"]:.0f} videos/s')
    return ', '.join(parts) + (' *' if e['best'] else '')


def _plot(history, best_epoch, path):
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    epochs = [e['epoch'] for e in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [e['train_loss'] for e in history], 'o-', label='training (weighted BCE, one window)')
    if any('val_loss' in e for e in history):
        ax1.plot(epochs, [e.get('val_loss') for e in history], 'o-', label='validation (balanced BCE, all windows)')
        auc = [np.nan if e.get('val_roc_auc') is None else e['val_roc_auc'] for e in history]
        ax2.plot(epochs, auc, 'o-', label='validation ROC AUC')
        ax2.plot(epochs, [e.get('val_accuracy') for e in history], 'o-', label='validation accuracy')
    for ax in (ax1, ax2):
        ax.axvline(best_epoch, color='grey', linestyle='--', label=f'best epoch {best_epoch}')
    ax1.set(xlabel='epoch', ylabel='loss', title='loss')
    ax2.set(xlabel='epoch', ylim=(0, 1.02), title='validation')
    ax1.legend()
    ax2.legend(loc='lower right')
    metrics.save_figure(fig, path)


if __name__ == '__main__':
    config.cli(main)
