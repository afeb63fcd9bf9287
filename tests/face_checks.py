"""What two runs of face extraction may differ by, argued from the computation, and checks that hold it.

Boxes. MTCNN is float32 (never autocast), but where its float sums come in another order (another
batch, memory layout, library, BLAS or oneDNN kernel: AVX2, AVX-512, AMX; cuDNN or TF32 on a GPU) a box
edge near an integer can truncate to the neighbouring pixel (`_regions`: each stage crops the integer
region of the previous stage's box), or NMS can keep the other of two near-equal candidates. The next
stage then sees its input moved by one source pixel, and its box regression, which finds the face's edges
in that input, moves the box by about as much: one pixel of RNet's 24 px input (the coarsest input the
final box depends on) is 1/24 of the box's side. So each edge may move by BOX_SIDE_FRACTION of the box's
width (x) or height (y): 4.5 px on a 108x137 px DFDC face, 1.1 px seen (abofeumbvv.mp4, Intel AMX vs
facenet-pytorch's code). A box shifted by 8 px, or the next face of a moving head, is outside it.

Embeddings. The seeded untrained InceptionResnetV1 cannot tell faces apart (its outputs are ~0.015,
nearly the same for every crop: a crop one sampled frame off differs by one bfloat16 step), so the tests
that check *which* crop was embedded use `face_weights`: the same seeded network with its BatchNorm
statistics taken from real face photos, whose outputs (~0.25, max ~1.2) move by 5-78% (relative, below)
for a crop one sampled frame off (5.2% least: abofeumbvv.mp4's dark, still face; 37% on a talking head)
and by 38% or more for one 8 px off. The same crop embedded in another batch differs by the rounding of
the autocast dtype carried through the network: nothing seen in bfloat16 (AMX), 2.3e-4 in float32; a
float16 (GPU) or bfloat16 step is 2^-11 or 2^-8 relative, and float16 storage adds 2^-12. So an
embedding is its crop's where max|a - b| / max|b| <= EMBEDDING_RTOL: four bfloat16 steps (1.6%), 3x
below the least moved crop one frame off.
"""
import glob
import os

import cv2
import numpy as np
import torch

from common.video import sampled_frames
from common.weights import face_embedder
from faces import images

BOX_SIDE_FRACTION = 1 / 24   # one pixel of RNet's 24 px input, as a fraction of the box's side (above)
EMBEDDING_RTOL = 4 * 2 ** -8  # four bfloat16 steps, relative to the embedding's largest value (above)


def calibrated_face_weights(path, photos):
    """Write the seeded untrained embedder, its BatchNorm statistics those of the face photos in folder
    `photos` (each cut four ways), as a weights file face_embedder loads; return its path."""
    model = face_embedder('none')  # seeded: the same numbers on every run
    crops = []
    for name in sorted(glob.glob(os.path.join(photos, '*.jpg'))):
        photo = cv2.cvtColor(cv2.imread(name), cv2.COLOR_BGR2RGB)
        h, w = photo.shape[:2]
        for y, x in ((0, 0), (h // 4, w // 4), (0, w // 4), (h // 4, 0)):
            part = photo[y:y + 3 * h // 4, x:x + 3 * w // 4]
            crops.append(cv2.resize(part, (160, 160), interpolation=cv2.INTER_AREA))
    x = (torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() - 127.5) / 128.0  # (32, 3, 160, 160)
    for layer in model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None  # one batch: its statistics exactly
    with torch.no_grad():
        model.train()(x)
    torch.save(model.eval().state_dict(), path)
    return str(path)


def box_error(a, b):
    """(n, 4) boxes: each edge's distance over its box's side (width for x, height for y), the largest."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    sides = np.tile(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1), 2)  # (n, 4) w, h, w, h
    return float((np.abs(a - b) / sides).max()) if len(a) else 0.0


def assert_same_boxes(a, b):
    """Boxes of one face found by two computations: within what float rounding can move MTCNN (above)."""
    assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
    error = box_error(a, b)
    assert error <= BOX_SIDE_FRACTION, (error, a, b)


def embedding_errors(a, b):
    """(n, 512) embeddings -> (n,) max|a - b| / max|b| of each row."""
    a, b = np.asarray(a, np.float32).reshape(-1, 512), np.asarray(b, np.float32).reshape(-1, 512)
    return np.abs(a - b).max(1) / np.abs(b).max(1)


def assert_same_embeddings(a, b):
    """Embeddings of the same crops made by two computations: within EMBEDDING_RTOL (above), row by row."""
    assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
    errors = embedding_errors(a, b)
    assert errors.max() <= EMBEDDING_RTOL, (errors.max(), errors.argmax())


def crops_of(path, track, cfg, shifts=(0, 1)):
    """{shift: (n, 160, 160, 3)}: the crops of the track's boxes, each from its own sampled frame (shift
    0) or from the one `shift` sampled frames later, clamped to the clip (a wrong frame); one decode."""
    frames = {i: rgb for i, rgb in sampled_frames(path, cfg['frame_step'])}
    order = sorted(frames)
    out = {shift: [] for shift in shifts}
    for index, box in zip(track.frames.tolist(), track.boxes):
        for shift in shifts:
            other = order[min(max(order.index(index) + shift, 0), len(order) - 1)]
            out[shift].append(images.crop(frames[other], box, cfg['margin'], cfg['face_size']))
    return {shift: np.stack(crops) for shift, crops in out.items()}


def assert_embeddings_are_of_their_crops(path, track, pipeline):
    """Each embedding of the track is that of its own box's crop of its own frame, embedded here alone
    (within EMBEDDING_RTOL); the crops one sampled frame off are not (the check can fail)."""
    assert len(track.embeddings) == len(track.frames) == len(track.boxes) >= 2
    crops = crops_of(path, track, pipeline.cfg)
    assert_same_embeddings(track.embeddings, pipeline.nets.embed(crops[0]))
    wrong = pipeline.nets.embed(crops[1][:-1])  # (n - 1, 512): the last may be its own frame, clamped
    errors = embedding_errors(track.embeddings[:-1], wrong)
    assert errors.min() > EMBEDDING_RTOL, errors  # every one of them would be caught
