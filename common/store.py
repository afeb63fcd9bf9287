"""The training store merge_embeddings.py writes beside its pickle (`<pickle>.store/`) for training.py and test.py;
predict.py makes one in memory (Store.one). faces.f16: every video's face embeddings end to end, (total faces,
video_dim) float16, read with positioned reads (np.memmap's touched pages would stay in resident memory).
index.npz, written last: per-video arrays and meta (the dimensions, attrs, the pickle's and faces.f16's stamps,
made_with); a store that does not match its pickle is refused."""
import glob
import json
import os

import numpy as np

from common.config import UserError
from common.dataset import groups_of, row_keys
from common.files import atomic_path, stamp, sweep_temporaries, write_pickle

FACES, INDEX = 'faces.f16', 'index.npz'
# per-video arrays where the table has their columns, else None in Store: lead_rms is extract_audio.leading_rms,
# head_score GenD's verdict (faces/clip.py's video_score)
OPTIONAL = ('split', 'face_size', 'lead_rms', 'head_score')


def face_size(boxes):
    """A face track's size in pixels: the median of sqrt(width * height) of its (faces, 4) x1, y1, x2, y2 boxes."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)  # (faces, 4)
    return float(np.median(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))) if len(b) else float('nan')


def _optional(table):
    """The OPTIONAL arrays of the index that the table's columns give (split: '' where None)."""
    columns, out = table.columns, {}
    if 'split' in columns:
        out['split'] = np.array([s if isinstance(s, str) else '' for s in table['split']], str)
    if 'boxes' in columns:
        out['face_size'] = np.array([face_size(b) for b in table['boxes']], np.float32)
    if 'lead_rms' in columns:
        out['lead_rms'] = table['lead_rms'].to_numpy(np.float32, na_value=np.nan)
    if 'frame_logits' in columns:  # a table of --face_encoder=gend: its head's verdict, scored without training
        from faces.clip import video_score  # here: faces.clip imports torch, 2 s of every merge's start-up
        out['head_score'] = np.array([video_score(x) if isinstance(x, np.ndarray) and len(x) else np.nan
                                      for x in table['frame_logits']], np.float64)
    return out


def store_dir(pickle_path):
    return os.path.abspath(pickle_path) + '.store'


def save(table, pickle_path, made_with=None):
    """A merged table (filename, folder, label, original, video_embedding, audio_embedding, has_audio) as its
    pickle, then its store, which records `made_with` (is_current). Killed at any point, it leaves the previous
    pair or a store that does not match. UserError before any write where an embedding is not finite (inf, NaN,
    past float16's 65504) or a label not 0 or 1."""
    with np.errstate(over='ignore', invalid='ignore'):  # what overflows float16 is refused below, in one line
        faces = [np.asarray(e, np.float16) for e in table['video_embedding']]  # (faces, video_dim) each
        audio = np.stack([np.asarray(e, np.float32).reshape(-1) for e in table['audio_embedding']])  # (videos, A)
    bad = np.array([not np.isfinite(block).all() for block in faces], bool), ~np.isfinite(audio).all(axis=1)
    if (rows := np.flatnonzero(bad[0] | bad[1])).size:  # several rows (face tracks) may be one video
        names = row_keys(table.iloc[rows])
        what = ' and '.join(w for w, b in zip(('face', 'audio'), bad) if b[rows[0]])
        raise UserError(f'{pickle_path}: an embedding is not finite (inf or NaN; float16 holds at most 65504) in '
                        f'{len(set(names))} video(s), the first {names[0]} (its {what} embedding); make that '
                        f'table again')
    labels = table['label'].map(lambda v: -1 if v is None or v != v else v)  # None and NaN: no label
    if (wrong := ~labels.isin([0, 1, -1])).any():
        raise UserError(f'{pickle_path}: a label is 1 (FAKE) or 0 (REAL); {int(wrong.sum())} are not, e.g. '
                        f'{table["label"][wrong].iloc[0]!r}')
    folder = store_dir(pickle_path)
    os.makedirs(folder, exist_ok=True)
    sweep_temporaries(os.path.join(os.path.dirname(pickle_path), glob.escape(os.path.basename(pickle_path))))
    sweep_temporaries(os.path.join(folder, '*'))  # faces.f16's and index.npz's
    write_pickle(table, pickle_path)
    with atomic_path(os.path.join(folder, FACES)) as tmp, open(tmp, 'wb') as f:
        f.writelines(block.tobytes() for block in faces)  # tobytes: C order, whatever the block's
    n_faces = np.array([len(block) for block in faces], np.int64)
    names, folders = (np.array(table[c].astype(str).tolist(), str) for c in ('filename', 'folder'))  # no pickles
    attrs = {k: v for k, v in table.attrs.items() if isinstance(v, (str, int, float, bool))}
    for column in ('embedder', 'audio_encoder'):
        if column in table.columns and len(table):
            attrs.setdefault(column, ', '.join(sorted({str(v) for v in table[column].unique()})))
    meta = {'video_dim': int(faces[0].shape[1]) if faces else 0, 'audio_dim': int(audio.shape[1]), 'attrs': attrs,
            'pickle': stamp(pickle_path), 'faces': stamp(os.path.join(folder, FACES)), 'made_with': made_with or {}}
    with atomic_path(os.path.join(folder, INDEX)) as tmp, open(tmp, 'wb') as f:
        np.savez(f, filename=names, folder=folders, label=labels.to_numpy(np.int8), n_faces=n_faces,
                 group=np.array(groups_of(names.tolist(), table['original'].tolist(), folders.tolist()), str),
                 face_start=np.cumsum(n_faces) - n_faces, has_audio=table['has_audio'].to_numpy(bool),
                 audio=audio, meta=json.dumps(meta), **_optional(table))


def is_current(pickle_path, made_with=None):
    """Whether pickle_path has a store written with it; with `made_with`, one that recorded the same."""
    folder = store_dir(pickle_path)
    try:
        with np.load(os.path.join(folder, INDEX)) as index:
            meta = json.loads(str(index['meta']))
        return (meta['pickle'] == stamp(pickle_path) and meta['faces'] == stamp(os.path.join(folder, FACES))
                and (made_with is None or meta.get('made_with') == made_with))
    except (OSError, KeyError, ValueError):
        return False


def open_store(pickle_path):
    """The store of the merged table pickle_path, or UserError in one line."""
    folder = store_dir(pickle_path)
    if not os.path.isfile(pickle_path):
        table = pickle_path.rstrip('/').removesuffix('.store')
        raise UserError(f'{pickle_path}: ' + (f'a training store: give its table, {table}' if os.path.isfile(table)
                                              and table != pickle_path else 'a folder: give the merged table in it '
                                              '(merge_embeddings.py\'s --output)' if os.path.isdir(pickle_path)
                                              else 'no such file'))
    if not os.path.isdir(folder):  # never merged here: most often a stage's table given for the merged one
        raise UserError(f'{pickle_path} has no training store beside it ({folder}): a video or audio table has none '
                        f'(give merge_embeddings.py\'s --output), nor a copy made without it; else run '
                        f'merge_embeddings.py again')
    if not is_current(pickle_path):
        raise UserError(f'{pickle_path} has no training store written with it ({folder}: made by an older '
                        f'merge_embeddings.py, a merge that was stopped, or a table changed or copied since, e.g. '
                        f'by cp without -a: its time is the store\'s check); run merge_embeddings.py again')
    with np.load(os.path.join(folder, INDEX)) as f:
        index = {k: f[k] for k in f.files}
    return Store(index, json.loads(str(index['meta'])), os.path.join(folder, FACES))


class Store:
    """A merged table's videos: per-video arrays; faces read on demand (from a file, or an array)."""

    def __init__(self, index, meta, faces_path=None, faces=None):
        self.filenames, self.folders, self.groups = (index[k].astype(object) for k in ('filename', 'folder', 'group'))
        self.labels, self.face_start, self.n_faces = index['label'], index['face_start'], index['n_faces']
        self.has_audio, self.audio = index['has_audio'], index['audio']
        self.split, self.face_size, self.lead_rms, self.head_score = (index.get(k) for k in OPTIONAL)  # None: absent
        self.keys = np.array(row_keys({'folder': self.folders, 'filename': self.filenames}), object)
        self.meta, self.attrs, self.video_dim, self.audio_dim = meta, meta['attrs'], meta['video_dim'], meta['audio_dim']
        self._faces = faces  # (total faces, video_dim) float16 in memory, or None: read from faces_path
        self._fd = os.open(faces_path, os.O_RDONLY) if faces is None else -1

    @classmethod
    def one(cls, faces, audio, has_audio, starts=(0,), lengths=None):
        """One video in memory: faces (n, video_dim) float16, audio (audio_dim,) float32 (zeros where not
        has_audio); with `starts` and `lengths`, each of those windows of it is a video of its own."""
        n, empty = len(starts), np.full(len(starts), '')
        index = {'filename': empty, 'folder': empty, 'group': empty, 'label': np.full(n, -1, np.int8),
                 'face_start': np.asarray(starts), 'n_faces': np.asarray([len(faces)] if lengths is None else lengths),
                 'has_audio': np.full(n, has_audio), 'audio': np.tile(np.where(has_audio, audio, 0), (n, 1))}
        return cls(index, {'video_dim': faces.shape[1], 'audio_dim': len(audio), 'attrs': {}}, faces=faces)

    def __len__(self):
        return len(self.filenames)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read_faces(self, i, start=0, length=None, out=None):
        """Faces start..start+length of video i: (length, video_dim) float16 (into `out` if given)."""
        n = int(self.n_faces[i])
        length = n - start if length is None else length
        if not 0 <= start <= start + length <= n:
            raise IndexError(f'faces {start}..{start + length} of a video with {n}')
        out = np.empty((length, self.video_dim), np.float16) if out is None else out[:length]
        first = int(self.face_start[i]) + start
        if self._faces is not None:
            out[:] = self._faces[first:first + length]
        elif length:  # a video without faces has no bytes to read
            view, offset, done = memoryview(out).cast('B'), first * self.video_dim * 2, 0
            while done < len(view):
                if not (got := os.preadv(self._fd, [view[done:]], offset + done)):
                    raise UserError(f'{FACES} is cut short at byte {offset + done}: rerun merge_embeddings.py')
                done += got
        return out

    def read_audio(self, indices):
        """(len(indices), audio_dim) float32; zeros where has_audio is False."""
        return self.audio[indices]
