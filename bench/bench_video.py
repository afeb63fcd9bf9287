"""Speed of DetectionPipeline against the naive use of the same libraries, and against decoding alone.

Reads the 1080p clips of ../shared/testdata/dfdc_sample (or CLIPS); writes nothing but its report.
For each clip, in one process, after a warm-up:
  floor  - PyAV decodes every frame and converts none (what any pipeline pays at least);
  ours   - DetectionPipeline: sampled frames, MTCNN on a downscaled copy of a few, boxes carried between,
           batched InceptionResnetV1;
  naive  - OpenCV reads every frame, every 6th goes through MTCNN at full resolution one frame at a time
           (facenet-pytorch's defaults: the largest face), each face through InceptionResnetV1 alone.
Box agreement: on the sampled frames where the naive run finds a face, the share where our largest track
has a box with IoU >= 0.8 against it. The last line's figures are for `ours` as create_video_embeddings.py
runs it (DetectionPipeline.stream with its default decoding workers for the device: none on a CPU), over
all the clips. Everything runs on the pipeline's default device (CUDA where present; the naive run too).

    python bench/bench_video.py
Last line: speedup_vs_naive=X ratio_to_decode=Y box_agreement=Z
With --naive=false the naive run is left out (a before/after comparison of ours in less time):
    python bench/bench_video.py --naive=false --repeat=3
Last line: ours_s=X stream_s=Y ratio_to_decode=Z
"""
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import config  # noqa: E402
config.help_if_asked(__name__, __file__, '../DetectionPipeline.py')  # -h: answered before the heavy imports

import cv2  # noqa: E402
import torch  # noqa: E402

import DetectionPipeline as dp  # noqa: E402
from common.device import cpu_model  # noqa: E402
from common.video import count_frames, probe  # noqa: E402

# ----------------------------------------------------------------------------- config
CLIPS = '../shared/testdata/dfdc_sample/*.mp4'  # glob of clips; only those >= MIN_HEIGHT are timed
MIN_HEIGHT = 1080           # the 1080p clips (landscape or portrait: the short side)
WARMUP = '../shared/testdata/talking_heads/1.mp4'  # first calls of every path are slow
FACE_WEIGHTS = 'none'       # the embedder's weights do not change its speed
IOU_BAR = 0.8               # a frame agrees when the boxes overlap at least this much
REPEAT = 1                  # timed passes over the clips (the best of them counts)
NAIVE = True                # also time the naive way (slow: minutes a clip on 2 cores)
# -----------------------------------------------------------------------------


def naive(path, mtcnn, resnet, step=dp.FRAME_STEP):
    """The straightforward way: every frame read, MTCNN full-res one frame at a time, one face a time."""
    from facenet_pytorch.models.mtcnn import fixed_image_standardization
    from facenet_pytorch.models.utils.detect_face import extract_face
    from PIL import Image
    cap = cv2.VideoCapture(path)
    boxes, embeddings, index = {}, [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if index % step == 0:
            img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            box, _ = mtcnn.detect(img)
            if box is not None:
                boxes[index] = box[0]
                face = fixed_image_standardization(extract_face(img, box[0], 160, 0))
                with torch.inference_mode():
                    embeddings.append(resnet(face.unsqueeze(0).to(mtcnn.device)).cpu())
        index += 1
    cap.release()
    return boxes


def agreement(ours, theirs, bar):
    """Share of the naive run's face frames where our largest track's box overlaps it by >= bar."""
    mine = {}
    if ours.tracks:
        t = ours.tracks[0]
        mine = dict(zip(t.frames.tolist(), t.boxes))
    hits = [f in mine and dp.iou(mine[f], box)[0, 0] >= bar for f, box in theirs.items()]
    return sum(hits), len(hits)


def main():
    face, = config.configure(globals(), dp)  # the pipeline's settings too: --detect_every=10
    from facenet_pytorch import MTCNN
    from common.weights import face_embedder
    clips = sorted(p for p in glob.glob(CLIPS) if min(probe(p)['width'], probe(p)['height']) >= MIN_HEIGHT)
    if not clips:
        raise config.UserError(f'no clip of {MIN_HEIGHT}p under {CLIPS} (../shared/testdata absent?)')
    pipeline = dp.DetectionPipeline(**{'face_weights': FACE_WEIGHTS, **face})
    mtcnn = MTCNN(device=pipeline.device)  # facenet-pytorch's defaults: select_largest, thresholds, min face 20
    resnet = face_embedder(FACE_WEIGHTS).to(pipeline.device)
    for fn in (lambda: count_frames(WARMUP), lambda: pipeline(WARMUP),
               lambda: naive(WARMUP, mtcnn, resnet) if NAIVE else None):
        fn()
    print(f'{cpu_model()}, {os.cpu_count()} cores, torch '
          f'{torch.__version__} ({torch.get_num_threads()} threads), device {pipeline.device}, '
          f'{pipeline.workers(len(clips))} decoding workers, DETECT_EVERY={pipeline.cfg["detect_every"]}, '
          f'DETECT_SIZE={pipeline.cfg["detect_size"]}, AMP={pipeline.cfg["amp"]}')
    totals = {'floor': 0.0, 'ours': 0.0, 'naive': 0.0}
    agree = seen = 0
    for path in clips:
        times = {}
        runs = [('floor', lambda: count_frames(path)), ('ours', lambda: pipeline(path))]
        if NAIVE:
            runs.append(('naive', lambda: naive(path, mtcnn, resnet)))
        for name, fn in runs:
            best = float('inf')
            for _ in range(REPEAT):
                t0 = time.perf_counter()
                out = fn()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
            totals[name] += best
            if name == 'ours':
                ours = out
            if name == 'naive':
                theirs = out
        split = ', '.join(f'{k} {v:.2f}' for k, v in ours.seconds.items())
        line = (f'{os.path.basename(path)}: floor {times["floor"]:.2f} s, ours {times["ours"]:.2f} s '
                f'({split}; MTCNN on {ours.n_detections} frames)')
        if NAIVE:
            a, s = agreement(ours, theirs, IOU_BAR)
            agree, seen = agree + a, seen + s
            line += f', naive {times["naive"]:.2f} s; boxes agree on {a}/{s}'
        print(line)
    # As create_video_embeddings.py runs it: DetectionPipeline.stream, with its default decoding workers
    best = float('inf')
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        for _path, _faces, _ in pipeline.stream(clips):
            pass
        best = min(best, time.perf_counter() - t0)
    streamed = best
    n = len(clips)
    if not NAIVE:
        print(f'ours_s={totals["ours"] / n:.2f} stream_s={streamed / n:.2f} '
              f'ratio_to_decode={streamed / totals["floor"]:.2f}')
        return
    print(f'per clip: floor {totals["floor"] / n:.2f} s, naive {totals["naive"] / n:.2f} s, ours '
          f'{totals["ours"] / n:.2f} s one at a time ({totals["ours"] / totals["floor"]:.2f}x the floor), '
          f'{streamed / n:.2f} s as the stage runs it ({streamed / totals["floor"]:.2f}x)')
    speedup = totals['naive'] / streamed
    ratio = streamed / totals['floor']
    print(f'speedup_vs_naive={speedup:.2f} ratio_to_decode={ratio:.2f} box_agreement={agree / seen:.3f}')


if __name__ == '__main__':
    config.cli(main)
