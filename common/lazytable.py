"""The merged embedding table, read lazily: a cache of raw arrays built once beside the pandas pickle.

The pandas pickle (merge_embeddings.py's OUTPUT) stays the interface between stages, but loading it puts
every face embedding in memory: the DFDC training set is ~119,000 videos x ~50 faces x 512 float16, 6 GB.
So training and test.py read it through a cache, built on first use in `<pickle>.cache/`:

  faces.f16    every video's face embeddings, end to end: (total faces, video_dim) float16, raw
  audio.f32    every distinct audio embedding: (rows, audio_dim) float32, raw
  index.pkl    one small row per video: filename, label, group (groups_of), folder, has_audio, face_start,
               n_faces, audio_row (no embeddings)
  meta.json    written last: the pickle's size and mtime (the cache's key), the dimensions, the counts

Building streams the pickle once, in a child process: a pickle.Unpickler that writes every float16
(faces, D) array and every 1-D float32 array (audio) to the raw files as it is unpickled and keeps only a
small handle, so the build's memory does not grow with the embeddings, only with the table's small
per-video fields (file names, frame indices, boxes: ~1-2 kB a video against ~51 kB of faces). This works
for the pickles pandas writes (protocol 5, arrays through numpy's `_frombuffer`); arrays that arrive
another way (an older protocol, float32 faces) are loaded normally and written after: correct, not flat.
The process that trains reads only index.pkl and the raw files.

Reading uses positioned reads (os.preadv into a fresh array), not np.memmap: pages of a mapped file that
were touched count in the process's resident memory, so an epoch over a memmap would grow the RSS by the
whole file; read() copies through the page cache, which the kernel can drop, and RSS stays flat.

    python -m common.lazytable MERGED.pkl [CACHE_DIR]   # build (or check) the cache, print what it holds
"""
import json
import os
import pickle
import subprocess
import sys
from contextlib import ExitStack

import numpy as np
import pandas as pd

from common import config, stage
from common.config import UserError
from common.stage import atomic_path, sweep_temporaries, write_pickle, write_text

CACHE_VERSION = 3  # 2: groups follow chains of originals to their root (groups_of); 3: videos are folder/name
FACES, AUDIO, INDEX, META = 'faces.f16', 'audio.f32', 'index.pkl', 'meta.json'


class TableError(UserError):
    """The table cannot be used (missing column, wrong layout, unreadable file): one clear line."""


class _Spilled:
    """What the streaming unpickler leaves in the table instead of an embedding array."""
    __slots__ = ('kind', 'start', 'length')

    def __init__(self, kind, start, length):
        self.kind, self.start, self.length = kind, start, length


class _SpillingUnpickler(pickle.Unpickler):
    """Unpickles a pandas pickle, writing embedding arrays to raw files as they arrive."""

    def __init__(self, file, faces_file, audio_file):
        super().__init__(file)
        self.faces_file, self.audio_file = faces_file, audio_file
        self.n_faces = 0            # rows written to faces_file
        self.n_audio = 0            # rows written to audio_file
        self.video_dim = self.audio_dim = None

    def find_class(self, module, name):
        if name == '_frombuffer' and module in ('numpy._core.numeric', 'numpy.core.numeric'):
            return self._frombuffer
        return super().find_class(module, name)

    def _frombuffer(self, buf, dtype, shape, order):
        dtype = np.dtype(dtype)
        # (faces, D) float16 is a video embedding: pandas has no float16 columns of its own in this table
        if dtype == np.float16 and len(shape) == 2:
            self.video_dim = _same_dim(self.video_dim, shape[1], 'video_embedding')
            self.faces_file.write(np.frombuffer(buf, dtype).reshape(shape, order=order).tobytes(order='C'))
            self.n_faces += shape[0]
            _release(buf)
            return _Spilled('video', self.n_faces - shape[0], shape[0])
        # a 1-D float32 array is an audio embedding (pandas' own blocks are 2-D; its nullable Float64
        # arrays are float64, and a float64 audio embedding is simply loaded and written after)
        if dtype == np.float32 and len(shape) == 1 and shape[0] > 1:
            self.audio_dim = _same_dim(self.audio_dim, shape[0], 'audio_embedding')
            self.audio_file.write(np.frombuffer(buf, dtype).tobytes())
            self.n_audio += 1
            _release(buf)
            return _Spilled('audio', self.n_audio - 1, shape[0])
        return np.frombuffer(buf, dtype).reshape(shape, order=order)


def _release(buf):
    """Empty the unpickled buffer: the unpickler's memo keeps every bytearray it read (the pickler
    memoizes them), which would hold the whole table in memory; no later opcode can refer to it."""
    if isinstance(buf, bytearray):
        buf.clear()


def _same_dim(known, dim, column):
    if known is not None and known != dim:
        raise TableError(f'{column}: arrays of {known} and of {dim} columns in one table')
    return dim


def cache_dir_for(pickle_path, cache_dir=''):
    """`<pickle>.cache` beside the pickle, or `<cache_dir>/<pickle name>.cache`."""
    name = os.path.basename(pickle_path) + '.cache'
    return os.path.join(cache_dir, name) if cache_dir else os.path.abspath(pickle_path) + '.cache'


def _key(pickle_path):
    st = os.stat(pickle_path)
    return {'version': CACHE_VERSION, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns}


def _valid(folder, key):
    try:
        with open(os.path.join(folder, META), encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get('key') != key:
        return None
    sizes = {FACES: meta['n_faces_total'] * meta['video_dim'] * 2, AUDIO: meta['n_audio_rows'] * meta['audio_dim'] * 4}
    for name, size in sizes.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            return None
    return meta


def groups_of(filenames, originals, folders=None):
    """Each video's group: the root of its chain of originals, so that a fake, its original and every
    video made from either land on one side of a split. A real video (no original) is its own root; a
    chain a -> b -> c (a's original is b, b's is c) has root c; an original that is not in the table ends
    its chain (it is the root); the videos of a cycle (a -> b -> a) and those that lead into it share one
    group, named after the cycle's smallest name.
    A video is its folder and name (common.stage.key: two DFDC parts may hold the same name, and they are
    two videos). `original` is a name: the video of that name in the fake's own folder (DFDC's layout),
    else the one video of that name in another folder, else the first of several (sorted).
    Returns a list of str, one per video."""
    folders = [''] * len(filenames) if folders is None else list(folders)
    nodes = [stage.key(d, n) for d, n in zip(folders, filenames)]
    known, where = set(nodes), {}
    for node, name in sorted(zip(nodes, filenames)):
        where.setdefault(name, node)  # a name's first video, in sorted order
    parent = {}
    for node, folder, original in zip(nodes, folders, originals):
        if isinstance(original, str) and original:
            mine = stage.key(folder, original)
            up = mine if mine in known else where.get(original, original)
            if up != node:
                parent[node] = up
    root = {}

    def find(name):
        path, seen = [], set()
        while name not in root and name in parent and name not in seen:
            seen.add(name)
            path.append(name)
            name = parent[name]
        if name in root:
            end = root[name]
        elif name in seen:  # a cycle: it starts at `name`; its group is its smallest name
            cycle = path[path.index(name):]
            end = min(cycle)
        else:
            end = name
        for n in path:
            root[n] = end
        return end

    return [find(node) for node in nodes]


def build(pickle_path, folder, log=print):
    """Stream the pickle into the cache folder (see the module's docstring); returns the meta dict."""
    key = _key(pickle_path)
    os.makedirs(folder, exist_ok=True)
    meta_path = os.path.join(folder, META)
    if os.path.exists(meta_path):
        os.remove(meta_path)  # invalidate first: a build killed half-way must not look valid
    for name in (FACES, AUDIO):  # the one builder (training's rank 0) sweeps what a killed build left: GBs
        sweep_temporaries(os.path.join(folder, name))
    log(f'building the embedding cache {folder} from {pickle_path} (once per version of the table)')
    with ExitStack() as stack:
        faces_tmp = stack.enter_context(atomic_path(os.path.join(folder, FACES)))
        audio_tmp = stack.enter_context(atomic_path(os.path.join(folder, AUDIO)))
        faces_file = stack.enter_context(open(faces_tmp, 'wb'))
        audio_file = stack.enter_context(open(audio_tmp, 'wb'))
        with open(pickle_path, 'rb') as f:
            if f.read(1) != b'\x80':
                raise TableError(f'{pickle_path}: not an uncompressed pickle (pandas to_pickle to a .pkl path)')
            f.seek(0)
            unpickler = _SpillingUnpickler(f, faces_file, audio_file)
            try:
                table = unpickler.load()
            except TableError as err:
                raise TableError(f'{pickle_path}: {err}') from None
            except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as err:
                raise TableError(f'{pickle_path}: not a readable pandas pickle, truncated or corrupt '
                                 f'({type(err).__name__}: {err}); write it again with merge_embeddings.py') from None
        if not isinstance(table, pd.DataFrame):
            raise TableError(f'{pickle_path}: holds a {type(table).__name__}, not a pandas DataFrame')
        index, video_dim, audio_dim = _index(table, unpickler, pickle_path)
        n_faces_total, n_audio_rows = unpickler.n_faces, unpickler.n_audio
        faces_file.close()
        audio_file.close()
        write_pickle(index, os.path.join(folder, INDEX))
    attrs = {k: v for k, v in table.attrs.items() if isinstance(v, (str, int, float, bool))}
    for column in ('embedder', 'audio_encoder'):
        if column in table.columns and len(table):
            attrs.setdefault(column, ', '.join(sorted({str(v) for v in table[column].unique()})))
    meta = {'key': key, 'source': os.path.abspath(pickle_path), 'n_videos': len(index),
            'n_faces_total': n_faces_total, 'n_audio_rows': n_audio_rows,
            'video_dim': video_dim, 'audio_dim': audio_dim, 'attrs': attrs}
    write_text(json.dumps(meta, indent=1), meta_path)
    return meta


def _index(table, unpickler, path):
    """The per-video index of the cache; writes the embeddings that were not spilled while unpickling."""
    missing = [c for c in ('filename', 'video_embedding') if c not in table.columns]
    if missing:
        raise TableError(f'{path}: no column {", ".join(missing)} (columns: {", ".join(map(str, table.columns))})')
    for column in table.columns:
        if column not in ('video_embedding', 'audio_embedding') and table[column].dtype == object:
            if any(isinstance(v, _Spilled) for v in table[column]):
                raise TableError(f'{path}: column {column} holds float arrays; only the embedding columns may')
    n = len(table)
    face_start = np.zeros(n, np.int64)
    n_faces = np.zeros(n, np.int64)
    for i, emb in enumerate(table['video_embedding']):
        if isinstance(emb, _Spilled):
            face_start[i], n_faces[i] = emb.start, emb.length
            continue
        # not spilled (float32 faces, an older pickle protocol): write it now
        emb = np.asarray(emb)
        if emb.ndim != 2:
            raise TableError(f'{path}: video_embedding of {table["filename"].iloc[i]} has shape {emb.shape}, '
                             f'expected (faces, D)')
        unpickler.video_dim = _same_dim(unpickler.video_dim, emb.shape[1], 'video_embedding')
        unpickler.faces_file.write(np.ascontiguousarray(emb, np.float16).tobytes())
        face_start[i], n_faces[i] = unpickler.n_faces, len(emb)
        unpickler.n_faces += len(emb)
    audio_row = np.full(n, -1, np.int64)
    if 'audio_embedding' in table.columns:
        for i, emb in enumerate(table['audio_embedding']):
            if isinstance(emb, _Spilled):
                audio_row[i] = emb.start
                continue
            emb = np.asarray(emb, np.float32).reshape(-1)
            unpickler.audio_dim = _same_dim(unpickler.audio_dim, len(emb), 'audio_embedding')
            unpickler.audio_file.write(emb.tobytes())
            audio_row[i] = unpickler.n_audio
            unpickler.n_audio += 1
    has_audio = (table['has_audio'].astype(bool).to_numpy() if 'has_audio' in table.columns
                 else audio_row >= 0)
    filenames = table['filename'].astype(str).to_numpy()
    originals = table['original'].to_numpy(object) if 'original' in table.columns else [None] * n
    folders = table['folder'].astype(str).to_numpy() if 'folder' in table.columns else np.full(n, '', object)
    index = pd.DataFrame({
        'filename': filenames,
        'label': _labels(table, path),
        'group': groups_of(filenames, originals, folders),
        'folder': folders,
        'has_audio': has_audio,
        'face_start': face_start,
        'n_faces': n_faces,
        'audio_row': audio_row,
    })
    return index, unpickler.video_dim or 0, unpickler.audio_dim or 0


def _labels(table, path):
    """1 = FAKE, 0 = REAL; -1 where the table has no label (a table to predict, not to train on)."""
    if 'label' not in table.columns:
        return np.full(len(table), -1, np.int8)
    labels = pd.to_numeric(table['label'], errors='coerce')
    bad = ~labels.isin([0, 1])
    if bad.any():
        raise TableError(f'{path}: label must be 1 (FAKE) or 0 (REAL); {int(bad.sum())} rows are not, '
                         f'e.g. {table["filename"][bad].iloc[0]} has {table["label"][bad].iloc[0]!r}')
    return labels.to_numpy(np.int8)


class EmbeddingTable:
    """The cache of one merged table, opened for reading. Per-video fields are small numpy arrays;
    embeddings are read on demand with positioned reads."""

    def __init__(self, folder):
        with open(os.path.join(folder, META), encoding='utf-8') as f:
            self.meta = json.load(f)
        self.folder = folder
        index = pd.read_pickle(os.path.join(folder, INDEX))
        self.filenames = index['filename'].to_numpy(object)
        self.labels = index['label'].to_numpy(np.int8)
        self.groups = index['group'].to_numpy(object)
        self.folders = index['folder'].to_numpy(object)
        # a video's identity is its folder and name: two DFDC parts may hold the same name
        self.keys = np.array([stage.key(d, n) for d, n in zip(self.folders, self.filenames)], object)
        self.has_audio = index['has_audio'].to_numpy(bool)
        self.face_start = index['face_start'].to_numpy(np.int64)
        self.n_faces = index['n_faces'].to_numpy(np.int64)
        self.audio_row = index['audio_row'].to_numpy(np.int64)
        self.video_dim = self.meta['video_dim']
        self.audio_dim = self.meta['audio_dim']
        self.attrs = self.meta.get('attrs', {})
        self._faces = os.open(os.path.join(folder, FACES), os.O_RDONLY)
        self._audio = os.open(os.path.join(folder, AUDIO), os.O_RDONLY)

    def __len__(self):
        return len(self.filenames)

    def close(self):
        for fd in (self._faces, self._audio):
            os.close(fd)
        self._faces = self._audio = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_faces(self, i, start=0, length=None, out=None):
        """Faces start..start+length of video i: (length, video_dim) float16 (into `out` if given)."""
        n = int(self.n_faces[i])
        length = n - start if length is None else length
        if not 0 <= start <= start + length <= n:
            raise IndexError(f'faces {start}..{start + length} of a video with {n}')
        if out is None:
            out = np.empty((length, self.video_dim), np.float16)
        row_bytes = self.video_dim * 2
        _pread_exact(self._faces, out[:length], (int(self.face_start[i]) + start) * row_bytes)
        return out[:length]

    def read_audio(self, indices):
        """Audio embeddings of the videos `indices`: (len, audio_dim) float32; zeros where has_audio is False."""
        out = np.zeros((len(indices), self.audio_dim), np.float32)
        if self.audio_dim == 0:
            return out
        row_bytes = self.audio_dim * 4
        for k, i in enumerate(indices):
            if self.has_audio[i] and self.audio_row[i] >= 0:
                _pread_exact(self._audio, out[k], int(self.audio_row[i]) * row_bytes)
        return out


def _pread_exact(fd, array, offset):
    if array.size == 0:
        return
    view = memoryview(array).cast('B')
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise TableError(f'embedding cache truncated at byte {offset + done}; delete the .cache folder')
        done += got


def open_table(pickle_path, cache_dir='', log=print):
    """The merged table at pickle_path, through its cache (built, or rebuilt when the pickle changed).

    The build runs in a child process (`python -m common.lazytable`), so that what unpickling leaves
    behind (the table's small per-video fields, the allocator's high-water mark) never counts in the
    memory of the process that trains. Its output goes to `log`."""
    if not os.path.isfile(pickle_path):
        raise TableError(f'{pickle_path}: no such file')
    folder = cache_dir_for(pickle_path, cache_dir)
    if _valid(folder, _key(pickle_path)) is None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # absolute paths: the child runs in the repository's root, not in this process's working directory
        child = subprocess.run([sys.executable, '-m', 'common.lazytable', '--build', os.path.abspath(pickle_path),
                                os.path.abspath(folder)],
                               cwd=root, capture_output=True, text=True)
        for line in child.stdout.splitlines():
            log(line)
        if child.returncode != 0:
            lines = child.stderr.strip().splitlines() or [f'exit code {child.returncode}']
            raise TableError(lines[-1].removeprefix('error: '))
        if _valid(folder, _key(pickle_path)) is None:
            raise TableError(f'{pickle_path} changed while its cache was built; run again')
    return EmbeddingTable(folder)


def _build_here(pickle_path, folder):
    try:
        build(pickle_path, folder)
    except OSError as err:
        if err.filename is None or os.path.abspath(err.filename) == os.path.abspath(pickle_path):
            raise  # the table itself (config.cli says which file and what happened)
        raise TableError(f'cannot write the embedding cache {folder} ({err.filename}: {err.strerror}); '
                         f'point --cache_dir at a writable folder') from None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) == 3 and argv[0] == '--build':  # open_table's child
            _build_here(argv[1], argv[2])
            return
        if len(argv) not in (1, 2):
            print('usage: python -m common.lazytable MERGED.pkl [CACHE_DIR]', file=sys.stderr)
            raise SystemExit(2)
        table = open_table(*argv)
    except TableError as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2) from None
    with table:
        m = table.meta
        print(f'{table.folder}: {m["n_videos"]} videos, {m["n_faces_total"]} faces x {m["video_dim"]}, '
              f'{m["n_audio_rows"]} audio rows x {m["audio_dim"]}, {int((table.labels == 1).sum())} fake, '
              f'{int((table.labels == 0).sum())} real, {len(set(table.groups))} groups')


if __name__ == '__main__':
    config.cli(main)
