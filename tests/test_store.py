"""common/store.py: the training store merge_embeddings.py writes beside its pickle holds exactly the
table, one video in memory reads the same way, and a store that does not match its pickle is one line."""
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from common import config, store
from common.stage import write_pickle
from conftest import ROOT
from model import synthetic_table


def test_the_store_holds_the_table(tmp_path):
    table = synthetic_table(40, faces=12, min_faces=1, video_dim=16, audio_dim=8, folders=3, seed=3)
    table.loc[3, 'label'] = None  # a video without a label: -1
    faces = list(table.video_embedding)
    faces[4] = np.zeros((0, 16), np.float16)                                  # a video without faces
    faces[5] = np.asfortranarray(np.random.rand(7, 16).astype(np.float16))    # Fortran order
    table['video_embedding'] = faces
    path = str(tmp_path / 'merged.pkl')
    store.save(table, path)
    pd.testing.assert_frame_equal(pd.read_pickle(path), table)
    with store.open_store(path) as s:
        assert len(s) == 40 and (s.video_dim, s.audio_dim) == (16, 8)
        assert s.filenames.tolist() == table.filename.tolist() and s.folders.tolist() == table.folder.tolist()
        assert s.labels.tolist() == [-1 if i == 3 else int(v) for i, v in enumerate(table.label)]
        assert s.groups.tolist() == store.groups_of(table.filename.tolist(), table.original.tolist(),
                                                    table.folder.tolist())
        assert s.keys.tolist() == [f'{d}/{n}' for d, n in zip(table.folder, table.filename)]
        for i, faces in enumerate(table.video_embedding):
            assert s.n_faces[i] == len(faces)
            np.testing.assert_array_equal(s.read_faces(i), faces)
            out = np.zeros((20, 16), np.float16)
            if len(faces):
                np.testing.assert_array_equal(s.read_faces(i, len(faces) // 2, 1, out=out), faces[len(faces) // 2][None])
        np.testing.assert_array_equal(s.read_audio([5, 0]), np.stack(table.audio_embedding[[5, 0]]))
        assert s.has_audio.tolist() == table.has_audio.tolist()
        with pytest.raises(IndexError):
            s.read_faces(0, 0, 13)
    longest = max(table.video_embedding, key=len)  # (12, 16)
    one = store.Store.one(longest, np.ones(8, np.float32), has_audio=False)
    np.testing.assert_array_equal(one.read_faces(0, 2, 3), longest[2:5])
    assert one.n_faces.tolist() == [12] and not one.read_audio([0]).any()


def test_a_label_that_is_not_0_or_1_is_refused(tmp_path):
    table = synthetic_table(3, faces=2, video_dim=3, audio_dim=2)
    table['label'] = ['FAKE', 0, 1]
    with pytest.raises(config.UserError, match="a label is 1 \\(FAKE\\) or 0 \\(REAL\\); 1 are not, e.g. 'FAKE'"):
        store.save(table, str(tmp_path / 'm.pkl'))


def test_a_store_that_does_not_match_its_pickle_is_one_line(tmp_path):
    table = synthetic_table(10, faces=5, video_dim=8, audio_dim=4)
    path = str(tmp_path / 'merged.pkl')
    with pytest.raises(config.UserError, match=r': a folder: give the merged table in it \(merge_embeddings'):
        store.open_store(str(tmp_path))  # it said 'no such file'
    write_pickle(table, path)  # a video or audio table, or an older merge: no store ('cp without -a' was said)
    with pytest.raises(config.UserError, match=r'no training store beside it .*: a video or audio table has none .*'
                                               'run merge_embeddings.py again$'):
        store.open_store(path)
    store.save(table, path)
    assert store.is_current(path)
    for given in (store.store_dir(path), store.store_dir(path) + '/'):  # the store, for its table: said 'in it'
        with pytest.raises(config.UserError, match=rf'^{re.escape(given)}: a training store: give its table, '
                                                   rf'{re.escape(path)}$'):
            store.open_store(given)
    write_pickle(table, path)  # the pickle written again, its store not (a merge stopped half-way)
    assert not store.is_current(path)
    store.save(table, path)
    faces = os.path.join(store.store_dir(path), store.FACES)
    with open(faces, 'r+b') as f:
        f.truncate(os.path.getsize(faces) - 2)
    assert not store.is_current(path)
    run = subprocess.run([sys.executable, 'test.py', f'--dataset={path}', f'--checkpoint={path}'], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize('chain, expected', [
    ({'a': None, 'b': 'a', 'c': 'b'}, ['a', 'a', 'a']),          # a chain: its root
    ({'f1': 'gone', 'f2': 'gone', 'r': None}, ['gone', 'gone', 'r']),  # an absent original: one group
    ({'x': 'y', 'y': 'x', 'z': 'x'}, ['x', 'x', 'x']),           # a cycle and what leads into it
])
def test_groups_follow_chains_of_originals(chain, expected):
    names = [f'{n}.mp4' for n in chain]
    originals = [f'{o}.mp4' if o else None for o in chain.values()]
    assert store.groups_of(names, originals) == [f'{e}.mp4' for e in expected]


@pytest.mark.parametrize('where, value, what', [
    ('face', np.inf, 'face'), ('face', np.nan, 'face'),
    ('face', 70000.0, 'face'),  # float32, finite, past float16's 65504: inf once stored as float16
    ('audio', np.nan, 'audio')])
def test_an_embedding_that_is_not_finite_is_refused_naming_the_video(tmp_path, where, value, what):
    """A NaN or inf would make the weights NaN in the first epoch of training."""
    table = synthetic_table(12, faces=4, video_dim=6, audio_dim=3, folders=2, seed=5)
    column = 'video_embedding' if where == 'face' else 'audio_embedding'
    for i in (7, 9):  # two videos; the first named is the first in the table
        values = list(table[column])
        values[i] = values[i].astype(np.float32)
        values[i].flat[1] = value
        table[column] = values
    path = str(tmp_path / 'm.pkl')
    with pytest.raises(config.UserError) as err:
        store.save(table, path)
    name = f'{table.folder[7]}/{table.filename[7]}'
    assert f'in 2 video(s), the first {name} (its {what} embedding)' in str(err.value)
    assert '\n' not in str(err.value)
    assert not os.path.exists(path) and not os.path.exists(store.store_dir(path))  # nothing written


def test_a_finite_table_saves_as_before(tmp_path):
    table = synthetic_table(12, faces=4, video_dim=6, audio_dim=3, seed=5)
    table.loc[2, 'video_embedding'][0, 0] = np.float16(65504)  # float16's largest: finite
    path = str(tmp_path / 'm.pkl')
    store.save(table, path)
    with store.open_store(path) as s:
        assert len(s) == 12 and s.read_faces(2)[0, 0] == 65504
        np.testing.assert_array_equal(s.read_faces(7), table.video_embedding[7])
