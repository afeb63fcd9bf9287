"""make_metadata.py: DFDC-style metadata.json for FaceForensics++ and Celeb-DF-v2 trees, read by the stages
(common.dataset.plan) unchanged, with each fake grouped with its original (common.store.groups_of)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from common.store import groups_of, open_store, save
from common.dataset import label_of, plan
from common.stage import key
from audio_clips import run_script
from conftest import ROOT, testdata
from model import assert_no_leak, split_indices

YOUTUBE = 'original_sequences/youtube/{c}/videos'
ACTORS = 'original_sequences/actors/{c}/videos'
FAKES = 'manipulated_sequences/{m}/{c}/videos'
DFD_FAKE = '01_02__meeting_serious__YVGY8LOK.mp4'


def make_metadata(data_dir, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'make_metadata.py'), f'--data_dir={data_dir}',
                           *args], cwd=ROOT, capture_output=True, text=True)


def touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(b'\0')  # a name is all the metadata needs; plan() skips no file for its content


def ff_tree(root, compressions=('c23',)):
    for c in compressions:
        touch(os.path.join(root, YOUTUBE.format(c=c)), '000.mp4', '003.mp4', '005.mp4')
        touch(os.path.join(root, ACTORS.format(c=c)), '01__meeting_serious.mp4')
        for method in ('Deepfakes', 'Face2Face', 'FaceSwap', 'NeuralTextures', 'FaceShifter'):
            touch(os.path.join(root, FAKES.format(m=method, c=c)), '000_003.mp4', '003_000.mp4')
        # 005_009: target 005 with 009's face (009 need not be there); 007_005: its target 007 is absent
        touch(os.path.join(root, FAKES.format(m='Deepfakes', c=c)), '005_009.mp4', '007_005.mp4')
        touch(os.path.join(root, FAKES.format(m='DeepFakeDetection', c=c)), DFD_FAKE)
    touch(os.path.join(root, 'manipulated_sequences/Deepfakes/masks/videos'), '000_003.mp4')  # no face video


def read(folder):
    with open(os.path.join(folder, 'metadata.json'), encoding='utf-8') as f:
        return json.load(f)


def groups_by_key(data_dir):
    """{key: group} of every video plan() lists, grouped as training groups them."""
    todo, failures, skipped = plan(data_dir)
    assert failures == [] and skipped == 0
    folders, names, entries = zip(*[(rel, name, entry) for rel, name, _, entry in todo])
    groups = groups_of(names, [e.get('original') for e in entries], folders)
    return {key(f, n): g for f, n, g in zip(folders, names, groups)}


def test_an_ff_tree_gets_dfdc_metadata_with_each_fake_given_its_target_video(tmp_path):
    root = tmp_path / 'FaceForensics++'
    ff_tree(str(root))
    run = make_metadata(root)
    assert run.returncode == 0, run.stderr
    assert read(root / YOUTUBE.format(c='c23')) == {
        name: {'label': 'REAL', 'split': 'train', 'original': None} for name in ('000.mp4', '003.mp4', '005.mp4')}
    # the target video, then the one whose face it shows (FF++'s official splits keep the two on one side)
    assert read(root / FAKES.format(m='Face2Face', c='c23')) == {
        '000_003.mp4': {'label': 'FAKE', 'split': 'train', 'original': ['000.mp4', '003.mp4']},
        '003_000.mp4': {'label': 'FAKE', 'split': 'train', 'original': ['003.mp4', '000.mp4']}}
    assert read(root / FAKES.format(m='DeepFakeDetection', c='c23')) == {
        DFD_FAKE: {'label': 'FAKE', 'split': 'train', 'original': '01__meeting_serious.mp4'}}
    assert not (root / 'manipulated_sequences/Deepfakes/masks/videos/metadata.json').exists()
    written = sorted(os.path.relpath(p, root) for p, _, files in os.walk(root) if 'metadata.json' in files)
    assert written == sorted([YOUTUBE.format(c='c23'), ACTORS.format(c='c23'),
                              FAKES.format(m='DeepFakeDetection', c='c23')]
                             + [FAKES.format(m=m, c='c23') for m in ('Deepfakes', 'Face2Face', 'FaceSwap',
                                                                     'NeuralTextures', 'FaceShifter')])
    lines = run.stdout.splitlines()
    assert f'{YOUTUBE.format(c="c23")}: 3 real, 0 fake' in lines
    assert (f'{FAKES.format(m="Deepfakes", c="c23")}: 0 real, 4 fake; 1 fakes whose original is absent '
            f'(e.g. 007_005.mp4)') in lines
    assert lines[-1].endswith('metadata.json written in 8 folders: 4 real, 13 fake videos')


def test_a_name_with_a_line_break_is_printed_escaped_on_its_part_s_line(tmp_path):
    root = tmp_path / 'FaceForensics++'
    ff_tree(str(root))
    (root / FAKES.format(m='FaceSwap', c='c23') / 'odd\nname.mp4').write_bytes(b'')  # names only are read
    run = make_metadata(root)
    assert run.returncode == 0, run.stderr
    [line] = [line for line in run.stdout.splitlines() if line.startswith(FAKES.format(m='FaceSwap', c='c23'))]
    assert line.endswith("1 fakes named unlike ff++'s fakes, original unknown (e.g. odd\\nname.mp4)"), line
    assert read(root / FAKES.format(m='FaceSwap', c='c23'))['odd\nname.mp4']['original'] is None


def test_ff_official_splits_give_each_youtube_video_and_its_fakes_their_split(tmp_path):
    """--ff_splits: FF++'s train.json, val.json, test.json ([target, source] pairs) give NNN.mp4 and NNN_MMM.mp4
    NNN's split; DeepFakeDetection's videos are 'train'. A numbered video the lists lack is refused: it fell to
    'train', so that a test list cut short or written otherwise trained on FF++'s test set (break-it pass 9)."""
    root, splits = tmp_path / 'FaceForensics++', tmp_path / 'splits'
    ff_tree(str(root))
    splits.mkdir()
    for name, pairs in (('train', [['005', '009']]), ('val', [['007', '011']]), ('test', [['000', '003']])):
        (splits / f'{name}.json').write_text(json.dumps(pairs))
    run = make_metadata(root, f'--ff_splits={splits}')
    assert run.returncode == 0, run.stderr
    assert {n: e['split'] for n, e in read(root / YOUTUBE.format(c='c23')).items()} == {
        '000.mp4': 'test', '003.mp4': 'test', '005.mp4': 'train'}
    assert {n: e['split'] for n, e in read(root / FAKES.format(m='Deepfakes', c='c23')).items()} == {
        '000_003.mp4': 'test', '003_000.mp4': 'test', '005_009.mp4': 'train', '007_005.mp4': 'val'}
    assert read(root / FAKES.format(m='DeepFakeDetection', c='c23'))[DFD_FAKE]['split'] == 'train'
    assert read(root / ACTORS.format(c='c23'))['01__meeting_serious.mp4']['split'] == 'train'
    assert f'{YOUTUBE.format(c="c23")}: 3 real, 0 fake, 2 in the test list' in run.stdout.splitlines()
    # a list that is not FF++'s (file names, none), a number in two lists, a number in none, a missing file: one
    # line each, exit 2, nothing written
    for name, text, says in (('val', '{"000": 1}', 'is not a list of ["NNN", "MMM"] pairs of video numbers'),
                             ('val', '[["007.mp4", "011.mp4"]]', 'is not a list of ["NNN", "MMM"] pairs'),
                             ('val', '[]', 'is not a list of ["NNN", "MMM"] pairs'),
                             ('val', '[["000", "001"]]', 'video 000 is in val.json and test.json'),
                             ('val', '[["017", "011"]]', '1 videos are in none of its lists (e.g. manipulated_'
                                                        'sequences/Deepfakes/c23/videos/007_005.mp4)'),
                             ('test', None, 'test.json: No such file or directory')):
        (splits / f'{name}.json').unlink(missing_ok=True)
        if text is not None:
            (splits / f'{name}.json').write_text(text)
        (root / YOUTUBE.format(c='c23') / 'metadata.json').unlink(missing_ok=True)
        run = make_metadata(root, f'--ff_splits={splits}', '--overwrite=true')
        assert run.returncode == 2 and run.stderr.count('\n') == 1 and says in run.stderr, run.stderr
        assert not (root / YOUTUBE.format(c='c23') / 'metadata.json').exists()
        (splits / 'val.json').write_text('[["007", "011"]]')
        (splits / 'test.json').write_text('[["000", "003"]]')


@pytest.mark.parametrize('stages_root', ['tree', 'its parent'])
def test_the_stages_group_each_ff_fake_with_its_target_and_never_split_them(tmp_path, stages_root):
    root = tmp_path / 'FaceForensics++'
    ff_tree(str(root))
    assert make_metadata(root).returncode == 0
    # the stages may be pointed at the tree or at a folder above it: keys differ, the grouping must not
    data_dir = root if stages_root == 'tree' else tmp_path
    prefix = '' if stages_root == 'tree' else 'FaceForensics++/'
    groups = groups_by_key(str(data_dir))
    youtube, actors = prefix + YOUTUBE.format(c='c23'), prefix + ACTORS.format(c='c23')
    # 000_003 shows 003's face in 000's video, 003_000 the reverse: 000 and 003 are one identity group, else
    # validation scores faces that training saw (break-it pass 4, D4)
    for method in ('Deepfakes', 'Face2Face', 'FaceSwap', 'NeuralTextures', 'FaceShifter'):
        fakes = prefix + FAKES.format(m=method, c='c23')
        assert (groups[f'{fakes}/000_003.mp4'] == groups[f'{fakes}/003_000.mp4'] == groups[f'{youtube}/000.mp4']
                == groups[f'{youtube}/003.mp4'] == f'{youtube}/000.mp4')
    dfd = prefix + FAKES.format(m='DeepFakeDetection', c='c23')
    assert groups[f'{dfd}/{DFD_FAKE}'] == groups[f'{actors}/01__meeting_serious.mp4']
    deepfakes = prefix + FAKES.format(m='Deepfakes', c='c23')
    # 009 absent: 005's group keeps its video's name; 007_005's target is absent, but it shows 005's face
    assert groups[f'{deepfakes}/005_009.mp4'] == groups[f'{youtube}/005.mp4'] == f'{youtube}/005.mp4'
    assert groups[f'{deepfakes}/007_005.mp4'] == f'{youtube}/005.mp4'
    assert len(set(groups.values())) == 3  # 000 with 003, 005 (with 007's and 009's fakes), the actor's video

    keys = sorted(groups)
    labels = np.array([int('manipulated_sequences' in k) for k in keys])
    train, val = split_indices(labels, [groups[k] for k in keys], val_fraction=0.3, seed=1)
    assert_no_leak([groups[k] for k in keys], train, val)
    assert len(train) and len(val)


def test_an_ff_tree_with_several_compressions_labels_the_one_asked_for(tmp_path):
    ff_tree(str(tmp_path), compressions=('c23', 'c40'))
    run = make_metadata(tmp_path)
    assert run.returncode == 2
    assert run.stderr.count('\n') == 1 and '2 compressions (c23, c40): pick one with --compression' in run.stderr
    assert make_metadata(tmp_path, '--compression=c40').returncode == 0
    assert not any('c23' in p for p, _, files in os.walk(tmp_path) if 'metadata.json' in files)
    groups = groups_by_key(str(tmp_path))
    youtube = YOUTUBE.format(c='c40')
    assert groups[f'{FAKES.format(m="FaceSwap", c="c40")}/000_003.mp4'] == f'{youtube}/000.mp4'
    # c40's metadata.json files are there: labelling c23 too would make the stages read both
    run = make_metadata(tmp_path, '--compression=c23', '--overwrite=true')
    assert run.returncode == 2 and run.stderr.count('\n') == 1
    assert 'label another compression' in run.stderr
    assert make_metadata(tmp_path, '--compression=raw').returncode == 2


def celebdf_tree(root, test_list):
    touch(os.path.join(root, 'Celeb-real'), 'id0_0000.mp4', 'id0_0001.mp4', 'id1_0000.mp4')
    touch(os.path.join(root, 'YouTube-real'), '00000.mp4', '00170.mp4')
    touch(os.path.join(root, 'Celeb-synthesis'), 'id0_id1_0000.mp4', 'id1_id0_0000.mp4', 'id0_id16_0001.mp4',
          'id2_id0_0003.mp4')
    with open(os.path.join(root, 'List_of_testing_videos.txt'), 'w', encoding='utf-8') as f:
        f.write(test_list)


def test_a_celebdf_tree_gets_its_originals_and_the_official_test_split(tmp_path):
    # the list's own labels: 1 = real, 0 = fake; one listed video is not on disk
    celebdf_tree(str(tmp_path), '1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n'
                                '1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id9_id0_0009.mp4\n\n')
    run = make_metadata(tmp_path)
    assert run.returncode == 0, run.stderr
    assert read(tmp_path / 'Celeb-synthesis') == {
        'id0_id1_0000.mp4': {'label': 'FAKE', 'split': 'test', 'original': 'id0_0000.mp4'},
        'id1_id0_0000.mp4': {'label': 'FAKE', 'split': 'train', 'original': 'id1_0000.mp4'},
        'id0_id16_0001.mp4': {'label': 'FAKE', 'split': 'train', 'original': 'id0_0001.mp4'},
        'id2_id0_0003.mp4': {'label': 'FAKE', 'split': 'train', 'original': 'id2_0003.mp4'}}
    assert read(tmp_path / 'YouTube-real') == {
        '00000.mp4': {'label': 'REAL', 'split': 'train', 'original': None},
        '00170.mp4': {'label': 'REAL', 'split': 'test', 'original': None}}
    assert {n: e['split'] for n, e in read(tmp_path / 'Celeb-real').items()} == {
        'id0_0000.mp4': 'test', 'id0_0001.mp4': 'train', 'id1_0000.mp4': 'train'}
    lines = run.stdout.splitlines()
    assert ('Celeb-synthesis: 0 real, 4 fake, 1 in the test list; 1 fakes whose original is absent '
            '(e.g. id2_id0_0003.mp4)') in lines
    assert 'List_of_testing_videos.txt: 1 listed videos absent (e.g. Celeb-synthesis/id9_id0_0009.mp4)' in lines

    groups = groups_by_key(str(tmp_path))
    assert groups['Celeb-synthesis/id0_id1_0000.mp4'] == groups['Celeb-real/id0_0000.mp4'] == 'Celeb-real/id0_0000.mp4'
    assert groups['Celeb-synthesis/id1_id0_0000.mp4'] == 'Celeb-real/id1_0000.mp4'
    assert groups['Celeb-synthesis/id0_id16_0001.mp4'] == 'Celeb-real/id0_0001.mp4'


def test_a_celebdf_test_list_that_contradicts_the_folders_is_refused(tmp_path):
    celebdf_tree(str(tmp_path), '1 Celeb-synthesis/id0_id1_0000.mp4\n')
    run = make_metadata(tmp_path)
    assert run.returncode == 2 and run.stderr.count('\n') == 1
    assert 'says Celeb-synthesis/id0_id1_0000.mp4 is REAL' in run.stderr
    assert not (tmp_path / 'Celeb-real' / 'metadata.json').exists()  # nothing written before the refusal


def test_a_tree_of_neither_layout_and_an_existing_metadata_are_refused_in_one_line(tmp_path):
    touch(str(tmp_path / 'videos'), 'a.mp4')
    run = make_metadata(tmp_path / 'videos' / 'a.mp4')  # a video for the folder: said so, not 'does not exist'
    assert run.returncode == 2 and run.stderr.count('\n') == 1
    assert f'data folder {tmp_path / "videos" / "a.mp4"} is a file: give the folder' in run.stderr
    run = make_metadata(tmp_path)
    assert run.returncode == 2 and run.stderr.count('\n') == 1
    assert run.stderr.startswith('error: ') and 'neither a FaceForensics++ tree' in run.stderr
    run = make_metadata(tmp_path, '--layout=celebdf')
    assert run.returncode == 2 and 'is not a celebdf tree' in run.stderr

    ff_tree(str(tmp_path / 'ff'))
    youtube = tmp_path / 'ff' / YOUTUBE.format(c='c23')
    (youtube / 'metadata.json').write_text('{"000.mp4": {"label": "REAL"}}', encoding='utf-8')
    run = make_metadata(tmp_path / 'ff')
    assert run.returncode == 2 and run.stderr.count('\n') == 1
    assert f'{youtube / "metadata.json"} exists' in run.stderr and '--overwrite=true' in run.stderr
    assert read(youtube) == {'000.mp4': {'label': 'REAL'}}  # left as it was, and nothing else written
    assert not (tmp_path / 'ff' / FAKES.format(m='Deepfakes', c='c23') / 'metadata.json').exists()
    run = make_metadata(tmp_path / 'ff', '--overwrite=true')
    assert run.returncode == 0, run.stderr
    assert len(read(youtube)) == 3


def test_real_clips_in_an_ff_tree_are_planned_by_the_stages_with_their_labels_and_originals(tmp_path):
    clips = {  # FF++ name in the tree: a real DFDC clip (the labels come from the folders, not the clips)
        YOUTUBE.format(c='c23') + '/000.mp4': testdata('dfdc_sample', 'lynaeydofd.mp4'),
        YOUTUBE.format(c='c23') + '/003.mp4': testdata('dfdc_sample', 'abofeumbvv.mp4'),
        FAKES.format(m='Deepfakes', c='c23') + '/000_003.mp4': testdata('dfdc_sample', 'brtujopkby.mp4'),
    }
    for rel, clip in clips.items():
        os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
        os.symlink(clip, tmp_path / rel)
    before = {rel: os.stat(clip) for rel, clip in clips.items()}
    run = make_metadata(tmp_path)
    assert run.returncode == 0, run.stderr

    todo, failures, skipped = plan(str(tmp_path))
    assert failures == [] and skipped == 0
    planned = {key(rel, name): (path, label_of(entry), entry['original']) for rel, name, path, entry in todo}
    assert planned == {
        YOUTUBE.format(c='c23') + '/000.mp4': (str(tmp_path / YOUTUBE.format(c='c23') / '000.mp4'), 0, None),
        YOUTUBE.format(c='c23') + '/003.mp4': (str(tmp_path / YOUTUBE.format(c='c23') / '003.mp4'), 0, None),
        FAKES.format(m='Deepfakes', c='c23') + '/000_003.mp4': (
            str(tmp_path / FAKES.format(m='Deepfakes', c='c23') / '000_003.mp4'), 1, ['000.mp4', '003.mp4']),
    }
    for rel, clip in clips.items():  # the videos are untouched: still the links to the same bytes
        assert os.path.islink(tmp_path / rel) and os.path.samefile(tmp_path / rel, clip)
        assert os.stat(clip).st_mtime_ns == before[rel].st_mtime_ns and os.stat(clip).st_size == before[rel].st_size
    groups = groups_by_key(str(tmp_path))
    assert set(groups.values()) == {YOUTUBE.format(c='c23') + '/000.mp4'}  # 000, 003 and the fake of both

    # the face stage carries the pair into its table, and the training store groups the three as one
    faces = tmp_path / 'out' / 'faces.pkl'
    run = run_script('create_video_embeddings.py', f'--data_dir={tmp_path}', f'--output={faces}',
                     '--face_weights=none', '--frame_step=100')
    assert run.returncode == 0, run.stderr
    table = pd.read_pickle(faces)
    table['audio_embedding'], table['has_audio'] = [np.zeros(4, np.float32)] * len(table), False
    save(table, tmp_path / 'out' / 'merged.pkl')
    with open_store(tmp_path / 'out' / 'merged.pkl') as store:
        assert sorted(store.keys) == sorted(clips) and set(store.groups) == {YOUTUBE.format(c='c23') + '/000.mp4'}


def test_a_test_list_saved_on_windows_with_a_latin1_name_marks_those_videos(tmp_path):
    # a BOM and CRLF line ends (a Windows editor), and a name that is not UTF-8 (an old archive's café):
    # the listed videos, real clips behind links, are 'test', as the list says
    cafe = 'id0_caf\udce9.mp4'  # how os.listdir gives the Latin-1 name b'id0_caf\xe9.mp4'
    clips = {'Celeb-real/id0_0000.mp4': 'lynaeydofd.mp4', f'Celeb-real/{cafe}': 'abofeumbvv.mp4',
             'Celeb-synthesis/id0_id1_0000.mp4': 'brtujopkby.mp4', 'YouTube-real/00000.mp4': 'yhffcuhhjy.mp4'}
    for rel, clip in clips.items():
        os.makedirs(os.path.dirname(os.fsencode(tmp_path / rel)), exist_ok=True)
        os.symlink(testdata('dfdc_sample', clip), os.fsencode(tmp_path / rel))
    (tmp_path / 'List_of_testing_videos.txt').write_bytes(
        b'\xef\xbb\xbf1 Celeb-real/id0_0000.mp4\r\n1 Celeb-real/id0_caf\xe9.mp4\r\n'
        b'0 Celeb-synthesis/id0_id1_0000.mp4\r\n')
    run = make_metadata(tmp_path)
    assert run.returncode == 0, run.stderr
    assert {n: e['split'] for n, e in read(tmp_path / 'Celeb-real').items()} == {'id0_0000.mp4': 'test', cafe: 'test'}
    assert read(tmp_path / 'Celeb-synthesis')['id0_id1_0000.mp4']['split'] == 'test'
    assert read(tmp_path / 'YouTube-real')['00000.mp4']['split'] == 'train'
    assert 'listed videos absent' not in run.stdout



def test_a_link_whose_clip_is_gone_is_listed_and_the_stages_record_it(tmp_path):
    # a tree of links to the clips (as on a cluster), one of whose targets was moved: a video of the dataset
    # all the same, which the stages record as a failure; it was left out of metadata.json in silence
    youtube = tmp_path / YOUTUBE.format(c='c23')
    youtube.mkdir(parents=True)
    os.symlink(testdata('dfdc_sample', 'lynaeydofd.mp4'), youtube / '000.mp4')
    os.symlink(tmp_path / 'moved' / 'abofeumbvv.mp4', youtube / '003.mp4')
    run = make_metadata(tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(read(youtube)) == ['000.mp4', '003.mp4']
    todo, failures, skipped = plan(str(tmp_path))
    assert [name for _, name, _, _ in todo] == ['000.mp4', '003.mp4'] and failures == [] and skipped == 0


def test_a_data_folder_that_cannot_be_written_gets_its_metadata_in_a_tree_of_links(tmp_path):
    """A Kaggle dataset (/kaggle/input) or a read-only mount: metadata.json could not be written beside the
    videos, and no stage could read the tree. --out_dir writes the same folders elsewhere, each video a link."""
    data, out = tmp_path / 'Celeb-DF-v2', tmp_path / 'work' / 'celebdf'
    clips = {'Celeb-real/id0_0000.mp4': 'lynaeydofd.mp4', 'Celeb-synthesis/id0_id1_0000.mp4': 'brtujopkby.mp4'}
    for rel, clip in clips.items():
        os.makedirs(os.path.dirname(data / rel), exist_ok=True)
        shutil.copy(testdata('dfdc_sample', clip), data / rel)
    tree = lambda: sorted((os.path.relpath(d, data), sorted(n)) for d, _, n in os.walk(data))  # noqa: E731
    before = tree()
    run = make_metadata(data, f'--out_dir={out}')
    assert run.returncode == 0, run.stderr
    assert tree() == before  # nothing written into the data folder
    assert f"under {out}, beside links to the videos: give it as the stages' --data_dir" in run.stdout
    for rel in clips:
        assert os.readlink(out / rel) == str(data / rel)
    assert read(out / 'Celeb-synthesis')['id0_id1_0000.mp4'] == {'label': 'FAKE', 'split': 'train',
                                                                  'original': 'id0_0000.mp4'}
    # a stage given the tree of links reads the videos, under the data folder's own keys
    audio = tmp_path / 'audio'
    run = run_script('extract_audio.py', f'--data_dir={out}', f'--audio_dir={audio}')
    assert run.returncode == 0, run.stderr
    index = pd.read_pickle(audio / 'index.pkl')
    assert sorted(key(f, n) for f, n in zip(index['folder'], index['filename'])) == sorted(clips)
    assert index['has_track'].all()
    # a rerun replaces the metadata only when asked, as in the data folder; the links are pointed again
    assert make_metadata(data, f'--out_dir={out}').returncode == 2
    assert make_metadata(data, f'--out_dir={out}', '--overwrite=true').returncode == 0
    assert os.readlink(out / 'Celeb-real' / 'id0_0000.mp4') == str(data / 'Celeb-real' / 'id0_0000.mp4')
    # never a file of the user's replaced by a link, nor a tree inside the data folder (both would be read)
    mine = out / 'Celeb-synthesis' / 'id0_id1_0000.mp4'  # the folder written after Celeb-real/
    os.remove(mine)
    mine.write_bytes(b'mine')
    written = (lambda st: (st.st_ino, st.st_mtime_ns))(os.stat(out / 'Celeb-real' / 'metadata.json'))
    run = make_metadata(data, f'--out_dir={out}', '--overwrite=true')
    assert run.returncode == 2 and run.stderr.count('\n') == 1 and 'is a file, not a link' in run.stderr
    assert mine.read_bytes() == b'mine'
    st = os.stat(out / 'Celeb-real' / 'metadata.json')
    assert (st.st_ino, st.st_mtime_ns) == written  # refused before any write
    for inside in (data / 'meta', data, tmp_path):
        run = make_metadata(data, f'--out_dir={inside}')
        assert run.returncode == 2 and run.stderr.count('\n') == 1 and 'overlap' in run.stderr, inside
    assert tree() == before
