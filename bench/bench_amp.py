"""Seconds to embed a clip's faces on the CPU in float32 and in bfloat16, for each face encoder, and which of
the two the stages take here (common.device.cpu_has_bf16: bfloat16 only with AVX512-BF16 or AMX units).

Reads nothing (random face crops, untrained seeded weights: the same speed as the published ones); writes
nothing. bfloat16 is timed even where the stages would not take it. ONEDNN_MAX_CPU_ISA=AVX512_CORE runs
oneDNN as on an AVX-512 CPU without bfloat16 units (Skylake-SP to Ice Lake), where it emulates bfloat16.

    python bench/bench_amp.py
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python bench/bench_amp.py --faces=10
Last line: facenet_fp32_s=A facenet_bf16_s=B gend_fp32_s=C gend_bf16_s=D default=bfloat16|float32
"""
import os
import statistics
import sys
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

# ----------------------------------------------------------------------------- config
ENCODERS = 'facenet,gend'   # DetectionPipeline's FACE_ENCODER values, comma separated
FACES = 50                  # faces embedded in each timed call (a DFDC clip's, every 6th frame)
REPEAT = 3                  # timed calls of each encoder and type, after one warm-up call
# -----------------------------------------------------------------------------


def seconds(encoder, crops, bf16):
    """The median seconds of REPEAT calls embedding `crops` on the CPU, bfloat16 forced on or off."""
    import torch

    from faces.nets import Nets
    torch.manual_seed(0)
    with mock.patch('common.device.cpu_has_bf16', return_value=bf16):  # the type is chosen as the nets are built
        nets = Nets(torch.device('cpu'), 'none', amp=True, face_encoder=encoder)
        nets.embed(crops[:2])
        times = []
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            nets.embed(crops)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    config.configure(globals())
    import numpy as np
    import torch

    from common.device import cpu_has_bf16, cpu_model
    default = 'bfloat16' if cpu_has_bf16() else 'float32'
    print(f'{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, kernels '
          f'{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA={os.environ.get("ONEDNN_MAX_CPU_ISA", "-")}, '
          f'{FACES} faces a call; the stages take {default} here')
    line = []
    for encoder in ENCODERS.split(','):
        size = 160 if encoder == 'facenet' else 256  # the pipeline's crops: FaceNet's, the ViTs' aligned ones
        crops = np.random.default_rng(0).integers(0, 256, (FACES, size, size, 3), dtype=np.uint8)
        fp32, bf16 = seconds(encoder, crops, False), seconds(encoder, crops, True)
        print(f'{encoder}: float32 {fp32:.2f} s, bfloat16 {bf16:.2f} s ({fp32 / bf16:.2f}x float32\'s speed)')
        line += [f'{encoder}_fp32_s={fp32:.2f}', f'{encoder}_bf16_s={bf16:.2f}']
    print(' '.join(line + [f'default={default}']))


if __name__ == '__main__':
    config.cli(main)
