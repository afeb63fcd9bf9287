"""Peak memory of DetectionPipeline against the clip's length: a 10 s 1080p clip vs a 3-minute one.

Reads CLIP (a 10 s 1920x1080 DFDC clip); writes a long copy of it (its video packets remuxed REPEAT
times one after the other, timestamps shifted, no re-encoding) into a temporary folder that is removed
at the end. Each clip is run through DetectionPipeline (untrained embedder, CPU) in a fresh child
process, whose peak resident memory (VmHWM of /proc, the kernel's high-water mark; ru_maxrss where there
is no /proc) is the figure: models, decoder and every frame held at once are all in it.

    python bench/bench_memory.py
Last line: peak_mb_10s=X peak_mb_3min=Y ratio=R   (bounded memory: R <= 1.5)
"""
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

from common.device import cpu_model  # noqa: E402
from common.video import remux  # noqa: E402

# ----------------------------------------------------------------------------- config
CLIP = '../shared/testdata/dfdc_sample/abofeumbvv.mp4'  # 10 s, 1920x1080, 300 frames
REPEAT = 18                 # the long clip is CLIP this many times over: 3 minutes
# -----------------------------------------------------------------------------

CHILD = r'''
import resource, sys, time
sys.path.insert(0, sys.argv[1])
import DetectionPipeline as dp
t0 = time.perf_counter()
faces = dp.DetectionPipeline(face_weights='none', device='cpu')(sys.argv[2])
seconds = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open('/proc/self/status') as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
except OSError:
    pass
faces_n = sum(len(t.frames) for t in faces.tracks)
print(f'{peak_kb / 1024:.0f} {seconds:.1f} {faces.n_frames} {len(faces.tracks)} {faces_n}')
'''


def peak(path):
    """(peak MB, seconds, frames decoded, tracks, faces) of DetectionPipeline on `path`, in a child."""
    out = subprocess.run([sys.executable, '-c', CHILD, ROOT, path], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f'error: the child failed on {path}:\n{out.stderr[-2000:]}')
    mb, seconds, n_frames, tracks, faces = out.stdout.split()[-5:]
    return float(mb), float(seconds), int(n_frames), int(tracks), int(faces)


def main():
    config.configure(globals())
    if not os.path.exists(CLIP):
        config.fail(f'{CLIP} is absent (../shared/testdata, see its README)')
    print(f'{cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}')
    with tempfile.TemporaryDirectory() as tmp:
        long_clip = os.path.join(tmp, 'long.mp4')
        remux(CLIP, long_clip, times=REPEAT)
        figures = {}
        for name, path in (('10s', CLIP), ('3min', long_clip)):
            mb, seconds, n_frames, tracks, faces = peak(path)
            figures[name] = mb
            print(f'{name}: {n_frames} frames, {tracks} track(s), {faces} faces, peak {mb:.0f} MB, '
                  f'{seconds:.1f} s')
    print(f'peak_mb_10s={figures["10s"]:.0f} peak_mb_3min={figures["3min"]:.0f} '
          f'ratio={figures["3min"] / figures["10s"]:.2f}')


if __name__ == '__main__':
    config.cli(main)
