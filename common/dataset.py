"""A DFDC-style dataset: every folder under a data folder that holds a metadata.json is a part, and its
metadata.json names the part's videos: {"name.mp4": {"label": "FAKE" | "REAL", "original": ...}}.
make_metadata.py writes such files for FaceForensics++ and Celeb-DF-v2 trees. A video is known by its key: its
path relative to the data folder."""
import json
import os

from common.config import UserError

# what every stage, make_metadata.py and predict.py take for a video (is_video): the containers FFmpeg reads
# that cameras, broadcasts (MPEG transport streams) and old archives (MPEG-1/2, Windows Media, Flash) hold
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.ts', '.mts', '.m2ts', '.mpg', '.mpeg',
                    '.wmv', '.flv', '.3gp', '.ogv')


def key(folder, filename):
    """A video's key: its path relative to the data folder ('' or '.': the data folder itself)."""
    return filename if folder in ('', '.') else f'{folder}/{filename}'


def filename_of(key_, folder):
    return key_ if folder in ('', '.') else key_[len(folder) + 1:]


def row_keys(table):
    """The key of each of a table's rows, in order; a table without a folder column is in the data folder."""
    n = 0 if table is None else len(table)
    return [key(*r) for r in zip(table['folder'] if 'folder' in table else [''] * n, table['filename'])] if n else []


def is_video(name):
    return name.lower().endswith(VIDEO_EXTENSIONS)


def is_text(name):
    """True where `name` can be a file's name: JSON's escapes can give lone surrogates. "\\udce9" is the byte
    0xe9 of a name that is not UTF-8 (Python's json writes a Latin-1 'caf\\xe9.mp4' so), which every output
    holds (common.files.NAMES); "\\ud800" is no byte, and no file the stages write can hold it."""
    try:
        name.encode('utf-8', 'surrogateescape')
    except UnicodeEncodeError:
        return False
    return True


def walk(top):
    """(folder, file names) of `top` and every folder under it, subfolders in sorted order; links to folders
    are followed, each folder once (a link back up the tree, or a second link to one folder, is not walked
    again: the first path the walk reaches it by stands)."""
    seen = set()
    for root, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        yield root, files


def list_inputs(path, others=None):
    """The videos of predict.py's INPUT, `path`, as (path, folder, filename), sorted by key: the file itself (folder
    ''), or every file named like a video (a dangling link too: its row says 'file is missing') in the folder and
    its subfolders (walk: links followed, each folder once; `folder` relative to `path`, '/' between names).
    `others`, a list, gets the key of each file passed over (not named like a video)."""
    if not os.path.isdir(path):
        return [(path, '', os.path.basename(path))]
    found = []
    for top, files in walk(path):
        rel = os.path.relpath(top, path)
        folder = '' if rel == '.' else rel.replace(os.sep, '/')
        found += [(os.path.join(top, name), folder, name) for name in files if is_video(name)]
        if others is not None:
            others += sorted(key(folder, name) for name in files if not is_video(name))
    return sorted(found, key=lambda video: key(video[1], video[2]))


def file_source(path):
    """What predict.py's result for a video is made from (common.stage.StageRun.todo's source): its file's size,
    modification time and status-change time (through links; the last changes with a chmod too, so that a file
    that could not be read, made readable, is tried again), or 'absent'."""
    try:
        st = os.stat(path)
    except OSError:
        return 'absent'
    return f'{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}'


def label_of(entry):
    """DFDC's label as the target: 1 = FAKE, 0 = REAL; None where the entry has no usable label. Taken as
    users write it: "FAKE" / "REAL" in any case, or the target itself, 1 / 0 (a number or a string)."""
    label = entry.get('label') if isinstance(entry, dict) else None
    if isinstance(label, bool) or not isinstance(label, (str, int, float)):
        return None  # true / false would say nothing of which class is which
    if not isinstance(label, str):
        label = {1: '1', 0: '0'}.get(label, '')
    return {'FAKE': 1, 'REAL': 0, '1': 1, '0': 0}.get(label.strip().upper())


def check_folder(data_dir):
    """UserError where the data folder is not one: absent, or a file (a video given for a folder)."""
    if not os.path.isdir(data_dir):
        raise UserError(f'data folder {data_dir} ' + ('is a file: give the folder that holds the videos'
                                                      if os.path.exists(data_dir) else 'does not exist'))


def plan(data_dir):
    """The dataset's videos: (todo [(folder relative to data_dir, filename, path, entry)], failures
    [(name, folder, reason)], the count of videos on disk without a metadata entry). Two parts may list the
    same file name: both are videos (their keys, folder/filename, differ). Links to folders are followed, each
    folder once (walk())."""
    check_folder(data_dir)
    parts = [root for root, files in walk(data_dir) if 'metadata.json' in files]
    if not parts:
        raise UserError(f'no metadata.json under {data_dir}: not a DFDC-style dataset')
    todo, failures, skipped = [], [], 0
    for folder in parts:
        rel, path = os.path.relpath(folder, data_dir), os.path.join(folder, 'metadata.json')
        try:
            with open(path, encoding='utf-8-sig') as f:  # a BOM, as Windows editors write it, is not JSON
                meta = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            failures.append(('metadata.json', rel, f'{path}: not readable JSON ({err})'))
            continue
        if not isinstance(meta, dict):
            failures.append(('metadata.json', rel, f'{path}: expected an object of file names, got '
                                                   f'{type(meta).__name__}'))
            continue
        skipped += len({n for n in os.listdir(folder) if is_video(n)} - set(meta))
        for name in sorted(meta):
            if not is_text(name):
                failures.append((name.encode('utf-8', 'backslashreplace').decode('utf-8'), rel,
                                 'metadata.json names it with a lone surrogate (a JSON escape such as \\ud800) '
                                 'that no file name holds: refused'))
            elif name in ('', '.', '..') or '/' in name or '\\' in name or '\0' in name:
                # '../x.mp4' or '/etc/x' would be read outside the part, and its WAV written outside AUDIO_DIR
                failures.append((name, rel, 'metadata.json names a path, not a file in its folder: refused'))
            elif label_of(meta[name]) is None:
                failures.append((name, rel, f'metadata.json has no REAL/FAKE label for it: {meta[name]!r}'))
            else:
                todo.append((rel, name, os.path.join(folder, name), meta[name]))
    return todo, failures, skipped


def source_of(item, split=False):
    """What one of plan()'s videos is made from, as a string: its file (size and modification time, as the
    stat of the path sees it through links) and its metadata entry's label and original; split=True (the face
    table, which records it) also its split where that is not 'train' (DFDC's everywhere: its runs stay done),
    such as Celeb-DF-v2's test list's 'test'. A rerun redoes a video whose source changed (StageRun.todo)."""
    _, _, path, entry = item
    tail = f':{entry["split"]}' if split and entry.get('split') not in (None, 'train') else ''
    try:
        st = os.stat(path)
    except OSError:
        return f'absent:{label_of(entry)}:{entry.get("original")}{tail}'
    return f'{st.st_size}:{st.st_mtime_ns}:{label_of(entry)}:{entry.get("original")}{tail}'


def groups_of(filenames, originals, folders=None):
    """Each video's group (a split keeps a group on one side): the root of its chain of originals, by key
    (folder/name). A real video is its own root; a -> b -> c has root c; an original absent from the table
    ends its chain (its fakes share its name as their group); a cycle and what leads into it are one group,
    named after its smallest key. `original` is a name: the video of that name in the fake's own folder
    (DFDC's layout), else the first video of that name (sorted)."""
    folders = [''] * len(filenames) if folders is None else list(folders)
    nodes = [key(d, n) for d, n in zip(folders, filenames)]
    known, first = set(nodes), {}
    for node, name in sorted(zip(nodes, filenames)):
        first.setdefault(name, node)
    parent = {}
    for node, folder, original in zip(nodes, folders, originals):
        if isinstance(original, str) and original:
            up = key(folder, original) if key(folder, original) in known else first.get(original, original)
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
