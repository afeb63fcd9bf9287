"""Memory and speed of training as the table grows: peak resident memory must stay flat.

Writes synthetic merged tables and their training stores (`model.py --output`: FACES x VIDEO_DIM float16
faces and an AUDIO_DIM audio embedding per video, DFDC's share of fakes) of each size in SIZES to WORK_DIR,
then measures, each in a separate process whose peak RSS (ru_maxrss, from os.wait4) is its own:
  pickle     pandas.read_pickle of the table: what loading the table whole would cost (for contrast)
  training   `training.py --max_epochs=1`: one epoch and its validation, through the store
Throughput is the training epoch's (training videos / seconds of the epoch) on the largest table.
rss_ratio is the training process's peak RSS, largest table / smallest (target: <= 1.1).

    python bench/bench_training.py
Last line: rss_ratio=X videos_per_second=Y
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports


# ----------------------------------------------------------------------------- config
SIZES = '2000,20000'        # videos per table, comma-separated (the first and last are compared)
FACES = 50                  # faces per video
VIDEO_DIM = 512             # face embedding size
AUDIO_DIM = 256             # audio embedding size
WORK_DIR = ''               # where the tables go ('': a temporary folder, removed at the end)
THREADS = 1                 # training.py's --threads (0: torch's default, one per core)
SEED = 0                    # tables and training
# -----------------------------------------------------------------------------


def measured(args):
    """Run a child to completion: (peak RSS in MiB, seconds, its stdout); a failure stops the bench."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f'error: {" ".join(args)} failed ({proc.returncode}):\n{out[-2000:]}')
    return usage.ru_maxrss / 1024, seconds, out  # ru_maxrss is in KiB on Linux


def main():
    config.configure(globals())
    sizes = [int(s) for s in SIZES.split(',')]
    work = WORK_DIR or tempfile.mkdtemp(prefix='bench_training_')
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    print(f'machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, '
          f'{platform.platform()}')
    print(f'tables: {FACES} x {VIDEO_DIM} float16 faces + {AUDIO_DIM} float32 audio per video, in {work}')
    rows = {}
    try:
        for n in sizes:
            table = os.path.join(work, f'synthetic_{n}.pkl')
            t0 = time.perf_counter()
            subprocess.run([py, 'model.py', f'--output={table}', f'--videos={n}', f'--faces={FACES}',
                            f'--video_dim={VIDEO_DIM}', f'--audio_dim={AUDIO_DIM}', f'--seed={SEED}'],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            size_mb = os.path.getsize(table) / 2**20
            print(f'{n} videos: table {size_mb:.0f} MiB written in {time.perf_counter() - t0:.1f} s')
            pickle_rss, pickle_s, _ = measured([py, '-c', f'import pandas; pandas.read_pickle({table!r})'])
            run_dir = os.path.join(work, f'run_{n}')
            train_rss, train_s, out = measured([
                py, 'training.py', f'--dataset={table}', f'--out_dir={run_dir}', '--max_epochs=1',
                '--resume=false', '--progress=false', f'--threads={THREADS}', f'--seed={SEED}'])
            with open(os.path.join(run_dir, 'history.json'), encoding='utf-8') as f:
                epoch = json.load(f)[0]
            rows[n] = dict(pickle=pickle_rss, training=train_rss, vps=epoch['videos_per_second'])
            print(f'{n} videos: peak RSS pandas.read_pickle {pickle_rss:.0f} MiB ({pickle_s:.1f} s), '
                  f'training one epoch {train_rss:.0f} MiB '
                  f'({train_s:.1f} s in all; epoch {epoch["train_seconds"]:.1f} s, '
                  f'{epoch["videos_per_second"]:.0f} videos/s)')
    finally:
        if not WORK_DIR:
            shutil.rmtree(work, ignore_errors=True)
    small, large = rows[sizes[0]], rows[sizes[-1]]
    ratios = {k: large[k] / small[k] for k in ('pickle', 'training')}
    grown = {k: (large[k] - small[k]) * 1024 / (sizes[-1] - sizes[0]) for k in ratios}  # KiB per added video
    print(f'peak RSS ratio {sizes[-1]} / {sizes[0]} videos (growth per added video): pandas.read_pickle '
          f'{ratios["pickle"]:.2f} ({grown["pickle"]:.1f} KiB, for contrast), training {ratios["training"]:.2f} '
          f'({grown["training"]:.1f} KiB)')
    print(f'rss_ratio={ratios["training"]:.2f} videos_per_second={large["vps"]:.0f}')


if __name__ == '__main__':
    config.cli(main)
