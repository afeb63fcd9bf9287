"""Faces of a video, as a sequence of embeddings: decode, sample, detect, track, crop, embed.

Reads one video; returns (or, run as a script, prints) its face tracks: for each sampled frame that has
the face, the frame index, the box, and a 512-d embedding.

- Frames 0, FRAME_STEP, 2*FRAME_STEP, ... are sampled (DFDC's 300-frame clips give 50); the frames in
  between are decoded (H.264 needs them) but never converted. Frames come upright (a phone clip's
  rotation is applied) and a clip cut short of what its container says is a VideoError (common/video.py).
- The video is worked through in chunks of CHUNK sampled frames, straight from the decoder: each chunk is
  detected, tracked, cropped and embedded, then dropped, so memory does not grow with the clip's length
  (only the boxes and 512-d embeddings are kept). A DFDC clip (50 sampled frames) is one chunk. The
  tracks of consecutive chunks are joined where the last box of one overlaps the first box of the next
  (join_chunks), and the largest joined track is kept, as within a chunk.
- MTCNN (facenet-pytorch, its shipped weights) looks for faces on a copy of the frame whose long side
  is DETECT_SIZE pixels: DFDC's 1080p faces are 100-400 px tall, so a third of the resolution loses
  none of them and costs a ninth of the work. It runs on every DETECT_EVERY-th sampled frame (and the
  last one); a face's box is carried to the frames in between by linear interpolation, and wherever
  that is not safe (the face moved so that its two boxes overlap less than LINK_IOU, or the track
  starts or ends there) MTCNN also runs on the frame halfway, recursively, down to adjacent frames.
  Still heads cost a few detections; moving ones get as many as they need. A face MTCNN misses on a
  frame or two (dark clips) is carried across the miss when the boxes on both sides agree.
- Within a chunk, detections are linked into tracks by overlap; a track must be found on at least
  MIN_TRACK_FRACTION of the frames MTCNN ran on (false positives rarely are). By default the largest
  track is kept (by total face size over the video, so a brief close-up of a passer-by does not win);
  KEEP_ALL_TRACKS keeps every track. Frames where the track has no face are left out, not filled: the
  `frames` of a track say which frames had one.
- Faces are cropped from the full-resolution frame with MARGIN on each side and embedded by
  InceptionResnetV1 (VGGFace2 weights) in batches. The embedding is its penultimate layer: the 512-d
  output of `last_bn`, before the L2 normalisation. Not the 1792-d pooled features: they are the
  input of the layer VGGFace2 trained for identity, 3.5x larger to store (6 GB vs 21 GB in float16 for
  the whole DFDC) and no richer for a sequence model. Not after the normalisation: the norm it
  divides away carries how face-like and how sharp the crop is, which is what blending leaves behind.
- Embeddings are stored as float16.

Example:
    python DetectionPipeline.py --video=../shared/testdata/dfdc_sample/lynaeydofd.mp4 --face_weights=none
"""
import sys
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from common import config
from common.device import autocast, pick_device
from common.prefetch import default_ahead, prefetched
from common.video import VideoError, sampled_frames
from common.weights import describe, face_embedder

# ----------------------------------------------------------------------------- config
FRAME_STEP = 6              # sample frames 0, 6, 12, ... (50 of a 300-frame DFDC clip)
DETECT_SIZE = 640           # long side, in pixels, of the copy MTCNN searches (1080p: 1/3, 720p: 1/2)
MIN_FACE_SIZE = 20          # MTCNN's smallest face, in pixels of that copy (60 px of a 1080p frame)
DETECT_EVERY = 10           # run MTCNN on every 10th sampled frame (and the last); carry boxes between
LINK_IOU = 0.5              # a face's boxes on two detected frames must overlap this much to interpolate
MAX_GAP = 10                # ... and be at most this many sampled frames apart (MTCNN flickers on dark faces)
ROI_SIZE = 128              # re-detect each box in a square twice its size, resized to this (0: off)
MIN_TRACK_FRACTION = 0.25   # a track must be found on this share of the frames MTCNN ran on (else: noise)
KEEP_ALL_TRACKS = False     # False: the largest face track only; True: every track (DFDC has two-person clips)
MARGIN = 0.2                # crop margin on each side, as a fraction of the box's width and height
FACE_SIZE = 160             # crop side in pixels (InceptionResnetV1's input)
FACE_WEIGHTS = 'vggface2'   # 'vggface2' (downloaded once) | path to a local .pt | 'none' (untrained, seeded)
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1' ...
AMP = True                  # embed in float16 on CUDA, bfloat16 on CPUs with bf16 units (2x; stored as float16)
BATCH_SIZE = 64             # faces per InceptionResnetV1 batch, frames per MTCNN batch
CHUNK = 60                  # sampled frames held at once (1080p: 6 MB each); a DFDC clip's 50 are one chunk
VIDEO = ''                  # as a script: the video to run on
# -----------------------------------------------------------------------------


@dataclass
class Track:
    frames: np.ndarray       # (faces,) int32 frame indices, multiples of FRAME_STEP
    boxes: np.ndarray        # (faces, 4) float32 x1, y1, x2, y2 in full-resolution pixels
    detected: np.ndarray     # (faces,) bool: MTCNN ran on this frame (else the box was interpolated)
    embeddings: np.ndarray = None  # (faces, 512) float16


@dataclass
class Loaded:
    """A video as load() leaves it, for process(): its first chunk decoded (a DFDC clip: all of it, so
    that decoding is over before process() starts, in prefetch's background thread), and the decoder,
    paused, for the chunks after it. Each chunk is (indices (n,) int32, frames (n, h, w, 3) uint8,
    n_frames: the clip's decoded frame count on the last chunk, None before it)."""
    first: tuple
    rest: object             # generator of the chunks after the first

    def chunks(self):
        """The chunks, in order, each once: nothing here keeps one after the caller moves on."""
        first, self.first = self.first, None
        yield first
        del first
        yield from self.rest


@dataclass
class VideoFaces:
    n_frames: int            # frames decoded
    width: int
    height: int
    tracks: list = field(default_factory=list)  # Track, largest first
    n_detections: int = 0    # frames MTCNN ran on
    seconds: dict = field(default_factory=dict)


def iou(a, b):
    """IoU of boxes a (n, 4) and b (m, 4): (n, m)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def link(detections, min_iou=0.2):
    """Tracks from per-frame detections {sample_pos: (k, 4) boxes}: {track_id: {sample_pos: box}}.

    Greedy by overlap with each track's latest box, in frame order. Detected frames can be far apart
    (a second), so the bar is low; interpolation is still only trusted at LINK_IOU.
    """
    tracks = []
    for pos in sorted(detections):
        boxes = detections[pos]
        if len(boxes) and tracks:
            last = np.stack([t[max(t)] for t in tracks])
            overlap = iou(boxes, last)  # (boxes, tracks)
            taken_boxes, taken_tracks = set(), set()
            for flat in np.argsort(-overlap, axis=None):
                i, j = np.unravel_index(flat, overlap.shape)
                if overlap[i, j] < min_iou:
                    break
                if i in taken_boxes or j in taken_tracks:
                    continue
                tracks[j][pos] = boxes[i]
                taken_boxes.add(i)
                taken_tracks.add(j)
            new = [boxes[i] for i in range(len(boxes)) if i not in taken_boxes]
        else:
            new = list(boxes)
        tracks.extend({pos: box} for box in new)
    return tracks


def _area(box):
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _size(boxes):
    """A track's size over time: the sum of sqrt(area) of its boxes."""
    return sum(np.sqrt(_area(b)) for b in boxes)


class DetectionPipeline:
    """Video in, face tracks with embeddings out. Settings default to this module's constants."""

    def __init__(self, **settings):
        self.cfg = cfg = config.settings(globals(), **settings)
        self.device = pick_device(cfg['device'])
        from facenet_pytorch import MTCNN
        # thresholds and scale factor are facenet-pytorch's defaults; only the face size is ours
        self.mtcnn = MTCNN(min_face_size=cfg['min_face_size'], keep_all=True, device=self.device)
        self.embedder = face_embedder(cfg['face_weights']).to(self.device)
        if self.device.type == 'cpu':
            # oneDNN's convolutions and max-pooling are 1.3-1.6x faster channels-last
            for net in (self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet, self.embedder):
                net.to(memory_format=torch.channels_last)
        self.embedder_name = describe(cfg['face_weights'])

    # ---- stages -------------------------------------------------------------
    def _detect(self, frames, positions, small_cache, scale):
        """MTCNN on the frames at `positions`, in batches: {pos: (k, 4) boxes in full-res pixels}."""
        out = {}
        for start in range(0, len(positions), self.cfg['batch_size']):
            chunk = positions[start:start + self.cfg['batch_size']]
            for pos in chunk:
                if pos not in small_cache:
                    small_cache[pos] = _downscale(frames[pos], scale)
            batch = np.stack([small_cache[pos] for pos in chunk])  # (batch, h, w, 3) uint8
            boxes, _ = self.mtcnn.detect(batch)
            for pos, b in zip(chunk, boxes):
                out[pos] = (np.zeros((0, 4), np.float32) if b is None
                            else (np.asarray(b, np.float32) / scale))
        return out

    def find_tracks(self, frames):
        """Boxes of the kept face tracks: a list of {sample_pos: (box, detected)}, largest track first."""
        n = len(frames)
        h, w = frames[0].shape[:2]
        scale = min(1.0, self.cfg['detect_size'] / max(h, w))
        if min(_scaled(w, scale), _scaled(h, scale)) < self.mtcnn.min_face_size:
            # MTCNN cannot see a face larger than the frame it searches (and raises on one so small that
            # its image pyramid is empty): a tiny video (16x16) has no face, not an error
            self.n_detections = 0
            return []
        small_cache = {}
        every = max(1, self.cfg['detect_every'])
        detections = self._detect(frames, sorted(set(range(0, n, every)) | {n - 1}), small_cache, scale)
        while True:
            tracks = self._choose(link(detections), len(detections))
            todo = set()
            for track in tracks:
                todo |= self._unsafe(track, detections, n)
            if not todo:
                break
            detections.update(self._detect(frames, sorted(todo), small_cache, scale))
        self.n_detections = len(detections)
        filled = [self._fill(track) for track in tracks]
        return self.refine(frames, filled) if self.cfg['roi_size'] else filled

    def _choose(self, tracks, n_detected):
        """The kept tracks. Candidates are the tracks found on at least MIN_TRACK_FRACTION of the detected
        frames (a false positive, however large, is rarely found twice in a row), or every track where
        none is; they rank by total face size over time (sum of sqrt(area)), so a face that is there all
        along beats a brief close-up of a passer-by."""
        need = self.cfg['min_track_fraction'] * n_detected
        candidates = [t for t in tracks if len(t) >= need] or tracks
        candidates = sorted(candidates, key=lambda t: -_size(t.values()))
        return candidates if self.cfg['keep_all_tracks'] else candidates[:1]

    def _safe(self, track, a, b):
        """Can the box be carried from the track's detection at a to the one at b?"""
        return (b - a <= self.cfg['max_gap']
                and iou(track[a], track[b])[0, 0] >= self.cfg['link_iou'])

    def _unsafe(self, track, detections, n):
        """Frames to run MTCNN on next for this track: the middle of every stretch where its box cannot be
        carried yet (it moved too much, or it starts or ends there) and that still has undetected frames."""
        todo = set()
        own = sorted(track)
        stretches = [(a, b) for a, b in zip(own, own[1:]) if not self._safe(track, a, b)]
        before = [p for p in detections if p < own[0]]
        after = [p for p in detections if p > own[-1]]
        stretches.append((max(before) if before else -1, own[0]))
        stretches.append((own[-1], min(after) if after else n))
        for a, b in stretches:
            undetected = [p for p in range(a + 1, b) if p not in detections]
            if undetected:
                todo.add(undetected[len(undetected) // 2])
        return todo

    def _fill(self, track):
        """The track's box on every sampled frame it covers: interpolated between safe detections."""
        boxes = {pos: (box, True) for pos, box in track.items()}
        own = sorted(track)
        for a, b in zip(own, own[1:]):
            if self._safe(track, a, b):
                for pos in range(a + 1, b):
                    t = (pos - a) / (b - a)
                    boxes[pos] = ((1 - t) * track[a] + t * track[b], False)
        return dict(sorted(boxes.items()))

    def _roi_detect(self, frames, predicted):
        """MTCNN around the expected box of each frame, at about the face's own resolution.

        predicted: {pos: box}. Each region is a square of twice the box's size around its centre, resized
        to ROI_SIZE, so the face is ~ROI_SIZE/2 pixels whatever the video's resolution and MTCNN's pyramid
        is three small levels. Returns {pos: box or None} (the found box that overlaps the expected one).
        """
        size = self.cfg['roi_size']
        positions = sorted(predicted)
        rois, origins = [], []
        for pos in positions:
            x1, y1, x2, y2 = predicted[pos]
            side = 2.0 * max(x2 - x1, y2 - y1)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            origin = (cx - side / 2, cy - side / 2, side / size)
            rois.append(_square(frames[pos], origin, size))
            origins.append(origin)
        found = {}
        saved = self.mtcnn.min_face_size
        # the region is resized to size x size whatever the box, so MTCNN's pyramid is never empty
        # (a face of size // 4 fits it), also for a tiny video
        self.mtcnn.min_face_size = max(1, size // 4)
        try:
            for start in range(0, len(rois), self.cfg['batch_size']):
                batch = np.stack(rois[start:start + self.cfg['batch_size']])  # (batch, size, size, 3)
                boxes, _ = self.mtcnn.detect(batch)
                for k, b in enumerate(boxes, start):
                    pos, (ox, oy, s) = positions[k], origins[k]
                    if b is None:
                        found[pos] = None
                        continue
                    b = np.asarray(b, np.float32) * s + np.array([ox, oy, ox, oy], np.float32)
                    overlap = iou(b, predicted[pos])[:, 0]
                    found[pos] = b[overlap.argmax()] if overlap.max() >= 0.3 else None
        finally:
            self.mtcnn.min_face_size = saved
        return found

    def refine(self, frames, filled):
        """Every box of a track re-detected in its region of interest; the track extended at its ends
        for as long as the face is still found there (a dark face that full-frame MTCNN loses)."""
        n = len(frames)
        refined = []
        for boxes in filled:
            # frames where full-frame MTCNN found the face need no second look
            predicted = {pos: box for pos, (box, detected) in boxes.items() if not detected}
            found = self._roi_detect(frames, predicted) if predicted else {}
            out = {pos: ((found[pos], True) if found.get(pos) is not None else value)
                   for pos, value in boxes.items()}
            for direction in (-1, 1):
                pos = (min(out) if direction < 0 else max(out))
                while 0 <= pos + direction < n and pos + direction not in out:
                    hit = self._roi_detect(frames, {pos + direction: out[pos][0]})[pos + direction]
                    if hit is None:
                        break
                    pos += direction
                    out[pos] = (hit, True)
            refined.append(dict(sorted(out.items())))
        return refined

    def crop(self, frame, box):
        """The face with MARGIN on each side, resized to FACE_SIZE square: (FACE_SIZE, FACE_SIZE, 3)."""
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = box
        mx, my = self.cfg['margin'] * (x2 - x1), self.cfg['margin'] * (y2 - y1)
        x1, y1 = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
        x2, y2 = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
        if x2 - x1 < 2 or y2 - y1 < 2:
            x1, y1, x2, y2 = 0, 0, w, h  # a box outside the frame (interpolation never gives one)
        size = self.cfg['face_size']
        return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)

    @torch.inference_mode()
    def embed(self, crops):
        """(faces, FACE_SIZE, FACE_SIZE, 3) uint8 -> (faces, 512) float16."""
        out = []
        for start in range(0, len(crops), self.cfg['batch_size']):
            x = torch.from_numpy(np.stack(crops[start:start + self.cfg['batch_size']]))
            x = x.to(self.device).permute(0, 3, 1, 2).float()  # (batch, 3, 160, 160)
            x = (x - 127.5) / 128.0  # facenet-pytorch's fixed_image_standardization
            if self.device.type == 'cpu':
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.cfg['amp']):
                out.append(self.embedder(x).float().cpu().numpy().astype(np.float16))
        return np.concatenate(out) if out else np.zeros((0, 512), np.float16)

    def embed_tracks(self, indices, frames, filled):
        """Crops of the boxes of `filled` (find_tracks) embedded: a Track each (frame indices from
        `indices`, the sampled frames' numbers)."""
        crops, owners = [], []
        for k, boxes in enumerate(filled):
            for pos, (box, _) in boxes.items():
                crops.append(self.crop(frames[pos], box))
                owners.append(k)
        embeddings = self.embed(crops)
        owners = np.asarray(owners)
        tracks = []
        for k, boxes in enumerate(filled):
            pos = np.fromiter(boxes.keys(), np.int64, len(boxes))
            tracks.append(Track(
                frames=indices[pos],
                boxes=np.stack([b for b, _ in boxes.values()]).astype(np.float32),
                detected=np.fromiter((d for _, d in boxes.values()), bool, len(boxes)),
                embeddings=embeddings[owners == k]))
        return tracks

    def join_chunks(self, chunks):
        """One list of tracks from the tracks of consecutive chunks ([[Track]], in chunk order): a chunk's
        track continues the joined track whose last box it overlaps most (IoU at least 0.2, the bar of
        link(), which joins detections of one chunk), each at most once; the rest start new ones. The
        kept ones, largest first, as _choose keeps them within a chunk (one chunk: its tracks as they are)."""
        joined = []  # each: the Tracks of one face, in frame order
        for tracks in chunks:
            ends = [parts[-1] for parts in joined]
            free = list(range(len(tracks)))
            if ends and tracks:
                overlap = iou([t.boxes[0] for t in tracks], [e.boxes[-1] for e in ends])  # (tracks, joined)
                taken = set()
                for flat in np.argsort(-overlap, axis=None):
                    i, j = np.unravel_index(flat, overlap.shape)
                    if overlap[i, j] < 0.2:
                        break
                    if i in free and j not in taken:
                        joined[j].append(tracks[i])
                        free.remove(i)
                        taken.add(j)
            joined.extend([tracks[i]] for i in free)
        joined = sorted(joined, key=lambda parts: -sum(_size(t.boxes) for t in parts))
        if not self.cfg['keep_all_tracks']:
            joined = joined[:1]
        return [parts[0] if len(parts) == 1 else Track(
            frames=np.concatenate([t.frames for t in parts]),
            boxes=np.concatenate([t.boxes for t in parts]),
            detected=np.concatenate([t.detected for t in parts]),
            embeddings=np.concatenate([t.embeddings for t in parts])) for parts in joined]

    # ---- the whole thing ----------------------------------------------------
    def chunks(self, path):
        """Decode: yield (indices (n,) int32, frames (n, h, w, 3) uint8, n_frames or None) for every CHUNK
        sampled frames, n_frames (the frames decoded) on the last chunk only. A chunk is handed out once
        the next sampled frame is decoded (so one that is not the last is known not to be), and this
        generator keeps no reference to it after."""
        size = self.cfg['chunk']
        indices, frames = [], None
        last = -1
        for index, rgb in sampled_frames(path, self.cfg['frame_step'], count_all=True):
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
                # always mmap'd and given back whole; its pages cost nothing until written (the end of a
                # short clip's chunk).
                frames = np.empty((min(size, 64), *rgb.shape), np.uint8)
            elif len(indices) == len(frames):  # a CHUNK above 64: room for twice as many
                frames = np.concatenate([frames, np.empty_like(frames)])
            if rgb.shape != frames.shape[1:]:  # MTCNN's batches need one size
                raise VideoError(f'frame size changes from {frames.shape[2]}x{frames.shape[1]} to '
                                 f'{rgb.shape[1]}x{rgb.shape[0]} at frame {index}')
            frames[len(indices)] = rgb
            indices.append(index)
        if not indices:
            raise VideoError('no frame could be decoded')
        yield np.asarray(indices, np.int32), frames[:len(indices)], last + 1

    def load(self, path):
        """Decode the first chunk (a DFDC clip: all of it) and pause: a Loaded for process().
        Raises VideoError for a video that cannot be read (or, when it is one chunk, is cut short)."""
        rest = self.chunks(path)
        return Loaded(first=next(rest), rest=rest)

    def process(self, loaded):
        """Detect, track, crop and embed one video, chunk by chunk (a Loaded from load()). Raises
        VideoError where decoding a later chunk fails (a clip longer than one chunk, broken or cut short)."""
        seconds = {'decode': 0.0, 'detect': 0.0, 'embed': 0.0}
        pieces, n_detections = [], 0
        chunks = loaded.chunks()
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)  # decodes, for every chunk after the first
            t1 = time.perf_counter()
            if chunk is None:
                break
            indices, frames, n_frames = chunk
            del chunk
            h, w = frames[0].shape[:2]
            filled = self.find_tracks(frames)
            n_detections += self.n_detections
            t2 = time.perf_counter()
            pieces.append(self.embed_tracks(indices, frames, filled))
            del frames  # before the next chunk is decoded: one chunk of frames at a time
            seconds['decode'] += t1 - t0
            seconds['detect'] += t2 - t1
            seconds['embed'] += time.perf_counter() - t2
        return VideoFaces(n_frames=n_frames, width=w, height=h, tracks=self.join_chunks(pieces),
                          n_detections=n_detections, seconds=seconds)

    def __call__(self, path):
        """Face tracks of one video. Raises VideoError for an unreadable video (no face is not an error)."""
        t0 = time.perf_counter()
        loaded = self.load(path)
        decode = time.perf_counter() - t0
        result = self.process(loaded)
        result.seconds['decode'] += decode
        return result

    def stream(self, paths, prefetch=-1):
        """Yield (path, VideoFaces or VideoError) for each path, in order, decoding `prefetch` videos
        ahead in a background thread (-1: common.prefetch.default_ahead for this device)."""
        for path, loaded in prefetched(self.load_or_error, paths, default_ahead(self.device, prefetch)):
            yield path, (loaded if isinstance(loaded, VideoError) else self.process_or_error(loaded))

    def load_or_error(self, path):
        """load(path), or the VideoError that says why it cannot be read (for a background thread)."""
        try:
            return self.load(path)
        except VideoError as err:
            return err

    def process_or_error(self, loaded):
        """process(loaded), or the VideoError met decoding its later chunks."""
        try:
            return self.process(loaded)
        except VideoError as err:
            return err


def _square(frame, origin, size):
    """The square (x0, y0, pixel scale) of `frame`, resized to size x size; zeros outside the frame."""
    x0, y0, s = origin
    # an affine warp crops, pads and resizes in one pass; INTER_AREA is not available to warps
    matrix = np.array([[s, 0, x0], [0, s, y0]], np.float32)
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT)


def _downscale(frame, scale):
    if scale >= 1.0:
        return frame
    h, w = frame.shape[:2]
    return cv2.resize(frame, (_scaled(w, scale), _scaled(h, scale)), interpolation=cv2.INTER_AREA)


def _scaled(pixels, scale):
    return round(pixels * scale) if scale < 1.0 else pixels


def main():
    config.configure(globals())
    if not VIDEO:
        print('error: give a video: --video=PATH', file=sys.stderr)
        raise SystemExit(2)
    pipeline = DetectionPipeline()
    try:
        faces = pipeline(VIDEO)
    except VideoError as err:
        print(f'error: {VIDEO}: {err}', file=sys.stderr)
        raise SystemExit(1) from None
    print(f'{VIDEO}: {faces.width}x{faces.height}, {faces.n_frames} frames, '
          f'MTCNN on {faces.n_detections} of them, embedder {pipeline.embedder_name}')
    for k, track in enumerate(faces.tracks):
        print(f'track {k}: {len(track.frames)} faces on frames {track.frames[0]}..{track.frames[-1]}, '
              f'embeddings {track.embeddings.shape} {track.embeddings.dtype}')
    if not faces.tracks:
        print('no face found')
    print('seconds: ' + ', '.join(f'{k} {v:.2f}' for k, v in faces.seconds.items()))


if __name__ == '__main__':
    config.cli(main)
