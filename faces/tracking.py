"""Face tracks from per-frame detections: pure functions of boxes, no images, no networks.

A track is {sample_pos: (4,) box}: its detections (a box may be followed by MTCNN's 5 landmarks, x, y each:
(14,); every function here reads the first 4 and carries the rest, interpolated as the box is), by position among the chunk's sampled frames. Filled,
it is {sample_pos: (box, detected)} for every frame it covers (detected: MTCNN found it there, else the
box is interpolated).
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class Track:
    frames: np.ndarray       # (faces,) int32 frame indices, multiples of the frame step
    boxes: np.ndarray        # (faces, 4) float32 x1, y1, x2, y2 in full-resolution pixels
    detected: np.ndarray     # (faces,) bool: MTCNN found the face on this frame (else: interpolated)
    embeddings: np.ndarray = None  # (faces, D) float16 (FaceNet: 512, CLIP ViT-L/14: 1024)
    landmarks: np.ndarray = None   # (faces, 5, 2) float32 MTCNN's points (eyes, nose, mouth corners), or None
    logits: np.ndarray = None      # (faces,) float32 the encoder's own FAKE logit a face (GenD's head), or None


def iou(a, b):
    """IoU of boxes a (n, 4) and b (m, 4): (n, m)."""
    a, b = (np.asarray(x, np.float32) for x in (a, b))
    a, b = (x.reshape(-1, x.shape[-1] if x.size else 4)[:, :4] for x in (a, b))  # a box's landmarks: left out
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _greedy_pairs(overlap, min_iou):
    """(i, j) pairs of `overlap` (n, m), highest first, each row and column used once, all >= min_iou."""
    taken_i, taken_j = set(), set()
    for flat in np.argsort(-overlap, axis=None):
        i, j = np.unravel_index(flat, overlap.shape)
        if overlap[i, j] < min_iou:
            break
        if i not in taken_i and j not in taken_j:
            taken_i.add(i)
            taken_j.add(j)
            yield i, j


def link(detections, min_iou=0.2):
    """Tracks from per-frame detections {sample_pos: (k, 4) boxes}: a list of {sample_pos: box}.

    Greedy by overlap with each track's latest box, in frame order. Detected frames can be far apart
    (a second), so the bar is low; interpolation is only trusted at a higher one (is_safe).
    """
    tracks = []
    for pos in sorted(detections):
        boxes = detections[pos]
        taken = set()
        if len(boxes) and tracks:
            last = np.stack([t[max(t)] for t in tracks])
            for i, j in _greedy_pairs(iou(boxes, last), min_iou):  # (boxes, tracks)
                tracks[j][pos] = boxes[i]
                taken.add(i)
        tracks.extend({pos: boxes[i]} for i in range(len(boxes)) if i not in taken)
    return tracks


def size(boxes):
    """A track's size over time: the sum of sqrt(area) of its boxes."""
    boxes = list(boxes)
    boxes = np.asarray(boxes, np.float64).reshape(len(boxes), -1)[:, :4]
    return float(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum())


def choose(tracks, n_detected, min_fraction, keep_all):
    """The kept tracks. Candidates are the tracks found on at least min_fraction of the detected frames (a
    false positive, however large, is rarely found twice in a row), or every track where none is; they
    rank by total face size over time, so a face there all along beats a brief close-up of a passer-by."""
    candidates = [t for t in tracks if len(t) >= min_fraction * n_detected] or tracks
    candidates = sorted(candidates, key=lambda t: -size(t.values()))
    return candidates if keep_all else candidates[:1]


def is_safe(track, a, b, max_gap, link_iou):
    """Can the box be carried from the track's detection at a to the one at b?"""
    return b - a <= max_gap and iou(track[a], track[b])[0, 0] >= link_iou


def unsafe(track, detections, n, max_gap, link_iou):
    """Frames to run MTCNN on next for this track: the middle of every stretch where its box cannot be
    carried yet (it moved too much, or it starts or ends there) and that still has undetected frames."""
    todo = set()
    own = sorted(track)
    stretches = [(a, b) for a, b in zip(own, own[1:]) if not is_safe(track, a, b, max_gap, link_iou)]
    before = [p for p in detections if p < own[0]]
    after = [p for p in detections if p > own[-1]]
    stretches.append((max(before) if before else -1, own[0]))
    stretches.append((own[-1], min(after) if after else n))
    for a, b in stretches:
        undetected = [p for p in range(a + 1, b) if p not in detections]
        if undetected:
            todo.add(undetected[len(undetected) // 2])
    return todo


def fill(track, max_gap, link_iou):
    """The track's box on every sampled frame it covers: {pos: (box, detected)}, interpolated between
    safe detections."""
    boxes = {pos: (box, True) for pos, box in track.items()}
    own = sorted(track)
    for a, b in zip(own, own[1:]):
        if is_safe(track, a, b, max_gap, link_iou):
            for pos in range(a + 1, b):
                t = (pos - a) / (b - a)
                boxes[pos] = ((1 - t) * track[a] + t * track[b], False)
    return dict(sorted(boxes.items()))


def join_chunks(chunks, keep_all):
    """One list of Tracks from the Tracks of consecutive chunks ([[Track]], in chunk order): a chunk's
    track continues the joined track whose last box it overlaps most (IoU at least 0.2, link()'s bar),
    each at most once; the rest start new ones. The kept ones, largest first, as choose() keeps them
    within a chunk (one chunk: its tracks as they are)."""
    joined = []  # each: the Tracks of one face, in frame order
    for tracks in chunks:
        free = set(range(len(tracks)))
        if joined and tracks:
            overlap = iou([t.boxes[0] for t in tracks], [parts[-1].boxes[-1] for parts in joined])
            for i, j in _greedy_pairs(overlap, 0.2):  # (tracks, joined)
                joined[j].append(tracks[i])
                free.discard(i)
        joined.extend([tracks[i]] for i in sorted(free))
    joined = sorted(joined, key=lambda parts: -sum(size(t.boxes) for t in parts))
    if not keep_all:
        joined = joined[:1]
    return [parts[0] if len(parts) == 1 else Track(**{
        name: None if getattr(parts[0], name) is None else np.concatenate([getattr(t, name) for t in parts])
        for name in ('frames', 'boxes', 'detected', 'embeddings', 'landmarks', 'logits')}) for parts in joined]
