"""MTCNN's 5 landmarks kept through detection and tracking, and GenD's alignment on them (faces/images.py)."""
import numpy as np
import torch
from facenet_pytorch import MTCNN as LibraryMTCNN

import DetectionPipeline as dp
from common.video import sampled_frames
from conftest import testdata
from faces import images
from faces.mtcnn import MTCNN
from test_mtcnn import downscaled

CPU = torch.device('cpu')


def test_points_are_the_librarys_on_real_frames():
    """ONet's points, as facenet-pytorch's MTCNN.detect(landmarks=True) gives them (float rounding: its
    crops are resized one by one, ours in one gather: 1e-3 px), with the same boxes before them."""
    for name in ('lynaeydofd.mp4', 'yhffcuhhjy.mp4', 'abofeumbvv.mp4'):
        frames = downscaled(testdata('dfdc_sample', name), 100)
        boxes, _, points = LibraryMTCNN(min_face_size=dp.MIN_FACE_SIZE, keep_all=True, device='cpu').detect(
            frames, landmarks=True)
        ours = MTCNN(CPU).detect(frames, dp.MIN_FACE_SIZE, points=True)
        plain = MTCNN(CPU).detect(frames, dp.MIN_FACE_SIZE)
        assert sum(len(o) for o in ours) > 0
        for mine, box, point, only in zip(ours, boxes, points, plain):
            if box is None:
                assert mine.shape == (0, 14)
                continue
            box, point = np.asarray(box, np.float32), np.asarray(point, np.float32)  # (faces, 4), (faces, 5, 2)
            assert mine.shape == (len(box), 14)
            np.testing.assert_allclose(mine[:, :4], box, atol=1e-3)
            np.testing.assert_allclose(mine[:, 4:].reshape(-1, 5, 2), point, atol=1e-3)
            np.testing.assert_array_equal(only, mine[:, :4])  # without points: the same boxes


def umeyama(src, dst):
    """The least-squares similarity transform taking points src (n, 2) onto dst (n, 2) (Umeyama 1991): (2, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / s.var(0).sum()
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def gend_points(size=256, scale=1.3):
    """GenD's detector.py align_face targets, written out: the fractions, moved by the margin, shrunk back."""
    frac = np.array([[0.34, 0.46], [0.66, 0.46], [0.5, 0.64], [0.37, 0.82], [0.63, 0.82]])
    margin = size * (scale - 1) / 2
    return (frac * size + margin) * size / (size + 2 * margin)


def gend_align_face(img, landmarks, target_size=(256, 256), scale=1.3):
    """GenD's detector.py align_face (github.com/yermandy/GenD, MIT), written out for a given target size."""
    import cv2
    dst = np.array([[0.34, 0.46], [0.66, 0.46], [0.5, 0.64], [0.37, 0.82], [0.63, 0.82]], np.float32)
    dst[:, 0] *= target_size[0]
    dst[:, 1] *= target_size[1]
    x_margin, y_margin = target_size[0] * (scale - 1) / 2.0, target_size[1] * (scale - 1) / 2.0
    dst[:, 0] += x_margin
    dst[:, 1] += y_margin
    dst[:, 0] *= target_size[0] / (target_size[0] + 2 * x_margin)
    dst[:, 1] *= target_size[1] / (target_size[1] + 2 * y_margin)
    matrix = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), dst, method=cv2.LMEDS)[0]
    return cv2.warpAffine(img, matrix, target_size, flags=cv2.INTER_LINEAR), matrix


def test_faces_are_aligned_onto_gends_points_on_real_frames():
    """On the pipeline's tracks of real clips (landmarks carried with the boxes): the aligned crop is GenD's
    align_face's, pixel for pixel; its transform puts the landmarks where GenD's does (1e-3 px), and where
    a least-squares similarity onto GenD's points (Umeyama) does within 1 px on most faces: OpenCV's fit,
    GenD's, is a least-median one, which on a turned face (one eye's point off) leaves that point out and
    differs by a few pixels (up to ~5 px of 256 on brtujopkby.mp4)."""
    np.testing.assert_allclose(images.align_points(), gend_points(), atol=1e-4)
    pipeline = dp.DetectionPipeline(face_weights='none', device='cpu')
    apart = []
    for name in ('lynaeydofd.mp4', 'brtujopkby.mp4', 'yhffcuhhjy.mp4'):
        path = testdata('dfdc_sample', name)
        track = pipeline(path).tracks[0]
        assert track.landmarks.shape == (len(track.frames), 5, 2)
        x1, y1, x2, y2 = track.boxes.T[:, :, None]
        marks = track.landmarks
        mx, my = 0.2 * (x2 - x1), 0.2 * (y2 - y1)  # ONet may put a turned face's far eye a little outside
        inside = (marks[..., 0] > x1 - mx) & (marks[..., 0] < x2 + mx) & (marks[..., 1] > y1 - my) & (marks[..., 1] < y2 + my)
        assert inside.all()  # every face's points, detected or interpolated, lie on its box
        assert (marks[:, 0, 0] < marks[:, 1, 0]).all()  # image-left eye first
        frames = dict(sampled_frames(path, dp.FRAME_STEP))
        for frame_index, points in zip(track.frames[::5], marks[::5]):
            crop = images.align(frames[frame_index], points)
            want, matrix = gend_align_face(frames[frame_index], points)
            assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
            np.testing.assert_array_equal(crop, want)
            ones = np.hstack([points, np.ones((5, 1))])
            np.testing.assert_allclose(ones @ images.align_matrix(points).T, ones @ matrix.T, atol=1e-3)
            least_squares = ones @ umeyama(points.astype(np.float64), gend_points()).T
            apart.append(np.abs(ones @ matrix.T - least_squares).max())
    apart = np.array(apart)
    assert len(apart) >= 25 and np.median(apart) < 1.0 and apart.max() < 8, apart


def test_interpolated_frames_interpolate_the_landmarks():
    """Without the regions' second look, the frames between detections carry the box and the points,
    linearly between the two detections (a real clip)."""
    pipeline = dp.DetectionPipeline(face_weights='none', device='cpu', roi_size=0)
    track = pipeline(testdata('dfdc_sample', 'lynaeydofd.mp4')).tracks[0]
    detected = np.flatnonzero(track.detected)
    assert (~track.detected).sum() > 10
    for a, b in zip(detected, detected[1:]):
        for i in range(a + 1, b):
            t = (track.frames[i] - track.frames[a]) / (track.frames[b] - track.frames[a])
            want = (1 - t) * track.landmarks[a] + t * track.landmarks[b]
            np.testing.assert_allclose(track.landmarks[i], want, atol=1e-3)
            np.testing.assert_allclose(track.boxes[i], (1 - t) * track.boxes[a] + t * track.boxes[b], atol=1e-3)


def cv2_warp(frame, matrix):
    import cv2
    return cv2.warpAffine(frame, matrix, (256, 256), flags=cv2.INTER_LINEAR).astype(int)
