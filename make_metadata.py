"""DFDC-style metadata.json files for a FaceForensics++ or a Celeb-DF-v2 tree, which the stages then read.

Reads the names under DATA_DIR (never the videos):
  ff++     original_sequences/{youtube,actors}/C/videos/ REAL, manipulated_sequences/METHOD/C/videos/ FAKE,
           C one compression (raw, c23, c40). NNN_MMM.mp4 is target video NNN with MMM's face: original
           [NNN.mp4, MMM.mp4] (so NNN and MMM, whose faces both fakes of the pair show, are one group, as in
           FF++'s official splits);
           DeepFakeDetection's 01_02__scene__HASH.mp4 is actor 01's 01__scene.mp4 with 02's face. No split
           in the tree: every video 'train', but with FF_SPLITS, FF++'s official train.json, val.json and
           test.json (lists of [NNN, MMM] pairs) give each youtube video (NNN.mp4 and NNN_MMM.mp4) its split.
  celebdf  Celeb-real/, YouTube-real/ REAL; Celeb-synthesis/idX_idY_NNNN.mp4 FAKE (X's video NNNN with Y's
           face): original idX_NNNN.mp4. List_of_testing_videos.txt (`1 path` real, `0 path` fake): 'test'.
Writes metadata.json, {name: {label, split, original}}, into every folder that holds videos (with OUT_DIR, into
the same folders under OUT_DIR, beside links to the videos: a DATA_DIR that cannot be written). `original` is
a bare file name, as in DFDC: common.dataset.groups_of finds it in the other folder that holds that name
(every one, where several do), so a fake is grouped with its original. FF++ repeats every name in each
compression, hence one compression gets metadata (COMPRESSION where several are there) and another's
metadata.json is refused.
Refuses (exit 2) a tree of neither layout, and an existing metadata.json unless OVERWRITE. Prints each
folder's real and fake counts and the fakes whose original is absent or unknown.

Example:
    python make_metadata.py --data_dir=/data/FaceForensics++ --compression=c23
    python make_metadata.py --data_dir=/kaggle/input/celeb-df-v2 --out_dir=/kaggle/working/celeb-df-v2
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the imports

import json
import os
import re

from common.dataset import check_folder, videos_in
from common.files import NAMES, shown, write_link, write_text

# ----------------------------------------------------------------------------- config
DATA_DIR = 'data/FaceForensics++'  # root of the FF++ or Celeb-DF-v2 tree (as downloaded)
LAYOUT = 'auto'                    # 'auto' | 'ff++' | 'celebdf'
COMPRESSION = ''                   # FF++: 'raw' | 'c23' | 'c40'; '' = the one the tree holds
OVERWRITE = False                  # replace existing metadata.json files
FF_SPLITS = ''                     # FF++: the folder of its official train.json, val.json, test.json (github
                                   # ondyari/FaceForensics, dataset/splits); '' = every video 'train'
OUT_DIR = ''                       # '' = into DATA_DIR; else here, beside links to the videos (a read-only DATA_DIR)
# -----------------------------------------------------------------------------

LAYOUTS = ('auto', 'ff++', 'celebdf')
FF_COMPRESSIONS = ('raw', 'c23', 'c40')  # FF++'s other folders beside them (masks/) hold no face videos
FF_TOPS = {'original_sequences': 'REAL', 'manipulated_sequences': 'FAKE'}
FF_PAIR = re.compile(r'(\d+)_(\d+)(\.\w+)')                       # 000_003.mp4 -> [000.mp4, 003.mp4], youtube/
FF_NUMBER = re.compile(r'(\d+)(?:_\d+)?\.\w+')                   # 000.mp4, 000_003.mp4 -> 000 (the splits')
FF_DFD = re.compile(r'(\d+)_\d+__(.+)__[A-Za-z0-9]+(\.\w+)')      # 01_02__scene__HASH.mp4 -> 01__scene.mp4
CELEB_FOLDERS = {'celeb-real': 'REAL', 'youtube-real': 'REAL', 'celeb-synthesis': 'FAKE'}  # lower case
CELEB_FAKE = re.compile(r'(id\d+)_id\d+_(\d+)(\.\w+)')             # id0_id1_0000.mp4 -> id0_0000.mp4
CELEB_TEST_LIST = 'List_of_testing_videos.txt'
CELEB_TEST_LABELS = {'1': 'REAL', '0': 'FAKE'}  # the list's own convention: 1 = real, 0 = fake
LOOKS = {'ff++': 'original_sequences/, manipulated_sequences/',
         'celebdf': 'Celeb-real/, Celeb-synthesis/, YouTube-real/'}  # the folders that tell a layout


def main():
    config.configure(globals())
    if LAYOUT not in LAYOUTS:
        raise config.UserError(f'--layout must be one of {", ".join(LAYOUTS)}, not {LAYOUT!r}')
    if COMPRESSION not in ('', *FF_COMPRESSIONS):
        raise config.UserError(f'--compression must be one of {", ".join(FF_COMPRESSIONS)} (or empty), '
                               f'not {COMPRESSION!r}')
    check_folder(DATA_DIR)
    check_out_dir(DATA_DIR, OUT_DIR)
    layout = layout_of(DATA_DIR, LAYOUT)
    if FF_SPLITS and layout != 'ff++':
        raise config.UserError(f'--ff_splits gives FaceForensics++\'s official splits; {DATA_DIR} is a {layout} tree')
    if layout == 'ff++':
        splits = read_ff_splits(FF_SPLITS) if FF_SPLITS else {}
        parts, others = ff_parts(DATA_DIR, COMPRESSION, splits)
        if splits:
            check_listed(DATA_DIR, parts, splits)
        others = [path for path in (os.path.join(home(f), 'metadata.json') for f in others) if os.path.exists(path)]
        if others:
            raise config.UserError(f'{others[0]} (and {len(others) - 1} more) label another compression: the '
                                   f'stages would read both, and group fakes with the wrong original; remove them')
        untested = []
    else:
        parts, untested = celebdf_parts(DATA_DIR)
        if not parts:
            raise config.UserError(f'{DATA_DIR}: no videos in Celeb-real/, Celeb-synthesis/ or YouTube-real/')
    existing = [os.path.join(home(p.folder), 'metadata.json') for p in parts
                if os.path.exists(os.path.join(home(p.folder), 'metadata.json'))]
    if existing and not OVERWRITE:
        raise config.UserError(f'{existing[0]} exists (and {len(existing) - 1} more): --overwrite=true '
                               f'replaces them')
    files = [path for p in parts for path in (os.path.join(home(p.folder), n) for n in p.meta)
             if os.path.lexists(path) and not os.path.islink(path)] if OUT_DIR else []
    if files:  # another dataset's copy, most likely: never replaced by a link
        raise config.UserError(f'{files[0]} is a file, not a link to the data folder\'s video: give an --out_dir '
                               f'of its own')
    for part in parts:
        if OUT_DIR:
            link_videos(part, home(part.folder))
        write_text(json.dumps(part.meta, indent=1), os.path.join(home(part.folder), 'metadata.json'))
    summarise(layout, parts, untested)


def home(folder):
    """Where the metadata.json of DATA_DIR's `folder` goes: the folder, or its place under OUT_DIR."""
    return os.path.join(OUT_DIR, os.path.relpath(folder, DATA_DIR)) if OUT_DIR else folder


def check_out_dir(data_dir, out_dir):
    """UserError where OUT_DIR is DATA_DIR, or one is inside the other: a walk of the outer would read both."""
    if out_dir:
        outer, inner = sorted((os.path.realpath(data_dir), os.path.realpath(out_dir)), key=len)
        if os.path.commonpath([outer, inner]) == outer:
            raise config.UserError(f'--out_dir={out_dir} and --data_dir={data_dir} overlap: give a folder outside '
                                   f'the data folder (or no --out_dir, to write into it)')


def link_videos(part, folder):
    """A link in `folder` to each video of the part (its absolute path), made, or pointed at it again."""
    os.makedirs(folder, exist_ok=True)
    for name in part.meta:
        write_link(os.path.abspath(os.path.join(part.folder, name)), os.path.join(folder, name))


def layout_of(root, wanted):
    """'ff++' or 'celebdf': `wanted` where the tree has its folders, else the one layout whose folders are at
    the tree's root ('auto'); UserError where that is none, or both."""
    present = layouts_in(root)
    # an archive unpacked into a folder of its own name (Celeb-DF-v2/Celeb-DF-v2/): say which folder to give
    inner = [os.path.join(root, n) for n in sorted(os.listdir(root)) if not n.startswith('.')
             and os.path.isdir(os.path.join(root, n)) and layouts_in(os.path.join(root, n))] if not present else []
    hint = f': give --data_dir={inner[0]}' if inner else ''
    if wanted != 'auto':
        if wanted not in present:
            raise config.UserError(f'{root} is not a {wanted} tree: none of {LOOKS[wanted]} in it{hint}')
        return wanted
    if not present:
        raise config.UserError(f'{root} is neither a FaceForensics++ tree ({LOOKS["ff++"]}) nor a Celeb-DF-v2 '
                               f'one ({LOOKS["celebdf"]}){hint}')
    if len(present) > 1:
        raise config.UserError(f'{root} holds both a FaceForensics++ and a Celeb-DF-v2 tree: give --layout')
    return present.pop()


def layouts_in(folder):
    """The layouts whose folders are in `folder`."""
    names = set(os.listdir(folder))
    return ({'ff++'} if set(FF_TOPS) & names else set()) | (
        {'celebdf'} if any(n.lower() in CELEB_FOLDERS for n in names) else set())


def target_of(entry):
    """The video a fake was made from: its `original`, or the first of FF++'s pair (the other gave the face)."""
    return entry['original'] if isinstance(entry['original'], str) else entry['original'][0]


class Part:
    """One folder that gets a metadata.json: its entries, and where each fake's original should be."""

    def __init__(self, folder):
        self.folder = folder
        self.meta = {}
        self.original_home = {}  # fake's name: the folder its original should be in (None: name unknown)

    def add(self, name, label, split='train', original=None, home=None):
        self.meta[name] = {'label': label, 'split': split, 'original': original}
        if label == 'FAKE':
            self.original_home[name] = home


def read_ff_splits(folder, names=('train', 'val', 'test')):
    """{video number: 'train' | 'val' | 'test'} of FF++'s official split files (each a JSON list of [NNN, MMM]
    pairs); UserError in one line where one is absent or not such a list, or a number is in two splits."""
    out = {}
    for split in names:
        path = os.path.join(folder, f'{split}.json')
        try:
            with open(path, encoding='utf-8-sig') as f:
                pairs = json.load(f)
        except (OSError, ValueError) as err:
            raise config.UserError(f'--ff_splits: {path}: {getattr(err, "strerror", None) or err} (FF++\'s '
                                   f'dataset/splits folder holds train.json, val.json and test.json)') from None
        if not isinstance(pairs, list) or not pairs or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) and n.isdigit() for n in p)
                for p in pairs):  # FF++'s own name videos by their 3-digit numbers, 360, 70 and 70 pairs
            raise config.UserError(f'--ff_splits: {path} is not a list of ["NNN", "MMM"] pairs of video numbers')
        for number in (n for pair in pairs for n in pair):
            if out.setdefault(number, split) != split:
                raise config.UserError(f'--ff_splits: video {number} is in {out[number]}.json and {split}.json')
    return out


def check_listed(root, parts, splits):
    """UserError where --ff_splits' lists (`splits`: {number: split}) leave out a video the tree numbers (NNN.mp4,
    NNN_MMM.mp4; FF++'s own lists name every one), which would be trained on, or where the tree numbers none."""
    numbered = [(os.path.relpath(os.path.join(p.folder, n), root), m[1]) for p in parts for n in p.meta
                if (m := FF_NUMBER.fullmatch(n))]
    if not numbered:
        raise config.UserError(f'--ff_splits: no video of {root} is numbered as FF++\'s youtube videos are (NNN.mp4, '
                               f'NNN_MMM.mp4), the only ones its lists split')
    if unlisted := [path for path, number in numbered if number not in splits]:
        raise config.UserError(f'--ff_splits: {len(unlisted)} videos are in none of its lists (e.g. '
                               f'{shown(unlisted[0])}): give FF++\'s own train.json, val.json and test.json, which '
                               f'name every video')


def ff_parts(root, compression, splits=None):
    """FF++: the Parts of one compression, and the video folders of the others. `splits`: {video number: split}
    (read_ff_splits), of the youtube videos: NNN.mp4 and its fakes NNN_MMM.mp4 take NNN's; others are 'train'."""
    splits = splits or {}
    found = {}  # compression: [(folder, label)]
    for top, label in FF_TOPS.items():
        base = os.path.join(root, top)
        for source in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            for comp in FF_COMPRESSIONS:
                folder = os.path.join(base, source, comp, 'videos')
                if os.path.isdir(folder) and videos_in(folder):
                    found.setdefault(comp, []).append((folder, label))
    if not found:
        raise config.UserError(f'{root}: no videos in original_sequences/*/C/videos/ or '
                               f'manipulated_sequences/*/C/videos/ (C: {", ".join(FF_COMPRESSIONS)})')
    if not compression:
        if len(found) > 1:
            raise config.UserError(f'{root} holds FF++ videos in {len(found)} compressions '
                                   f'({", ".join(sorted(found))}): pick one with --compression (each repeats '
                                   f'every file name, and a fake finds its original by name)')
        compression = next(iter(found))
    if compression not in found:
        raise config.UserError(f'{root}: no FF++ videos in compression {compression} '
                               f'(there are: {", ".join(sorted(found))})')
    others = [folder for comp, rows in sorted(found.items()) if comp != compression for folder, _ in rows]
    homes = {s: os.path.join(root, 'original_sequences', s, compression, 'videos') for s in ('youtube', 'actors')}
    parts = []
    for folder, label in found[compression]:
        part = Part(folder)
        for name in videos_in(folder):
            number = m[1] if (m := FF_NUMBER.fullmatch(name)) else None  # None: DeepFakeDetection's, no split
            split = splits.get(number, 'train')
            if label == 'REAL':
                part.add(name, 'REAL', split)
            elif m := FF_DFD.fullmatch(name):
                part.add(name, 'FAKE', original=f'{m[1]}__{m[2]}{m[3]}', home=homes['actors'])
            elif m := FF_PAIR.fullmatch(name):
                part.add(name, 'FAKE', split, original=[f'{m[1]}{m[3]}', f'{m[2]}{m[3]}'], home=homes['youtube'])
            else:
                part.add(name, 'FAKE')
        parts.append(part)
    return parts, others


def celebdf_parts(root):
    """Celeb-DF-v2: the Parts of its three folders, with the official test list as split 'test'."""
    folders = {n.lower(): n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))}
    real_home = os.path.join(root, folders.get('celeb-real', 'Celeb-real'))
    test = read_test_list(os.path.join(root, CELEB_TEST_LIST))
    parts = []
    for low, label in CELEB_FOLDERS.items():
        if low not in folders or not videos_in(os.path.join(root, folders[low])):
            continue
        part = Part(os.path.join(root, folders[low]))
        for name in videos_in(part.folder):
            listed, _ = test.pop((low, name), (None, None))
            if listed is not None and listed != label:
                raise config.UserError(f'{CELEB_TEST_LIST} says {folders[low]}/{name} is {listed}, but it is in '
                                       f'{folders[low]}/ ({label})')
            split = 'train' if listed is None else 'test'
            if label == 'REAL':
                part.add(name, 'REAL', split)
            elif m := CELEB_FAKE.fullmatch(name):
                part.add(name, 'FAKE', split, original=f'{m[1]}_{m[2]}{m[3]}', home=real_home)
            else:
                part.add(name, 'FAKE', split)
        parts.append(part)
    absent = sorted(path for _, path in test.values())
    return parts, absent


def read_test_list(path):
    """{(folder in lower case, name): ('REAL' | 'FAKE', the path as listed)} of Celeb-DF-v2's test list (some
    copies spell YouTube-real Youtube-real); {} where it is absent. A BOM (a Windows editor's) is skipped, and
    a name that is not UTF-8 is read as os.listdir reads it (common.files.NAMES), so that it names that file."""
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path, encoding='utf-8-sig', errors=NAMES) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[0] not in CELEB_TEST_LABELS or fields[1].count('/') != 1:
                raise config.UserError(f'{path} line {n}: expected "1 folder/video.mp4" (1 real, 0 fake), '
                                       f'got {line.strip()!r}')
            folder, name = fields[1].split('/')
            out[(folder.lower(), name)] = (CELEB_TEST_LABELS[fields[0]], fields[1])
    return out


def summarise(layout, parts, untested, show=5):
    def examples(names):  # a name may hold a line break, or bytes that are not UTF-8: printed escaped
        return ', '.join(map(shown, names[:show]))

    total = {'REAL': 0, 'FAKE': 0}
    for part in parts:
        labels = [e['label'] for e in part.meta.values()]
        tests = sum(e['split'] == 'test' for e in part.meta.values())
        unknown = sorted(n for n, home in part.original_home.items() if home is None)
        absent = sorted(n for n, home in part.original_home.items() if home is not None  # its target video's
                        and not os.path.isfile(os.path.join(home, target_of(part.meta[n]))))
        for label in total:
            total[label] += labels.count(label)
        line = (f'{shown(os.path.relpath(part.folder, DATA_DIR))}: {labels.count("REAL")} real, '
                f'{labels.count("FAKE")} fake' + (f', {tests} in the test list' if tests else '')
                + (f', {vals} in the validation list' if (vals := [e['split'] for e in part.meta.values()].count(
                    'val')) else ''))
        if absent:
            line += f'; {len(absent)} fakes whose original is absent (e.g. {examples(absent)})'
        if unknown:
            line += (f'; {len(unknown)} fakes named unlike {layout}\'s fakes, original unknown '
                     f'(e.g. {examples(unknown)})')
        print(line)
    if untested:
        print(f'{CELEB_TEST_LIST}: {len(untested)} listed videos absent (e.g. {examples(untested)})')
    if layout == 'celebdf' and not os.path.exists(os.path.join(DATA_DIR, CELEB_TEST_LIST)):
        print(f'no {CELEB_TEST_LIST} in {DATA_DIR}: every video has split \'train\'')
    print(f'{DATA_DIR} ({layout}): metadata.json written in {len(parts)} folders: '
          f'{total["REAL"]} real, {total["FAKE"]} fake videos' + (
              f'; under {OUT_DIR}, beside links to the videos: give it as the stages\' --data_dir' if OUT_DIR else ''))


if __name__ == '__main__':
    config.cli(main)
