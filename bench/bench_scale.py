"""Extraction on two processes against one, on the same cores: does splitting the stage pay, and what does
the machinery around the videos cost?

Reads CLIPS (default: 4 talking heads and the 4 DFDC sample clips of ../shared/testdata), links them into a
DFDC part (a metadata.json and symbolic links) in a temporary folder, and runs create_video_embeddings.py
on it from an empty output, with --face_weights=none (the weights do not change the speed):
  1 process    `python create_video_embeddings.py ...`, torch on CORES threads (OMP_NUM_THREADS=CORES)
  2 processes  `python -m torch.distributed.run --standalone --nproc_per_node=2 create_video_embeddings.py ...`,
               CORES / 2 threads each (common.device.share_cpu, and OMP_NUM_THREADS)
Both commands are pinned to the same CORES cores (CPU affinity, inherited by torchrun's workers), so that
they compete for the same hardware. REPEAT rounds, the two commands alternating; each figure is the best
round's (the fastest wall time) of its command. Writes nothing but its report; the temporary folder is
removed at the end.

How the figures are made:
- wall: from just before the command starts to its exit, measured here: python's start, the imports,
  torchrun's own start and rendezvous, building the networks, the videos, merging the shards, the exit.
- video work: each process prints `N videos in S s of video work`, S timed by create_video_embeddings.py
  itself from just after the networks are built to the last video's result saved (its part file).
- overhead_fraction = (wall - the slowest process's video work) / wall: the share of the wall time that is
  not on the path of the videos (launch, imports, rendezvous, the networks' build, merging, exit). The time
  one process waits for the other (imbalance) is counted as video work, and printed apart. The single
  process's own overhead is printed too: most of it (imports, building the networks) is paid by both.
- speedup_2proc = wall(1 process) / wall(2 processes).
The clips are ordered so that each of the two processes (which take every other video of the sorted list)
gets two talking heads and two DFDC clips: with 8 clips one heavy clip more on one side would measure the
imbalance of a tiny set, not the cost of the machinery (on DFDC's 119,154 clips the shares even out).
The fixed costs (a few seconds: imports, the networks, torchrun's own start) do not grow with the videos;
--copies=4 links each clip under four names (32 videos) to show how they spread.

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

import pandas as pd  # noqa: E402

from common import config  # noqa: E402

# ----------------------------------------------------------------------------- config
CLIPS = ('../shared/testdata/talking_heads/1.mp4,../shared/testdata/talking_heads/2.mp4,'
         '../shared/testdata/talking_heads/3.mp4,../shared/testdata/talking_heads/4.mp4,'
         '../shared/testdata/dfdc_sample/abofeumbvv.mp4,../shared/testdata/dfdc_sample/brtujopkby.mp4,'
         '../shared/testdata/dfdc_sample/lynaeydofd.mp4,../shared/testdata/dfdc_sample/yhffcuhhjy.mp4')
CORES = 2                   # cores both runs are pinned to (the first CORES of this process's own)
REPEAT = 2                  # rounds of (1 process, 2 processes); the best round of each counts
COPIES = 1                  # each clip linked under this many names (more videos: the fixed costs spread)
WORK_DIR = ''               # where the data and tables go ('': a temporary folder, removed at the end)
# -----------------------------------------------------------------------------

WORK_LINE = re.compile(r'(?:rank (\d+)/\d+: )?(\d+) videos in ([\d.]+) s of video work')


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
                raise SystemExit(f'error: two clips named {name}')
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
        raise SystemExit(f'error: {" ".join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
    work = {int(m.group(1) or 0): float(m.group(3)) for m in WORK_LINE.finditer(proc.stdout)}
    return wall, work, pd.read_pickle(output)


def main():
    config.configure(globals())
    clips = [c.strip() for c in CLIPS.split(',') if c.strip()]
    missing = [c for c in clips if not os.path.exists(os.path.join(ROOT, c))]
    if missing:
        raise SystemExit(f'error: clips not found: {", ".join(missing)} (the real clips live in ../shared/testdata)')
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < CORES or CORES < 2 or CORES % 2:
        raise SystemExit(f'error: --cores={CORES}: needs an even number, at most the {len(mine)} this process has')
    cores = set(mine[:CORES])
    work_dir = WORK_DIR or tempfile.mkdtemp(prefix='bench_scale_')
    os.makedirs(work_dir, exist_ok=True)
    try:
        data = make_part(work_dir, [os.path.join(ROOT, c) for c in clips], COPIES)
        common = ['create_video_embeddings.py', f'--data_dir={data}', '--face_weights=none']
        one_out, two_out = os.path.join(work_dir, 'one.pkl'), os.path.join(work_dir, 'two.pkl')
        commands = {
            1: ([sys.executable, *common, f'--output={one_out}'], CORES, one_out),
            2: ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                 *common, f'--output={two_out}'], CORES // 2, two_out),
        }
        runs = {1: [], 2: []}
        for r in range(REPEAT):
            for n, (args, threads, out) in commands.items():
                wall, work, table = timed(args, cores, threads, out)
                if sorted(work) != list(range(n)):
                    raise SystemExit(f'error: expected the video-work line of {n} process(es), got {work}')
                print(f'round {r + 1}: {n} process(es) x {threads} thread(s): wall {wall:.2f} s, video work '
                      + ' / '.join(f'{work[k]:.2f}' for k in sorted(work)) + ' s')
                runs[n].append((wall, work, table))
        (wall1, work1, table1), (wall2, work2, table2) = min(runs[1], key=lambda x: x[0]), min(runs[2], key=lambda x: x[0])
    finally:
        if not WORK_DIR:
            shutil.rmtree(work_dir, ignore_errors=True)
    n = len(clips) * COPIES
    if table1.filename.tolist() != table2.filename.tolist() or len(table1) != n:
        raise SystemExit(f'error: the two runs embedded other videos: {table1.filename.tolist()} / '
                         f'{table2.filename.tolist()}')
    slowest = max(work2.values())
    overhead1 = (wall1 - work1[0]) / wall1
    overhead2 = (wall2 - slowest) / wall2
    print(f'machine: {platform.processor() or platform.machine()}, {CORES} of {os.cpu_count()} cores, '
          f'python {platform.python_version()}, {platform.platform()}')
    print(f'{n} videos: ' + ', '.join(os.path.basename(c) for c in clips) + (f', {COPIES} times' if COPIES > 1 else ''))
    print(f'1 process x {CORES} threads: wall {wall1:.2f} s, video work {work1[0]:.2f} s '
          f'({work1[0] / n:.2f} s a video), outside video work {wall1 - work1[0]:.2f} s ({overhead1:.1%})')
    print(f'2 processes x {CORES // 2} thread(s): wall {wall2:.2f} s, video work '
          + ' / '.join(f'{work2[k]:.2f}' for k in sorted(work2))
          + f' s (rank 0 / 1), outside video work {wall2 - slowest:.2f} s ({overhead2:.1%}), '
          f'imbalance {slowest - min(work2.values()):.2f} s')
    print(f'speedup_2proc={wall1 / wall2:.2f} overhead_fraction={overhead2:.3f}')


if __name__ == '__main__':
    main()
