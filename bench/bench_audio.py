"""Speed of the audio half: extraction plus embedding of one 10 s DFDC clip, for each encoder.

Reads the clips of ../shared/testdata/dfdc_sample (CLIPS); writes their WAVs into a temporary folder,
removed at the end. In one process, after a warm-up on another clip (first calls are slow: oneDNN builds
its kernels for each new shape):
  extract - extract_audio.extract: PyAV decodes the AAC track, resamples it to 16 kHz mono, writes the WAV;
  embed   - create_audio_embedding.embed_row: the WAV read back, the log-mel / mel frames, the network.
A clip's time is extract + embed, the best of REPEAT passes; the figure is the mean over the clips.
create_audio_embedding.py's settings apply (--threads=2, --amp=true, --cnn_arch=resnext50_32x4d ...).

    python bench/bench_audio.py
Last line: seconds_per_clip_resemblyzer=X seconds_per_clip_cnn=Y
"""
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__, '../create_audio_embedding.py')  # -h: answered before the heavy imports

import numpy as np  # noqa: E402
import torch  # noqa: E402

import create_audio_embedding as cae  # noqa: E402
import extract_audio as ea  # noqa: E402
from common.device import cpu_model  # noqa: E402

# ----------------------------------------------------------------------------- config
CLIPS = '../shared/testdata/dfdc_sample/*.mp4'  # glob of the 10 s clips timed
WARMUP = '../shared/testdata/talking_heads/1.mp4'  # run through every path first, not timed
CNN_WEIGHTS = 'none'        # the CNN's weights do not change its speed (ImageNet's need a download)
REPEAT = 3                  # timed passes per clip and encoder (the best counts)
# -----------------------------------------------------------------------------


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main():
    audio, = config.configure(globals(), cae)  # the embedding's settings too: --threads=2, --amp=true
    clips = sorted(glob.glob(CLIPS))
    if not clips or not os.path.exists(WARMUP):
        raise config.UserError(f'no clip under {CLIPS} or no {WARMUP} (../shared/testdata absent?)')
    embedders = {name: cae.AudioEmbedder(**{**audio, 'audio_encoder': name, 'cnn_weights': CNN_WEIGHTS})
                 for name in ('resemblyzer', 'cnn')}
    print(f'{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, '
          f'THREADS={embedders["cnn"].cfg["threads"]}, AMP={embedders["cnn"].cfg["amp"]}, device {embedders["cnn"].device}; '
          f'{embedders["resemblyzer"].name}; {embedders["cnn"].name}')
    with tempfile.TemporaryDirectory() as audio_dir:
        for embedder in embedders.values():
            for _ in range(2):
                cae.embed_row(embedder, ea.extract(WARMUP, '', audio_dir), audio_dir)
        totals = {name: [] for name in embedders}
        for path in clips:
            extract = min(timed(lambda: ea.extract(path, '', audio_dir))[0] for _ in range(REPEAT))
            row = ea.extract(path, '', audio_dir)
            line = [f'{os.path.basename(path)} ({row["seconds"]:.1f} s, {row["source_rate"]} Hz): '
                    f'extract {extract:.3f} s']
            for name, embedder in embedders.items():
                embed = min(timed(lambda: cae.embed_row(embedder, row, audio_dir))[0] for _ in range(REPEAT))
                totals[name].append(extract + embed)
                line.append(f'{name} {embed:.3f} s')
            print(', '.join(line))
    print(f'seconds_per_clip_resemblyzer={np.mean(totals["resemblyzer"]):.3f} '
          f'seconds_per_clip_cnn={np.mean(totals["cnn"]):.3f}')


if __name__ == '__main__':
    config.cli(main)
