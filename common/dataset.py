"""A DFDC-style dataset: every folder under a data folder that holds a metadata.json is a part, and its
metadata.json names the part's videos: {"name.mp4": {"label": "FAKE" | "REAL", "original": ...}}.
make_metadata.py writes such files for FaceForensics++ and Celeb-DF-v2 trees. A video is known by its key: its
path relative to the data folder. Hidden folders and NASes' system ones are not parts (walk)."""
import functools
import json
import os

from common.config import UserError

# what every stage, make_metadata.py and predict.py take for a video (is_video): the containers FFmpeg reads
# that cameras, broadcasts (MPEG transport streams) and old archives (MPEG-1/2, Windows Media, Flash) hold
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.ts', '.mts', '.m2ts', '.mpg', '.mpeg',
                    '.wmv', '.flv', '.3gp', '.ogv')
# folders no walk enters: hidden ones ('.git', '.Trash-1000' of a Linux desktop's bin, '.Spotlight-V100') and the
# bins and thumbnail stores NASes and Windows keep beside the data (Synology's '@eaDir' names its folders after the
# videos); their copies of a part would be read as a second part: the same clips twice, on both sides of a split
SYSTEM_FOLDERS = ('@eaDir', '#recycle', '#snapshot', '$RECYCLE.BIN', 'System Volume Information')


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
    """Named like a video, and not an AppleDouble file: macOS writes '._clip.mp4' (4 KB of Finder metadata) beside
    every file it copies onto a drive without its attributes (exFAT, FAT, a network share)."""
    return name.lower().endswith(VIDEO_EXTENSIONS) and not os.path.basename(name).startswith('._')


def named_like_input(path):
    """Named like a video or a part's metadata.json: an output of that name would most likely be written over an
    input."""
    return is_video(path) or os.path.basename(path) == 'metadata.json'


def videos_in(folder):
    """The sorted names of a folder's videos: a link whose target is gone included (the stages record it as a
    failure), a folder named like a video not."""
    return sorted(n for n in os.listdir(folder) if is_video(n) and not os.path.isdir(os.path.join(folder, n)))


def is_text(name):
    """True where `name` can be a file's name: JSON's escapes can give lone surrogates. "\\udce9" is the byte
    0xe9 of a name that is not UTF-8 (Python's json writes a Latin-1 'caf\\xe9.mp4' so), which every output
    holds (common.files.NAMES); "\\ud800" is no byte, and no file the stages write can hold it."""
    try:
        name.encode('utf-8', 'surrogateescape')
    except UnicodeEncodeError:
        return False
    return True


def walk(top, passed=None):
    """(folder, file names) of `top` and every folder under it, subfolders in sorted order; links to folders
    are followed, each folder once (a link back up the tree, or a second link to one folder, is not walked
    again: the first path the walk reaches it by stands). Hidden and system folders under `top` are not entered
    (SYSTEM_FOLDERS); `passed`, a list, gets their paths."""
    seen = set()
    for root, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        skip = sorted(d for d in dirs if d.startswith('.') or d in SYSTEM_FOLDERS)
        if passed is not None:
            passed += [os.path.join(root, d) for d in skip]
        dirs[:] = sorted(set(dirs) - set(skip))
        yield root, files


def say_passed(passed):
    """One line for the hidden and system folders a walk did not enter (its `passed`), where there are any."""
    if passed:
        print(f'{len(passed)} hidden or system folders (a bin, a NAS\'s @eaDir) not read, e.g. {passed[0]}')


def list_inputs(path, others=None, passed=None):
    """The videos of predict.py's INPUT, `path`, as (path, folder, filename), sorted by key: the file itself (folder
    ''), or every file named like a video (a dangling link too: its row says 'file is missing') in the folder and
    its subfolders (walk: links followed, each folder once; `folder` relative to `path`, '/' between names).
    `others`, a list, gets the key of each file passed over (not named like a video; a part's metadata.json is not
    one); `passed`, the path of each hidden or system folder walk() does not enter."""
    if not os.path.isdir(path):
        return [(path, '', os.path.basename(path))]
    found = []
    for top, files in walk(path, passed):
        rel = os.path.relpath(top, path)
        folder = '' if rel == '.' else rel.replace(os.sep, '/')
        found += [(os.path.join(top, name), folder, name) for name in files if is_video(name)]
        if others is not None:
            others += sorted(key(folder, name) for name in files if not is_video(name) and name != 'metadata.json')
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


class Entries(dict):
    """A JSON object as json.load gives it (the last of a name given twice stands), with `twice`: the names it
    gives twice or more with different values (a metadata.json merged by hand: which label is meant is unknown)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        # compared as JSON text: NaN (json.dump's for pandas' missing original) is not equal to itself as a float,
        # and a name given once was 'twice, differently'
        text = functools.partial(json.dumps, sort_keys=True)
        self.twice = {k for k, v in pairs if text(self[k]) != text(v)} if len(self) < len(pairs) else set()


def check_folder(data_dir):
    """UserError where the data folder is not one: absent, or a file (a video given for a folder)."""
    if not data_dir:  # '' would be read as the current folder by some calls and as absent by others
        raise UserError('--data_dir is empty: give the folder that holds the videos')
    if not os.path.isdir(data_dir):
        raise UserError(f'data folder {data_dir} ' + ('is a file: give the folder that holds the videos'
                                                      if os.path.exists(data_dir) else 'does not exist'))


def plan(data_dir, parts=None):
    """The dataset's videos: (todo [(folder relative to data_dir, filename, path, entry)], failures
    [(name, folder, reason)], the count of videos on disk without a metadata entry). Two parts may list the
    same file name: both are videos (their keys, folder/filename, differ). Links to folders are followed, each
    folder once (walk()); the hidden and system folders it does not enter are said in one line. `parts`, a list,
    gets the folder (as keys name it) of each part whose metadata.json was read: one that lists nothing too."""
    check_folder(data_dir)
    passed = []
    found = [root for root, files in walk(data_dir, passed) if 'metadata.json' in files]
    say_passed(passed)
    if not found:
        raise UserError(f'no metadata.json under {data_dir}: not a DFDC-style dataset')
    todo, failures, skipped = [], [], 0
    for folder in found:
        rel, path = os.path.relpath(folder, data_dir), os.path.join(folder, 'metadata.json')
        try:
            with open(path, encoding='utf-8-sig') as f:  # a BOM, as Windows editors write it, is not JSON
                meta = json.load(f, object_pairs_hook=Entries)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            failures.append(('metadata.json', rel, f'{path}: not readable JSON ({err})'))
            continue
        if not isinstance(meta, dict):
            failures.append(('metadata.json', rel, f'{path}: expected an object of file names, got '
                                                   f'{type(meta).__name__}'))
            continue
        if parts is not None:
            parts.append('' if rel == '.' else rel)
        skipped += len(set(videos_in(folder)) - set(meta))
        first = {}  # a name in lower case: the first name of the part that is it
        for name in sorted(meta):
            if not is_text(name):
                failures.append((name.encode('utf-8', 'backslashreplace').decode('utf-8'), rel,
                                 'metadata.json names it with a lone surrogate (a JSON escape such as \\ud800) '
                                 'that no file name holds: refused'))
            elif name in ('', '.', '..') or '/' in name or '\\' in name or '\0' in name:
                # '../x.mp4' or '/etc/x' would be read outside the part, and its WAV written outside AUDIO_DIR
                failures.append((name, rel, 'metadata.json names a path, not a file in its folder: refused'))
            elif twice := sorted({name} & meta.twice or getattr(meta[name], 'twice', ())):
                failures.append((name, rel, f'metadata.json gives {"it" if twice == [name] else ", ".join(twice)} '
                                            f'twice, differently: refused'))
            elif (same := first.setdefault(name.casefold(), name)) != name and one_file(folder, same, name):
                # a case-insensitive file system (macOS, exFAT, Windows, SMB) finds both names: one clip, two keys
                failures.append((name, rel, f'metadata.json lists this file as {same} too (a file system that ignores '
                                            f'case): listed once, as {same}'))
            elif label_of(meta[name]) is None:
                failures.append((name, rel, f'metadata.json has no REAL/FAKE label for it: {meta[name]!r}'))
            else:
                todo.append((rel, name, os.path.join(folder, name), meta[name]))
    return todo, failures, skipped


def one_file(folder, a, b):
    """Whether names a and b of `folder` are one file (False where either is absent)."""
    try:
        return os.path.samefile(os.path.join(folder, a), os.path.join(folder, b))
    except OSError:
        return False


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
    (DFDC's layout), else every video of that name, the first (sorted) the chain's (which of them the fake was
    made from, nothing says: all join its group, as no split can then leak it); or a list of names, the first the
    chain's, the others videos the fake also shows (FF++'s NNN_MMM: MMM's face), whose groups become one, named
    after its smallest root that is a video of the table (else its smallest)."""
    folders = [''] * len(filenames) if folders is None else list(folders)
    nodes = [key(d, n) for d, n in zip(folders, filenames)]
    known, holders = set(nodes), {}
    for node, name in sorted(zip(nodes, filenames)):
        holders.setdefault(name, []).append(node)
    parent, links = {}, []  # links: (node, the node of another video it shows, or may have been made from)
    for node, folder, original in zip(nodes, folders, originals):
        names = [original] if isinstance(original, str) else original if isinstance(original, (list, tuple)) else []
        names = [n for n in names if isinstance(n, str) and n]  # None, NaN and '' name no video
        ups = [up for n in names for up in ([key(folder, n)] if key(folder, n) in known else holders.get(n, [n]))]
        if ups and ups[0] != node:
            parent[node] = ups[0]
        links += [(node, up) for up in ups[1:]]
    root = {}

    def find(node):
        path = []
        while node not in root and node in parent and node not in path:
            path.append(node)
            node = parent[node]
        end = root.get(node, min(path[path.index(node):]) if node in path else node)
        root.update({n: end for n in path})
        return end

    joined = {}  # a chain's root: the first root (order) it is linked to, directly or through others (union-find)

    def order(r):
        return r not in known, r

    def top(r):
        while r in joined:
            r = joined[r]
        return r

    for a, b in links:
        if (a := top(find(a))) != (b := top(find(b))):
            joined[max(a, b, key=order)] = min(a, b, key=order)
    return [top(find(node)) for node in nodes]
