"""Train the detector (network.py) on a merged embedding table.

Reads DATASET, the merged table of merge_embeddings.py (a pandas pickle, one row per video), through its
embedding cache (common/lazytable.py: built once beside the pickle, read lazily, so memory stays flat
however many videos there are). Writes, in OUT_DIR:
  best.pt        the checkpoint of the epoch with the lowest validation loss (what test.py reads)
  last.pt        the latest epoch, with the optimizer's state: a killed run resumes from it (RESUME)
  history.json   one entry per epoch: losses, validation figures, seconds, videos per second
  history.csv    the same entries, one row per epoch
  curves.png     the training curves, the best epoch marked
  config.json    how the run was made: every setting, the versions of python and the libraries, the git
                 commit of the code (and whether its tree had changes), the start time; written when the
                 training starts (a resumed run rewrites it, with the first epoch it trains)
Every file is written atomically, the epoch's ones after every epoch. Epochs are numbered from 1 in all of
them and in the log: `epoch` is the number of epochs trained when the entry or checkpoint was written.

How it trains (the reasons are in model.py's docstring):
- split grouped by `original` (SPLIT='original'), or by DFDC folder (SPLIT='folder'); no group on both
  sides, asserted;
- the loss is BCEWithLogitsLoss weighted per video by N / (2 N_class): reals and fakes weigh half each;
- one new random window of CROP faces per video every epoch; validation scores every window at
  EVAL_STRIDE and averages the logits of a video (the evaluation choice stored in the checkpoint);
- early stopping on the validation loss (the balanced, unclipped BCE of those mean logits): PATIENCE
  epochs without an improvement of MIN_DELTA stop the run;
- seeded (SEED): the split, the initial weights, the order and the windows of every epoch;
- CUDA with mixed precision (float16, a gradient scaler) where present, else the CPU in float32.

Several processes (torchrun; DistributedDataParallel, gloo on the CPU, NCCL on CUDA, one GPU per process)
train the same model as one process: every process draws the epoch's order and windows from the shared
seed, and reads its share of every batch (rows rank, rank + world, ... : BATCH_SIZE stays the videos of
one optimizer step, whatever the number of processes); its loss is the sum over its rows times
world / BATCH_SIZE, so that DDP's average of the gradients is the one process's batch mean, weights
included. Validation is split the same way and the logits summed across processes, so every process
takes the same early-stopping decision. What differs from one process: the order of floating-point sums
(gradients summed over two half batches, validation windows batched with other videos), and dropout's
masks, which each process draws from its own stream (rank 0's is the single process's). Rank 0 builds
the embedding cache before the others open it, logs, and writes the checkpoints, history and curves;
last.pt holds every process's random state, so a resumed run with as many processes is the same run.
OUT_DIR and the cache must be on a file system all processes see. On CUDA each process takes its own GPU:
more processes on a machine than it has GPUs is refused in one line before the group is joined (NCCL
would die with 'Duplicate GPU detected'); --device=cpu trains them on the CPU (gloo).

    python training.py --dataset=MERGED.pkl --out_dir=runs/lstm
    torchrun --nproc_per_node=4 training.py --dataset=MERGED.pkl --out_dir=runs/lstm
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import csv
import functools
import io
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common import metrics
from common.ddp import Ranks, rank_prefix
from common.device import autocast, pick_device, share_cpu
from common.lazytable import TableError, open_table
from common.stage import write_text
from model import (CheckpointError, EVALUATION, LeakError, class_weights, load_checkpoint, predict_logits,
                   prefetch, save_checkpoint, sigmoid, split_indices, steady_malloc, train_batches, fit_audio_only)
from network import NetworkConfig, build

# ----------------------------------------------------------------------------- config
DATASET = ''                # the merged table (pandas pickle of merge_embeddings.py)
OUT_DIR = 'runs/lstm'       # checkpoints, history, curves
CACHE_DIR = ''              # where the embedding cache goes ('': beside DATASET, as DATASET.cache/)
SPLIT = 'original'          # 'original': fakes with their original | 'folder': whole DFDC parts
VAL_FRACTION = 0.2          # share of the reals and of the fakes held out for validation (0: none)
VAL_FOLDERS = ''            # SPLIT=folder: comma-separated folders to hold out ('': drawn at random)
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
# settings a resumed run must share with the run it continues
_SAME_FOR_RESUME = ('split', 'val_fraction', 'val_folders', 'seed', 'crop', 'eval_stride', 'project', 'deltas',
                    'hidden', 'layers', 'fc', 'dropout', 'batch_size', 'lr', 'weight_decay')


class TrainingError(config.UserError):
    """A problem with the input or the out_dir: one clear line, exit code 2."""


def settings(**overrides):
    """This script's constants as lower-case settings, with overrides (what tests and benches call)."""
    return config.settings(globals(), **overrides)


def run(cfg, log=print):
    """Train with the settings dict cfg (see settings()); returns the history (a list of epoch dicts).
    Under torchrun, every process calls it; only rank 0 logs and writes files."""
    started = datetime.now(timezone.utc).isoformat(timespec='seconds')
    _check(cfg)
    torch.manual_seed(cfg['seed'])
    steady_malloc()
    if cfg['threads']:
        torch.set_num_threads(cfg['threads'])
    else:
        share_cpu()  # under torchrun: the cores shared between the local processes (else torch's default)
    device = pick_device(cfg['device'])
    amp = cfg['amp'] and device.type == 'cuda'
    with Ranks.start(device) as ranks:
        if not ranks.main:
            log, cfg = _quiet, {**cfg, 'progress': False}
        table = _open_table(cfg, ranks, log)
        with table:
            return _train(cfg, table, device, amp, log, ranks, started)


def _check(cfg):
    """Before any work: what the ranges of single settings cannot say, and whether OUT_DIR's files can
    be written (else an epoch's work is lost on its first checkpoint)."""
    if not cfg['dataset']:
        raise TrainingError('give the merged table: --dataset=MERGED.pkl')
    if not 0 <= cfg['clip_lo'] < cfg['clip_hi'] <= 1:
        raise TrainingError(f'--clip_lo and --clip_hi must satisfy 0 <= clip_lo < clip_hi <= 1, '
                            f'not {cfg["clip_lo"]} and {cfg["clip_hi"]}')
    for name in OUT_FILES:
        config.writable_file(os.path.join(cfg['out_dir'], name), '--out_dir')


def _quiet(*_):
    pass


def _open_table(cfg, ranks, log):
    """The table through its cache. open_table builds a missing or stale cache in place, which several
    processes must not do at once (each build first removes the meta file, maybe the one another build
    just wrote, and one would then find the cache invalid): rank 0 opens it first, building it where
    needed, and says how that went; the others then open the built cache."""
    if not ranks.distributed:
        return open_table(cfg['dataset'], cfg['cache_dir'], log=log)
    table, error = None, None
    if ranks.main:
        try:
            table = open_table(cfg['dataset'], cfg['cache_dir'], log=log)
        except TableError as err:
            error = str(err)
    error = ranks.broadcast(error)
    if error is not None:
        raise TableError(error)
    return table if ranks.main else open_table(cfg['dataset'], cfg['cache_dir'], log=log)


def _train(cfg, table, device, amp, log, ranks, started):
    labels = table.labels
    if (labels < 0).any():
        raise TrainingError(f'{cfg["dataset"]}: {int((labels < 0).sum())} videos have no label; '
                            f'training needs a label for every video')
    if table.video_dim == 0:
        raise TrainingError(f'{cfg["dataset"]}: no face embeddings in the table')
    try:
        train, val = split_indices(labels, table.groups, table.folders, cfg['split'], cfg['val_fraction'],
                                   cfg['seed'], cfg['val_folders'])
    except ValueError as err:
        raise TrainingError(f'cannot split {cfg["dataset"]}: {err}') from None
    except LeakError as err:  # --split=folder where fakes lie in another folder than their original
        raise TrainingError(f'cannot split {cfg["dataset"]} by {cfg["split"]} without a leak: {err}') from None
    _warn_missing_originals(log, table)
    no_faces = table.n_faces == 0
    if no_faces.any():
        log(f'{int(no_faces.sum())} videos have no face embedding and are left out of training and validation')
        train, val = train[~no_faces[train]], val[~no_faces[val]]
    if len(train) == 0:
        raise TrainingError('no video with faces to train on')
    _describe_split(log, labels, table.groups, train, val)
    w_real, w_fake = class_weights(labels[train])
    weights = torch.tensor([w_real, w_fake], dtype=torch.float32, device=device)
    prior = float(labels[train].mean())
    log(f'loss weights: real {w_real:.3f}, fake {w_fake:.3f} (N / (2 N_class); training prior {prior:.3f} fake)')

    net_config = NetworkConfig(video_dim=table.video_dim, audio_dim=table.audio_dim, hidden=cfg['hidden'],
                               layers=cfg['layers'], fc=cfg['fc'], dropout=cfg['dropout'], crop=cfg['crop'],
                               project=cfg['project'], deltas=cfg['deltas'])
    net = build(net_config).to(device)
    if ranks.rank > 0:  # dropout's own draws in each process (rank 0 keeps the single process's stream)
        torch.manual_seed(int(np.random.SeedSequence([cfg['seed'], ranks.rank]).generate_state(1)[0]))
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg['lr'], weight_decay=cfg['weight_decay'])
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    out_dir = cfg['out_dir']
    os.makedirs(out_dir, exist_ok=True)
    last_path, best_path = os.path.join(out_dir, 'last.pt'), os.path.join(out_dir, 'best.pt')
    dataset_key = {**table.meta['key'], 'n_videos': len(table)}
    fixed = {k: cfg[k] for k in _SAME_FOR_RESUME}
    state = {'history': [], 'best_loss': None, 'best_epoch': None, 'bad_epochs': 0, 'finished': False}
    done = 0  # epochs trained
    if cfg['resume'] and os.path.exists(last_path):
        done = _resume(last_path, net, optimizer, scaler, state, dataset_key, fixed, log, ranks)
    if state['finished']:
        log(f'{out_dir} holds a run that stopped early (best epoch {state["best_epoch"]}); '
            f'--resume=false starts over')
        return state['history']
    if ranks.main:
        record = {'settings': cfg, 'versions': _versions(), 'git': git_state(HERE), 'started': started,
                  'first_epoch': done + 1, 'processes': ranks.world, 'device': str(device)}
        write_text(json.dumps(record, indent=1), os.path.join(out_dir, 'config.json'))
    model = net
    if ranks.distributed:
        # after the resume: DDP starts every process from rank 0's weights (all loaded the same file)
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)
        log(f'{ranks.world} processes ({torch.distributed.get_backend()}): each reads its share of every '
            f'batch of {cfg["batch_size"]} videos and of the validation videos')
    common = None if not ranks.main else {  # what every checkpoint carries, beside the weights
        'prior': prior, 'clip': [cfg['clip_lo'], cfg['clip_hi']],
        'evaluation': {'choice': EVALUATION, 'crop': cfg['crop'], 'stride': cfg['eval_stride']},
        'loss_weights': {'real': w_real, 'fake': w_fake, 'how': 'N / (2 N_class) per video'},
        'split': {'how': cfg['split'], 'val_fraction': cfg['val_fraction'], 'seed': cfg['seed'],
                  'n_train': int(len(train)), 'n_val': int(len(val)),
                  'val_filenames': [str(f) for f in table.filenames[val]],
                  'val_keys': [str(k) for k in table.keys[val]]},  # folder/filename: names may repeat
        'dataset': {'path': os.path.abspath(cfg['dataset']), 'key': dataset_key, 'attrs': table.attrs},
        'settings': fixed,
        # predict.py's fallback for videos where no face is found
        'audio_only': fit_audio_only(table, train, cfg['seed']),
    }
    for epoch in range(done + 1, cfg['max_epochs'] + 1):
        t0 = time.perf_counter()
        train_loss = _train_epoch(cfg, model, optimizer, scaler, table, train, weights, device, amp, epoch, ranks)
        seconds = time.perf_counter() - t0
        entry = {'epoch': epoch, 'train_loss': train_loss, 'train_seconds': round(seconds, 3),
                 'videos_per_second': round(len(train) / seconds, 1)}
        if len(val):
            entry.update(_validate(cfg, net, table, val, device, amp, ranks))
            score = entry['val_loss']
        else:
            score = train_loss  # no validation side: the last epoch is the best
        improved = state['best_loss'] is None or score < state['best_loss'] - cfg['min_delta'] or not len(val)
        if improved:
            state.update(best_loss=score, best_epoch=epoch, bad_epochs=0)
        else:
            state['bad_epochs'] += 1
        entry['best'] = improved
        state['history'].append(entry)
        state['finished'] = state['bad_epochs'] >= cfg['patience']  # early stop; --max_epochs may grow
        rng = {'torch_rng': torch.get_rng_state()}  # dropout's draws, so that a resumed run is the same run
        if device.type == 'cuda':
            rng['cuda_rng'] = torch.cuda.get_rng_state(device)
        if ranks.distributed:  # every process's draws (a collective step: all of them take it)
            rng['rank_rngs'] = ranks.gather(dict(rng))
        if ranks.main:  # every process holds the same weights, state and history; one writes them
            if improved:
                save_checkpoint(best_path, net, epoch=epoch, val_loss=score, **common)
            save_checkpoint(last_path, net, epoch=epoch, optimizer=optimizer.state_dict(),
                            scaler=scaler.state_dict(), state=state, **rng, **common)
            _write_history(state['history'], out_dir)
            _plot(state['history'], state['best_epoch'], os.path.join(out_dir, 'curves.png'))
        log(_epoch_line(entry, cfg['max_epochs']))
        if state['bad_epochs'] >= cfg['patience']:
            log(f'early stop: {cfg["patience"]} epochs without a better validation loss')
            break
    if state['best_epoch'] is None:
        raise TrainingError(f'no epoch was trained (--max_epochs={cfg["max_epochs"]})')
    log(f'best checkpoint: {best_path} (epoch {state["best_epoch"]}, '
        f'{"validation" if len(val) else "training"} loss {state["best_loss"]:.4f})')
    return state['history']


def _describe_split(log, labels, groups, train, val):
    def side(idx):
        fake = int(labels[idx].sum())
        return f'{len(idx)} videos ({fake} fake, {len(idx) - fake} real, {len(set(groups[idx]))} groups)'
    log(f'split: train {side(train)}, validation {side(val)}; no group on both sides')
    for name, idx in (('training', train), ('validation', val)):
        present = set(labels[idx].tolist())
        if len(idx) and len(present) < 2:
            only = 'fake' if 1 in present else 'real'
            log(f'warning: the {name} side has only {only} videos '
                f'({"its ROC AUC is undefined" if name == "validation" else "nothing to balance"})')
    if len(val) == 0:
        log('no validation side (--val_fraction=0): every epoch is kept as the best, no early stopping')


def _train_epoch(cfg, model, optimizer, scaler, table, train, weights, device, amp, epoch, ranks):
    """Epoch `epoch` (from 1) over the training side; returns the mean weighted loss (over every process's
    videos)."""
    model.train()
    # the epoch's order and windows, the same on a resume; the first epoch's seed is 0, as when epochs were
    # numbered from 0, so that a last.pt of that time resumes into the same run
    rng = np.random.default_rng([cfg['seed'], epoch - 1])
    # several processes: the same order and windows, each reading its rows of every batch (train_batches)
    batches = prefetch(train_batches(table, train, cfg['crop'], cfg['batch_size'], rng, ranks.rank, ranks.world))
    bar = _progress(cfg)(batches, total=-(-len(train) // cfg['batch_size']), desc=f'epoch {epoch}')
    total, n = 0.0, 0
    for batch in bar:
        faces, lengths, audio, has_audio, y = batch.to(device)
        with autocast(device, amp):
            logits = model(faces, lengths, audio, has_audio)
        weighted = F.binary_cross_entropy_with_logits(logits.float(), y, reduction='none') * weights[y.long()]
        if not ranks.distributed:
            # mean over the batch of weight(class) * BCE: each batch is an unbiased estimate of the balanced loss
            loss = weighted.mean()
        else:
            # DDP averages the processes' gradients; each process's sum over its rows, times world / rows of
            # the whole batch, averages to the whole batch's mean: the single process's loss and gradient
            loss = weighted.sum() * (0.0 if batch.stand_in else ranks.world / batch.of)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if not ranks.distributed:
            total += loss.item() * len(y)
            n += len(y)
        elif not batch.stand_in:
            total += weighted.sum().item()
            n += len(y)
        bar.set_postfix(loss=f'{total / n:.4f}', refresh=False)
    if ranks.distributed:
        total, n = ranks.all_sum([total, n])
    return float(total / n)  # a Python float: the checkpoint's history loads with weights_only


def _progress(cfg):
    """tqdm over batches where PROGRESS is on and the output is a terminal (disable=None: tqdm checks)."""
    return functools.partial(tqdm, unit='batch', leave=False, mininterval=1.0,
                             disable=None if cfg['progress'] else True)


def _validate(cfg, net, table, val, device, amp, ranks):
    # several processes: each scores videos rank, rank + world, ... and the sum over the processes puts
    # every video's logit (computed by one process, zeros elsewhere) in every process, bit for bit, so that
    # they all take the same early-stopping decision
    logits = predict_logits(net, table, val[ranks.rank::ranks.world], device, cfg['crop'], cfg['eval_stride'],
                            cfg['eval_batch_size'], amp,
                            progress=lambda batches: _progress(cfg)(batches, desc='validation'))
    if ranks.distributed:
        full = np.zeros(len(val))  # (videos,)
        full[ranks.rank::ranks.world] = logits
        logits = ranks.all_sum(full)
    y = table.labels[val].astype(np.float32)
    bce = F.binary_cross_entropy_with_logits(torch.from_numpy(logits).float(), torch.from_numpy(y),
                                             reduction='none').numpy()
    # balanced: the mean of the real and the fake mean BCE (of the classes present), like the training loss
    val_loss = float(np.mean([bce[y == k].mean() for k in (0, 1) if (y == k).any()]))
    rep = metrics.report(y, sigmoid(logits), cfg['clip_lo'], cfg['clip_hi'])
    return {'val_loss': val_loss, 'val_log_loss': rep['log_loss'], 'val_balanced_log_loss': rep['balanced_log_loss'],
            'val_roc_auc': rep['roc_auc'], 'val_accuracy': rep['accuracy']}


def _resume(path, net, optimizer, scaler, state, dataset_key, fixed, log, ranks):
    try:
        _, ckpt = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainingError(f'{err}; remove it or give --resume=false') from None
    if ckpt['dataset']['key'] != dataset_key or ckpt['settings'] != fixed or ckpt['network'] != net.config_dict():
        raise TrainingError(f'{path} is a run of another table or other settings; '
                            f'give another --out_dir, or --resume=false to overwrite it')
    net.load_state_dict(ckpt['state_dict'])
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    rngs = ckpt.get('rank_rngs', [ckpt])  # one per process of the run that wrote it
    if len(rngs) == ranks.world or ranks.main:
        rng = rngs[ranks.rank] if len(rngs) == ranks.world else ckpt
        torch.set_rng_state(rng['torch_rng'])
        if 'cuda_rng' in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng['cuda_rng'], next(net.parameters()).device)
    if len(rngs) != ranks.world:  # the same computation, but other dropout masks than an uninterrupted run
        log(f'{path} was written by {len(rngs)} process(es), this run has {ranks.world}: dropout draws '
            f'other masks than an uninterrupted run would')
    state.update(ckpt['state'])
    done = ckpt['epoch']
    if state['history'][0]['epoch'] == 0:  # written when epochs were numbered from 0: the same run, renumbered
        state['history'] = [{**e, 'epoch': e['epoch'] + 1} for e in state['history']]
        state['best_epoch'] += 1
        done += 1
        log(f'{path} numbers its epochs from 0 (an older training.py): they are numbered from 1 from now on')
    if not state['finished']:
        log(f'resuming from {path}: epoch {done} done, best epoch {state["best_epoch"]}')
    return done


def _warn_missing_originals(log, table):
    """Say how many videos lead to an original that is not in the table. groups_of (common/lazytable.py)
    makes the last name of such a chain of originals its group: the only groups that are not a video of
    the table."""
    present = set(table.keys)
    outside = np.array([g not in present for g in table.groups], bool)  # (videos,)
    if outside.any():
        missing = sorted(set(table.groups[outside]))
        log(f'warning: {int(outside.sum())} videos name an original that is not in the table, directly or '
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


def main():
    config.configure(globals())
    try:
        run(settings())
    except config.UserError as err:  # each process's line says which process it is
        config.fail(f'{rank_prefix()}{err}')


if __name__ == '__main__':
    config.cli(main)
