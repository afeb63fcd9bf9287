"""network.py: short sequences are masked, has_audio reaches the network, the config rebuilds it;
model.py's windows."""

import pytest
import torch

from model import window_starts
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
        # float32 logits ~1: another length may sum in another order (~1e-7); padding read (1e3, NaN) moves
        # them far more
        assert torch.allclose(out, alone, atol=1e-6), fill
    # in a batch beside a full-length window, the short one still gives its own logit
    full = torch.randn(1, 6, 16)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 3, 16)], dim=1), full])
    out = net(batch, torch.tensor([3, 6]), audio.repeat(2, 1), flag.repeat(2))
    assert torch.allclose(out[0], alone[0], atol=1e-6)  # as above: another batch, another order of sums
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
