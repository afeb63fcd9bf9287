"""Extraction on two processes against one, on the same cores: does splitting the stage pay, and what does
the machinery around the videos cost?

Reads CLIPS (default: 4 talking heads and the 4 DFDC sample clips of ../shared/testdata), links each under
COPIES names into a DFDC part in a temporary folder (removed at the end; it writes nothing but its report)
and runs create_video_embeddings.py --face_weights=none on it from an empty output, pinned to CORES cores:
one process on CORES torch threads, and `python -m torch.distributed.run --standalone --nproc_per_node=2`
on CORES / 2 each. REPEAT rounds, the two in turn; each figure is its command's fastest round. The clips
are ordered so that each process gets two talking heads and two DFDC clips (imbalance would swamp the overhead).
- wall: measured here around the command. video work: each process's `N videos in S s of video work`
  (from its networks built to its last result saved). outside = wall - the slowest process's video work.
- overhead_fraction = (outside(2) - outside(1)) / wall(2): what the machinery of several processes costs
  (torchrun's start, the rendezvous, merging the shards) beyond what any run spends outside its videos
  (Python's start, the imports, the networks' build, the table, the exit). outside(2) / wall(2) is printed
  too, and the imbalance (one process waiting for the other, counted as video work) apart.
- speedup_2proc = wall(1 process) / wall(2 processes).

    python bench/bench_scale.py
Last line: speedup_2proc=X overhead_fraction=Y
"""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import pandas as pd  # noqa: E402


# ----------------------------------------------------------------------------- config
CLIPS = ('../shared/testdata/talking_heads/1.mp4,../shared/testdata/talking_heads/2.mp4,'
         '../shared/testdata/talking_heads/3.mp4,../shared/testdata/talking_heads/4.mp4,'
         '../shared/testdata/dfdc_sample/abofeumbvv.mp4,../shared/testdata/dfdc_sample/brtujopkby.mp4,'
         '../shared/testdata/dfdc_sample/lynaeydofd.mp4,../shared/testdata/dfdc_sample/yhffcuhhjy.mp4')  # comma separated
CORES = 2                   # cores both runs are pinned to (the first CORES of this process's own)
REPEAT = 2                  # rounds of (1 process, 2 processes); the best round of each counts
COPIES = 1                  # each clip linked under this many names (more videos: the fixed costs spread)
WORK_DIR = ''               # where the data and tables go ('': a temporary folder, removed at the end)
# -----------------------------------------------------------------------------

RUNS = {'one': '1 process x {cores} threads', 'torchrun': '2 processes x {half} thread(s), torchrun'}
WORK_LINE = re.compile(r'(?:rank (\d+)/\d+: )?(\d+) videos in ([\d.]+) s of video work')


def label(run):
    return RUNS[run].format(cores=CORES, half=CORES // 2)


def make_part(folder, clips, copies=1):
    """A DFDC part of links to the clips, named by their own file names (sorted: talking heads first),
    each clip `copies` times (c0_NAME, c1_NAME, ... where copies > 1)."""
    part = os.path.join(folder, 'data', 'part')
    os.makedirs(part, exist_ok=True)
    meta = {}
    for copy in range(copies):
        for clip in clips:
            name = os.path.basename(clip) if copies == 1 else f'c{copy}_{os.path.basename(clip)}'
            if name in meta:
                raise config.UserError(f'two clips named {name}')
            os.symlink(os.path.abspath(clip), os.path.join(part, name))
            meta[name] = {'label': 'REAL', 'split': 'train', 'original': None}
    with open(os.path.join(part, 'metadata.json'), 'w', encoding='utf-8') as f:
        json.dump(meta, f)
    return os.path.dirname(part)


def timed(args, cores, threads, output):
    """Run one extraction from an empty output: (wall seconds, {rank: video-work seconds}, table)."""
    for path in (output, output + '.failures.csv'):
        if os.path.exists(path):
            os.remove(path)
    shutil.rmtree(output + '.parts', ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise config.UserError(f'{" ".join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
    work = {int(m.group(1) or 0): float(m.group(3)) for m in WORK_LINE.finditer(proc.stdout)}
    return wall, work, pd.read_pickle(output)


def main():
    config.configure(globals())
    clips = [c.strip() for c in CLIPS.split(',') if c.strip()]
    missing = [c for c in clips if not os.path.exists(os.path.join(ROOT, c))]
    if missing:
        raise config.UserError(f'clips not found: {", ".join(missing)} (the real clips live in ../shared/testdata)')
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < CORES or CORES < 2 or CORES % 2:
        raise config.UserError(f'--cores={CORES}: needs an even number, at most the {len(mine)} this process has')
    cores = set(mine[:CORES])
    work_dir = WORK_DIR or tempfile.mkdtemp(prefix='bench_scale_')
    os.makedirs(work_dir, exist_ok=True)
    try:
        data = make_part(work_dir, [os.path.join(ROOT, c) for c in clips], COPIES)
        common = ['create_video_embeddings.py', f'--data_dir={data}', '--face_weights=none']
        out = {k: os.path.join(work_dir, f'{k}.pkl') for k in RUNS}
        commands = {
            'one': ([sys.executable, *common, f'--output={out["one"]}'], CORES),
            'torchrun': ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          *common, f'--output={out["torchrun"]}'], CORES // 2),
        }
        runs = {k: [] for k in RUNS}
        for r in range(REPEAT):
            for k in RUNS:
                args, threads = commands[k]
                wall, work, table = timed(args, cores, threads, out[k])
                n_procs = 1 if k == 'one' else 2
                if sorted(work) != list(range(n_procs)):
                    raise config.UserError(f'expected the video-work line of {n_procs} process(es), got {work}')
                print(f'round {r + 1}: {label(k)}: wall {wall:.2f} s, video work '
                      + ' / '.join(f'{work[p]:.2f}' for p in sorted(work)) + ' s', flush=True)
                runs[k].append((wall, work, table))
        best = {k: min(v, key=lambda x: x[0]) for k, v in runs.items()}
    finally:
        if not WORK_DIR:
            shutil.rmtree(work_dir, ignore_errors=True)
    n = len(clips) * COPIES
    names = best['one'][2].filename.tolist()
    if len(names) != n or any(best[k][2].filename.tolist() != names for k in RUNS):
        raise config.UserError('the runs embedded other videos: '
                         + ' / '.join(str(best[k][2].filename.tolist()) for k in RUNS))
    print(f'machine: {platform.processor() or platform.machine()}, {CORES} of {os.cpu_count()} cores, '
          f'python {platform.python_version()}, {platform.platform()}')
    print(f'{n} videos: ' + ', '.join(os.path.basename(c) for c in clips) + (f', {COPIES} times' if COPIES > 1 else ''))
    wall1, work1, _ = best['one']
    outside1 = wall1 - work1[0]
    print(f'{label("one")}: wall {wall1:.2f} s, video work {work1[0]:.2f} s ({work1[0] / n:.2f} s a video), '
          f'outside video work {outside1:.2f} s ({outside1 / wall1:.1%})')
    for k in ('torchrun',):
        wall, work, _ = best[k]
        slowest = max(work.values())
        outside = wall - slowest
        print(f'{label(k)}: wall {wall:.2f} s, video work ' + ' / '.join(f'{work[p]:.2f}' for p in sorted(work))
              + f' s (rank 0 / 1), imbalance {slowest - min(work.values()):.2f} s, outside video work '
              f'{outside:.2f} s ({outside / wall:.1%}), of which the machinery {outside - outside1:.2f} s')
        print(f'speedup_2proc={wall1 / wall:.2f} overhead_fraction={(outside - outside1) / wall:.3f}')


if __name__ == '__main__':
    config.cli(main)
