"""merge_embeddings.py: the join, videos without audio, refusals; and the whole audio half on the DFDC
sample, with a clip stripped of its audio beside it."""
import json
import os
import re

import numpy as np
import pandas as pd
import pytest

import merge_embeddings as me
from audio_clips import dfdc_part, remux, run_script
from common import config, store
from common.dataset import label_of
from common.stage import write_pickle
from conftest import testdata

ENCODER = 'resemblyzer-0.1.4'


def video_table(labels, embedder='untrained(seed=0)', dim=512, folder='dfdc_train_part_0', tracks=None):
    """A table as create_video_embeddings.py writes it: {filename: label}; `tracks` {filename: n} gives
    a video several rows (--keep_all_tracks)."""
    rows = []
    rng = np.random.default_rng(0)
    for name, label in labels.items():
        for track in range((tracks or {}).get(name, 1)):
            faces = int(rng.integers(5, 50))
            embedding = rng.standard_normal((faces, dim)).astype(np.float16)  # (faces, D)
            rows.append({'filename': name, 'video_embedding': embedding,
                         'label': label, 'original': None if label == 0 else 'someoriginal.mp4',
                         'folder': folder, 'frames': np.arange(faces, dtype=np.int32) * 6, 'n_frames': 300,
                         'track': track, 'embedder': embedder})
    return pd.DataFrame(rows)


def audio_table(statuses, encoder=ENCODER, dim=256):
    """A table as create_audio_embedding.py writes it: {filename: audio_status}."""
    rng = np.random.default_rng(1)
    rows = []
    for name, status in statuses.items():
        has = status in ('ok', 'no speech')
        rows.append({'filename': name, 'folder': 'dfdc_train_part_0',
                     'audio_embedding': (rng.random(dim) if has else np.zeros(dim)).astype(np.float32),
                     'has_audio': has, 'audio_status': status, 'seconds': 10.0 if has else 0.0,
                     'audio_encoder': encoder, 'audio_dim': dim})
    return pd.DataFrame(rows)


def test_every_video_is_kept_and_those_without_audio_are_zero_and_flagged():
    video = video_table({'a.mp4': 1, 'b.mp4': 0, 'c.mp4': 1, 'd.mp4': 0, 'e.mp4': 1}, tracks={'a.mp4': 2})
    audio = audio_table({'a.mp4': 'ok', 'b.mp4': 'no speech', 'c.mp4': 'no track', 'x.mp4': 'ok'})
    table, lines = me.merge(video, audio,
                            audio_failures={'dfdc_train_part_0/d.mp4': ('dfdc_train_part_0',
                                                                        'audio decoding failed after 1.00 s')},
                            video_failures={'dfdc_train_part_0/x.mp4': ('dfdc_train_part_0',
                                                                        'no face found in 300 frames')})
    assert len(table) == 6 and table.filename.tolist() == video.filename.tolist()  # both tracks of a.mp4
    for column in ('filename', 'audio_embedding', 'video_embedding', 'label', 'original', 'folder',
                   'has_audio', 'frames', 'n_frames', 'track', 'embedder', 'audio_status'):
        assert column in table
    assert table.label.tolist() == video.label.tolist()
    by = table.drop_duplicates('filename').set_index('filename')
    assert by.has_audio.to_dict() == {'a.mp4': True, 'b.mp4': True, 'c.mp4': False, 'd.mp4': False,
                                      'e.mp4': False}
    assert by.audio_status.to_dict() == {'a.mp4': 'ok', 'b.mp4': 'no speech', 'c.mp4': 'no track',
                                         'd.mp4': 'audio failed: audio decoding failed after 1.00 s',
                                         'e.mp4': 'not in the audio table'}
    source = audio.set_index('filename')
    for name, row in by.iterrows():
        assert row.audio_embedding.shape == (256,) and row.audio_embedding.dtype == np.float32
        assert np.isfinite(row.audio_embedding).all()
        if row.has_audio:
            np.testing.assert_array_equal(row.audio_embedding, source.at[name, 'audio_embedding'])
        else:
            assert not row.audio_embedding.any()
    for a, b in zip(table.video_embedding, video.video_embedding):
        assert a is b or np.array_equal(a, b)
    assert table.attrs == {'video_embedder': 'untrained(seed=0)', 'video_dim': 512,
                           'audio_encoder': ENCODER, 'audio_dim': 256}
    text = '\n'.join(lines)
    assert '5 videos' in lines[0] and '2 matched' not in lines[0] and '3 matched' in lines[0]
    assert '2 did not' in lines[0]
    assert 'e.mp4: not in the audio table' in text and 'c.mp4: no track' in text
    assert 'x.mp4: video failed: no face found in 300 frames' in text


@pytest.mark.parametrize('video, audio, message', [
    (video_table({'a.mp4': 1}).assign(embedder=['vggface2']).pipe(
        lambda v: pd.concat([v, video_table({'b.mp4': 0})], ignore_index=True)),
     audio_table({'a.mp4': 'ok'}), 'mixes face embedders: untrained(seed=0), vggface2'),
    (pd.concat([video_table({'a.mp4': 1}), video_table({'b.mp4': 0}, dim=1792)], ignore_index=True),
     audio_table({'a.mp4': 'ok'}), 'mixes face embedding sizes: 512, 1792'),
    (video_table({'a.mp4': 1}),
     pd.concat([audio_table({'a.mp4': 'ok'}), audio_table({'b.mp4': 'ok'}, 'cnn:resnet18:x', 512)],
               ignore_index=True), 'mixes audio encoders'),
    (video_table({'a.mp4': 1}),
     audio_table({'a.mp4': 'ok', 'b.mp4': 'ok'}).assign(audio_dim=[256, 512]), 'mixes audio embedding sizes'),
    (video_table({'a.mp4': 1}), pd.concat([audio_table({'a.mp4': 'ok'})] * 2, ignore_index=True),
     'videos twice, e.g. dfdc_train_part_0/a.mp4'),
    (video_table({'a.mp4': 1}).drop(columns='label'), audio_table({'a.mp4': 'ok'}), 'no column label'),
    # no key in common (it merged, every video without audio): one stage given the data folder a level up
    (video_table({'a.mp4': 1, 'b.mp4': 0}, folder='part0'), audio_table({'a.mp4': 'ok'}),
     'no video of the video table is in the audio table (e.g. part0/a.mp4; there, e.g. dfdc_train_part_0/a.mp4)'),
    # a merged table given again merged with its own audio kept beside the new table's settings
    (me.merge(video_table({'a.mp4': 1}), audio_table({'a.mp4': 'ok'}))[0], audio_table({'a.mp4': 'ok'}),
     "the video table is a merged table (merge_embeddings.py's), not a create_video_embeddings.py table"),
    (video_table({'a.mp4': 1}), me.merge(video_table({'a.mp4': 1}), audio_table({'a.mp4': 'ok'}))[0],
     "the audio table is a merged table (merge_embeddings.py's), not a create_audio_embedding.py table"),
])
def test_tables_that_cannot_be_merged_are_refused_in_one_line(video, audio, message):
    with pytest.raises(config.UserError, match=re.escape(message)) as err:
        me.merge(video, audio)
    assert '\n' not in str(err.value)


def test_the_script_refuses_mixed_encoders_and_missing_tables_in_one_line(tmp_path):
    write_pickle(video_table({'a.mp4': 1}), tmp_path / 'v.pkl')
    mixed = pd.concat([audio_table({'a.mp4': 'ok'}), audio_table({'b.mp4': 'ok'}, 'cnn:resnet18:x', 512)],
                      ignore_index=True)
    write_pickle(mixed, tmp_path / 'a.pkl')
    for audio, message in [(tmp_path / 'a.pkl', 'mixes audio encoders'),
                           (tmp_path / 'no.pkl', 'does not exist')]:
        r = run_script('merge_embeddings.py', f'--video_table={tmp_path / "v.pkl"}', f'--audio_table={audio}',
                       f'--output={tmp_path / "m.pkl"}')
        assert r.returncode == 2 and message in r.stderr and r.stderr.strip().count('\n') == 0
        assert not os.path.exists(tmp_path / 'm.pkl')


def test_the_three_scripts_on_the_dfdc_sample_and_a_clip_without_audio(tmp_path):
    """The issue's end: the DFDC sample's 4 videos get non-zero, finite audio embeddings and keep their
    labels; a clip stripped of its audio track comes through with has_audio False."""
    sample = testdata('dfdc_sample')
    meta = json.load(open(os.path.join(sample, 'metadata.json')))
    files = {name: os.path.join(sample, name) for name in meta}
    files['stripped.mp4'] = remux(testdata('talking_heads', '3.mp4'), tmp_path / 'stripped.mp4')
    labels = {name: entry['label'] for name, entry in meta.items()} | {'stripped.mp4': 'FAKE'}
    data = tmp_path / 'data'
    dfdc_part(str(data / 'dfdc_train_part_0'), files, labels)
    audio_dir, audio, merged = tmp_path / 'audio', tmp_path / 'audio.pkl', tmp_path / 'merged.pkl'
    # The video table is built here, as create_video_embeddings.py lays it out: running MTCNN on four
    # 1080p clips would take a minute of this test for nothing the merge looks at.
    targets = {name: label_of({'label': label}) for name, label in labels.items()}
    write_pickle(video_table(targets), tmp_path / 'video.pkl')
    runs = [('extract_audio.py', [f'--data_dir={data}', f'--audio_dir={audio_dir}']),
            ('create_audio_embedding.py', [f'--audio_dir={audio_dir}', f'--output={audio}']),
            ('merge_embeddings.py', [f'--video_table={tmp_path / "video.pkl"}', f'--audio_table={audio}',
                                     f'--output={merged}'])]
    for script, args in runs:
        r = run_script(script, *args)
        assert r.returncode == 0, (script, r.stderr)
    assert '5 videos' in r.stdout and '5 matched' in r.stdout and 'stripped.mp4: no track' in r.stdout
    assert f'5 videos in {tmp_path / "video.pkl"}' in r.stdout and f'row of {audio} (' in r.stdout
    table = pd.read_pickle(merged).set_index('filename')
    assert sorted(table.index) == sorted(labels)
    for name in meta:
        row = table.loc[name]
        assert row.label == label_of(meta[name]) and row.has_audio and row.audio_status == 'ok'
        assert row.audio_embedding.shape == (256,) and np.isfinite(row.audio_embedding).all()
        assert np.abs(row.audio_embedding).sum() > 0
    assert table.loc['stripped.mp4', 'has_audio'] == False  # noqa: E712 - a numpy bool
    assert not table.loc['stripped.mp4', 'audio_embedding'].any()
    assert table.loc['stripped.mp4', 'label'] == 1
    # a rerun of the three, with nothing new, rewrites nothing: training resumes on the same table
    made = {p: os.stat(p).st_mtime_ns for p in (audio_dir / 'index.pkl', audio, merged)}
    for script, args in runs:
        assert run_script(script, *args).returncode == 0
    assert made == {p: os.stat(p).st_mtime_ns for p in made}
    os.utime(tmp_path / 'video.pkl')  # a video table made again: the merge is redone
    r = run_script(runs[-1][0], *runs[-1][1])
    assert r.returncode == 0 and 'up to date' not in r.stdout and os.stat(merged).st_mtime_ns > made[merged]
    # an output in place does not hide a table that is gone
    r = run_script('merge_embeddings.py', f'--video_table={tmp_path / "gone.pkl"}', f'--audio_table={audio}',
                   f'--output={merged}')
    assert r.returncode == 2 and 'gone.pkl' in r.stderr, r.stdout
    # the merged table given as a stage's output: the audio stage rewrote it as its own, every row's video
    # embedding and label NaN, exit 0 (the merge recorded no made_with: an older run of that stage, it seemed)
    made = os.stat(merged).st_mtime_ns
    r = run_script('create_audio_embedding.py', f'--audio_dir={audio_dir}', f'--output={merged}')
    assert r.returncode == 2 and r.stderr.strip() == f'error: {merged} is the output of another stage (made with ' \
        f'merge_embeddings.py, ...): give another --output', r.stderr
    assert os.stat(merged).st_mtime_ns == made and not os.path.exists(f'{merged}.parts')


def test_what_a_killed_merge_left_is_removed_by_the_next(tmp_path):
    """A merge killed while writing leaves atomic_path's temporary, as large as the table."""
    write_pickle(video_table({'a.mp4': 1}), tmp_path / 'v.pkl')
    write_pickle(audio_table({'a.mp4': 'ok'}), tmp_path / 'a.pkl')
    (tmp_path / '.m.pkl.k1ll3d00.tmp').write_bytes(b'half a table')
    r = run_script('merge_embeddings.py', f'--video_table={tmp_path / "v.pkl"}',
                   f'--audio_table={tmp_path / "a.pkl"}', f'--output={tmp_path / "m.pkl"}')
    assert r.returncode == 0, r.stderr
    assert [n for n in os.listdir(tmp_path) if n.startswith('.')] == []
    assert pd.read_pickle(tmp_path / 'm.pkl').filename.tolist() == ['a.mp4']


def test_the_videos_a_merge_leaves_out_are_recorded_with_their_reason(tmp_path):
    """An audio row without a video row (its video failed the face stage, or that stage never listed it) was
    only printed: every stage records what it leaves out in OUTPUT.failures.csv, the merge too (break-it pass 8,
    D4); a merge of other tables rewrites it, with nothing stale."""
    from common.stage import read_failures
    write_pickle(video_table({'a.mp4': 1}), tmp_path / 'v.pkl')
    (tmp_path / 'v.pkl.failures.csv').write_text('filename,folder,reason,source\n'
                                                 'b.mp4,dfdc_train_part_0,no face found,\n')
    write_pickle(audio_table({'a.mp4': 'ok', 'b.mp4': 'ok', 'c.mp4': 'ok'}), tmp_path / 'a.pkl')
    args = [f'--video_table={tmp_path / "v.pkl"}', f'--audio_table={tmp_path / "a.pkl"}',
            f'--output={tmp_path / "m.pkl"}']
    r = run_script('merge_embeddings.py', *args)
    assert r.returncode == 0, r.stderr
    assert read_failures(tmp_path / 'm.pkl.failures.csv') == {
        'dfdc_train_part_0/b.mp4': ('dfdc_train_part_0', 'video failed: no face found'),
        'dfdc_train_part_0/c.mp4': ('dfdc_train_part_0', 'not in the video table')}
    assert ('2 audio rows have no video row (left out):\n  dfdc_train_part_0/b.mp4: video failed: no face found\n'
            '  dfdc_train_part_0/c.mp4: not in the video table') in r.stdout
    write_pickle(audio_table({'a.mp4': 'ok', 'b.mp4': 'ok'}), tmp_path / 'a.pkl')
    assert run_script('merge_embeddings.py', *args).returncode == 0
    assert list(read_failures(tmp_path / 'm.pkl.failures.csv')) == ['dfdc_train_part_0/b.mp4']
    write_pickle(audio_table({'a.mp4': 'ok'}), tmp_path / 'a.pkl')
    assert run_script('merge_embeddings.py', *args).returncode == 0
    assert read_failures(tmp_path / 'm.pkl.failures.csv') == {}


def test_other_tables_merged_into_the_same_output_are_merged_however_old(tmp_path):
    """The same --output for another pair of tables (FF++ then Celeb-DF, or the CNN audio table after
    Resemblyzer's), whose files are older than the output: merged, not 'up to date'; the same pair again is."""
    first, second = tmp_path / 'first', tmp_path / 'second'
    for folder, names, encoder, dim in [(first, 'ab', ENCODER, 256), (second, 'cde', 'cnn:resnet18:x', 512)]:
        folder.mkdir()
        write_pickle(video_table({f'{n}.mp4': i % 2 for i, n in enumerate(names)}), folder / 'v.pkl')
        write_pickle(audio_table({f'{n}.mp4': 'ok' for n in names}, encoder, dim), folder / 'a.pkl')
    merged = tmp_path / 'merged.pkl'

    def merge(folder):
        r = run_script('merge_embeddings.py', f'--video_table={folder / "v.pkl"}',
                       f'--audio_table={folder / "a.pkl"}', f'--output={merged}')
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert 'up to date' not in merge(first)
    assert pd.read_pickle(merged).filename.tolist() == ['a.mp4', 'b.mp4']
    made = os.stat(merged).st_mtime_ns
    day_ago = made - 86400 * 10**9
    for p in (second / 'v.pkl', second / 'a.pkl'):  # tables made before the output
        os.utime(p, ns=(day_ago, day_ago))
    assert 'up to date' not in merge(second)
    table = pd.read_pickle(merged)
    assert table.filename.tolist() == ['c.mp4', 'd.mp4', 'e.mp4'] and table.attrs['audio_encoder'] == 'cnn:resnet18:x'
    with store.open_store(str(merged)) as s:
        assert s.filenames.tolist() == ['c.mp4', 'd.mp4', 'e.mp4'] and s.audio_dim == 512
    made = os.stat(merged).st_mtime_ns
    assert 'up to date' in merge(second) and os.stat(merged).st_mtime_ns == made  # the same pair: nothing redone
    assert 'up to date' not in merge(first)  # and back
    assert pd.read_pickle(merged).filename.tolist() == ['a.mp4', 'b.mp4']


def test_a_video_replaced_between_the_stages_is_refused_until_the_stale_stage_is_rerun(tmp_path):
    """A file replaced after the face stage and before the audio stage: the merge joined the old file's faces
    with the new file's voice, silently (the video table's source column won, the audio table's was dropped)."""
    data, audio_dir = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'a.mp4': open(testdata('talking_heads', '1.mp4'), 'rb').read(),
                                'b.mp4': testdata('talking_heads', '2.mp4')})
    paths = {k: str(tmp_path / f'{k}.pkl') for k in ('video', 'audio', 'merged')}
    faces = ('create_video_embeddings.py', f'--data_dir={data}', f'--output={paths["video"]}', '--face_weights=none',
             '--frame_step=30', '--device=cpu')
    assert run_script(*faces).returncode == 0 and pd.read_pickle(paths['video']).n_frames.tolist() == [135, 125]
    (data / 'p' / 'a.mp4').write_bytes(open(testdata('talking_heads', '3.mp4'), 'rb').read())  # another clip
    for args in [('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio_dir}'),
                 ('create_audio_embedding.py', f'--audio_dir={audio_dir}', f'--output={paths["audio"]}')]:
        assert run_script(*args).returncode == 0
    merge = ('merge_embeddings.py', f'--video_table={paths["video"]}', f'--audio_table={paths["audio"]}',
             f'--output={paths["merged"]}')
    r = run_script(*merge)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'e.g. p/a.mp4: run both stages on the same ' \
        '--data_dir' in r.stderr, r.stderr
    assert '1 videos differ between the stages' in r.stderr and not os.path.exists(paths['merged'])
    r = run_script(*faces)  # the face stage redoes a.mp4 from its new file
    assert r.returncode == 0 and '1 videos to embed' in r.stdout, r.stdout
    r = run_script(*merge)
    assert r.returncode == 0, r.stderr
    table = pd.read_pickle(paths['merged']).set_index('filename')
    assert table.n_frames['a.mp4'] == 125  # 3.mp4's frames, not 1.mp4's 135
    assert sorted(table.index) == ['a.mp4', 'b.mp4'] and table.has_audio.all()
