"""Files as every script writes and reads them: atomic writes (a temporary file beside the target, then one rename,
so that a killed writer leaves the old file or the new one), pickles read with a one-line error, and the stamps
(size, modification time) that say whether a file changed since a result was made from it.
"""
import contextlib
import glob
import hashlib
import os
import pickle
import secrets

import pandas as pd

from common.config import UserError

# How a file name that is not UTF-8 (Python's str holds its bytes as surrogates) goes into every CSV: as the bytes
# the file system holds, naming that very file. Read such a CSV with this error handler (pandas: encoding_errors).
NAMES = 'surrogateescape'
# what unpickling a truncated, garbage or foreign file raises (an OSError config.cli reports with its file)
UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
              IndexError, KeyError, UnicodeDecodeError, MemoryError)


def fit_name(name, suffix):
    """`name` + `suffix`, a file name short enough for atomic_path's temporary beside it (.NAME.xxxxxxxx.tmp) to
    fit the file system's 255 bytes; a longer one keeps its start and gets a hash of the whole name instead of
    the rest, so that two long names stay two files."""
    whole = os.fsencode(name + suffix)
    if len(whole) <= 255 - len('..xxxxxxxx.tmp'):
        return name + suffix
    tag = '~' + hashlib.sha1(whole).hexdigest()[:16] + suffix
    start = name
    while len(os.fsencode(start + tag)) > 255 - len('..xxxxxxxx.tmp'):  # whole characters: UTF-8 stays UTF-8
        start = start[:-1]
    return start + tag


def shown(text):
    """`text` (a file name, a reason) for one line of a report: a character that would break the line or cannot be
    printed (a line break; a byte of a name that is not UTF-8, held as a surrogate) as its escape: 'new\\nline.mp4'."""
    return ''.join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def stamp(path):
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def stamps(paths):
    """{absolute path: [size, mtime], or None where absent}: what a result's made_with records of its input files."""
    return {os.path.abspath(p): stamp(p) if os.path.exists(p) else None for p in map(str, paths)}


def read_pickle(path, todo, table=True):
    """The object pickled at `path` (a pandas table where `table`), or UserError saying `todo` (what to do)."""
    try:
        obj = pd.read_pickle(path)
    except UNREADABLE as err:
        raise UserError(f'{path}: not a readable pickle ({type(err).__name__}: {err}); {todo}') from None
    if table and not isinstance(obj, pd.DataFrame):
        raise UserError(f'{path}: a {type(obj).__name__}, not a pandas table; {todo}')
    return obj


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (`.NAME.xxxxxxxx.tmp`); on success it replaces `path` in one rename."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temporary(folder, name)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask's mode, as open() gives
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a failed write (a full disk) names no file: config.cli's one line names this
        if err.filename is None:
            raise OSError(err.errno, err.strerror, path) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _temporary(folder, name):
    """A temporary name beside folder/name (hidden; sweep_temporaries removes what a killed writer left)."""
    return os.path.join(folder, f'.{name}.{secrets.token_hex(4)}.tmp')


def write_link(target, path):
    """A symbolic link at `path` to `target`, made, or replacing what `path` was, in one rename: never absent."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = _temporary(folder, name)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def sweep_temporaries(pattern):
    """Remove what atomic_path left of writers killed before their rename, beside each NAME the pattern's glob
    matches; only for a writer that knows nobody else writes those names now."""
    folder, name = os.path.split(pattern)
    for path in glob.glob(os.path.join(glob.escape(folder or '.'), f'.{name}.*.tmp')):
        os.remove(path)


def write_pickle(obj, path):
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)  # as DataFrame.to_pickle does


def write_text(text, path):
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)


def report_stem(report_path):
    """What test.py's files beside its report are named from: the report's path without '.json'."""
    return report_path[:-5] if report_path.endswith('.json') else report_path


def submission_files(output):
    """predict.py's OUTPUT and the files it writes beside it: its fallbacks CSV, its table (OUTPUT.pkl, whose
    made_with records the checkpoint's digest) and that table's failures; training.py removes those of its folder's
    replaced checkpoints."""
    return output, os.path.splitext(output)[0] + '.fallbacks.csv', output + '.pkl', output + '.pkl.failures.csv'


def digest(path):
    """The SHA-256 of a file's bytes, in hex (predict.py's record of its checkpoint)."""
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def report_files(report_path):
    """test.py's report and the files it writes beside it: (report.json, its ROC and calibration figures, its
    predictions); training.py's new run removes those of its folder's report."""
    stem = report_stem(report_path)
    return report_path, stem + '_roc.png', stem + '_calibration.png', stem + '_predictions.csv'
