"""network.py: short sequences are masked, has_audio reaches the network, the config rebuilds it;
model.py's windows; common/lazytable.py's cache holds exactly the table."""
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch

from common.stage import key
from common.lazytable import TableError, open_table
from model import synthetic_table, window_starts
from network import NetworkConfig, build

torch.set_num_threads(1)


def small_net(**kw):
    torch.manual_seed(0)
    return build(NetworkConfig(video_dim=16, audio_dim=8, hidden=12, fc=6, project=10, crop=6, **kw)).eval()


@pytest.mark.parametrize('deltas', [True, False])
def test_padding_is_never_read(deltas):
    net = small_net(deltas=deltas)
    short = torch.randn(1, 3, 16)                        # a video with only 3 faces
    audio, flag = torch.randn(1, 8), torch.ones(1)
    alone = net(short, torch.tensor([3]), audio, flag)
    for fill in (0.0, 1e3, float('nan')):
        padded = torch.cat([short, torch.full((1, 3, 16), fill)], dim=1)  # (1, 6, 16)
        out = net(padded, torch.tensor([3]), audio, flag)
        assert torch.allclose(out, alone, atol=1e-6), fill
    # in a batch beside a full-length window, the short one still gives its own logit
    full = torch.randn(1, 6, 16)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 3, 16)], dim=1), full])
    out = net(batch, torch.tensor([3, 6]), audio.repeat(2, 1), flag.repeat(2))
    assert torch.allclose(out[0], alone[0], atol=1e-6)
    assert torch.allclose(out[1], net(full, torch.tensor([6]), audio, flag)[0], atol=1e-6)


def test_has_audio_reaches_the_network():
    net = small_net()
    faces, lengths, audio = torch.randn(2, 6, 16), torch.tensor([6, 6]), torch.zeros(2, 8)
    with_flag = net(faces, lengths, audio, torch.tensor([True, True]))
    without = net(faces, lengths, audio, torch.tensor([False, False]))
    assert not torch.allclose(with_flag, without)


def test_rebuilt_from_its_config():
    net = small_net()
    copy = build(net.config_dict())
    copy.load_state_dict(net.state_dict())
    copy.eval()
    x = (torch.randn(3, 6, 16), torch.tensor([6, 2, 4]), torch.randn(3, 8), torch.tensor([True, False, True]))
    assert torch.equal(net(*x), copy(*x))


def test_window_starts_cover_the_video():
    assert window_starts(50, 20, 10) == [0, 10, 20, 30]
    assert window_starts(45, 20, 10) == [0, 10, 20, 25]    # the last window ends on the last face
    assert window_starts(20, 20, 10) == [0]
    assert window_starts(5, 20, 10) == [0]                 # short: one window of all its faces


def write(table, path):
    table.to_pickle(path)
    return str(path)


def test_cache_holds_exactly_the_table(tmp_path):
    table = synthetic_table(30, faces=9, min_faces=1, video_dim=12, audio_dim=5, seed=3)
    faces = list(table.video_embedding)
    faces[4] = np.zeros((0, 12), np.float16)                                    # a video without faces
    faces[5] = np.asfortranarray(np.random.rand(7, 12).astype(np.float16))      # pickled in Fortran order
    table['video_embedding'] = faces
    path = write(table, tmp_path / 'merged.pkl')
    with open_table(path, log=lambda *_: None) as t:
        assert (len(t), t.video_dim, t.audio_dim) == (30, 12, 5)
        audio = t.read_audio(np.arange(30))
        for i, row in table.iterrows():
            assert np.array_equal(t.read_faces(i), row.video_embedding)
            assert np.array_equal(audio[i], row.audio_embedding if row.has_audio else np.zeros(5))
            assert t.labels[i] == row.label and t.has_audio[i] == row.has_audio
            # a group is named after the video its chain starts from: its folder and name
            assert t.groups[i] == key(row.folder, row.original if isinstance(row.original, str) else row.filename)
        assert np.array_equal(t.read_faces(6, 2, 3), table.video_embedding[6][2:5])


def test_cache_follows_the_table_and_other_layouts(tmp_path):
    table = synthetic_table(6, faces=4, video_dim=3, audio_dim=2, seed=1)
    path = write(table, tmp_path / 'merged.pkl')
    open_table(path, log=lambda *_: None).close()
    # rewritten with float32 faces (not streamed: loaded, then written): the cache is rebuilt
    table['video_embedding'] = [e.astype(np.float32) + 1 for e in table.video_embedding]
    time.sleep(0.01)
    write(table, path)
    cache = path + '.cache'
    leftover = os.path.join(cache, '.faces.f16.k1ll3d00.tmp')  # a build killed before its rename
    with open(leftover, 'wb') as f:
        f.write(b'half')
    built = []
    with open_table(path, log=built.append) as t:
        assert built, 'a changed table must rebuild its cache'
        assert sorted(os.listdir(cache)) == ['audio.f32', 'faces.f16', 'index.pkl', 'meta.json']
        assert np.array_equal(t.read_faces(2), table.video_embedding[2].astype(np.float16))


def test_bad_tables_are_one_clear_error(tmp_path):
    with pytest.raises(TableError, match='no column video_embedding'):
        open_table(write(pd.DataFrame({'filename': ['a.mp4']}), tmp_path / 'a.pkl'), log=lambda *_: None)
    text = tmp_path / 'b.pkl'
    text.write_text('not a pickle')
    with pytest.raises(TableError, match='not an uncompressed pickle'):
        open_table(str(text), log=lambda *_: None)
    with pytest.raises(TableError, match='no such file'):
        open_table(str(tmp_path / 'missing.pkl'))
    table = synthetic_table(3, faces=2, video_dim=3, audio_dim=2)
    table['label'] = ['FAKE', 0, 1]
    with pytest.raises(TableError, match='label must be 1'):
        open_table(write(table, tmp_path / 'c.pkl'), log=lambda *_: None)
    assert not os.path.exists(tmp_path / 'c.pkl.cache' / 'meta.json')
