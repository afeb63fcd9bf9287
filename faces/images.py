"""Cropping: the images the networks see, cut from decoded frames with OpenCV (on the CPU, where the
frames are; in a decoding worker, only these small images travel to the networks)."""
import cv2
import numpy as np

# OpenCV's own thread pool on these small images saves little, and it does not survive a fork: a decoding
# worker (faces/workers.py) whose parent had used it would hang in its first call. One thread: no pool.
cv2.setNumThreads(1)


def scaled(pixels, scale):
    return round(pixels * scale) if scale < 1.0 else pixels


def downscale(frame, scale):
    """(h, w, 3) -> the copy MTCNN searches: scale < 1 by area interpolation, else the frame itself."""
    if scale >= 1.0:
        return frame
    h, w = frame.shape[:2]
    return cv2.resize(frame, (scaled(w, scale), scaled(h, scale)), interpolation=cv2.INTER_AREA)


def square(frame, origin, size):
    """The square (x0, y0, pixel scale) of `frame`, resized to (size, size, 3); zeros outside the frame."""
    x0, y0, s = origin
    # an affine warp crops, pads and resizes in one pass; INTER_AREA is not available to warps
    matrix = np.array([[s, 0, x0], [0, s, y0]], np.float32)
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT)


def roi_origin(box, size):
    """The region re-detection searches around a box, as `square` takes it: a square twice the box's size,
    centred on it, shown at size x size pixels: (x0, y0, pixel scale)."""
    x1, y1, x2, y2 = box[:4]
    side = 2.0 * max(x2 - x1, y2 - y1)
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side / size


def crop(frame, box, margin, size):
    """The face with `margin` (a fraction of the box's width and height) on each side, resized to
    (size, size, 3) by area interpolation."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box[:4]
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    x1, y1 = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
    x2, y2 = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        x1, y1, x2, y2 = 0, 0, w, h  # a box outside the frame (interpolation never gives one)
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


# GenD's detector.py (align_face): where the eyes, the nose tip and the mouth corners go, as fractions of
# the crop before its margin (image-left eye first, as MTCNN's and RetinaFace's points come)
ALIGN_POINTS = np.array([[0.34, 0.46], [0.66, 0.46], [0.5, 0.64], [0.37, 0.82], [0.63, 0.82]], np.float32)
ALIGN_SIZE = 256   # GenD's crops: 256 x 256 (detector.py's default), later resized to CLIP's 224
ALIGN_SCALE = 1.3  # ... showing 1.3x the face that the points span (its context)


def align_points(size=ALIGN_SIZE, scale=ALIGN_SCALE):
    """(5, 2) where the landmarks land in a size x size crop: GenD's points moved by the margin
    (scale - 1) / 2 on each side and shrunk back into the crop, as align_face computes them."""
    margin = size * (scale - 1) / 2
    points = ALIGN_POINTS * size  # float32, step by step as align_face: the same bits, the same warp
    points += margin
    points *= size / (size + 2 * margin)
    return points


def align_matrix(landmarks, size=ALIGN_SIZE, scale=ALIGN_SCALE):
    """(2, 3) the similarity transform (rotation, uniform scale, shift) that takes the (5, 2) landmarks onto
    align_points(), fitted by OpenCV as GenD fits it (estimateAffinePartial2D, least median of squares)."""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), align_points(size, scale),
                                            method=cv2.LMEDS)
    if matrix is None:  # degenerate points (all on one spot): no transform fits
        raise ValueError(f'no similarity transform fits the landmarks {np.round(landmarks, 1).tolist()}')
    return matrix


def align(frame, landmarks, size=ALIGN_SIZE, scale=ALIGN_SCALE):
    """The face of `frame` aligned on its (5, 2) landmarks as GenD's align_face does (bilinear warp, zeros
    outside the frame): (size, size, 3) uint8."""
    return cv2.warpAffine(frame, align_matrix(landmarks, size, scale), (size, size), flags=cv2.INTER_LINEAR)
