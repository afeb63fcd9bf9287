"""Throughput of the face stage and of predict.py on DFDC's 1080p clips, against the CPU's decoding ceiling.

Reads the 1080p clips of ../shared/testdata/dfdc_sample (or CLIPS); writes only in a temporary folder: a
DFDC part of NAMES symbolic links to them (c000_<clip>.mp4, ...) and its metadata.json. Runs as it is on a
one-GPU machine and on a CPU-only one (each script's default device). In one run:
  decode_ceiling - usable_cores() processes at once, each decoding whole clips with one PyAV thread (the 50
                   sampled frames converted to RGB), nothing else running: names / wall;
  stage          - create_video_embeddings.py on the part with its defaults (and EXTRA): N / S of its
                   `N videos in S s of video work` line(s) (several processes: the total over the
                   slowest's S), exit 1 unless it embedded every video; its wall too;
  predict        - predict.py on the part, with a checkpoint trained like bench_predict.py's (with GenD's encoders
                   none: their head scores): its `X videos/s`;
  stages         - DetectionPipeline in this process (EXTRA's settings of it): a warm-up call on each clip, then
                   REPEAT calls on each: median decode, detect and embed seconds per clip; detect_ms: the
                   median detect of all;
  host syncs     - on CUDA, the synchronizing CUDA operations of one call on one clip, counted with
                   torch.cuda.set_sync_debug_mode('warn');
  nvdec          - where GPU 0's NVDEC decodes (common.video.nvdec_error), the decode ceiling, the stage and
                   predict.py again with --decoder=nvdec (else the reason it cannot, in one line).

    python bench/bench_gpu.py
    python bench/bench_gpu.py --extra='--workers=8'
Last line: clips_per_second=X predict_clips_per_second=Y decode_ceiling=C detect_ms=Z device=D
"""
import datetime
import glob
import json
import math
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

from common.device import cpu_model  # noqa: E402
from common.video import nvdec_error, probe, sampled_frames  # noqa: E402

# ----------------------------------------------------------------------------- config
CLIPS = '../shared/testdata/dfdc_sample/*.mp4'  # glob of clips (from the repo root); only those >= MIN_HEIGHT
MIN_HEIGHT = 1080           # the 1080p clips (landscape or portrait: the short side)
NAMES = 96                  # at least this many names in the part: ceil(NAMES / clips) copies of each clip
FACE_WEIGHTS = 'none'       # the embedder's weights do not change its speed
REPEAT = 3                  # timed DetectionPipeline calls on each clip, after one warm-up call each
EXTRA = ''                  # more --name=value settings for both subprocesses, space separated: '--workers=8'
OTHER_WORKERS = ''          # also time the stage alone with these --workers, comma separated: '8,20'
# -----------------------------------------------------------------------------

WORK_LINE = re.compile(r'(?:rank \d+/\d+: )?(\d+) videos in ([\d.]+) s of video work')
RATE_LINE = re.compile(r', ([\d.]+) videos/s;')


def one_thread():
    """Pool initializer: one core per decoding process (OMP_NUM_THREADS=1 is set before they start)."""
    import cv2
    cv2.setNumThreads(1)


def decode(path, gpu=None):
    """Decode one clip as the pipeline does, on one PyAV thread (or GPU `gpu`'s NVDEC); its sampled frames."""
    return sum(1 for _ in sampled_frames(path, 6, threads=1, gpu=gpu))


def decode_ceiling(paths, procs, gpu=None):
    """Clips per second of `procs` processes decoding `paths` at once, each one clip after another."""
    omp = os.environ.get('OMP_NUM_THREADS')
    os.environ['OMP_NUM_THREADS'] = '1'  # read by the libraries as the processes import them
    pool = multiprocessing.get_context('spawn').Pool(procs, initializer=one_thread)
    if omp is None:
        del os.environ['OMP_NUM_THREADS']
    else:
        os.environ['OMP_NUM_THREADS'] = omp
    with pool:
        pool.map(time.sleep, [1.0] * procs, chunksize=1)  # every process started before the clock
        t0 = time.perf_counter()
        frames = pool.starmap(decode, [(path, gpu) for path in paths], chunksize=1)
        wall = time.perf_counter() - t0
    assert min(frames) > 0, 'a clip decoded to no frame'
    return len(paths) / wall


def command(*args):
    """Run a repo script; (wall seconds, stdout). On failure its stderr's tail, and exit 1."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args, *EXTRA.split()], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f'error: {" ".join(args[:1])} exited with {done.returncode}:\n{done.stderr[-3000:]}', file=sys.stderr)
        raise SystemExit(1)
    return wall, done.stdout


def video_work(out):
    """(videos, seconds) of the stage's `N videos in S s of video work` lines: several processes' videos
    add up, over the slowest one's seconds."""
    work = [(int(n), float(s)) for n, s in WORK_LINE.findall(out)]
    assert work, f'no "N videos in S s of video work" line in:\n{out}'
    return sum(n for n, _ in work), max(s for _, s in work)


def make_part(folder, clips, copies):
    """A DFDC part: copies x clips symbolic links and a metadata.json, labels from the clips' own one."""
    source = {}
    meta_path = os.path.join(os.path.dirname(clips[0]), 'metadata.json')
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            source = json.load(f)
    os.makedirs(folder)
    meta = {}
    for k in range(copies):
        for path in clips:
            entry = source.get(os.path.basename(path), {'label': 'FAKE', 'original': None})
            name = f'c{k:03d}_{os.path.basename(path)}'
            os.symlink(path, os.path.join(folder, name))
            meta[name] = {'label': entry['label'], 'original': entry.get('original')}
    with open(os.path.join(folder, 'metadata.json'), 'w') as f:
        json.dump(meta, f)
    return sorted(os.path.join(folder, n) for n in meta)


def host_syncs(pipeline, clip):
    """Synchronizing CUDA operations in one call (PyTorch warns 'called a synchronizing CUDA operation')."""
    import torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        pipeline(clip)
        torch.cuda.set_sync_debug_mode(0)
    return sum('synchroniz' in str(w.message) for w in caught)


def stage_rate(tmp, out_name, *settings):
    """create_video_embeddings.py on the part: clips per second of video work, and its wall."""
    wall, out = command('create_video_embeddings.py', f'--data_dir={tmp}', f'--output={tmp}/{out_name}',
                        f'--face_weights={FACE_WEIGHTS}', *settings)
    n, seconds = video_work(out)
    return n / seconds, n, seconds, wall


def predict_rate(tmp, ckpt, out_name, *settings):
    """predict.py on the part: its videos/s, its fallbacks, and its wall."""
    wall, out = command('predict.py', f'--input={tmp}/part', f'--checkpoint={ckpt}', f'--output={tmp}/{out_name}',
                        f'--face_weights={FACE_WEIGHTS}', *settings)
    rate = RATE_LINE.findall(out)
    fallbacks = re.findall(r'(\d+) fallbacks', out)
    assert len(rate) == 1 and fallbacks, f'no ", X videos/s; N fallbacks" line in:\n{out}'
    return float(rate[0]), fallbacks[0], wall


def main():
    config.configure(globals())
    import pandas
    import torch
    import DetectionPipeline as dp
    from common.weights import has_head
    # EXTRA's DetectionPipeline.py settings (it may hold the stage's or predict.py's too), for this process's own
    known = {name.lower() for name in config.constants(dp, shared_only=True)}
    face = config.apply([a for a in EXTRA.split() if a[2:].split('=', 1)[0].lower() in known], {}, dp, quiet=True)[1][0]
    pipeline = dp.DetectionPipeline(**{'face_weights': FACE_WEIGHTS, **face})  # idle while the subprocesses run
    from common.device import usable_cores
    pattern = CLIPS if os.path.isabs(CLIPS) else os.path.join(ROOT, CLIPS)
    clips = sorted(os.path.abspath(p) for p in glob.glob(pattern)
                   if min(probe(p)['width'], probe(p)['height']) >= MIN_HEIGHT)
    if not clips:
        raise config.UserError(f'no clip of {MIN_HEIGHT}p under {CLIPS} (../shared/testdata absent?)')
    copies = math.ceil(NAMES / len(clips))
    cores = usable_cores()
    gpu = f', GPU {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ', no GPU'
    print(f'{platform.system()} {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores ({cores} usable), '
          f'torch {torch.__version__}{gpu}, {datetime.date.today()}; {len(clips)} clips x {copies} = '
          f'{len(clips) * copies} names, EXTRA={EXTRA!r}')
    with tempfile.TemporaryDirectory() as tmp:
        names = make_part(os.path.join(tmp, 'part'), clips, copies)
        ceiling = decode_ceiling(names, cores)
        print(f'decode ceiling: {ceiling:.2f} clips/s ({cores} processes, one PyAV thread each)')

        stage, n, seconds, wall = stage_rate(tmp, 'v.pkl')
        embedded = pandas.read_pickle(f'{tmp}/v.pkl')['filename'].nunique()
        if embedded != len(names):  # failed videos are quick: their rate would be no figure
            with open(f'{tmp}/v.pkl.failures.csv') as f:
                print(f'error: the stage embedded {embedded} of {len(names)} videos:\n{f.read()[-3000:]}',
                      file=sys.stderr)
            raise SystemExit(1)
        print(f'stage: {n} videos in {seconds:.2f} s of video work: {stage:.2f} clips/s; wall {wall:.2f} s '
              f'({n / wall:.2f} clips/s, start-up included)')

        for n_workers in filter(None, OTHER_WORKERS.split(',')):
            other = stage_rate(tmp, f'w{n_workers}.pkl', f'--workers={n_workers}')[0]
            print(f'stage with --workers={n_workers}: {other:.2f} clips/s')

        sys.path.insert(0, os.path.join(ROOT, 'bench'))
        from bench_predict import checkpoint
        # GenD's encoders: their own head scores, no checkpoint; else one that reads the encoder's width
        ckpt = '' if has_head(pipeline.cfg['face_encoder']) else checkpoint(tmp, pipeline.nets.dim)
        predicted, fallbacks, wall = predict_rate(tmp, ckpt, 'sub.csv')
        print(f'predict.py: {predicted:.2f} clips/s ({fallbacks} fallbacks); wall {wall:.2f} s '
              f'({len(names) / wall:.2f} clips/s, start-up included)')

        reason = nvdec_error(0)
        if reason:
            print(f'nvdec: not measured: NVDEC cannot decode here ({reason})')
        else:
            nv_ceiling = decode_ceiling(names, cores, gpu=0)
            nv_stage = stage_rate(tmp, 'nv.pkl', '--decoder=nvdec')[0]
            nv_predict = predict_rate(tmp, ckpt, 'nv.csv', '--decoder=nvdec')[0]
            print(f'nvdec: decode ceiling {nv_ceiling:.2f} clips/s ({cores} processes); stage {nv_stage:.2f} '
                  f'clips/s; predict.py {nv_predict:.2f} clips/s (against the CPU decoder: {stage:.2f}, '
                  f'{predicted:.2f})')

    print(f'pipeline device: {pipeline.device}')
    for clip in clips:
        pipeline(clip)
    detect = []
    for clip in clips:
        calls = [pipeline(clip).seconds for _ in range(REPEAT)]
        detect += [s['detect'] for s in calls]
        print(f'{os.path.basename(clip)}: median of {REPEAT}: ' + ', '.join(
            f'{k} {statistics.median(s[k] for s in calls):.3f} s' for k in ('decode', 'detect', 'embed')))
    detect_ms = statistics.median(detect) * 1000
    if pipeline.device.type == 'cuda':
        print(f'host syncs per clip: {host_syncs(pipeline, clips[0])} ({os.path.basename(clips[0])})')
    else:
        print('host syncs per clip: n/a (not on CUDA)')
    print(f'stage / decode ceiling: {stage / ceiling:.2f}')
    print(f'clips_per_second={stage:.2f} predict_clips_per_second={predicted:.2f} '
          f'decode_ceiling={ceiling:.2f} detect_ms={detect_ms:.1f} device={pipeline.device}')


if __name__ == '__main__':
    config.cli(main)
