"""README's "Files" list against the tree: every tracked Python file of the repository's root, common/, faces/
and bench/ is named, and every file or folder it names exists. In a bullet that starts with a folder
(`common/`), the names after it are in that folder; a name with a slash is a path from the root."""
import os
import re
import subprocess

from conftest import ROOT

FOLDERS = ('', 'common', 'faces', 'bench')  # '' : the repository's root
NAME = re.compile(r'`([\w.-][\w./-]*)`')  # a backticked name; a file has an extension, a folder a trailing /


def files_section():
    """README's "Files" list: its bullets, each with its continuation lines, without the leading '- '."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    section = text.split('\n## Files\n', 1)[1].split('\n## ', 1)[0]
    return [b[2:] for b in re.split(r'\n(?=- )', '\n' + section)[1:]]


def named(bullets):
    """The paths (from the root) the bullets name."""
    paths = []
    for bullet in bullets:
        tokens = [t for t in NAME.findall(bullet) if t.endswith('/') or re.search(r'\.\w+$', t)]
        folder = tokens[0] if tokens and tokens[0].endswith('/') and bullet.startswith(f'`{tokens[0]}`') else ''
        paths += [t if t == folder or '/' in t else folder + t for t in tokens]
    return paths


def problems(bullets):
    """(named files that are not in the tree, tracked Python files not named)."""
    paths = named(bullets)
    return ([p for p in paths if not os.path.exists(os.path.join(ROOT, p))],
            [p for p in tracked_python() if p not in paths])


def tracked_python():
    """The tracked .py files directly in FOLDERS, but the packages' __init__.py; the files on disk where the
    tree is not a git checkout (an unpacked archive)."""
    listed = subprocess.run(['git', 'ls-files', '--', *[os.path.join(f, '*.py') if f else '*.py' for f in FOLDERS]],
                            cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        paths = listed.stdout.split()
    else:
        paths = [os.path.join(f, n) if f else n for f in FOLDERS for n in os.listdir(os.path.join(ROOT, f))
                 if n.endswith('.py')]
    return sorted(p for p in paths if os.path.dirname(p) in FOLDERS and os.path.basename(p) != '__init__.py')


def test_every_python_file_is_named_and_every_named_file_exists():
    bullets = files_section()
    paths = named(bullets)
    assert {'common/config.py', 'faces/workers.py', 'bench/bench_gpu.py', 'explain.py', 'docs/explain.png'} <= \
        set(paths) and 'faces/DetectionPipeline.py' not in paths  # the parser reads the list as written
    missing, unnamed = problems(bullets)
    assert not missing, f'README names files that are not in the tree: {missing}'
    assert not unnamed, f"README's Files list does not name: {unnamed}"


def test_the_check_sees_a_gone_file_and_an_unnamed_one():
    """The list as it was (common/prefetch.py, gone; explain.py, not named) fails both checks."""
    old = [b.replace('`device.py`', '`prefetch.py`, `device.py`').replace('; `explain.py`', '')
           for b in files_section()]
    assert problems(old) == (['common/prefetch.py'], ['explain.py'])
