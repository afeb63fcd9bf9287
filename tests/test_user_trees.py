"""Dataset trees as users' drives hold them: macOS's AppleDouble files beside every clip (a copy from a Mac onto an
exFAT drive), .DS_Store and Thumbs.db, a folder named like a video, and a desktop's bin or a NAS's thumbnail store
holding a copy of a part. Real clips behind links; make_metadata.py, extract_audio.py and predict.py's listing."""
import json
import os
import re

import pandas as pd

from audio_clips import dfdc_part, run_script
from common.dataset import is_video, list_inputs, plan
from conftest import testdata
from test_make_metadata import FAKES, YOUTUBE, make_metadata, read


def litter(folder):
    """What a Mac, Windows and a Synology NAS leave beside the videos of `folder`: an AppleDouble file (4 KB of
    Finder metadata, named '._' + the file's name) for each file, .DS_Store, Thumbs.db, and @eaDir/, whose
    folders are named after the videos."""
    for name in os.listdir(folder):
        (folder / f'._{name}').write_bytes(b'\0\x05\x16\x07' + bytes(4092))  # AppleDouble's magic number
        (folder / '@eaDir' / name).mkdir(parents=True)
        (folder / '@eaDir' / name / 'SYNOVIDEO_VIDEO_SCREENSHOT.jpg').write_bytes(b'\xff\xd8')
    (folder / '.DS_Store').write_bytes(bytes(6148))
    (folder / 'Thumbs.db').write_bytes(bytes(1024))
    (folder / 'trailer.mp4').mkdir()  # a folder named like a video, holding none


def test_an_ff_tree_copied_from_a_mac_gets_metadata_for_its_videos_only(tmp_path):
    """Every '._000.mp4' was a REAL video and every '._000_003.mp4' a fake of unknown original: 4 KB files that
    every stage then failed to decode, counted in the summary as videos."""
    clips = {YOUTUBE.format(c='c23') + '/000.mp4': 'lynaeydofd.mp4',
             FAKES.format(m='Deepfakes', c='c23') + '/000_003.mp4': 'brtujopkby.mp4'}
    for rel, clip in clips.items():
        (tmp_path / rel).parent.mkdir(parents=True)
        os.symlink(testdata('dfdc_sample', clip), tmp_path / rel)
        litter((tmp_path / rel).parent)
    run = make_metadata(tmp_path)
    assert run.returncode == 0, run.stderr
    assert read(tmp_path / YOUTUBE.format(c='c23')) == {
        '000.mp4': {'label': 'REAL', 'split': 'train', 'original': None}}
    assert read(tmp_path / FAKES.format(m='Deepfakes', c='c23')) == {
        '000_003.mp4': {'label': 'FAKE', 'split': 'train', 'original': ['000.mp4', '003.mp4']}}
    assert run.stdout.splitlines()[-1].endswith('metadata.json written in 2 folders: 1 real, 1 fake videos')
    todo, failures, skipped = plan(str(tmp_path))
    assert sorted(name for _, name, _, _ in todo) == ['000.mp4', '000_003.mp4']
    assert failures == [] and skipped == 0  # the ._ files and trailer.mp4/ are no videos left out


def test_a_part_in_a_bin_or_a_nas_thumbnail_store_is_not_read_as_a_second_part(tmp_path):
    """A part deleted on a Linux desktop (.Trash-1000/files/p/, its metadata.json with it) and Synology's
    @eaDir were walked as parts: the same clips twice under other keys, which a split puts on both sides."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    clips = {'a.mp4': testdata('talking_heads', '2.mp4'), 'b.mp4': testdata('talking_heads', '3.mp4')}
    dfdc_part(str(data / 'p'), clips, {'a.mp4': 'REAL', 'b.mp4': 'FAKE'})
    for hidden in ('.Trash-1000/files/p', '@eaDir/p', '.git/p'):
        dfdc_part(str(data / hidden), clips, {'a.mp4': 'REAL', 'b.mp4': 'FAKE'})
    run = run_script('extract_audio.py', f'--data_dir={data}/', f'--audio_dir={audio}')
    assert run.returncode == 0, run.stderr
    # said, as predict.py says it: a user who keeps a part in a hidden folder learns why it was not read
    assert f'3 hidden or system folders (a bin, a NAS\'s @eaDir) not read, e.g. {data}/.Trash-1000\n' in run.stdout
    index = pd.read_pickle(audio / 'index.pkl')
    assert sorted(zip(index['folder'], index['filename'])) == [('p', 'a.mp4'), ('p', 'b.mp4')]
    assert index['has_track'].all()
    assert sorted(os.path.relpath(os.path.join(d, n), audio) for d, _, names in os.walk(audio) for n in names
                  if n.endswith('.wav')) == ['p/a.mp4.wav', 'p/b.mp4.wav']
    # predict.py's listing of the same folder: the passed-over folders are named, not scored
    passed = []
    assert [(folder, name) for _, folder, name in list_inputs(str(data), [], passed)] == [('p', 'a.mp4'), ('p', 'b.mp4')]
    assert passed == [str(data / '.Trash-1000'), str(data / '.git'), str(data / '@eaDir')]
    with open(data / 'p' / 'metadata.json') as f:
        assert sorted(json.load(f)) == ['a.mp4', 'b.mp4']


def test_a_video_a_metadata_json_gives_twice_differently_is_a_failure_not_the_last_label(tmp_path):
    """Two parts' metadata.json pasted into one: json.load kept the last of a name given twice, and the video
    was trained on with whichever label came last, in silence."""
    part = tmp_path / 'p'
    dfdc_part(str(part), {n: testdata('talking_heads', f'{i}.mp4') for i, n in enumerate('abcd', 1)})
    (part / 'metadata.json').write_text(
        '{"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"},\n'
        ' "c.mp4": {"label": "REAL", "label": "FAKE"}, "d.mp4": {"label": "FAKE", "original": "a.mp4"},\n'
        ' "a.mp4": {"label": "FAKE", "original": "b.mp4"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"}}',
        encoding='utf-8')
    todo, failures, skipped = plan(str(tmp_path))
    assert [(name, entry) for _, name, _, entry in todo] == [
        ('b.mp4', {'label': 'FAKE', 'original': 'a.mp4'}), ('d.mp4', {'label': 'FAKE', 'original': 'a.mp4'})]
    assert failures == [('a.mp4', 'p', 'metadata.json gives it twice, differently: refused'),
                        ('c.mp4', 'p', 'metadata.json gives label twice, differently: refused')]
    assert skipped == 0


def test_a_metadata_json_written_from_pandas_with_nan_originals_is_read_whole(tmp_path):
    """A metadata.json made from a CSV with pandas and json.dump holds NaN where a REAL video has no original (as
    the float it is: NaN is not equal to itself) and may give an entry twice, the same: each REAL video was
    refused as 'given twice, differently', though given once."""
    part = tmp_path / 'p'
    dfdc_part(str(part), {n: testdata('talking_heads', f'{i}.mp4') for i, n in enumerate('abc', 1)})
    rows = pd.DataFrame({'name': ['a.mp4', 'b.mp4', 'c.mp4'], 'label': ['REAL', 'FAKE', 'REAL'],
                         'original': [float('nan'), 'a.mp4', float('nan')]})
    meta = {r['name']: {'label': r['label'], 'original': r['original']} for r in rows.to_dict('records')}
    text = json.dumps(meta)
    assert 'NaN' in text  # json.dump's spelling of pandas' missing value
    (part / 'metadata.json').write_text(text[:-1] + ', "c.mp4": ' + json.dumps(meta['c.mp4']) + '}')
    todo, failures, skipped = plan(str(tmp_path))
    assert [name for _, name, _, _ in todo] == ['a.mp4', 'b.mp4', 'c.mp4'] and failures == [] and skipped == 0
    assert todo[1][3] == {'label': 'FAKE', 'original': 'a.mp4'}


def test_a_rerun_given_the_data_folder_a_level_above_or_below_is_one_line_not_every_video_twice(tmp_path):
    """Pointed at the part instead of the dataset's root (or the reverse), or after a part was renamed, a rerun
    gave every video a second key ('a.mp4' beside 'p/a.mp4'): each done again and kept twice, in two groups that a
    split puts on both sides.
    The whole folder moved elsewhere keeps its keys: nothing to do again."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'a.mp4': testdata('talking_heads', '2.mp4'), 'b.mp4': testdata('talking_heads', '3.mp4')})
    assert run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}').returncode == 0
    moved = tmp_path / 'elsewhere' / 'data'
    moved.parent.mkdir()
    os.rename(data, moved)
    run = run_script('extract_audio.py', f'--data_dir={moved}/', f'--audio_dir={audio}')
    assert run.returncode == 0 and '0 videos to extract into' in run.stdout, run.stderr
    run = run_script('extract_audio.py', f'--data_dir={moved / "p"}', f'--audio_dir={audio}')
    assert run.returncode == 2 and run.stderr.count('\n') == 1, run.stderr
    assert run.stderr.startswith(f'error: {audio}/index.pkl has p/a.mp4 done, which this data folder lists as a.mp4')
    index = pd.read_pickle(audio / 'index.pkl')
    assert sorted(zip(index['folder'], index['filename'])) == [('p', 'a.mp4'), ('p', 'b.mp4')]
    # the reverse: a run on the part, then its parent
    run = run_script('extract_audio.py', f'--data_dir={moved / "p"}', f'--audio_dir={tmp_path / "audio2"}')
    assert run.returncode == 0, run.stderr
    run = run_script('extract_audio.py', f'--data_dir={moved}', f'--audio_dir={tmp_path / "audio2"}')
    assert run.returncode == 2 and 'has a.mp4 done, which this data folder lists as p/a.mp4' in run.stderr
    # a part renamed since: its videos' keys change, their files do not
    os.rename(moved / 'p', moved / 'dfdc_train_part_0')
    run = run_script('extract_audio.py', f'--data_dir={moved}', f'--audio_dir={audio}')
    assert run.returncode == 2 and run.stderr.count('\n') == 1, run.stderr
    assert 'has p/a.mp4 done, which this data folder lists as dfdc_train_part_0/a.mp4' in run.stderr


def test_a_video_taken_out_of_its_metadata_json_leaves_every_table_a_part_moved_away_stays(tmp_path):
    """An entry removed from its part's metadata.json (a clip the user took out: a wrong label, a duplicate) kept
    its rows in every stage's table on the rerun, in silence: merged and trained on. Its rows are dropped, said in
    one line, through the face, audio and audio-embedding stages, also where the part lists no video now ({}); a
    part no longer in the data folder (moved away, a drive not mounted) keeps its videos, said in one line too:
    hours of extraction are not thrown away. A video whose entry stays but whose file is gone was already done
    again (a 'file is missing' failure)."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'a.mp4': testdata('talking_heads', '2.mp4'), 'b.mp4': testdata('talking_heads', '3.mp4')})
    dfdc_part(str(data / 'q'), {'c.mp4': testdata('talking_heads', '4.mp4')})
    stages = [('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}'),
              ('create_audio_embedding.py', f'--audio_dir={audio}', f'--output={tmp_path / "audio.pkl"}'),
              ('create_video_embeddings.py', f'--data_dir={data}', f'--output={tmp_path / "video.pkl"}',
               '--face_weights=none', '--frame_step=30')]
    tables = [audio / 'index.pkl', tmp_path / 'audio.pkl', tmp_path / 'video.pkl']

    def rerun():
        outs = [run_script(*stage) for stage in stages]
        assert all(r.returncode == 0 for r in outs), [r.stderr for r in outs]
        return [r.stdout for r in outs], [sorted(set(zip(*pd.read_pickle(t)[['folder', 'filename']].T.values)))
                                          for t in tables]

    _, done = rerun()
    assert done == [[('p', 'a.mp4'), ('p', 'b.mp4'), ('q', 'c.mp4')]] * 3
    meta = json.loads((data / 'p' / 'metadata.json').read_text())
    del meta['b.mp4']
    (data / 'p' / 'metadata.json').write_text(json.dumps(meta))
    said, done = rerun()
    assert done == [[('p', 'a.mp4'), ('q', 'c.mp4')]] * 3
    assert all("1 videos done before are no longer listed (taken out of their part's metadata.json), e.g. p/b.mp4: "
               "their rows are dropped\n" in out for out in said), said
    # the videos listed and done: not the one dropped (it said '3 done before')
    assert [re.search(r'\b(\d+) done before', out)[1] for out in said] == ['2', '2', '2'], said
    (data / 'p' / 'metadata.json').write_text('{}')  # every entry taken out: the part lists nothing
    said, done = rerun()
    assert done == [[('q', 'c.mp4')]] * 3
    assert all("1 videos done before are no longer listed (taken out of their part's metadata.json), e.g. p/a.mp4: "
               "their rows are dropped\n" in out for out in said), said
    os.rename(data / 'q', tmp_path / 'q')
    said, done = rerun()
    assert done == [[('q', 'c.mp4')]] * 3
    # the audio embeddings' listing is extract_audio's index, which keeps q/c.mp4: nothing to say there
    for out, flag in zip(said, ('--audio_dir', None, '--output')):
        assert 'no longer listed' not in out and ('in parts not listed now' in out) == bool(flag)
        assert not flag or ('1 videos done before are in parts not listed now, e.g. q/c.mp4: kept (a part moved '
                            f'away, a drive not mounted, a metadata.json unreadable); give another {flag} for a table '
                            f'without\n') in out


def test_an_appledouble_file_given_to_predict_is_one_line_not_a_prediction(tmp_path):
    """predict.py --input=clips/._a.mp4 (the Finder's file, picked by a shell's completion) was scored as a video
    that cannot be read: a prior of 0.5 printed as its p(FAKE)."""
    (tmp_path / 'clips').mkdir()
    os.symlink(testdata('talking_heads', '2.mp4'), tmp_path / 'clips' / 'a.mp4')
    litter(tmp_path / 'clips')
    assert is_video(str(tmp_path / 'clips' / 'a.mp4')) and not is_video(str(tmp_path / 'clips' / '._a.mp4'))
    run = run_script('predict.py', f'--input={tmp_path / "clips" / "._a.mp4"}', '--face_weights=none')
    assert run.returncode == 2 and run.stderr.count('\n') == 1, run.stderr
    assert 'is not named like a video' in run.stderr and "not macOS's ._ file beside one" in run.stderr
    assert 'p(FAKE)' not in run.stdout


def test_a_tree_unpacked_one_folder_deeper_is_refused_naming_the_folder_to_give(tmp_path):
    """Celeb-DF-v2.zip unpacks into Celeb-DF-v2/; given the folder it was unpacked in, the refusal named
    neither the folder that is the tree nor what to do."""
    clips = {'Celeb-real/id0_0000.mp4': 'lynaeydofd.mp4', 'Celeb-synthesis/id0_id1_0000.mp4': 'brtujopkby.mp4'}
    for rel, clip in clips.items():
        (tmp_path / 'Celeb-DF-v2' / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(testdata('dfdc_sample', clip), tmp_path / 'Celeb-DF-v2' / rel)
    (tmp_path / '.Trash-1000' / 'Celeb-real').mkdir(parents=True)  # hidden: not a tree to give
    for args in ([], ['--layout=celebdf']):
        run = make_metadata(tmp_path, *args)
        assert run.returncode == 2 and run.stderr.count('\n') == 1, run.stderr
        assert run.stderr.rstrip().endswith(f': give --data_dir={tmp_path / "Celeb-DF-v2"}'), run.stderr
    run = make_metadata(tmp_path / 'Celeb-DF-v2')
    assert run.returncode == 0, run.stderr
    assert read(tmp_path / 'Celeb-DF-v2' / 'Celeb-synthesis')['id0_id1_0000.mp4']['original'] == 'id0_0000.mp4'


def test_one_file_listed_under_two_cases_of_its_name_is_one_video(tmp_path):
    """On a file system that ignores case (macOS, exFAT, Windows, a share), a metadata.json listing 'Clip.mp4' and
    'clip.mp4' found both: one clip, two keys, done twice and trained on twice. A link stands in for such a file
    system here; two files whose names differ only in case (a file system that keeps case) stay two videos."""
    part = tmp_path / 'p'
    dfdc_part(str(part), {'clip.mp4': testdata('talking_heads', '2.mp4'), 'x.mp4': testdata('talking_heads', '3.mp4'),
                          'X.mp4': testdata('talking_heads', '4.mp4')})
    os.symlink('clip.mp4', part / 'Clip.mp4')
    meta = json.loads((part / 'metadata.json').read_text())
    (part / 'metadata.json').write_text(json.dumps({**meta, 'Clip.mp4': {'label': 'FAKE'}}))
    todo, failures, skipped = plan(str(tmp_path))
    assert [name for _, name, _, _ in todo] == ['Clip.mp4', 'X.mp4', 'x.mp4']
    assert failures == [('clip.mp4', 'p', 'metadata.json lists this file as Clip.mp4 too (a file system that '
                                          'ignores case): listed once, as Clip.mp4')] and skipped == 0
