"""What training.py, test.py and predict.py share about the model; as a script, a synthetic table for tests.

- Split (split_indices): grouped, so that a fake and its original are on the same side: a video's group is
  the root of its chain of originals, joined with those of the videos a fake also shows (FF++ pairs;
  common/dataset.py groups_of). Groups go to the validation side at random
  (seeded) until it holds VAL_FRACTION of the reals and of the fakes; how='folder' holds out whole DFDC
  parts instead, how='recorded' the videos the table marks 'val' (FF++'s official validation pairs). Each
  way assert_no_leak checks that no group is on both sides.
- Class weights (class_weights): each video's loss weighs N / (2 * N_its_class), so both classes weigh half
  whatever the share of fakes: the logit estimates the log-odds on a 50/50 set. The training prior is kept
  in the checkpoint; prior_shift moves the logits to a set with another share of fakes (test.py's PRIOR).
- Windows: training reads one random window of `crop` consecutive faces per video, a new one every epoch;
  evaluation (predict_logits) averages the logits of every window at `stride`, the last one ending on the
  last face (EVALUATION). A video with fewer faces than `crop` is one short window.
- Checkpoints (save_checkpoint / load_checkpoint): the network's config and weights, the prior, the
  evaluation choice, the clip range and the split: enough to rebuild and use the model from the file alone.
As a script, writes a synthetic merged table and its training store (merge_embeddings.py's columns) whose
fakes' consecutive faces jitter while a real's are strongly correlated; any single face has the same
distribution in both, so only the sequence tells them apart.

    python model.py --output=/tmp/synthetic.pkl --videos=1000
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import ctypes
import io
import json
import math
import os
import pickle
import sys
from dataclasses import dataclass

import numpy as np
import torch

from common import store
from common.device import autocast
from common.files import atomic_path
from network import build

# ----------------------------------------------------------------------------- config
OUTPUT = ''                 # as a script: where to write the synthetic table (a pandas pickle)
VIDEOS = 1000               # videos in it
FACES = 50                  # faces per video (DFDC: 300 frames / FRAME_STEP 6)
MIN_FACES = 0               # > 0: faces per video drawn from MIN_FACES..FACES (short sequences)
VIDEO_DIM = 512             # face embedding size
AUDIO_DIM = 256             # audio embedding size (Resemblyzer's)
SIGNAL = 'jitter'           # 'jitter': fakes' faces jitter frame to frame | 'none': no signal at all
FOLDERS = 1                 # DFDC parts to spread the groups over
SEED = 0                    # random seed of the table
# -----------------------------------------------------------------------------

FORMAT = 'dfdc-lstm-detector/1'
ZIP_MAGIC = b'PK\x03\x04'  # torch.save writes a zip file
EVALUATION = 'mean_logit_over_windows'
REAL_RHO, FAKE_RHO = 0.95, 0.3  # synthetic: correlation of consecutive faces' deviation in reals, fakes


def main():
    config.configure(globals())
    if not OUTPUT:
        raise config.UserError('give the table to write: --output=PATH.pkl')
    if MIN_FACES > FACES:
        raise config.UserError(f'--min_faces={MIN_FACES} is above --faces={FACES}')
    config.writable_file(OUTPUT)
    table = synthetic_table(VIDEOS, FACES, MIN_FACES, VIDEO_DIM, AUDIO_DIM, SIGNAL, FOLDERS, SEED)
    store.save(table, OUTPUT)  # and its training store, as merge_embeddings.py writes it
    print(f'{OUTPUT}: {len(table)} videos, {int(table.label.sum())} fake, signal {SIGNAL}')


# ----------------------------------------------------------------------------- split
class LeakError(AssertionError):
    pass


def assert_no_leak(groups, train, val):
    """Raise LeakError if any group (an original and its fakes) has videos on both sides."""
    both = set(np.asarray(groups, object)[train]) & set(np.asarray(groups, object)[val])
    if both:
        raise LeakError(f'{len(both)} groups on both sides of the split, e.g. {sorted(both)[0]}')


def split_indices(labels, groups, folders=None, how='original', val_fraction=0.2, seed=0, val_folders='',
                  marks=None):
    """(train, val): sorted index arrays. See the module's docstring.

    how='original': units are groups; how='folder': units are DFDC folders (val_folders, comma-separated,
    names them; else they are drawn like groups); how='recorded': the videos whose mark (the table's split,
    per video) is 'val' are held out, whatever val_fraction. Raises ValueError with the reason when no split
    exists.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups, object)
    if how == 'recorded':
        val_mask = np.zeros(len(labels), bool) if marks is None else np.asarray(marks, object) == 'val'
        if not val_mask.any():
            raise ValueError("--split=recorded: no video is marked 'val' (make_metadata.py --ff_splits marks "
                             "FF++'s official validation pairs)")
    else:
        val_mask = _drawn(labels, groups, folders, how, val_fraction, seed, val_folders)
    train, val = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    if len(train) == 0:
        raise ValueError('the split leaves no video to train on')
    assert_no_leak(groups, train, val)
    return train, val


def _drawn(labels, groups, folders, how, val_fraction, seed, val_folders):
    """split_indices' validation side, a (videos,) bool mask, where it is drawn by group or by folder."""
    if how == 'original':
        units = groups
    elif how == 'folder':
        if folders is None or all(f in ('', 'nan', 'None') for f in folders):
            raise ValueError("--split=folder needs the table's `folder` column")
        units = np.asarray(folders, object)
    else:
        raise ValueError(f"--split takes 'original', 'folder' or 'recorded', not {how!r}")
    if val_fraction <= 0:
        return np.zeros(len(labels), bool)
    names, unit_of = np.unique(units.astype(str), return_inverse=True)
    counts = np.zeros((len(names), 2), np.int64)  # (units, [real, fake])
    np.add.at(counts, (unit_of, labels.astype(np.int64)), 1)
    if how == 'folder' and val_folders:
        wanted = [f.strip() for f in val_folders.split(',') if f.strip()]
        unknown = [f for f in wanted if f not in set(names)]
        if unknown:
            raise ValueError(f'--val_folders: no folder {", ".join(unknown)} in the table')
        chosen = np.isin(names, wanted)
    else:
        chosen = _draw_units(counts, val_fraction, np.random.default_rng(seed), how)
    return chosen[unit_of]


def _draw_units(counts, val_fraction, rng, how):
    """Units for the validation side, drawn at random, each taken where it brings the side nearer val_fraction of
    each class (the sum of the classes' distances, each relative to its target: DFDC has 5 fakes a real) or gives it
    a class it lacks, keeping on the training side at least one unit of every class that has one. (Taken wherever a
    class still lacked some, a large unit drawn late held out twice the fraction on a small table.)"""
    if len(counts) < 2:
        raise ValueError(f'the table has a single {"group" if how == "original" else "folder"}: '
                         f'nothing can be held out without a leak')
    target = val_fraction * counts.sum(0)        # (2,) reals, fakes wanted on the validation side
    scale = np.where(target > 0, target, 1)
    have = np.zeros(2)
    left = counts.sum(0).astype(float)           # what the training side keeps
    chosen = np.zeros(len(counts), bool)
    for u in rng.permutation(len(counts)):
        c = counts[u]
        nearer = (np.abs(target - have - c) / scale).sum() < (np.abs(target - have) / scale).sum()
        first = ((have == 0) & (c > 0) & (target > 0)).any()  # a class the side lacks: both are wanted there
        starves = (c > 0) & (left - c <= 0)
        if (nearer or first) and not starves.any():
            chosen[u] = True
            have += c
            left -= c
    if not chosen.any():
        # tiny tables: hold out the smallest unit that starves no class of the training side (the loop's test, for
        # every unit), else the smallest
        starving = ((counts > 0) & (counts.sum(0) - counts <= 0)).any(1)
        chosen[np.argmin(counts.sum(1) + starving * counts.sum())] = True
    return chosen


def first_tracks(keys):
    """(rows,) bool: each video's first row. With --keep_all_tracks a video's rows are its face tracks, the largest
    first: test.py and predict.py score a video by it, training.py validates on it, so each counts a video once."""
    first = np.zeros(len(keys), bool)
    first[np.unique(np.asarray(keys, str), return_index=True)[1]] = True
    return first


def class_weights(labels):
    """(w_real, w_fake) = N / (2 N_real), N / (2 N_fake): both classes weigh half of the loss.
    A class absent from the labels gets weight 1 for the other (nothing to balance against)."""
    labels = np.asarray(labels)
    n, n_fake = len(labels), int((labels == 1).sum())
    n_real = n - n_fake
    if n_real == 0 or n_fake == 0:
        return 1.0, 1.0
    return n / (2 * n_real), n / (2 * n_fake)


# ----------------------------------------------------------------------------- batches
@dataclass
class Batch:
    faces: np.ndarray        # (batch, time, video_dim) float16, padded at the end with zeros
    lengths: np.ndarray      # (batch,) int64: real steps of each row, >= 1
    audio: np.ndarray        # (batch, audio_dim) float32
    has_audio: np.ndarray    # (batch,) bool
    labels: np.ndarray       # (batch,) float32 (-1 where unknown)
    owner: np.ndarray        # (batch,) int64: the video (position in `indices`) each row belongs to

    def to(self, device):
        """(faces float32, lengths, audio, has_audio, labels) as tensors on device."""
        t = {k: torch.from_numpy(getattr(self, k)) for k in ('faces', 'lengths', 'audio', 'has_audio', 'labels')}
        faces = t['faces'].to(device, non_blocking=True).float()
        return faces, t['lengths'], t['audio'].to(device), t['has_audio'].to(device), t['labels'].to(device)


def window_starts(n, crop, stride):
    """Start of every evaluation window of a video of n faces: every `stride`, plus one ending on the
    last face so that the tail counts too; [0] when n <= crop (one short window)."""
    if n <= crop:
        return [0]
    starts = list(range(0, n - crop + 1, stride))
    if starts[-1] != n - crop:
        starts.append(n - crop)
    return starts


def train_batches(table, indices, crop, batch_size, rng):
    """One epoch: the videos in a random order, one random window of each (a new one every epoch)."""
    order = np.asarray(indices)[rng.permutation(len(indices))]
    for b in range(0, len(order), batch_size):
        videos = order[b:b + batch_size]
        lengths = np.minimum(table.n_faces[videos], crop)
        starts = rng.integers(0, table.n_faces[videos] - lengths + 1)
        faces = np.zeros((len(videos), lengths.max(), table.video_dim), np.float16)  # (batch, time, D)
        for k, (v, s, length) in enumerate(zip(videos, starts, lengths)):
            table.read_faces(v, s, length, out=faces[k])
        yield Batch(faces, lengths.astype(np.int64), table.read_audio(videos), table.has_audio[videos],
                    table.labels[videos].astype(np.float32), b + np.arange(len(videos)))


def eval_batches(table, indices, crop, stride, batch_size):
    """Every window of every video (window_starts), batch_size windows a batch (a video's windows may
    span two); `owner` says which of `indices` each window belongs to. Batches of one shape: the CPU's
    LSTM kernels cache a plan per input shape, and ragged batches would grow that cache with the set."""
    rows = []  # (position in indices, video, window (length, D))
    for pos, v in enumerate(indices):
        faces = table.read_faces(v)  # (n, D) float16
        for s in window_starts(len(faces), crop, stride):
            rows.append((pos, v, faces[s:s + crop]))
            if len(rows) == batch_size:
                yield _windows_batch(table, rows)
                rows = []
    if rows:
        yield _windows_batch(table, rows)


def _windows_batch(table, rows):
    time = max(len(window) for _, _, window in rows)
    faces = np.zeros((len(rows), time, table.video_dim), np.float16)  # (windows, time, D)
    for r, (_, _, window) in enumerate(rows):
        faces[r, :len(window)] = window
    owner = np.array([pos for pos, _, _ in rows], np.int64)
    videos = np.array([v for _, v, _ in rows], np.int64)
    lengths = np.array([len(window) for _, _, window in rows], np.int64)
    return Batch(faces, lengths, table.read_audio(videos), table.has_audio[videos],
                 table.labels[videos].astype(np.float32), owner)


def predict_logits(net, table, indices, device, crop, stride, batch_size=256, amp=True, progress=None):
    """The EVALUATION choice: for each video of `indices`, the mean of the logits of all its windows.
    (len(indices),) float64; NaN for a video without faces. `progress`: a tqdm-like wrapper or None."""
    indices = np.asarray(indices)
    has_faces = table.n_faces[indices] > 0
    sums = np.zeros(len(indices))
    counts = np.zeros(len(indices))
    batches = eval_batches(table, indices[has_faces], crop, stride, batch_size)
    if progress is not None:
        batches = progress(batches)
    positions = np.flatnonzero(has_faces)
    was_training = net.training
    net.eval()
    with torch.inference_mode(), autocast(device, amp and device.type == 'cuda'):
        for batch in batches:
            faces, lengths, audio, has_audio, _ = batch.to(device)
            logits = net(faces, lengths, audio, has_audio).float().cpu().numpy()
            np.add.at(sums, positions[batch.owner], logits)
            np.add.at(counts, positions[batch.owner], 1)
    net.train(was_training)
    with np.errstate(invalid='ignore'):
        return sums / counts


def steady_malloc(threshold=1 << 20):
    """Keep the process's memory flat over long epochs (Linux, glibc): allocations of `threshold` bytes
    and more get their own mmap, returned to the system when freed. By default glibc raises that
    threshold to the size of the first large block freed, after which batch-sized buffers come from the
    heap, whose high-water mark creeps up by tens of MB over an epoch (measured: bench/bench_training.py).
    Returns whether it applied (False off glibc: memory then creeps, results are the same)."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    m_mmap_threshold = -3  # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, threshold))


def fit_audio_only(table, indices, seed=0):
    """The audio-only model predict.py falls back on for a video without a face: a class-balanced
    logistic regression (scikit-learn) on the audio embeddings of the training videos that have audio.
    A dict of plain values for the checkpoint, or None where it cannot be fitted (no audio, one class)."""
    from sklearn.linear_model import LogisticRegression
    indices = np.asarray(indices)
    indices = indices[table.has_audio[indices]]
    labels = table.labels[indices]
    if table.audio_dim == 0 or len(np.unique(labels)) < 2:
        return None
    audio = table.read_audio(indices)  # (videos, audio_dim) float32
    fit = LogisticRegression(class_weight='balanced', max_iter=2000, random_state=seed).fit(audio, labels)
    return {'coef': fit.coef_[0].astype(float).tolist(), 'intercept': float(fit.intercept_[0]),
            'n_videos': int(len(indices)), 'how': 'class-balanced logistic regression on audio embeddings'}


def audio_only_logit(audio_only, embedding):
    """The audio-only model's logit for one (audio_dim,) embedding (its log-odds on a 50/50 set)."""
    return float(np.dot(audio_only['coef'], embedding) + audio_only['intercept'])


def fallback_logit(audio_only, embedding, has_audio):
    """The log-odds on a 50/50 set of a video the network cannot read (no face): the audio-only model's
    where the video has audio and the checkpoint has that model, else 0 (no evidence: once moved by
    prior_shift, the set's own share of fakes). test.py and predict.py both use it."""
    return audio_only_logit(audio_only, embedding) if has_audio and audio_only else 0.0


def prior_shift(prior):
    """What moves the network's log-odds (its loss was class-balanced: a 50/50 set) to a set with
    `prior` fakes; test.py and predict.py both add it, so their probabilities agree."""
    return math.log(prior / (1 - prior))


def sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, net, **fields):
    """Network config and weights plus `fields` (plain Python values, tensors, state dicts), atomically."""
    state = {'format': FORMAT, 'network': net.config_dict(),
             'state_dict': {k: v.detach().cpu() for k, v in net.state_dict().items()}, **fields}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory: a full disk is then Python's OSError (one line), not torch's RuntimeError
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(buffer.getbuffer())


def load_checkpoint(path, device='cpu'):
    """(network on device in eval mode, the checkpoint dict); config.UserError with the reason."""
    if os.path.isdir(path):  # a run folder given for its best.pt
        raise config.UserError(f'{path} is a folder: give the checkpoint file in it (training.py\'s best.pt)')
    if not os.path.isfile(path):
        raise config.UserError(f'{path}: no such checkpoint')
    with open(path, 'rb') as f:
        if f.read(4) != ZIP_MAGIC:  # text, garbage, an empty file: torch.load's errors would not say so
            raise config.UserError(f"{path}: not a checkpoint (not a file torch.save wrote); give training.py's "
                                   f"best.pt")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0].split('. ')[0]
        raise config.UserError(f"{path}: not a readable checkpoint, truncated or corrupt ({reason}); give "
                               f"training.py's best.pt, or train again") from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != FORMAT:
        raise config.UserError(f'{path}: not a checkpoint of this detector (format {FORMAT})')
    try:
        net = build(ckpt['network'])
        net.load_state_dict(ckpt['state_dict'])
    except (KeyError, TypeError, RuntimeError) as err:  # a field missing, weights of another shape
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise config.UserError(f'{path}: an incomplete checkpoint ({reason}); train again') from None
    return net.to(device).eval(), ckpt


# What scores where no training.py checkpoint is given: the face encoder's own head (--face_encoder=gend), in
# the fields of a checkpoint that test.py and predict.py read; its evaluation: one window a face
HEAD = {'evaluation': {'how': "mean over the video's faces of the encoder head's P(FAKE)", 'crop': 1, 'stride': 1},
        'clip': [0.01, 0.99]}  # training.py's default clip range


def load_scorer(path, device='cpu'):
    """(network, checkpoint dict, what scores, in words) of training.py's checkpoint at `path`; for '' the face
    encoder's own head: (None, HEAD, ...), whose logits are head_logit's of the faces' FAKE logits."""
    if not path:
        return None, HEAD, "the face encoder's own head (no checkpoint: GenD's mean P(FAKE) over the faces)"
    net, ckpt = load_checkpoint(path, device)
    return net, ckpt, f'checkpoint {os.path.basename(path)}'


def recorded_settings(attrs, what):
    """{'--name': value} of the settings a merged table's `what` ('face', 'audio') embeddings were made with, as
    merge_embeddings.py records them in its attrs ({} for an older table): what predict.py and test.py match."""
    return json.loads(attrs.get(f'{what}_settings', '{}'))


def check_dims(ckpt, video_dim, audio_dim, where):
    """config.UserError where training.py's checkpoint reads face and audio embeddings of other sizes (`where`:
    what made these, for the message): a table or run whose embedders the checkpoint did not record."""
    net = ckpt.get('network')  # none: the face encoder's own head scores (load_scorer's HEAD)
    if net and (net['video_dim'], net['audio_dim']) != (video_dim, audio_dim):
        raise config.UserError(f'{where}: embeddings of {video_dim} (video) and {audio_dim} (audio) values, the '
                               f'checkpoint was trained on {net["video_dim"]} and {net["audio_dim"]}')


def check_embedder(trained, what, ours, todo, digest=None, has='this run has'):
    """config.UserError where a checkpoint's network (`trained`: its training table's attrs) would read `what`
    ('face' or 'audio') embeddings of another embedder than `ours` (its name). Face weights are compared by their
    tensors (common.weights.tensors_digest) where both sides recorded them: the same weights under another name or
    file (a hub id's local copy) are the same; other weights under the same name (a folder called gend) are not.
    Else by name (None: unknown). `todo`: the message's advice; `has`: who has `ours`."""
    then = trained.get('audio_encoder') if what == 'audio' else trained.get('video_embedder', trained.get('embedder'))
    recorded = trained.get('video_embedder_digest') if what == 'face' else None
    if (recorded == digest) if recorded and digest else then in (None, ours):
        return
    other = ' (other weights under that name: their tensors differ)' if then == ours else ''
    raise config.UserError(f'the checkpoint was trained on {what} embeddings {then!r}, {has} {ours!r}{other}: {todo}')


def head_logit(head_p):
    """The log-odds of a video's head score (faces/clip.py's video_score: the mean of its faces' P(FAKE)), so that
    it moves to PRIOR and is clipped as a network's logit is; NaN stays NaN (a video without a face)."""
    p = np.clip(np.asarray(head_p, np.float64), 1e-15, 1 - 1e-15)  # a saturated score: finite log-odds, +-34.5
    return np.log(p) - np.log1p(-p)


# ----------------------------------------------------------------------------- synthetic tables
def synthetic_table(n_videos, faces=FACES, min_faces=MIN_FACES, video_dim=VIDEO_DIM, audio_dim=AUDIO_DIM,
                    signal=SIGNAL, folders=FOLDERS, seed=SEED, no_audio_share=0.1):
    """A merged table like merge_embeddings.py's, with DFDC's structure: each original is one REAL video
    and 4-6 FAKEs made from it (~83% fake), sharing its identity (the mean of its face embeddings) and
    its audio. Faces: identity + a stationary AR(1) deviation of unit variance, correlation REAL_RHO
    between consecutive faces for reals and FAKE_RHO for fakes when signal='jitter' (REAL_RHO for all
    when signal='none'). Embeddings float16, audio float32 (zeros where has_audio is False)."""
    import pandas as pd
    if signal not in ('jitter', 'none'):
        raise ValueError(f"signal is 'jitter' or 'none', not {signal!r}")
    rng = np.random.default_rng(seed)
    rows = []
    g = 0
    while len(rows) < n_videos:
        identity = rng.standard_normal(video_dim).astype(np.float32)
        voice = rng.standard_normal(audio_dim).astype(np.float32)
        voice /= max(np.linalg.norm(voice), 1e-6)
        original = f'o{seed}_{g:06d}.mp4'
        folder = f'dfdc_train_part_{g % folders}'
        for k in range(1 + int(rng.integers(4, 7))):
            if len(rows) == n_videos:
                break
            fake = k > 0
            n = faces if min_faces <= 0 else int(rng.integers(min_faces, faces + 1))
            rho = FAKE_RHO if fake and signal == 'jitter' else REAL_RHO
            has_audio = bool(rng.random() >= no_audio_share)
            rows.append({
                'filename': f'v{seed}_{g:06d}_{k}.mp4' if fake else original,
                'video_embedding': (identity + 0.5 * _ar1(rng, n, video_dim, rho)).astype(np.float16),
                'audio_embedding': voice.copy() if has_audio else np.zeros(audio_dim, np.float32),
                'has_audio': has_audio,
                'label': int(fake),
                'original': original if fake else None,
                'folder': folder,
                'frames': (np.arange(n) * 6).astype(np.int32),
                'n_frames': 300,
                # the rest of the video table's columns, so that benchmarks carry their weight too
                'boxes': np.tile(np.float32([800, 300, 1100, 700]), (n, 1)),
                'track': 0,
                'width': 1920,
                'height': 1080,
                'embedder': 'synthetic',
                'audio_encoder': 'synthetic',
            })
        g += 1
    return pd.DataFrame(rows)


def _ar1(rng, n, dim, rho):
    """(n, dim) float32: z_t = rho z_{t-1} + sqrt(1 - rho^2) e_t, z_0 ~ N(0, 1): unit variance at every t."""
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    z = np.empty_like(noise)
    if n:
        z[0] = noise[0]
    scale = np.float32(np.sqrt(1 - rho * rho))
    for t in range(1, n):
        z[t] = rho * z[t - 1] + scale * noise[t]
    return z


if __name__ == '__main__':
    config.cli(main)
