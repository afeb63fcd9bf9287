"""Seconds per DFDC clip and peak memory of DetectionPipeline with each face encoder (FaceNet, GenD's CLIP).

Reads the 1080p clips of ../shared/testdata/dfdc_sample (CLIPS); writes nothing. Each encoder of ENCODERS
runs in a fresh child process (untrained, seeded weights: the same speed as the published ones) on the
device DetectionPipeline picks (CUDA where present, else the CPU; AMP: float16 on CUDA, bfloat16 on CPUs
with bf16 units): one warm-up call on WARMUP, then REPEAT calls on each clip. Figures per encoder: median
seconds per clip (and its decode, detect and embed parts), faces per clip, peak memory: the child's peak
resident memory (VmHWM) and, on CUDA, torch's peak allocated GPU memory.

    python bench/bench_encoders.py
    python bench/bench_encoders.py --encoders=gend --repeat=3
Last line: facenet_s=X gend_s=Y gend_over_facenet=R device=D
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

# ----------------------------------------------------------------------------- config
CLIPS = '../shared/testdata/dfdc_sample/lynaeydofd.mp4,../shared/testdata/dfdc_sample/brtujopkby.mp4,../shared/testdata/dfdc_sample/abofeumbvv.mp4'  # comma separated
WARMUP = '../shared/testdata/talking_heads/1.mp4'  # one call before the timed ones (lazy inits, caches)
ENCODERS = 'facenet,gend'   # DetectionPipeline's FACE_ENCODER values, comma separated
REPEAT = 1                  # timed calls on each clip
# -----------------------------------------------------------------------------

CHILD = r'''
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import DetectionPipeline as dp
encoder, warmup, clips, repeat = sys.argv[2], sys.argv[3], sys.argv[4].split(','), int(sys.argv[5])
t0 = time.perf_counter()
pipeline = dp.DetectionPipeline(face_encoder=encoder, face_weights='none')
load = time.perf_counter() - t0
pipeline(warmup)
if pipeline.device.type == 'cuda':
    torch.cuda.reset_peak_memory_stats(pipeline.device)
calls = []
for clip in clips:
    for _ in range(repeat):
        t0 = time.perf_counter()
        faces = pipeline(clip)
        calls.append((time.perf_counter() - t0, faces.seconds, sum(len(t.frames) for t in faces.tracks)))
with open('/proc/self/status') as f:
    peak_mb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024
gpu_mb = torch.cuda.max_memory_allocated(pipeline.device) / 2 ** 20 if pipeline.device.type == 'cuda' else None
median = lambda xs: statistics.median(xs)
print(json.dumps({'encoder': encoder, 'device': str(pipeline.device), 'load_s': load,
                  'seconds': median([c[0] for c in calls]),
                  'parts': {k: median([c[1][k] for c in calls]) for k in ('decode', 'detect', 'embed')},
                  'faces': median([c[2] for c in calls]), 'peak_rss_mb': peak_mb, 'peak_gpu_mb': gpu_mb,
                  'embedder': pipeline.embedder_name}))
'''


def run(encoder, clips):
    out = subprocess.run([sys.executable, '-c', CHILD, ROOT, encoder, os.path.join(ROOT, WARMUP), ','.join(clips),
                          str(REPEAT)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f'{encoder}: the child failed:\n{out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    config.configure(globals())
    import torch

    from common.device import cpu_model
    clips = [os.path.join(ROOT, c) for c in CLIPS.split(',')]
    threads = torch.get_num_threads()
    print(f'{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), '
          f'{len(clips)} clips x {REPEAT}, untrained weights')
    found = {}
    for encoder in ENCODERS.split(','):
        r = found[encoder] = run(encoder, clips)
        gpu = f', GPU peak {r["peak_gpu_mb"]:.0f} MB' if r['peak_gpu_mb'] is not None else ''
        print(f'{encoder} ({r["embedder"]}, {r["device"]}): {r["seconds"]:.2f} s a clip (decode '
              f'{r["parts"]["decode"]:.2f}, detect {r["parts"]["detect"]:.2f}, embed {r["parts"]["embed"]:.2f}; '
              f'{r["faces"]:.0f} faces), model load {r["load_s"]:.1f} s, peak RSS {r["peak_rss_mb"]:.0f} MB{gpu}')
    line = ' '.join(f'{e}_s={r["seconds"]:.2f}' for e, r in found.items())
    if {'facenet', 'gend'} <= set(found):
        line += f' gend_over_facenet={found["gend"]["seconds"] / found["facenet"]["seconds"]:.1f}'
    print(f'{line} device={next(iter(found.values()))["device"]}')


if __name__ == '__main__':
    config.cli(main)
