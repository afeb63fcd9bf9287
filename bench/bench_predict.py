"""End-to-end speed of predict.py on DFDC's 1080p clips: against decoding alone and against the stages.

Reads the 1080p clips of ../shared/testdata/dfdc_sample (or CLIPS); writes only in a temporary folder.
In one run, after a warm-up:
  floor   - PyAV decodes every frame of each clip and converts none;
  predict - predict.Predictor.stream over the clips in this process (weights loaded once, as in a long
            run): decode, detect, embed faces, decode and embed audio, the network; seconds per video;
  stages  - the same clips through the stage scripts, one command after the other, as a user runs them
            (create_video_embeddings.py, extract_audio.py, create_audio_embedding.py,
            merge_embeddings.py, test.py), against the one predict.py command; both wall times include
            their processes' start-up.
The checkpoint is trained first on a synthetic table (its weights do not change the speed).

    python bench/bench_predict.py
Last line: seconds_per_video=X ratio_to_decode=Y speedup_vs_stages=Z
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import torch  # noqa: E402

from common.device import cpu_model  # noqa: E402
from common.video import count_frames, probe  # noqa: E402

# ----------------------------------------------------------------------------- config
CLIPS = '../shared/testdata/dfdc_sample/*.mp4'  # glob of clips; only those >= MIN_HEIGHT are used
MIN_HEIGHT = 1080           # the 1080p clips (landscape or portrait: the short side)
WARMUP = '../shared/testdata/talking_heads/1.mp4'  # a short clip run once first (weights, kernels), not timed
FACE_WEIGHTS = 'none'       # the embedder's weights do not change its speed
# -----------------------------------------------------------------------------


def checkpoint(folder, video_dim=512):
    """A checkpoint of training.py, trained for one epoch on a small synthetic table of video_dim-d faces."""
    import model
    import training
    from common import store
    table = model.synthetic_table(200, video_dim=video_dim, audio_dim=256, seed=0)
    # it names a 'synthetic' embedder and encoder, which predict.py would rightly refuse
    table = table.drop(columns=['embedder', 'audio_encoder'])
    path = os.path.join(folder, 'synthetic.pkl')
    store.save(table, path)
    threads = torch.get_num_threads()  # training.py sets its own; predict.py runs with torch's default
    training.run(training.settings(dataset=path, out_dir=os.path.join(folder, 'run'), max_epochs=1),
                 log=lambda *a: None)
    torch.set_num_threads(threads)
    return os.path.join(folder, 'run', 'best.pt')


def command(*args):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    config.configure(globals())
    import predict
    clips = sorted(os.path.abspath(p) for p in glob.glob(CLIPS)
                   if min(probe(p)['width'], probe(p)['height']) >= MIN_HEIGHT)
    if not clips:
        raise config.UserError(f'no clip of {MIN_HEIGHT}p under {CLIPS} (../shared/testdata absent?)')
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoint(tmp)
        predictor = predict.Predictor(ckpt, 'auto', face={'face_weights': FACE_WEIGHTS})
        list(predictor.stream([os.path.abspath(WARMUP)]))
        count_frames(WARMUP)
        print(f'{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} '
              f'({torch.get_num_threads()} threads), device {predictor.device}, {len(clips)} clips')
        floor = 0.0
        for path in clips:
            t0 = time.perf_counter()
            count_frames(path)
            floor += time.perf_counter() - t0
        t0 = time.perf_counter()
        results = list(predictor.stream(clips))
        ours = time.perf_counter() - t0
        for path, _, _, result in results:
            reason = f' ({result.fallback})' if result.fallback else ''
            print(f'{os.path.basename(path)}: p_fake {result.p_fake:.4f}{reason}')
        # the commands, as a user runs them, on a DFDC part of the same clips
        data = os.path.join(tmp, 'data', 'part')
        os.makedirs(data)
        meta = {}
        for path in clips:
            os.symlink(path, os.path.join(data, os.path.basename(path)))
            meta[os.path.basename(path)] = {'label': 'FAKE', 'original': None}
        meta[os.path.basename(clips[0])]['label'] = 'REAL'
        with open(os.path.join(data, 'metadata.json'), 'w') as f:
            json.dump(meta, f)
        o = lambda name: os.path.join(tmp, name)  # noqa: E731
        stages = sum([
            command('create_video_embeddings.py', f'--data_dir={o("data")}', f'--output={o("v.pkl")}',
                    f'--face_weights={FACE_WEIGHTS}'),
            command('extract_audio.py', f'--data_dir={o("data")}', f'--audio_dir={o("audio")}'),
            command('create_audio_embedding.py', f'--audio_dir={o("audio")}', f'--output={o("a.pkl")}'),
            command('merge_embeddings.py', f'--video_table={o("v.pkl")}', f'--audio_table={o("a.pkl")}',
                    f'--output={o("m.pkl")}'),
            command('test.py', f'--dataset={o("m.pkl")}', f'--checkpoint={ckpt}', f'--report={o("r.json")}'),
        ])
        one = command('predict.py', f'--input={data}', f'--checkpoint={ckpt}', f'--output={o("sub.csv")}',
                      f'--face_weights={FACE_WEIGHTS}')
    n = len(clips)
    print(f'per video: floor {floor / n:.2f} s, predict {ours / n:.2f} s in one process; commands: stages '
          f'{stages:.1f} s, predict.py {one:.1f} s for {n} videos (start-up included)')
    print(f'seconds_per_video={ours / n:.2f} ratio_to_decode={ours / floor:.2f} speedup_vs_stages={stages / one:.2f}')


if __name__ == '__main__':
    config.cli(main)
