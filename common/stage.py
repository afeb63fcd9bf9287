"""What every stage does with files: atomic writes, resumable per-video results, the failures file, and
finding the DFDC parts (folders with a metadata.json) under a data folder.

A stage writes `OUTPUT` (a pandas pickle) and, beside it:
  OUTPUT.parts/   one small pickle per finished video, written atomically as soon as it is done, so a
                  killed run loses at most the video in flight; removed once OUTPUT is written.
  OUTPUT.failures.csv   filename, folder, reason: every video that could not be processed.
  OUTPUT.lock, OUTPUT.lock.gate   the run writing OUTPUT holds them (claim); left in place, never removed.
A rerun reads OUTPUT, the parts and the failures, skips those videos, and rewrites OUTPUT with the union:
no video is done twice, none is dropped. A video's key is its path relative to the data folder (key():
folder/filename), as two DFDC-style parts may hold the same file name; tables keep `filename` and `folder`.

Several processes (torchrun ranks, a SLURM array's tasks, machines sharing a file system) split a stage:
each takes the videos whose position in the whole, sorted dataset is its rank modulo the world size
(fixed by the dataset, not by what is done already, so a late starter takes the same share), writes its
parts to the same OUTPUT.parts/ and, when its share is done, a marker there. The process that finds every
marker of its run in place merges, once (a lock file elects it).
"""
import contextlib
import csv
import errno
import fcntl
import glob
import hashlib
import json
import os
import pickle
import shutil
import socket
import sys
import tempfile

import pandas as pd

from common import config
from common.config import UserError
from common.video import VideoError

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')



UNEXPECTED = 'unexpected error: '  # how a failure's reason starts where the error was not a bad video's


def key(folder, filename):
    """A video's key: its path relative to the data folder ('' or '.': the data folder itself). Not
    os.path.join, which would drop the folder of a (refused) absolute name."""
    return filename if folder in ('', '.') else f'{folder}/{filename}'


def filename_of(key_, folder):
    """The file name of a key(folder, filename)."""
    return key_ if folder in ('', '.') else key_[len(folder) + 1:]


# Exceptions that unpickling a truncated, garbage or foreign file raises (besides OSError, which config.cli
# reports with its file name)
UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
              IndexError, KeyError, UnicodeDecodeError, MemoryError)


def read_pickle(path, todo, table=True):
    """The object pickled at `path` (a pandas table where `table`); UserError naming the file and `todo`
    (what the user should do) where it is truncated, garbage, or not a table."""
    try:
        obj = pd.read_pickle(path)
    except UNREADABLE as err:
        raise UserError(f'{path}: not a readable pickle ({type(err).__name__}: {err}); {todo}') from None
    if table and not isinstance(obj, pd.DataFrame):
        raise UserError(f'{path}: a {type(obj).__name__}, not a pandas table; {todo}')
    return obj


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private to their writer
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sweep_temporaries(pattern):
    """Remove what atomic_path left of writers killed before their rename: `.NAME.xxxxxxxx.tmp` beside each
    NAME that the pattern's file-name part matches (glob syntax: glob.escape an exact name). Only for a
    writer that knows nobody else is writing those names now (a stage's merge, the cache's one builder).
    Returns how many it removed."""
    folder, name = os.path.split(pattern)
    leftovers = glob.glob(os.path.join(glob.escape(folder or '.'), f'.{name}.*.tmp'))
    for path in leftovers:
        os.remove(path)
    return len(leftovers)


def write_pickle(obj, path):
    with atomic_path(path) as tmp:
        if isinstance(obj, pd.DataFrame):
            obj.to_pickle(tmp)
        else:
            with open(tmp, 'wb') as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_text(text, path):
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)


def is_video(name):
    return name.lower().endswith(VIDEO_EXTENSIONS)


def find_parts(data_dir):
    """Every folder under data_dir (itself included) that holds a metadata.json, sorted."""
    if not os.path.isdir(data_dir):
        raise UserError(f'data folder {data_dir} does not exist')
    found = []
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        dirs.sort()
        if 'metadata.json' in files:
            found.append(root)
    return found


def read_metadata(folder):
    """The folder's metadata.json as {filename: entry}; raises UserError with the reason."""
    path = os.path.join(folder, 'metadata.json')
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f'{path}: not readable JSON ({err})') from None
    if not isinstance(meta, dict):
        raise UserError(f'{path}: expected an object of file names, got {type(meta).__name__}')
    return meta


def plan(data_dir):
    """The dataset's videos: (todo [(folder_rel, filename, path, entry)], failures [(name, folder, reason)],
    skipped count of videos without a metadata entry). Two parts may list the same file name: both are
    videos (their keys differ)."""
    todo, failures, skipped = [], [], 0
    parts = find_parts(data_dir)
    if not parts:
        raise UserError(f'no metadata.json under {data_dir}: not a DFDC-style dataset')
    for folder in parts:
        rel = os.path.relpath(folder, data_dir)
        try:
            meta = read_metadata(folder)
        except UserError as err:
            failures.append(('metadata.json', rel, str(err)))
            continue
        on_disk = {name for name in os.listdir(folder) if is_video(name)}
        skipped += len(on_disk - set(meta))
        for name in sorted(meta):
            entry = meta[name]
            if name in ('', '.', '..') or '/' in name or '\\' in name or '\0' in name:
                # '../x.mp4' or '/etc/x' would be read outside the part, and its WAV written outside AUDIO_DIR
                failures.append((name, rel, 'metadata.json names a path, not a file in its folder: refused'))
            elif label_of(entry) is None:
                failures.append((name, rel, f'metadata.json has no REAL/FAKE label for it: {entry!r}'))
            else:
                todo.append((rel, name, os.path.join(folder, name), entry))
    return todo, failures, skipped


def label_of(entry):
    """DFDC's label as the target: 1 = FAKE, 0 = REAL; None where the entry has no usable label."""
    label = entry.get('label') if isinstance(entry, dict) else None
    return {'FAKE': 1, 'REAL': 0}.get(str(label).upper()) if label is not None else None


def shard():
    """(rank, world size, run id) of this process: torchrun's RANK / WORLD_SIZE, a SLURM array's task, or
    (0, 1, 'local') for a plain run."""
    env = os.environ
    if int(env.get('WORLD_SIZE', '1')) > 1:
        return int(env['RANK']), int(env['WORLD_SIZE']), env.get('TORCHELASTIC_RUN_ID', 'torchrun')
    if int(env.get('SLURM_ARRAY_TASK_COUNT', '1')) > 1:
        rank = int(env['SLURM_ARRAY_TASK_ID']) - int(env.get('SLURM_ARRAY_TASK_MIN', '0'))
        return rank, int(env['SLURM_ARRAY_TASK_COUNT']), env.get('SLURM_ARRAY_JOB_ID', 'slurm')
    return 0, 1, 'local'


def share(items, rank, world):
    """This process's share of the whole, sorted list of items."""
    return items[rank::world]


def read_failures(path):
    """A failures file (filename, folder, reason) as {key: (folder, reason)}; {} where there is none."""
    out = {}
    if os.path.exists(path):
        with open(path, newline='', encoding='utf-8') as f:
            for row in csv.DictReader(f):
                if None in row.values() or not {'filename', 'folder', 'reason'} <= set(row):
                    raise UserError(f'{path}: not a failures file (filename, folder, reason); delete it and '
                                     f'rerun: its videos are tried again')
                out[key(row['folder'], row['filename'])] = (row['folder'], row['reason'])
    return out


def keys_of(table):
    """The keys (key()) of a table's rows; a table without a folder column is in the data folder itself."""
    if table is None or not len(table):
        return set()
    folders = table['folder'] if 'folder' in table else [''] * len(table)
    return {key(folder, name) for folder, name in zip(folders, table['filename'])}


_CLAIMED = {}  # absolute output path: the lock file this process (or the parent it was forked from) holds


def claim(output):
    """Check that OUTPUT can be written, and hold it for this run for the rest of the process's life;
    UserError where another run is writing it. Two runs on one output would remove each other's parts.

    Every process of one run (torchrun's ranks, a SLURM array's tasks: shard()'s run id; --procs's workers
    are forked after the parent claimed, and inherit its claim) holds a shared flock on OUTPUT.lock, which
    holds the run's id; a process of another run finds it held under another id. The kernel releases a
    flock when its process ends, killed or not, so a kill leaves nothing to clean. OUTPUT.lock.gate
    serialises the check (a flock cannot be turned from exclusive to shared atomically)."""
    output = os.path.abspath(output)
    if output in _CLAIMED:
        return
    config.writable_file(os.fspath(output), '--output')
    rank, world, run_id = shard()
    run = run_id if world > 1 else f'{socket.gethostname()} pid {os.getpid()}'  # a plain run is its process
    with open(output + '.lock.gate', 'a') as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)  # released when closed, a moment later
        lock = os.fdopen(os.open(output + '.lock', os.O_RDWR | os.O_CREAT, 0o666), 'r+', encoding='utf-8')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a run holds it: ours, or another
            holder = lock.read()
            if holder != run:
                lock.close()
                raise UserError(f'{output} is being written by another run ({holder}): wait until it ends, '
                                 f'or use another output') from None
        else:  # nobody: the run is ours
            lock.truncate()
            lock.write(run)
            lock.flush()
        fcntl.flock(lock, fcntl.LOCK_SH)
    _CLAIMED[output] = lock


class Journal:
    """Per-video results of one stage's run, kept so that the run can be killed and resumed.

    A record is a dict with 'filename' and, where the video is not in the data folder itself, 'folder'
    (relative to it); its key is key(folder, filename). `shard` names this process's part files.
    """

    def __init__(self, output, shard=''):
        self.output = os.fspath(output)
        self.parts = self.output + '.parts'
        self.failures_path = self.output + '.failures.csv'
        self.shard = shard
        os.makedirs(self.parts, exist_ok=True)

    # --- what is done already ----------------------------------------------
    def previous_table(self):
        if not os.path.exists(self.output):
            return None
        return read_pickle(self.output, 'delete it (and its .failures.csv) and rerun: the videos are done again')

    def part_records(self):
        records = []
        for name in sorted(os.listdir(self.parts)):
            if name.endswith('.pkl'):
                # written atomically, so a corrupt part is not a killed writer's: said, not guessed at
                records.append(read_pickle(os.path.join(self.parts, name),
                                           'delete it and rerun: its video is done again', table=False))
        return records

    def failures(self, records=None):
        """{key: (folder, reason)} from the failures file and from failure parts (`records`: the part
        records where the caller has read them already; on DFDC they are 119,000 files)."""
        out = read_failures(self.failures_path)
        for rec in self.part_records() if records is None else records:
            if 'failure' in rec:
                out[record_key(rec)] = (rec.get('folder', ''), rec['failure'])
        return out

    def done(self, records=None):
        """Keys (key(): the file name where the record has no folder) already processed: in OUTPUT, in a
        part, or failed."""
        records = self.part_records() if records is None else records
        return set(self.failures(records)) | keys_of(self.previous_table()) | {record_key(r) for r in records}

    # --- recording ---------------------------------------------------------
    def _part_path(self, record):
        digest = hashlib.sha1(record_key(record).encode('utf-8', 'surrogateescape')).hexdigest()[:16]
        return os.path.join(self.parts, f'{self.shard}{digest}.pkl')

    def add(self, record):
        """A finished video: a dict with 'filename', 'folder' where it has one, and its table rows."""
        write_pickle(record, self._part_path(record))

    def fail(self, filename, folder, reason):
        self.add({'filename': filename, 'folder': folder, 'failure': reason})

    # --- several processes ----------------------------------------------------
    def _marker(self, run, rank, world):
        return os.path.join(self.parts, f'done-{run}-{rank}-of-{world}')

    def share_done(self, run, rank, world):
        """Mark this process's share done. Returns 'merge' where every share of the run is done and this
        process is the one to merge (a plain run always is), 'wait' where some share is not done yet, and
        'taken' where another process took the merge (or one was killed while merging)."""
        if world == 1:
            return 'merge'
        write_text('', self._marker(run, rank, world))
        if not all(os.path.exists(self._marker(run, r, world)) for r in range(world)):
            return 'wait'
        try:
            fd = os.open(os.path.join(self.parts, f'merge-{run}.lock'), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return 'taken'
        os.close(fd)
        return 'merge'

    # --- the end of a run ----------------------------------------------------
    def finish(self, rows_of, sort_by=('folder', 'filename'), attrs=None, columns=()):
        """Write OUTPUT = previous OUTPUT + the rows of every part (rows_of(record) -> list of dicts),
        and the failures file; then remove the parts. Returns (table, failures).
        columns: the table's columns, which a table without rows keeps (a rerun reads them).
        A run that added nothing (no part) leaves OUTPUT and its failures file as they are, so that what
        is made from them (the merge, training's resume) sees them unchanged."""
        for path in (self.output, self.failures_path):  # left by a run killed while it wrote them
            sweep_temporaries(os.path.join(os.path.dirname(path), glob.escape(os.path.basename(path))))
        previous, records = self.previous_table(), self.part_records()
        if previous is not None and len(previous.columns) and os.path.exists(self.failures_path) and not records:
            shutil.rmtree(self.parts, ignore_errors=True)
            return previous, self.failures(records)
        if previous is not None and not len(previous):
            previous = None  # nothing in it (and, written before columns were kept, maybe no columns)
        # a run killed between writing OUTPUT and removing the parts must not count those videos twice
        known = keys_of(previous)
        rows = [row for rec in records
                if 'failure' not in rec and record_key(rec) not in known for row in rows_of(rec)]
        frames = [f for f in (previous, pd.DataFrame(rows) if rows else None) if f is not None]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))
        if len(table):
            table = table.sort_values(list(sort_by), kind='stable').reset_index(drop=True)
        if attrs:
            table.attrs.update(attrs)
        succeeded = keys_of(table)  # a retried failure that worked
        failures = {k: v for k, v in self.failures(records).items() if k not in succeeded}
        write_pickle(table, self.output)
        with atomic_path(self.failures_path) as tmp:
            with open(tmp, 'w', newline='', encoding='utf-8') as f:
                writer = csv.writer(f)
                writer.writerow(['filename', 'folder', 'reason'])
                writer.writerows([filename_of(k, folder), folder, reason]
                                 for k, (folder, reason) in sorted(failures.items()))
        shutil.rmtree(self.parts, ignore_errors=True)
        return table, failures


def record_key(record):
    return key(record.get('folder', ''), record['filename'])


def ends_the_run(err):
    """An error that is not the video's fault, which no video should be failed for: a full disk (config.cli
    says it in one line), or a signal, which torch's elastic agent (torchrun, --procs) raises in its workers
    as a SignalException, an Exception (SIGINT when the command was killed)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    elastic = sys.modules.get('torch.distributed.elastic.multiprocessing.api')  # never raised where not loaded
    return elastic is not None and isinstance(err, elastic.SignalException)


class StageRun:
    """One process's part in a stage's run: its shard of the work, its journal, what is left to do."""

    def __init__(self, output, retry_failed=False):
        self.rank, self.world, self.run = shard()
        self.who = f'rank {self.rank}/{self.world}: ' if self.world > 1 else ''
        claim(output)  # done by the stage's main() already, before any work; a no-op then
        self.journal = Journal(output)
        self.records = self.journal.part_records()  # what earlier runs saved: read once
        self.done = self.journal.done(records=self.records)
        if retry_failed:
            self.done -= set(self.journal.failures(self.records))

    def record(self, problems):
        """Failures known before any work [(filename, folder, reason)]: rank 0 records them, once."""
        if self.rank == 0:
            for name, folder, reason in problems:
                if key(folder, name) not in self.done:
                    self.journal.fail(name, folder, reason)

    def todo(self, items, where):
        """This process's share of the whole sorted item list, less what is done (where(item): (folder,
        filename))."""
        return [item for item in share(items, self.rank, self.world) if key(*where(item)) not in self.done]

    @contextlib.contextmanager
    def video(self, filename, folder):
        """The work on one video: a VideoError is recorded as its failure, and so is any other error, as
        an unexpected one (with its type and message: a bug to report), so that one video never costs the
        rest; but not what ends_the_run."""
        try:
            yield
        except VideoError as err:
            self.journal.fail(filename, folder, str(err))
        except Exception as err:  # anything: the record says what, the summary counts it (print_failures)
            if ends_the_run(err):
                raise
            self.journal.fail(filename, folder, f'{UNEXPECTED}{type(err).__name__}: {err}')

    def merging(self, what):
        """True where this process writes the stage's output now; else says who will."""
        state = self.journal.share_done(self.run, self.rank, self.world)
        if state == 'merge':
            return True
        if state == 'wait':
            print(f'{self.who}share done; the last process to finish writes {what}')
        else:
            print(f'{self.who}share done; every share is, and another process of this run ({self.run}) is '
                  f'writing {what}. If it does not appear, that process was killed while writing it: run '
                  f'the same command as one process (python <script> ...), which writes it from the parts')
        return False


def print_failures(failures, path, show=20):
    """The first `show` of a stage's failures ({key: (folder, reason)}), and where the rest are; the
    unexpected errors first, and counted: they are bugs, not bad videos."""
    unexpected = sorted(k for k, (_, reason) in failures.items() if reason.startswith(UNEXPECTED))
    if unexpected:
        print(f'  {len(unexpected)} of the failures are unexpected errors (a bug, not a bad video: please '
              f'report them with the video)')
    for name in (unexpected + sorted(set(failures) - set(unexpected)))[:show]:
        print(f'  failed: {name}: {failures[name][1]}')
    if len(failures) > show:
        print(f'  ... and {len(failures) - show} more in {path}')
