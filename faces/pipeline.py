"""One video's faces: decode in chunks, detect and track, crop, embed, join the chunks' tracks.

`nets` is anything with detect(images, min_face_size) and embed(crops) (faces/nets.py's Nets, or a
decoding worker's line to the process that owns them: faces/workers.py). `cfg` holds DetectionPipeline.py's
settings, lower-case. Nothing here keeps state between calls.

How and why, step by step (the settings are DetectionPipeline.py's constants):
- Frames 0, FRAME_STEP, 2*FRAME_STEP, ... are sampled (DFDC's 300-frame clips give 50); the frames in
  between are decoded (H.264 needs them) but never converted. Frames come upright (a phone clip's
  rotation is applied) and a clip cut short of what its container says is a VideoError (common/video.py).
  With DECODER='nvdec' the GPU's video decoder decodes; a video it fails on is decoded again on the CPU,
  and VideoFaces.decoder says why (a video the CPU cannot read either is the CPU's VideoError).
- The video is worked through in chunks of CHUNK sampled frames, straight from the decoder (chunks): each
  chunk is detected, tracked, cropped and embedded, then dropped, so memory does not grow with the clip's
  length (only the boxes and 512-d embeddings are kept). A DFDC clip (50 sampled frames) is one chunk. The
  tracks of consecutive chunks are joined where the last box of one overlaps the first box of the next
  (tracking.join_chunks), and the largest joined track is kept, as within a chunk.
- MTCNN (facenet-pytorch's networks and shipped weights, batched on the device: faces/mtcnn.py) looks
  for faces on a copy of the frame whose long side is DETECT_SIZE pixels: DFDC's 1080p faces are
  100-400 px tall, so a third of the resolution loses none of them and costs a ninth of the work. It runs
  on every DETECT_EVERY-th sampled frame (and the last); a face's box is carried to the frames in between
  by linear interpolation (tracking.fill), and wherever that is not safe (the face moved so that its two
  boxes overlap less than LINK_IOU, they are more than MAX_GAP sampled frames apart, or the track starts
  or ends there: tracking.unsafe) MTCNN also runs on the frame halfway, recursively, down to adjacent
  frames. Still heads cost a few detections; moving ones get as many as they need. A face MTCNN misses on
  a frame or two (dark clips) is carried across the miss when the boxes on both sides agree.
- With ROI_SIZE, every carried box is looked for again in a square region around it, resized to ROI_SIZE
  (the face at about its own resolution, whatever the video's), and each track is extended at its ends
  for as long as the face is still found there (refine, roi_detect).
- Within a chunk, detections are linked into tracks by overlap; a track must be found on at least
  MIN_TRACK_FRACTION of the frames MTCNN ran on (false positives rarely are). By default the largest
  track is kept (by total face size over the video, so a brief close-up of a passer-by does not win);
  KEEP_ALL_TRACKS keeps every track. Frames where the track has no face are left out, not filled: the
  `frames` of a track say which frames had one.
- Faces are cropped from the full-resolution frame with MARGIN on each side and embedded by
  InceptionResnetV1 (VGGFace2 weights) in batches (FACE_ENCODER='facenet'; the ViTs, 'gend',
  'gend_dinov3', 'gend_pe' and 'clip', align each face on MTCNN's 5 landmarks instead, carried and interpolated with
  its box, and embed it: faces/clip.py). FaceNet's embedding is its penultimate layer: the 512-d
  output of `last_bn`, before the L2 normalisation. Not the 1792-d pooled features: they are the
  input of the layer VGGFace2 trained for identity, 3.5x larger to store (6 GB vs 21 GB in float16 for
  the whole DFDC) and no richer for a sequence model. Not after the normalisation: the norm it
  divides away carries how face-like and how sharp the crop is, which is what blending leaves behind.
- Embeddings are stored as float16.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from common.video import VideoError, sampled_frames
from faces import images, tracking
from faces.tracking import Track


@dataclass
class VideoFaces:
    n_frames: int            # frames decoded
    width: int
    height: int
    tracks: list = field(default_factory=list)  # Track, largest first
    n_detections: int = 0    # frames MTCNN ran on (full frame)
    seconds: dict = field(default_factory=dict)
    decoder: str = 'cpu'     # 'cpu', 'nvdec', or 'cpu (NVDEC failed: reason)'
    n_sampled: int = 0       # frames searched for faces (every frame_step-th)

    def no_face(self):
        """The reason recorded for a video without a face track."""
        return f'no face found in any of the {self.n_sampled} frames searched (of its {self.n_frames})'


def chunks(path, step, size, threads=0, gpu=None):
    """Decode: yield (indices (n,) int32, frames (n, h, w, 3) uint8, n_frames or None) for every `size`
    sampled frames, n_frames (the frames decoded) on the last chunk only. A chunk is handed out once the
    next sampled frame is decoded (so one that is not the last is known not to be), and this generator
    keeps no reference to it after."""
    indices, frames = [], None
    last = -1
    for index, rgb in sampled_frames(path, step, threads=threads, count_all=True, gpu=gpu):
        last = index
        if rgb is None:
            continue
        if len(indices) == size:
            yield np.asarray(indices, np.int32), frames, None
            indices, frames = [], None
        if frames is None:
            # One array a chunk, not one a frame. Freed 6 MB frames fragment glibc's heap (once one is
            # freed it carves the next ones, and MTCNN's tensors, out of the heap instead of mmap), and
            # the peak grew with every chunk: a 3-minute clip 1.6x a 10 s one. An array this large is
            # always mmap'd and given back whole; its pages cost nothing until written.
            frames = np.empty((min(size, 64), *rgb.shape), np.uint8)
        elif len(indices) == len(frames):  # a chunk above 64 frames: room for twice as many
            frames = np.concatenate([frames, np.empty_like(frames)])
        if rgb.shape != frames.shape[1:]:  # MTCNN's batches need one size
            raise VideoError(f'frame size changes from {frames.shape[2]}x{frames.shape[1]} to '
                             f'{rgb.shape[1]}x{rgb.shape[0]} at frame {index}')
        frames[len(indices)] = rgb
        indices.append(index)
    if not indices:
        raise VideoError('no frame could be decoded')
    yield np.asarray(indices, np.int32), frames[:len(indices)], last + 1


def find_tracks(frames, cfg, detect):
    """Boxes of the kept face tracks of one chunk: ([{sample_pos: (box, detected)}], largest track first;
    the number of frames MTCNN searched whole).

    MTCNN runs on a copy of every DETECT_EVERY-th frame (and the last) whose long side is DETECT_SIZE, then
    wherever a kept track's box cannot be carried (tracking.unsafe), until it can everywhere."""
    n = len(frames)
    h, w = frames[0].shape[:2]
    scale = min(1.0, cfg['detect_size'] / max(h, w))
    if min(images.scaled(w, scale), images.scaled(h, scale)) < cfg['min_face_size']:
        # MTCNN cannot see a face larger than the frame it searches: a tiny video (16x16) has no face
        return [], 0
    small = {}

    def detect_at(positions):
        for pos in positions:
            if pos not in small:
                small[pos] = images.downscale(frames[pos], scale)
        found = detect(np.stack([small[pos] for pos in positions]), cfg['min_face_size'])
        return {pos: boxes / scale for pos, boxes in zip(positions, found)}

    gap, bar = cfg['max_gap'], cfg['link_iou']
    detections = detect_at(sorted(set(range(0, n, max(1, cfg['detect_every']))) | {n - 1}))
    while True:
        kept = tracking.choose(tracking.link(detections), len(detections), cfg['min_track_fraction'],
                               cfg['keep_all_tracks'])
        todo = set().union(*(tracking.unsafe(t, detections, n, gap, bar) for t in kept))
        if not todo:
            break
        detections.update(detect_at(sorted(todo)))
    filled = [tracking.fill(t, gap, bar) for t in kept]
    if cfg['roi_size']:
        filled = refine(frames, filled, cfg['roi_size'], detect)
    return filled, len(detections)


def roi_detect(frames, wanted, size, detect):
    """MTCNN around the expected box of each (pos, box) of `wanted`, at about the face's own resolution:
    the box found there (the one that overlaps the expected box most, by 0.3 or more) or None, in order.

    Each region (images.roi_origin) is resized to size x size, so the face is ~size/2 pixels whatever the
    video's resolution and MTCNN's pyramid is three small levels; a face of size // 4 always fits it.
    """
    if not wanted:
        return []
    origins = [images.roi_origin(box, size) for _, box in wanted]
    rois = np.stack([images.square(frames[pos], o, size) for (pos, _), o in zip(wanted, origins)])
    hits = []
    for (pos, box), (ox, oy, s), boxes in zip(wanted, origins, detect(rois, max(1, size // 4))):
        boxes = boxes * s + np.tile(np.array([ox, oy], np.float32), boxes.shape[1] // 2)  # box, landmarks
        overlap = tracking.iou(boxes, box)[:, 0]
        hits.append(boxes[overlap.argmax()] if len(boxes) and overlap.max() >= 0.3 else None)
    return hits


def refine(frames, filled, size, detect):
    """Every interpolated box of each track re-detected in its region of interest (one batch for all the
    tracks); each track extended at its ends for as long as the face is still found there (a dark face
    that full-frame MTCNN loses)."""
    n = len(frames)
    keys = [(k, pos) for k, boxes in enumerate(filled) for pos, (_, detected) in boxes.items()
            if not detected]  # where full-frame MTCNN found the face, no second look
    refined = [dict(boxes) for boxes in filled]
    for (k, pos), hit in zip(keys, roi_detect(frames, [(pos, filled[k][pos][0]) for k, pos in keys], size,
                                              detect)):
        if hit is not None:
            refined[k][pos] = (hit, True)
    for out in refined:
        for direction in (-1, 1):
            pos = min(out) if direction < 0 else max(out)
            while 0 <= pos + direction < n and pos + direction not in out:
                [hit] = roi_detect(frames, [(pos + direction, out[pos][0])], size, detect)
                if hit is None:
                    break
                pos += direction
                out[pos] = (hit, True)
    return [dict(sorted(out.items())) for out in refined]


def embed_tracks(indices, frames, filled, cfg, embed):
    """Crops of the boxes of `filled` (find_tracks) embedded: a Track each (frame indices from `indices`,
    the chunk's sampled frames' numbers). FaceNet's crop is the box with MARGIN; a ViT's (gend, gend_dinov3,
    gend_pe, clip) is the face aligned on its 5 landmarks as GenD's detector.py aligns it (images.align)."""
    crops, owners = [], []
    for k, boxes in enumerate(filled):
        for pos, (box, _) in boxes.items():
            if cfg['face_encoder'] == 'facenet':
                crops.append(images.crop(frames[pos], box[:4], cfg['margin'], cfg['face_size']))
            else:
                if len(box) != 14:
                    raise ValueError(f'--face_encoder={cfg["face_encoder"]} aligns faces on landmarks, and the '
                                     f'detector gave none ({len(box)} numbers a face)')
                crops.append(images.align(frames[pos], box[4:].reshape(5, 2)))
            owners.append(k)
    out = embed(np.stack(crops)) if crops else np.zeros((0, 512), np.float16)
    # an encoder with its own head (GenD) gives each face's FAKE logit beside its embedding
    embeddings, logits = (out['embedding'], out['logit']) if out.dtype.names else (out, None)
    owners = np.asarray(owners)
    tracks = []
    for k, boxes in enumerate(filled):
        pos = np.fromiter(boxes.keys(), np.int64, len(boxes))
        stacked = np.stack([b for b, _ in boxes.values()]).astype(np.float32)  # (faces, 4 or 14)
        tracks.append(Track(
            frames=indices[pos],
            boxes=stacked[:, :4],
            detected=np.fromiter((d for _, d in boxes.values()), bool, len(boxes)),
            embeddings=embeddings[owners == k],
            landmarks=stacked[:, 4:].reshape(-1, 5, 2) if stacked.shape[1] == 14 else None,
            logits=None if logits is None else logits[owners == k]))
    return tracks


def faces_of(path, cfg, nets, threads=0, gpu=None):
    """Face tracks of one video, chunk by chunk (CHUNK sampled frames at a time, then dropped), decoded on
    CUDA device `gpu`'s NVDEC where given. Raises VideoError for a video that cannot be read or is cut short
    (no face is not an error)."""
    if gpu is None:
        return _faces_of(path, cfg, nets, threads, None)
    try:
        return _faces_of(path, cfg, nets, threads, gpu)
    except VideoError as err:  # a stream NVDEC cannot decode (a profile it lacks), or a bad file
        faces = _faces_of(path, cfg, nets, threads, None)
        faces.decoder = f'cpu (NVDEC failed: {err})'
        return faces


def _faces_of(path, cfg, nets, threads, gpu):
    seconds = {'decode': 0.0, 'detect': 0.0, 'embed': 0.0}
    pieces, n_detections, n_sampled = [], 0, 0
    decoded = chunks(path, cfg['frame_step'], cfg['chunk'], threads, gpu)
    while True:
        t0 = time.perf_counter()
        chunk = next(decoded, None)
        t1 = time.perf_counter()
        if chunk is None:
            break
        indices, frames, n_frames = chunk
        del chunk
        h, w = frames.shape[1:3]
        filled, n = find_tracks(frames, cfg, nets.detect)
        n_detections += n
        n_sampled += len(indices)
        t2 = time.perf_counter()
        pieces.append(embed_tracks(indices, frames, filled, cfg, nets.embed))
        del frames  # before the next chunk is decoded: one chunk of frames at a time
        seconds['decode'] += t1 - t0
        seconds['detect'] += t2 - t1
        seconds['embed'] += time.perf_counter() - t2
    return VideoFaces(n_frames=n_frames, width=w, height=h, n_detections=n_detections, seconds=seconds,
                      tracks=tracking.join_chunks(pieces, cfg['keep_all_tracks']),
                      decoder='cpu' if gpu is None else 'nvdec', n_sampled=n_sampled)
