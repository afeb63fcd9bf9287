"""The training store: what training.py, test.py and predict.py read, written by merge_embeddings.py.

Beside the merged pickle (the stage's table, for people and pandas), the merge writes `<pickle>.store/`:
  faces.f16   every video's face embeddings end to end, raw: (total faces, video_dim) float16
  index.npz   one entry a video: filename, folder, label, group, face_start, n_faces, has_audio, and the
              audio embeddings (videos, audio_dim) float32; the dimensions, attrs, and the stamp below
nanoGPT's train.bin with an index. The faces are read with positioned reads, not np.memmap: pages of a
mapped file that an epoch touched count in the process's resident memory (the whole file by the end), a
read copies through the page cache, which the kernel can drop, so memory stays flat (BENCHMARKS.md).
index.npz is written last and records the pickle's and faces.f16's size and mtime: a store that does not
match its pickle (an older merge, a merge killed half-way) is one line that says to rerun the merge.
"""
import glob
import json
import os

import numpy as np

from common.config import UserError
from common.stage import atomic_path, key, sweep_temporaries, write_pickle

FACES, INDEX = 'faces.f16', 'index.npz'



def store_dir(pickle_path):
    return os.path.abspath(pickle_path) + '.store'


def _stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def groups_of(filenames, originals, folders=None):
    """Each video's group: the root of its chain of originals, so that a fake, its original and every
    video made from either land on one side of a split. A real video is its own root; a chain a -> b -> c
    has root c; an original absent from the table ends its chain (the fakes of one absent original share
    its group); a cycle (a -> b -> a) and what leads into it are one group, named after its smallest video.
    A video is its folder and name (two DFDC parts may hold one name). `original` is a name: the video of
    that name in the fake's own folder (DFDC's layout), else the first video of that name (sorted)."""
    folders = [''] * len(filenames) if folders is None else list(folders)
    nodes = [key(d, n) for d, n in zip(folders, filenames)]
    known, where = set(nodes), {}
    for node, name in sorted(zip(nodes, filenames)):
        where.setdefault(name, node)
    parent = {}
    for node, folder, original in zip(nodes, folders, originals):
        if isinstance(original, str) and original:
            mine = key(folder, original)
            up = mine if mine in known else where.get(original, original)
            if up != node:
                parent[node] = up
    root = {}

    def find(node):
        path = []
        while node not in root and node in parent and node not in path:
            path.append(node)
            node = parent[node]
        end = root.get(node, min(path[path.index(node):]) if node in path else node)
        root.update({n: end for n in path})
        return end

    return [find(node) for node in nodes]


def save(table, pickle_path):
    """A merged table (a DataFrame with filename, folder, label, original, video_embedding, audio_embedding,
    has_audio) as its pickle, then its store beside it. A writer killed at any point leaves either the
    previous pair or a store that does not match the pickle (is_current: False), never a mismatch unseen."""
    folder = store_dir(pickle_path)
    os.makedirs(folder, exist_ok=True)
    # what a writer killed before its renames left: as large as the table
    sweep_temporaries(os.path.join(os.path.dirname(pickle_path), glob.escape(os.path.basename(pickle_path))))
    for name in (FACES, INDEX):
        sweep_temporaries(os.path.join(folder, name))
    write_pickle(table, pickle_path)
    faces = [np.asarray(e, np.float16) for e in table['video_embedding']]  # (faces, video_dim) each
    n_faces = np.array([len(f) for f in faces], np.int64)
    video_dim = int(faces[0].shape[1]) if faces else 0
    with atomic_path(os.path.join(folder, FACES)) as tmp:
        with open(tmp, 'wb') as f:
            for block in faces:
                f.write(np.ascontiguousarray(block).tobytes())
    audio = np.stack([np.asarray(e, np.float32).reshape(-1) for e in table['audio_embedding']]) if len(table) \
        else np.zeros((0, 0), np.float32)  # (videos, audio_dim)
    filenames = np.array(table['filename'].astype(str).tolist(), str)  # fixed-width: no pickled objects
    folders = np.array(table['folder'].astype(str).tolist(), str)
    meta = {'video_dim': video_dim, 'audio_dim': int(audio.shape[1]), 'attrs': _attrs(table),
            'pickle': _stamp(pickle_path), 'faces': _stamp(os.path.join(folder, FACES)),
            'key': {'size': _stamp(pickle_path)[0], 'mtime_ns': _stamp(pickle_path)[1]}}  # training's resume
    with atomic_path(os.path.join(folder, INDEX)) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, filename=filenames, folder=folders, label=_labels(table['label'], pickle_path),
                     group=np.array(groups_of(filenames.tolist(), table['original'].tolist(), folders.tolist()), str),
                     face_start=np.concatenate([[0], np.cumsum(n_faces)[:-1]]).astype(np.int64), n_faces=n_faces,
                     has_audio=table['has_audio'].to_numpy(bool), audio=audio, meta=json.dumps(meta))


def _labels(column, path):
    """1 = FAKE, 0 = REAL, -1 where a video has none (a table to predict, not to train on)."""
    labels = column.map(lambda v: -1 if v is None or v != v else v)  # None and NaN: no label
    bad = ~labels.isin([0, 1, -1])
    if bad.any():
        raise UserError(f'{path}: a label is 1 (FAKE) or 0 (REAL); {int(bad.sum())} are not, e.g. '
                         f'{column[bad].iloc[0]!r}')
    return labels.to_numpy(np.int8)


def _attrs(table):
    attrs = {k: v for k, v in table.attrs.items() if isinstance(v, (str, int, float, bool))}
    for column in ('embedder', 'audio_encoder'):
        if column in table.columns and len(table):
            attrs.setdefault(column, ', '.join(sorted({str(v) for v in table[column].unique()})))
    return attrs


def is_current(pickle_path):
    """Whether pickle_path has a store that was written from it (by this version of the merge)."""
    try:
        with np.load(os.path.join(store_dir(pickle_path), INDEX)) as index:
            meta = json.loads(str(index['meta']))
        return meta['pickle'] == _stamp(pickle_path) and meta['faces'] == _stamp(
            os.path.join(store_dir(pickle_path), FACES))
    except (OSError, KeyError, ValueError):
        return False


class Store:
    """A merged table's videos: per-video fields as arrays, faces read on demand. Store.one() is the same
    for one video in memory (predict.py)."""

    def __init__(self, index, meta, faces_path=None, faces=None):
        self.filenames, self.folders = index['filename'].astype(object), index['folder'].astype(object)
        self.labels, self.groups = index['label'], index['group'].astype(object)
        self.face_start, self.n_faces = index['face_start'], index['n_faces']
        self.has_audio, self.audio = index['has_audio'], index['audio']
        self.keys = np.array([key(d, n) for d, n in zip(self.folders, self.filenames)], object)
        self.meta, self.attrs = meta, meta['attrs']
        self.video_dim, self.audio_dim = meta['video_dim'], meta['audio_dim']
        self._faces = faces  # (total faces, video_dim) float16 in memory, or None: read from faces_path
        self._fd = os.open(faces_path, os.O_RDONLY) if faces is None else -1

    @classmethod
    def one(cls, faces, audio, has_audio):
        """One video: faces (n, video_dim) float16, audio (audio_dim,) float32 (zeros where not has_audio)."""
        index = {'filename': np.array(['']), 'folder': np.array(['']), 'label': np.array([-1], np.int8),
                 'group': np.array(['']), 'face_start': np.array([0]), 'n_faces': np.array([len(faces)]),
                 'has_audio': np.array([has_audio]), 'audio': np.where(has_audio, audio, 0).astype(np.float32)[None]}
        meta = {'video_dim': faces.shape[1], 'audio_dim': len(audio), 'attrs': {}}
        return cls(index, meta, faces=faces)

    def __len__(self):
        return len(self.filenames)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
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
            return out
        if length == 0:  # a video without faces: nothing to read (and no bytes to view)
            return out
        view, offset = memoryview(out).cast('B'), first * self.video_dim * 2
        done = 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got == 0:
                raise UserError(f'{FACES} is cut short at byte {offset + done}: rerun merge_embeddings.py')
            done += got
        return out

    def read_audio(self, indices):
        """(len(indices), audio_dim) float32; zeros where has_audio is False."""
        return self.audio[indices]


def open_store(pickle_path):
    """The store of the merged table pickle_path, or UserError in one line."""
    if not os.path.isfile(pickle_path):
        raise UserError(f'{pickle_path}: no such file')
    if not is_current(pickle_path):
        raise UserError(f'{pickle_path} has no training store written with it ({store_dir(pickle_path)}: made by '
                         f'an older merge_embeddings.py, or a merge was stopped); run merge_embeddings.py again')
    folder = store_dir(pickle_path)
    with np.load(os.path.join(folder, INDEX)) as f:
        index = {k: f[k] for k in f.files}
    return Store(index, json.loads(str(index['meta'])), os.path.join(folder, FACES))
