"""The detector network: an LSTM over a window of face embeddings, joined with the audio embedding.

    faces (batch, crop, video_dim) --Linear--> (batch, crop, project), with each step's change from the
    previous step beside it (batch, crop, 2 * project) --LSTM--> the output at each video's last real
    step (batch, hidden)
    [that, audio (batch, audio_dim), has_audio (batch, 1)] --dropout, Linear, ReLU, dropout, Linear--> logit

A plain nn.Module built from a small config (NetworkConfig), which every checkpoint stores, so test.py and
predict.py rebuild it from the checkpoint alone. Reads and writes nothing.

Short sequences: a video where only a few frames had a face gives a window shorter than `crop`. It is
padded at the end to the batch's length, and its feature is the LSTM output at its own last real step
(lengths - 1). The LSTM is unidirectional, so that output never saw the padding: the padding's values
cannot change the logit (a test proves it). This is the same as a packed sequence, without packing's
cost on the CPU.
Audio: the network gets the audio embedding and the has_audio flag; a video without audio has a zero
embedding, and the flag tells that apart from a real embedding near zero.

    python network.py   # prints the default network and its parameter count
"""
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class NetworkConfig:
    video_dim: int = 512        # size of one face embedding (taken from the data)
    audio_dim: int = 256        # size of the audio embedding (taken from the data; 0: no audio)
    hidden: int = 128           # LSTM hidden size
    layers: int = 1             # LSTM layers
    fc: int = 64                # width of the fully connected layer after the join (0: straight to the logit)
    dropout: float = 0.3        # dropout before each linear layer (and between LSTM layers)
    crop: int = 20              # faces per window: 20 sampled frames = 4 s of a 30 fps clip at FRAME_STEP 6
    project: int = 128          # faces first go through a Linear layer to this size (0: the LSTM reads them raw)
    deltas: bool = True         # the LSTM also reads each (projected) face's change from the previous one


class Detector(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config if isinstance(config, NetworkConfig) else NetworkConfig(**config)
        c = self.config
        self.project = nn.Linear(c.video_dim, c.project) if c.project else nn.Identity()
        width = c.project or c.video_dim
        self.lstm = nn.LSTM(width * (2 if c.deltas else 1), c.hidden, num_layers=c.layers, batch_first=True,
                            dropout=c.dropout if c.layers > 1 else 0.0)
        joined = c.hidden + c.audio_dim + 1
        if c.fc:
            self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(joined, c.fc), nn.ReLU(),
                                      nn.Dropout(c.dropout), nn.Linear(c.fc, 1))
        else:
            self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(joined, 1))

    def forward(self, faces, lengths, audio, has_audio):
        """faces (batch, time, video_dim), lengths (batch,) >= 1, audio (batch, audio_dim), has_audio (batch,)
        -> logits (batch,): > 0 means FAKE."""
        x = self.project(faces)                                     # (batch, time, project)
        if self.config.deltas:
            # x_t - x_{t-1} (0 at t = 0): flicker between frames is a difference, which the LSTM would
            # otherwise have to learn to compute from two of its inputs (it learns slowly, if at all).
            # Taken after the projection, which is linear: the same information at a quarter of the cost.
            x = torch.cat([x, torch.diff(x, dim=1, prepend=x[:, :1])], dim=2)  # (batch, time, 2 * project)
        out, _ = self.lstm(x)                                       # (batch, time, hidden)
        last = (lengths.to(out.device).long() - 1).clamp(min=0)     # (batch,) index of the last real step
        feature = out[torch.arange(len(out), device=out.device), last]  # (batch, hidden)
        flag = has_audio.to(feature.dtype).unsqueeze(1)             # (batch, 1)
        joined = torch.cat([feature, audio.to(feature.dtype), flag], dim=1)  # (batch, hidden + audio_dim + 1)
        return self.head(joined).squeeze(1)                         # (batch,)

    def config_dict(self):
        return asdict(self.config)


def build(config):
    """A Detector from a NetworkConfig or its dict (as a checkpoint stores it)."""
    return Detector(config)


if __name__ == '__main__':
    import sys
    from common import config
    if {'-h', '--help'} & set(sys.argv[1:]):
        print(__doc__.strip())
        raise SystemExit(0)
    if sys.argv[1:]:  # training.py's --hidden, --layers, ... build the network
        config.fail(f'network.py takes no settings ({sys.argv[1]}): training.py\'s --hidden, --layers, --project, '
                    f'--fc, --dropout and --deltas shape the network')
    net = build(NetworkConfig())
    print(net)
    print(f'{sum(p.numel() for p in net.parameters()):,} parameters')
