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
    x1, y1, x2, y2 = box
    side = 2.0 * max(x2 - x1, y2 - y1)
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side / size


def crop(frame, box, margin, size):
    """The face with `margin` (a fraction of the box's width and height) on each side, resized to
    (size, size, 3) by area interpolation."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    x1, y1 = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
    x2, y2 = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        x1, y1, x2, y2 = 0, 0, w, h  # a box outside the frame (interpolation never gives one)
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
