"""What every stage does with its results: per-video results that survive a kill, failures, provenance.
A stage writes OUTPUT (a pandas pickle), OUTPUT.parts/ (a pickle per video done, removed once OUTPUT is written),
OUTPUT.failures.csv (filename, folder, reason, source) and OUTPUT.lock (claim()); a rerun does only what these
lack. Several processes (torchrun's ranks, a SLURM array's tasks) each take every Nth video (shard())."""
import contextlib
import csv
import errno
import fcntl
import glob
import hashlib
import os
import shutil
import socket
import sys

import pandas as pd

from common import config
from common.config import UserError
from common.dataset import filename_of, key, named_like_input, row_keys
from common.files import NAMES, atomic_path, read_pickle, shown, sweep_temporaries, write_pickle
from common.video import VideoError

UNEXPECTED = 'unexpected error: '  # how a failure's reason starts where the error was not a bad video's
LISTING = 'listing'  # the source of a failure of the listing (StageRun.record), not of a video's file


def record_key(record):
    return key(record.get('folder', ''), record['filename'])


def sources_of(table):
    """{key: source} of a table's rows that recorded what they were made from (StageRun.todo)."""
    return {} if table is None or 'source' not in table else {
        k: s for k, s in zip(row_keys(table), table['source']) if isinstance(s, str)}


def differences(old, new):
    """The names whose values differ between two made_with dicts (None: one that recorded nothing), sorted."""
    old, new = old or {}, new or {}
    return [k for k in sorted({*old, *new}) if old.get(k) != new.get(k)]


def shard():
    """(rank, world size, run id) of torchrun (id: its rendezvous id and address), a SLURM array, or (0, 1, 'local')."""
    env = os.environ
    if (world := env_int('WORLD_SIZE', '1')) > 1:
        rank, meet = env_int('RANK'), env.get('MASTER_ADDR')
        run = env.get('TORCHELASTIC_RUN_ID', 'torchrun') + (f'@{meet}:{env.get("MASTER_PORT", "")}' if meet else '')
        wrong = f'RANK={rank} is not one of the WORLD_SIZE={world} ranks 0..{world - 1}'
    elif (world := env_int('SLURM_ARRAY_TASK_COUNT', '1')) > 1:
        first, run = env_int('SLURM_ARRAY_TASK_MIN', '0'), env.get('SLURM_ARRAY_JOB_ID', 'slurm')
        rank = env_int('SLURM_ARRAY_TASK_ID') - first
        wrong = (f'SLURM_ARRAY_TASK_ID={env["SLURM_ARRAY_TASK_ID"]} is task {rank} from SLURM_ARRAY_TASK_MIN={first}, '
                 f'not one of the SLURM_ARRAY_TASK_COUNT={world} tasks 0..{world - 1}: give the array as one range '
                 f'without a step (sbatch --array=0-{world - 1})')
    else:
        return 0, 1, 'local'
    if not 0 <= rank < world:  # it would take other processes' videos, and none would write the output
        raise UserError(wrong)
    return rank, world, run


def env_int(name, default=None):
    """The integer in environment variable `name` (or `default`); UserError where it is none."""
    text = os.environ.get(name, default)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UserError(f'the environment variable {name}={text!r} is not an integer') from None


def share(items, rank, world):
    """This process's share of the whole, sorted list of items."""
    return items[rank::world]


def read_failures(path, with_sources=False):
    """A failures file as {key: (folder, reason)}; with_sources, also {key: source} where recorded, in one read."""
    out, sources = {}, {}
    with contextlib.suppress(FileNotFoundError), open(path, newline='', encoding='utf-8', errors=NAMES) as f:
        for row in csv.DictReader(f):
            if None in row.values() or not {'filename', 'folder', 'reason'} <= set(row):
                raise UserError(f'{path}: not a failures file (filename, folder, reason); delete it and rerun: its '
                                f'videos are tried again')
            k = key(row['folder'], row['filename'])
            out[k] = (row['folder'], row['reason'])
            if row.get('source'):
                sources[k] = row['source']
    return (out, sources) if with_sources else out


def write_failures(path, failures, sources=None):
    """The failures file at `path` (read_failures'): {key: (folder, reason)}, sorted, each with its source where
    `sources` ({key: source}) knows it."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='', encoding='utf-8', errors=NAMES) as f:
        csv.writer(f).writerows([['filename', 'folder', 'reason', 'source']] + [
            [filename_of(k, folder), folder, reason, (sources or {}).get(k, '')]
            for k, (folder, reason) in sorted(failures.items())])


_CLAIMED = {}  # absolute output path: the lock file this process holds


def claim(output, setting='--output', reads=(), alone=False):
    """Hold OUTPUT for this run, UserError where another run writes it: each of the run's processes holds a shared
    flock on OUTPUT.lock (which holds the run's id) until it ends; OUTPUT.lock.gate serialises the check.
    `setting`: the flag that gives OUTPUT, which the messages name; `reads`: as config.writable_file's; `alone`:
    the run is this process, whatever torchrun's or a SLURM array's environment (predict.py, which does not split
    its videos). Returns the lock, held until the process ends or closed (`with claim(...)`: a run repeated)."""
    config.writable_file(output, setting, reads)  # before abspath, which makes '' the current folder
    output = os.path.abspath(output)
    if output in _CLAIMED and not _CLAIMED[output].closed:
        return _CLAIMED[output]
    if named_like_input(output):  # the data's own file: its lock files and parts would be left beside it
        raise UserError(f'{setting}: {output} is named like a video or a part\'s labels: give another {setting}')
    _, world, run_id = shard()
    run = run_id if world > 1 and not alone else f'{socket.gethostname()} pid {os.getpid()}'  # a plain run: its process
    with open(output + '.lock.gate', 'a') as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)  # released when closed, a moment later
        lock = os.fdopen(os.open(output + '.lock', os.O_RDWR | os.O_CREAT, 0o666), 'r+', encoding='utf-8')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a run holds it: ours, or another
            if (holder := lock.read()) != run:
                lock.close()
                raise UserError(f'{output} is being written by another run ({holder}): wait until it ends, '
                                f'or use another output') from None
        else:  # nobody: the run is ours
            lock.truncate()
            lock.write(run)
            lock.flush()
        fcntl.flock(lock, fcntl.LOCK_SH)
    _CLAIMED[output] = lock
    return lock


def ends_the_run(err):
    """An error no video is failed for: a full disk, or a signal (torchrun's workers' SignalException)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    elastic = sys.modules.get('torch.distributed.elastic.multiprocessing.api')  # never raised where not loaded
    return elastic is not None and isinstance(err, elastic.SignalException)


class StageRun:
    """One process's part in a stage's run on OUTPUT: its share of the work and its per-video records (a dict with
    'filename', 'folder' and its rows, or a 'failure'), so that a killed run resumes. made_with: {what: value} the
    results depend on, in every record and OUTPUT's attrs. `before`: the keys done before. `alone`: as claim()'s."""

    def __init__(self, output, retry_failed=False, made_with=None, redo=False, setting='--output', alone=False):
        self.rank, self.world, _ = (0, 1, None) if alone else shard()
        self.who = f'rank {self.rank}/{self.world}: ' if self.world > 1 else ''
        self.output, self.made_with, self.sources, self._merge_lock = os.fspath(output), made_with, {}, None
        self.setting, self.redo = setting, redo  # setting: the flag that gives OUTPUT, for the messages
        self.parts, self.failures_path = self.output + '.parts', self.output + '.failures.csv'
        saved = self.saved()  # read once
        if made_with is not None and self._discarded(*saved[:2]):
            saved = self.saved()
        os.makedirs(self.parts, exist_ok=True)  # after the checks: a refused run leaves no folder
        self.failed, self.dropped = set(saved[2]), set()  # dropped: done before, unlisted now (todo())
        self.retried = set(self.failed) if retry_failed else set()  # a failure not met again is gone: finish()
        self.before, self.recorded = self.done(saved) - self.retried, saved[3]  # recorded: {key: source} where known
        self.left, self.done_before = set(), 0  # the keys of the whole run (every share) not done before: todo()

    def _discarded(self, records, previous):
        """Whether earlier results recorded another made_with (none counts only with `redo`): UserError in one line,
        or with `redo` OUTPUT, its parts and failures removed, said in one line. Parts of processes of this run
        given other settings, beside parts with these, are removed (their videos done again), said too."""
        made = [r.get('made_with') for r in records] + ([] if previous is None else [previous.attrs.get('made_with')])
        if not (other := [m for m in made if m != self.made_with and (m is not None or self.redo)]):
            return False
        odd = [r for r in records if r.get('made_with') not in (None, self.made_with)]
        if (not self.redo and odd and any(r.get('made_with') == self.made_with for r in records)
                and (previous is None or previous.attrs.get('made_with') in (None, self.made_with))):
            # processes of one run given other settings (finish() refuses to merge them): theirs are done again
            print(f'{self.output}: {len(odd)} videos were done by a process of this run given other settings '
                  f'({", ".join(differences(odd[0]["made_with"], self.made_with))}): done again with these')
            for r in odd:
                os.remove(os.path.join(self.parts, self.part_name(record_key(r))))
            return True
        names = differences(other[0], self.made_with)
        if not self.redo:
            if not {k for k in set(self.made_with) & set(other[0]) if k.startswith('--')}:  # no setting in common
                raise UserError(f'{self.output} is the output of another stage (made with '
                                f'{", ".join(sorted(other[0])[:3])}, ...): give another {self.setting}')
            # first the names both recorded (an encoder's, an embedder's), then those one lacks
            names.sort(key=lambda k: (k not in other[0] or k not in self.made_with, k))
            changes = '; '.join(f'{k} {other[0].get(k)!r} then, {self.made_with.get(k)!r} now' for k in names[:3])
            raise UserError(f'{self.output} was made with other settings ({changes}' + (f'; and {len(names) - 3} more'
                            if len(names) > 3 else '') + f'): give another {self.setting}, or delete it, '
                            f'{os.path.basename(self.parts)}/ and {os.path.basename(self.failures_path)} to make it '
                            f'again with these')
        what = 'settings (an earlier run did not record them)' if other[0] is None else ', '.join(names)
        print(f'{self.output}: made with another {what}; discarding it, doing every video again')
        for path in (self.output, self.failures_path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        shutil.rmtree(self.parts, ignore_errors=True)
        return True

    def saved(self):
        """What earlier runs saved: (the parts' records, OUTPUT's table or None, {key: (folder, reason)} of the
        failures, {key: source} where recorded)."""
        records = [read_pickle(os.path.join(self.parts, name), 'delete it and rerun: its video is done again',
                               table=False) for name in sorted(glob.glob('*.pkl', root_dir=self.parts))]
        previous = read_pickle(self.output, 'delete it (and its .failures.csv) and rerun: the videos are done '
                               'again') if os.path.exists(self.output) else None
        failures, sources = read_failures(self.failures_path, with_sources=True)
        failures.update({record_key(r): (r.get('folder', ''), r['failure']) for r in records if 'failure' in r})
        sources.update({**sources_of(previous), **{record_key(r): r['source'] for r in records if 'source' in r}})
        return records, previous, failures, sources

    def done(self, saved=None):
        """Keys processed already: in OUTPUT, in a part, or failed (`saved`: saved(), read already)."""
        records, previous, failures, _ = saved or self.saved()
        return set(failures) | set(row_keys(previous)) | {record_key(r) for r in records}

    @staticmethod
    def part_name(key_):
        """The part file of a video's key: one per key, whichever process writes it."""
        return hashlib.sha1(key_.encode('utf-8', NAMES)).hexdigest()[:16] + '.pkl'

    def add(self, record):
        config.catch_up()  # a Ctrl-C a library dropped: this record may be its artefact (an ImportError)
        source = self.sources.get(record_key(record))
        record = {**record, **({} if source is None else {'source': source}),
                  **({} if self.made_with is None else {'made_with': self.made_with})}
        write_pickle(record, os.path.join(self.parts, self.part_name(record_key(record))))

    def fail(self, filename, folder, reason):
        self.add({'filename': filename, 'folder': folder, 'failure': reason})

    def record(self, problems):
        """Failures known before any work [(filename, folder, reason)] (a metadata.json unreadable, an entry without
        a label): rank 0 records them, once. Those recorded before and not found now (fixed since) are gone, and
        their videos done."""
        now = {key(folder, name) for name, folder, _ in problems}
        fixed = {k for k, source in self.recorded.items() if source == LISTING and k not in now}
        self.before, self.retried = self.before - fixed, self.retried | fixed  # retried: gone unless met again
        for name, folder, reason in problems if self.rank == 0 else ():
            if key(folder, name) not in self.before:
                self.sources[key(folder, name)] = LISTING
                self.fail(name, folder, reason)

    def todo(self, items, where, source=None, folders=()):
        """This process's share of the sorted items, less what is done (where(item): (folder, filename)). With
        `source` (source(item): what the video is made from, a string, or None), one done from another is redone.
        `folders`: the parts the listing holds beyond its videos' folders (a metadata.json that lists none now)."""
        keys = [key(*where(item)) for item in items]
        if source is not None:
            self.sources = dict(zip(keys, map(source, items)))
            changed = sorted(k for k in keys if k in self.before and self.sources[k] is not None
                             and self.recorded.get(k) not in (None, self.sources[k]))
            if changed:
                print(f'{self.who}{len(changed)} videos changed since they were done (their file or metadata '
                      f'entry), e.g. {changed[0]}: done again')
            self.before = self.before - set(changed)
            if not self.redo:  # predict.py's: its submission holds only the videos listed now
                gone = self.before.difference(keys)  # the keys done before, not listed now
                self._check_root(keys, gone)
                self._unlisted(keys, gone, folders)
        self.left = set(keys) - self.before
        self.done_before = len(keys) - len(self.left)  # of those listed: the plan line's "N done before"
        mine = set(share(keys, self.rank, self.world))
        return [item for item, k in zip(items, keys) if k in mine and k not in self.before]

    def _check_root(self, keys, gone):
        """UserError where the listing names videos done before by other keys: a data folder given a level above or
        below the one the earlier run was given ('p/a.mp4' done, 'a.mp4' listed, one file), or a part renamed since,
        which would do every video again and keep both rows, one clip under two keys (two groups: both sides of a
        split). The same file: the same name, size, modification time and metadata entry."""
        # (filename, recorded source): the key of `gone` (done before, not listed now); sources are strings, never None
        done_as = {(old.rsplit('/', 1)[-1], self.recorded[old]): old for old in gone if old in self.recorded}
        for new in keys:
            if new not in self.before and (old := done_as.get((new.rsplit('/', 1)[-1], self.sources[new]))):
                raise UserError(f'{self.output} has {old} done, which this data folder lists as {new} (the same '
                                f'file): give the data folder its earlier run was given (a part renamed since: '
                                f'rename it back, or give another {self.setting})')

    def _unlisted(self, keys, gone, folders):
        """The videos done before that the listing lacks while their folder is in it (an entry removed from its
        metadata.json: a video the user took out) become `dropped`: finish() removes their rows, said in one line.
        Those of a folder that is not in it (a part moved away, a drive not mounted, its metadata.json unreadable)
        are kept, said too."""
        gone = sorted(gone - self.failed)
        folders = {k.rpartition('/')[0] for k in keys} | set(folders)
        self.dropped = {k for k in gone if k.rpartition('/')[0] in folders}
        if self.dropped:
            print(f'{self.who}{len(self.dropped)} videos done before are no longer listed (taken out of their '
                  f'part\'s metadata.json), e.g. {min(self.dropped)}: their rows are dropped')
        if kept := [k for k in gone if k not in self.dropped]:
            print(f'{self.who}{len(kept)} videos done before are in parts not listed now, e.g. {kept[0]}: kept (a part '
                  f'moved away, a drive not mounted, a metadata.json unreadable); give another {self.setting} for a '
                  f'table without')

    @contextlib.contextmanager
    def video(self, filename, folder):
        """The work on one video: an error is its failure (an unexpected one, a bug, where not a VideoError), unless
        it ends_the_run."""
        try:
            yield
        except Exception as err:  # anything: the record says what, print_failures counts it
            if ends_the_run(err):
                raise
            self.fail(filename, folder, str(err) if isinstance(err, VideoError) else
                      f'{UNEXPECTED}{type(err).__name__}: {err}')

    def share_done(self, left):
        """After this process's share: 'merge' where every key of `left` has its part and this process merges,
        'wait' where one has none yet (a process at work, or killed), 'taken' where another merges or merged."""
        path = os.path.join(self.parts, 'merge.lock')
        try:
            if not {self.part_name(k) for k in left} <= set(os.listdir(self.parts)):
                return 'wait'
            lock = open(path, 'a')
        except FileNotFoundError:  # merged, and its parts removed, by another process
            return 'taken'
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel releases it when the process ends
            # else the lock of a merge that has ended, its folder removed since we opened it
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                self._merge_lock = lock
                return 'merge'
        lock.close()
        return 'taken'

    def merging(self, what):
        """True where this process writes the stage's output now; else says who will."""
        state = 'merge' if self.world == 1 else self.share_done(self.left)
        if state != 'merge':
            print(f'{self.who}share done; ' + (f'the last process to finish writes {what} (if one was killed, run the '
                  f'same command again: it does what is left and writes it)' if state == 'wait' else
                  f'another process of this run writes {what} (if it does not appear, run the same command again)'))
        return state == 'merge'

    def finish(self, rows_of, sort_by=('folder', 'filename'), attrs=None, columns=()):
        """Write OUTPUT = previous OUTPUT + the parts' rows (rows_of(record): dicts; `columns`: of a table
        without rows) and the failures, then remove the parts; a run that added nothing leaves OUTPUT as it is."""
        for path in (self.output, self.failures_path):  # left by a run killed while it wrote them
            sweep_temporaries(os.path.join(os.path.dirname(path), glob.escape(os.path.basename(path))))
        records, previous, failures, sources = self.saved()
        if other := [r['made_with'] for r in records if r.get('made_with', self.made_with) != self.made_with]:
            raise UserError(f'{self.output}: a process of this run was given other settings ('
                            f'{", ".join(differences(other[0], self.made_with))}): give every one the same; a rerun '
                            f'with the settings meant does again the videos done with others')
        if (previous is not None and len(previous.columns) and os.path.exists(self.failures_path) and not records
                and not self.dropped and not self.retried):
            shutil.rmtree(self.parts, ignore_errors=True)
            return previous, failures
        previous = previous if previous is not None and len(previous) else None
        # a video done again because its source changed: its new record replaces what OUTPUT holds of it
        before = sources_of(previous)
        redone = {record_key(r) for r in records if 'source' in r and r['source'] != before.get(record_key(r))}
        redone |= self.dropped
        if previous is not None and redone:
            previous = previous[[k not in redone for k in row_keys(previous)]]
        known = set(row_keys(previous)) | self.dropped  # a run killed between writing OUTPUT and removing the parts
        rows = [{**row, 'source': r['source']} if 'source' in r else row
                for r in records if 'failure' not in r and record_key(r) not in known for row in rows_of(r)]
        frames = [f for f in (previous, pd.DataFrame(rows) if rows else None) if f is not None]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))
        if len(table):
            table = table.sort_values(list(sort_by), kind='stable').reset_index(drop=True)
        table.attrs.update(attrs or {}, **({} if self.made_with is None else {'made_with': self.made_with}))
        succeeded, met = set(row_keys(table)), {record_key(r) for r in records}  # met: failed again, or new
        failures = {k: v for k, v in failures.items() if k not in succeeded and (k not in self.retried or k in met)}
        write_pickle(table, self.output)
        write_failures(self.failures_path, failures, sources)
        shutil.rmtree(self.parts, ignore_errors=True)
        return table, failures


Journal = StageRun  # the name of its per-video records before they were one class


def print_failures(failures, path, show=20, made=None):
    """The first `show` failures ({key: (folder, reason)}): the unexpected ones (bugs) first, and counted. `made`:
    the videos in the stage's output; none made and some failed is a UserError (exit 2, as a script in a chain
    must not go on), after the failures are shown."""
    unexpected = sorted(k for k, (_, reason) in failures.items() if reason.startswith(UNEXPECTED))
    if unexpected:
        print(f'  {len(unexpected)} of the failures are unexpected errors (a bug, not a bad video: please '
              f'report them with the video)')
    for name in (unexpected + sorted(set(failures) - set(unexpected)))[:show]:
        print(f'  failed: {shown(name)}: {shown(failures[name][1])}')
    if len(failures) > show:
        print(f'  ... and {len(failures) - show} more in {path}')
    if failures:  # a rerun passes over them: what was done stays done
        print('  a rerun with --retry_failed tries them again (one whose file or metadata.json was fixed since is '
              'tried again without it)')
    if made == 0 and failures:
        raise UserError(f'every video failed ({len(failures)}, reasons in {path}): the output has none for the next '
                        f'stage')
