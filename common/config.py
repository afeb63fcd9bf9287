"""The one settings helper: `--name=value` on the command line replaces a script's constant NAME.

Like nanoGPT's configurator, but a function, and strict: an unknown name, a value of the wrong type or
one out of its range is one clear line and exit code 2, before any work. A script's settings are the
constants of its fenced config blocks; it may also take the shared settings of a module it imports
(create_video_embeddings.py takes DetectionPipeline.py's `--face_weights`), which reach that module's
component as arguments (apply()). -h lists them all, read from the source before any heavy import.

Ranges live in RANGES below, by setting name: a name means the same thing in every script that has it.
Every user error of the project (bad settings, bad input, an unusable checkpoint) is a UserError, and
cli() turns it, or an OSError on a named file (a full disk, a folder where a file should be), into one
line `error: ...` and exit code 2.
"""
import ast
import contextlib
import difflib
import functools
import io
import math
import os
import re
import signal
import sys
import tempfile
import textwrap
import threading
import tokenize
from typing import NamedTuple

_TYPES = (bool, int, float, str)


class UserError(Exception):
    """A problem the user can fix (a setting, a file, a folder): one line `error: ...`, exit code 2."""


def _at_least(lo):
    return lambda v: v >= lo, f'at least {lo}'


def _above(lo):
    return lambda v: v > lo, f'above {lo}'


def _share(hi_open=False, lo_open=False):
    """A fraction in [0, 1], with either end open."""
    lo, hi = ('(' if lo_open else '['), (')' if hi_open else ']')
    return (lambda v: (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1),
            f'a share in {lo}0, 1{hi}')


def _one_of(*choices):
    return lambda v: v in choices, 'one of ' + ', '.join(map(repr, choices))


def _at_most(hi):
    return lambda v: v <= hi, f'at most {hi}'


# lower-case setting name: (check(value) -> bool, what the check wants). NaN and infinities fail every
# check. Checks that involve two settings (clip_lo < clip_hi, min_faces <= faces) are the scripts' own.
RANGES = {
    # sizes and counts
    **{name: _at_least(1) for name in (
        'batch_size', 'eval_batch_size', 'chunk', 'frame_step', 'detect_size', 'detect_every', 'max_gap', 'min_face_size',
        'n_mels', 'n_fft', 'hop', 'crop', 'eval_stride', 'hidden', 'layers',
        'max_epochs', 'patience', 'videos', 'faces', 'video_dim', 'audio_dim', 'folders', 'fps')},
    **{name: _at_least(0) for name in (
        'threads', 'show', 'min_faces', 'project', 'fc', 'weight_decay', 'min_delta', 'margin')},
    'seed': (lambda v: 0 <= v < 2 ** 32, 'from 0 to 2**32 - 1 (what scikit-learn\'s random_state takes)'),
    'workers': _at_least(-1), 'worker_timeout': _at_least(0),
    # MTCNN divides by its smallest face (ROI_SIZE // 4 in the regions of interest); InceptionResnetV1's
    # layers need at least 75 pixels
    'roi_size': (lambda v: v == 0 or v >= 4, '0 (off) or at least 4'),
    'face_size': _at_least(75),
    # shares
    'link_iou': _share(), 'min_track_fraction': _share(), 'threshold': _share(),
    'val_fraction': _share(hi_open=True), 'dropout': _share(hi_open=True),
    'prior': _share(lo_open=True, hi_open=True),
    # training.py's clip range is in [0, 1]; test.py's is that or below 0 (the checkpoint's)
    'clip_lo': _at_most(1), 'clip_hi': _at_most(1),
    # positive amounts
    'lr': _above(0), 'top_db': _above(0), 'cnn_window_seconds': _above(0), 'seconds': _above(0),
    'silence_dbfs': _at_most(0), 'max_mb': _above(0),
    'port': (lambda v: 1 <= v <= 65535, 'a TCP port, 1 to 65535'),
    'sample_rate': (lambda v: 4000 <= v <= 192000, 'from 4000 to 192000 (Hz)'),
    # choices
    'split': _one_of('original', 'folder', 'recorded'), 'subset': _one_of('auto', 'all', 'val', 'train', 'test'),
    'audio_encoder': _one_of('resemblyzer', 'cnn'), 'signal': _one_of('jitter', 'none'),
    'decoder': _one_of('cpu', 'nvdec'),
}


def check(name, value):
    """Raise UserError where `value` is out of the range of setting `name` (lower case)."""
    rule = RANGES.get(name.lower())
    if rule is None or isinstance(value, bool):
        return
    ok, wants = rule
    if isinstance(value, float) and not math.isfinite(value) or not ok(value):
        raise UserError(f'--{name.lower()} must be {wants}, not {value!r}')


def writable_file(path, setting='--output', reads=()):
    """Raise UserError where `path` cannot be written as a file: it is a folder, one of the files `reads` (the
    run's inputs, which it would destroy), or its folder cannot be created or written (tried with a probe
    file). Scripts call it before any work, so that no work is lost on the write at the end. Creates the folder."""
    if not path:  # '' is no file (the current folder to some calls)
        raise UserError(f'{setting} is empty: give the path of a file')
    if os.path.isdir(path):  # never 'remove it': it may be the data, or a run folder
        raise UserError(f'{path} is a folder, where {setting} writes a file; give the path of a file in it')
    if path.endswith(('/', os.sep)):  # 'out/' would pass here and fail at the final rename, after the work
        raise UserError(f'{setting}={path} ends with a /, which names a folder; give the path of a file in it')
    if path == '-':  # the Unix way to say standard output, which made a file named '-' here
        raise UserError(f'{setting}=- would be a file named -, not standard output; give the path of a file')
    if os.path.exists(path) and any(os.path.isfile(r) and os.path.samefile(path, r) for r in reads if r):
        raise UserError(f'{setting}={path} is a file this run reads, which writing would destroy; give another '
                        f'{setting}')
    try:
        writable_folder(os.path.dirname(os.path.abspath(path)), setting)
    except UserError as err:
        raise UserError(f'{setting}={path}: {err}') from None


def writable_folder(folder, setting='--out_dir'):
    """Raise UserError where `folder` is not a folder this process can create and write files in."""
    if not folder:
        raise UserError(f'{setting} is empty: give a folder')
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f'{folder} is a file, where {setting} needs a folder; give another {setting}')
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix='.probe-')
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise UserError(f'{err.filename or folder}: cannot write there ({err.strerror or err}); '
                        f'give another {setting}') from None


_START = re.compile(r'# -{20,} config(: this script only)?\s*$')
_END = re.compile(r'# -{20,}\s*$')


class Setting(NamedTuple):
    """One line of a config block."""
    name: str
    default: str    # as written in the file
    comment: str
    shared: bool    # False in a block of `this script only`


@functools.lru_cache(maxsize=None)
def declared(path):
    """The settings a file declares in its fenced config blocks, in order. A block opened by
    `# ---- config: this script only` holds the script's own settings (its files, its processes), which a
    script exposing this module's settings does not take. Read from the source: no import."""
    with open(path, encoding='utf-8') as f:
        source = f.read()
    comments = {tok.start[0]: tok.string.lstrip('#').strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines, blocks, shared = source.splitlines(), [], None
    for number, line in enumerate(lines, 1):
        start = _START.match(line)
        if start:
            shared = not start.group(1)
        elif shared is not None and _END.match(line):
            shared = None
        elif shared is not None:
            blocks.append((number, shared))
    inside = dict(blocks)
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and node.lineno in inside and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            said = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments][:1]
            after = node.end_lineno + 1  # a comment that runs on: the block's comment-only lines below
            while after in inside and after in comments and re.match(r'\s+#', lines[after - 1]):
                said, after = said + [comments[after]], after + 1
            out.append(Setting(node.targets[0].id, ast.get_source_segment(source, node.value), ' '.join(said),
                               inside[node.lineno]))
    return tuple(out)


def constants(namespace, shared_only=False):
    """The configurable constants of a module or a globals() dict, as {NAME: value}: those of its config
    blocks (shared_only: not those of `this script only`) where its file has any, else its UPPER_CASE
    globals of plain types (a dict made in a test)."""
    ns = namespace if isinstance(namespace, dict) else vars(namespace)
    path = ns.get('__file__')
    block = declared(os.path.abspath(path)) if path and path.endswith('.py') and os.path.exists(path) else ()
    names = {s.name for s in block if s.shared or not shared_only} if block else None
    return {k: v for k, v in ns.items()
            if (k in names if names is not None else k.isupper() and not k.startswith('_')) and type(v) in _TYPES}


def recorded(namespace, cfg, leave_out):
    """{'--name': value} of the settings of `cfg` (lower-case) that are shared constants of `namespace` (a
    module or a globals() dict), less the names of `leave_out`: what a result records it was made with, so
    that a rerun or a later script can match it (leave_out: where and how fast it is made, not what it is).
    A file, or a folder of weights (GenD's), is recorded by its absolute path, which a later script can open from
    any folder, however it was spelt ('w', './w/', '/abs/w' are one)."""
    shared = {k.lower() for k in constants(namespace, shared_only=True)}
    return {f'--{k}': os.path.abspath(v) if isinstance(v, str) and (
        os.path.isfile(v) or k.endswith('_weights') and os.path.isdir(v)) else v
        for k, v in sorted(cfg.items()) if k in shared and k not in leave_out}


def help_if_asked(name, path, *also):
    """Where this file runs as a script with -h or --help: print its docstring and every setting (its own,
    then the shared ones of the scripts `also`, paths beside it) with its default and comment, exit 0.
    Called before the heavy imports, so that the answer takes no time; `also` must name the modules whose
    constants configure() is given after this script's."""
    folder = os.path.dirname(os.path.abspath(path))
    _ALSO[os.path.abspath(path)] = tuple(os.path.abspath(os.path.join(folder, a)) for a in also)
    if name == '__main__' and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where ignored
        signal.signal(signal.SIGINT, _interrupted_at_start)  # until cli() runs main()
    if name != '__main__' or not {'-h', '--help'} & set(sys.argv[1:]):
        return
    with open(path, encoding='utf-8') as f:
        source = f.read()
    first = ast.parse(source).body[0]  # the docstring as written (its example's line breaks kept)
    doc = ast.get_source_segment(source, first.value).strip('"\'') if ast.get_docstring(ast.parse(source)) else ''
    script = os.path.basename(path)
    print(doc.strip() + '\n')
    print(f'settings (python {script} --name=value or --name value; a true/false one alone is true):')
    seen = set()
    for where in (path, *_ALSO[os.path.abspath(path)]):
        rows = [s for s in declared(os.path.abspath(where))
                if (s.shared or where == path) and s.name not in seen]  # a script's own name hides another's
        seen.update(s.name for s in rows)
        if where != path:
            print(f'\nfrom {os.path.basename(where)}:')
        shown = [f'--{s.name.lower()}={_shown(s.default)}' for s in rows]
        width = min(max(map(len, shown), default=0), 40) + 2
        for text, s in zip(shown, rows):
            if len(text) + 2 > width:  # a long default: its comment on the next line
                text = f'{text}\n  {"":<{width}}'
            comment = textwrap.wrap(s.comment, max(118 - width, 40), break_on_hyphens=False)
            print(f'  {text:<{width}}' + f'\n  {"":<{width}}'.join(comment or ['']).rstrip())
    raise SystemExit(0)


_CTRL_C = []  # the stops (Ctrl-C's SIGINT, SIGTERM) this process received as a script: one a library dropped still
# ends the run (catch_up)


def _interrupted_at_start(signum, frame):
    """Ctrl-C in the heavy imports (torch's take seconds), before cli() runs main(): one line and 130, as
    cli() answers it later, not an import's traceback (recorded: an import may drop the SystemExit, catch_up)."""
    _CTRL_C.append(signum)
    print('\ninterrupted before any work', file=sys.stderr)
    raise SystemExit(130)


def _interrupted(signum, frame):
    """cli()'s Ctrl-C, and SIGTERM (a scheduler's: SLURM's time limit, scancel; kill): KeyboardInterrupt, recorded
    (catch_up, and cli's line says which)."""
    _CTRL_C.append(signum)
    raise KeyboardInterrupt


def catch_up():
    """KeyboardInterrupt where a Ctrl-C reached this script and a library dropped it on its way: numba's compiler
    (llvmlite) gets it in a ctypes callback, which prints and drops it; a pybind11 module's import (triton's,
    scipy's) makes it an ImportError, which torch takes for a missing package and a video's work for its failure.
    StageRun calls this before it saves a video's result, which may be such a failure."""
    if _CTRL_C:
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_held():
    """Ctrl-C held until the block ends, then raised: for a block where a library would drop it (catch_up), so
    that it neither prints a ctypes callback's traceback nor leaves the block. Held where Ctrl-C raises
    KeyboardInterrupt (cli's handler, Python's) and signals can be caught (the main thread)."""
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    previous = {s: h for s, h in previous.items() if h in (_interrupted, signal.default_int_handler)}  # cli's SIGTERM
    held = []
    for s in previous:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if held:
        previous[held[0]](held[0], None)  # KeyboardInterrupt, now


def _shown(default):
    """A default as one would type it: data/sample, true, 0.5, '' (empty)."""
    try:
        value = ast.literal_eval(f'({default})')  # parenthesised: a value written over several lines
    except (ValueError, SyntaxError):
        return ' '.join(default.split())
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) and value else repr(value)


_ALSO = {}  # script path: the module files whose shared settings it takes (help_if_asked's `also`)


def _parse(text, like, name):
    kind = type(like)
    if kind is bool:
        low = text.lower()
        if low in ('1', 'true', 'yes', 'on'):
            return True
        if low in ('0', 'false', 'no', 'off'):
            return False
        raise UserError(f'--{name} takes true or false, not {text!r}')
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f'--{name} takes an integer, not {text!r}') from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f'--{name} takes a number, not {text!r}') from None
    if text.startswith('~'):  # the shell expands ~ at a word's start, not after --name=: a folder named ~ was made
        raise UserError(f'--{name}={text}: the shell leaves a ~ after = as it is; give --{name} {text} (a word of '
                        f'its own), or the path from $HOME')
    return text


def _pairs(argv, known):
    """(name as given, value text) of each argument: --name=value, --name value, or a bool's --name."""
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith('--') or arg == '--':
            raise UserError(f'arguments are --name=value or --name value, got {arg!r}')
        if '=' in arg:
            yield tuple(arg[2:].split('=', 1))
        elif args and not args[0].startswith('--'):
            yield arg[2:], args.pop(0)
        elif type(known.get(arg[2:].upper())) is bool:
            yield arg[2:], 'true'
        else:
            yield arg[2:], None


def apply(argv, namespace, *borrowed, quiet=False):
    """Apply `--name=value` (or `--name value`) arguments: a name of `namespace` (a script's globals(), or a
    dict) sets that constant, as nanoGPT's configurator does; else a shared setting of a module of
    `borrowed` (create_video_embeddings.py takes DetectionPipeline.py's) goes into that module's dict of
    overrides, lower-case, which its component takes as arguments: no module's globals change but the
    script's own.

    Returns ({NAME: value} of every override, [one dict of overrides per module of `borrowed`]). Raises
    UserError in one line on an unknown name (with the closest known one), a malformed argument, a value of
    the wrong type or out of its range (RANGES).
    """
    own = namespace if isinstance(namespace, dict) else vars(namespace)
    mine, lent = constants(own), [constants(module, shared_only=True) for module in borrowed]
    known = {}
    for table in (mine, *lent):
        for name, value in table.items():
            known.setdefault(name, value)
    changed, overrides = {}, [{} for _ in borrowed]
    for key, text in _pairs(argv, known):
        name = key.upper()
        if name in changed:  # the last one would win silently: a second --input scored instead of both
            raise UserError(f'--{key} is given twice; give it once')
        if name not in known:
            close = difflib.get_close_matches(key.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
            hint = f'did you mean --{close[0]}? ' if close else ''
            if key.lower() == 'procs':  # the option of earlier versions: say what replaced it
                script = os.path.basename(own.get('__file__') or 'script.py')
                hint = (f'--procs is gone: start several processes with torchrun --standalone '
                        f'--nproc_per_node=N {script} ... (README: many processes); ')
            raise UserError(f'unknown setting --{key}; {hint}-h lists the settings')
        if text is None:
            raise UserError(f'--{key} needs a value: --{key}=VALUE')
        value = _parse(text, known[name], key)
        check(key, value)
        changed[name] = value
        if name in mine:
            own[name] = value
        else:
            overrides[next(k for k, table in enumerate(lent) if name in table)][name.lower()] = value
    if not quiet:
        for name, value in changed.items():
            print(f'override: {name} = {value!r}')
    return changed, overrides


def configure(namespace, *borrowed, argv=None):
    """The scripts' entry point: apply sys.argv's overrides (apply()); returns the overrides of each module
    of `borrowed` as a dict, for its component. `borrowed` must be the modules its help_if_asked() named
    (so that -h tells the truth)."""
    path = os.path.abspath(namespace.get('__file__') or '')
    if path in _ALSO:
        given = tuple(os.path.abspath(module.__file__) for module in borrowed)
        assert given == _ALSO[path], f'{path}: help_if_asked names {_ALSO[path]}, configure gets {given}'
    try:
        return apply(sys.argv[1:] if argv is None else argv, namespace, *borrowed)[1]
    except UserError as err:  # before any work, whoever calls main()
        fail(err)


def settings(namespace, **overrides):
    """A module's constants as a dict of lower-case settings, with keyword overrides: how tests and
    benchmarks call a script's run() without touching its globals. Unknown names raise TypeError, values
    out of range UserError."""
    cfg = {k.lower(): v for k, v in constants(namespace).items()}
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise TypeError(f'unknown settings: {sorted(unknown)}')
    for name, value in overrides.items():
        check(name, value)
    cfg.update(overrides)
    return cfg


def fail(message):
    """The one way out for a user error: `error: message` on stderr, on one line (an exception's message
    quoted in it may hold line breaks: every run of white space is one space), exit code 2."""
    print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
    raise SystemExit(2)


def cli(main):
    """Run a script's main(): a UserError, or an OSError on a named file (disk full, no permission, a
    folder where a file should be), is one line and exit code 2, not a traceback; Ctrl-C one line and 130, the
    shell's code for it. A file name that is not UTF-8 (common.files.NAMES) is printed escaped, as Python
    prints it on stderr, not as an error."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors='backslashreplace')
    if signal.getsignal(signal.SIGINT) is _interrupted_at_start:
        if _CTRL_C:  # an import dropped its SystemExit (said then)
            raise SystemExit(130)
        signal.signal(signal.SIGINT, _interrupted)  # KeyboardInterrupt: what is done is kept
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # as Ctrl-C: its `finally`s run (decoding workers stopped)
        signal.signal(signal.SIGTERM, _interrupted)
    try:
        main()
    except UserError as err:
        fail(err)
    except OSError as err:
        if err.filename is None:
            raise
        fail(f'{err.filename}: {err.strerror or err}')
    except KeyboardInterrupt:  # what is done is kept (common.stage): the same command resumes
        term = _CTRL_C[-1:] == [signal.SIGTERM]
        print(f'\n{"terminated (SIGTERM)" if term else "interrupted"}: run the same command again to go on from here',
              file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM if term else 130) from None
