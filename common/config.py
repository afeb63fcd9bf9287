"""The one override helper: `--name=value` on the command line replaces a script's constant NAME.

Like nanoGPT's configurator, but a function, and strict: an unknown name or a value of the wrong type
is one clear line and exit code 2. The configurable constants of a module are its UPPER_CASE globals
whose value is a bool, int, float or str; a script may also expose the constants of modules it
imports (create_video_embeddings.py takes DetectionPipeline.py's `--face_weights`, for example).
"""
import sys

_TYPES = (bool, int, float, str)


def constants(namespace):
    """The configurable constants of a module or a globals() dict, as {NAME: value}."""
    ns = namespace if isinstance(namespace, dict) else vars(namespace)
    return {k: v for k, v in ns.items()
            if k.isupper() and not k.startswith('_') and type(v) in _TYPES}


def _parse(text, like, name):
    kind = type(like)
    if kind is bool:
        low = text.lower()
        if low in ('1', 'true', 'yes', 'on'):
            return True
        if low in ('0', 'false', 'no', 'off'):
            return False
        raise ValueError(f'--{name} takes true or false, not {text!r}')
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f'--{name} takes an integer, not {text!r}') from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f'--{name} takes a number, not {text!r}') from None
    return text


def apply(argv, *namespaces, quiet=False):
    """Apply `--name=value` arguments to the first namespace (globals() dict or module) that has NAME.

    Returns {NAME: new value} for what was overridden. Raises ValueError with a one-line message on an
    unknown name, a malformed argument or a value of the wrong type.
    """
    targets = [ns if isinstance(ns, dict) else vars(ns) for ns in namespaces]
    changed = {}
    for arg in argv:
        if not arg.startswith('--') or '=' not in arg:
            raise ValueError(f'arguments are --name=value, got {arg!r}')
        key, text = arg[2:].split('=', 1)
        name = key.upper()
        for ns in targets:
            if name in constants(ns):
                ns[name] = _parse(text, ns[name], key)
                changed[name] = ns[name]
                break
        else:
            known = sorted(k.lower() for ns in targets for k in constants(ns))
            raise ValueError(f'unknown setting --{key}; known: {", ".join(known)}')
    if not quiet:
        for name, value in changed.items():
            print(f'override: {name} = {value!r}')
    return changed


def configure(*namespaces, argv=None):
    """The scripts' entry point: apply sys.argv's overrides, or print the problem and exit 2."""
    try:
        return apply(sys.argv[1:] if argv is None else argv, *namespaces)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2) from None


def settings(namespace, **overrides):
    """A module's constants as a dict of lower-case settings, with keyword overrides: how tests and
    benchmarks call a script's run() without touching its globals. Unknown names raise TypeError."""
    cfg = {k.lower(): v for k, v in constants(namespace).items()}
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise TypeError(f'unknown settings: {sorted(unknown)}')
    cfg.update(overrides)
    return cfg
