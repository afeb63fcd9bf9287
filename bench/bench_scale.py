"""Extraction on two processes against one, on the same cores: does splitting the stage pay, and what does
the machinery around the videos cost?

Reads CLIPS (default: 4 talking heads and the 4 DFDC sample clips of ../shared/testdata), links them into a
DFDC part (a metadata.json and symbolic links) in a temporary folder, and runs create_video_embeddings.py
on it from an empty output, with --face_weights=none (the weights do not change the speed), two ways:
  1 process            `python create_video_embeddings.py ...`, torch on CORES threads (OMP_NUM_THREADS)
  2 processes, torchrun `python -m torch.distributed.run --standalone --nproc_per_node=2 create_video_...`
The workers run CORES / 2 torch threads each (common.device.share_cpu; OMP_NUM_THREADS for torchrun's).
Every command is pinned to the same CORES cores (CPU affinity, inherited by the workers), so that they
compete for the same hardware. REPEAT rounds, the commands in turn; each figure is its command's best
round (the fastest wall time). Writes nothing but its report; the temporary folder is removed at the end.

How the figures are made:
- wall: from just before the command starts to its exit, measured here.
- video work: each process prints `N videos in S s of video work`, S timed by create_video_embeddings.py
  itself from just after the networks are built to its last video's result saved (its part file).
- outside video work = wall - the slowest process's video work. For one process that is Python's start,
  the imports, building the networks, writing the table and the exit; two processes pay the same, and
  besides: the launch (torchrun's own start, which imports torch, or the fork), the rendezvous, the
  markers and the merge of the shards, and any slowdown of the imports when two run at once.
- overhead_fraction = (outside(2) - outside(1)) / wall(2): the share of the two-process run's time that
  the machinery of several processes costs (launch, rendezvous, merging shards), over what any run
  spends outside its videos. The strict share (outside(2) / wall(2)) is printed beside it. The time one
  process waits for the other (imbalance) counts as video work, and is printed apart.
- speedup_2proc = wall(1 process) / wall(2 processes).
The clips are ordered so that each of the two processes (which take every other video of the sorted list)
gets two talking heads and two DFDC clips: with 8 clips one heavy clip more on one side would measure the
imbalance of a tiny set, not the cost of the machinery (on DFDC's 119,154 clips the shares even out).
--copies=4 links each clip under four names (32 videos) to show how the fixed costs spread.

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
