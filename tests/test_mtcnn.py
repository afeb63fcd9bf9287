"""faces/mtcnn.py against facenet-pytorch's own MTCNN.detect on real frames: the same boxes, and the
pipeline's tracks and embeddings the same whichever of the two detects."""
import cv2
import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN as LibraryMTCNN

import DetectionPipeline as dp
from common.video import sampled_frames
from faces import images
from faces import pipeline as fp
from faces.mtcnn import MTCNN, area_crops, summed_area
from conftest import testdata
from face_checks import BOX_SIDE_FRACTION, assert_embeddings_are_of_their_crops, assert_same_boxes, box_error

CPU = torch.device('cpu')


def library_detect(frames, min_face_size):
    """facenet-pytorch's MTCNN.detect, as DetectionPipeline called it before faces/mtcnn.py."""
    boxes, _ = LibraryMTCNN(min_face_size=min_face_size, keep_all=True, device='cpu').detect(frames)
    return [np.zeros((0, 4), np.float32) if b is None else np.asarray(b, np.float32) for b in boxes]


def downscaled(path, step, side=640):
    frames = [rgb for _, rgb in sampled_frames(path, step)]
    h, w = frames[0].shape[:2]
    return np.stack([images.downscale(f, side / max(h, w)) for f in frames])


def assert_same_detections(ours, theirs):
    """Image by image: as many boxes, in the same order (largest first), each its twin within float rounding
    (tests/face_checks.py: the two codes sum in another order)."""
    assert [len(b) for b in ours] == [len(b) for b in theirs]
    for a, b in zip(ours, theirs):
        assert_same_boxes(a, b)


def test_area_crops_are_adaptive_avg_pool_of_the_region():
    """What the library does per candidate (area interpolation of an integer region) for all at once,
    within float rounding: regions of every shape, at the image's edges, smaller than the output."""
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(0, 256, (3, 37, 53, 3), dtype=np.uint8))
    regions = [(0, 0, 0, 53, 37), (1, 5, 7, 6, 8), (2, 40, 2, 53, 37), (0, 3, 30, 50, 33), (1, 0, 0, 100 // 4, 9)]
    k, x0, y0, x1, y1 = (torch.tensor(c) for c in zip(*regions))
    for size in (24, 48):
        got = area_crops(summed_area(imgs), k, x0, y0, x1, y1, size)
        for n, (i, a, b, c, d) in enumerate(regions):
            region = imgs[i].permute(2, 0, 1)[None, :, b:d, a:c].float()
            want = torch.nn.functional.interpolate(region, size=(size, size), mode='area')[0]
            # one float32 division of exact integer sums vs float32 sums of integers (exact below 2^24) and a
            # division: both within an ulp of 255 (1.5e-5)
            torch.testing.assert_close(got[n], want, atol=1e-4, rtol=0)


def test_boxes_are_the_librarys_on_real_frames():
    """DFDC frames at the size the pipeline searches (landscape, portrait, dark), a street with several
    faces, a photo of six, and regions of interest at ROI_SIZE with its smallest face."""
    ours = MTCNN(CPU)
    cases = [(downscaled(testdata('dfdc_sample', name), 100), dp.MIN_FACE_SIZE)
             for name in ('lynaeydofd.mp4', 'brtujopkby.mp4', 'abofeumbvv.mp4')]
    cases.append((downscaled(testdata('crowd', 'street.mp4'), 60), dp.MIN_FACE_SIZE))
    photo = cv2.cvtColor(cv2.imread(testdata('faces', 'multiface.jpg')), cv2.COLOR_BGR2RGB)
    cases.append((photo[None], dp.MIN_FACE_SIZE))
    frame = next(sampled_frames(testdata('dfdc_sample', 'lynaeydofd.mp4'), 6))[1]
    rois = np.stack([images.square(frame, images.roi_origin(b, dp.ROI_SIZE), dp.ROI_SIZE)
                     for b in ([857, 248, 1045, 496], [880, 260, 1040, 480], [0, 0, 90, 90])])
    cases.append((rois, dp.ROI_SIZE // 4))
    found = 0
    for frames, min_face in cases:
        mine = ours.detect(frames, min_face)
        assert_same_detections(mine, library_detect(frames, min_face))
        found += sum(len(b) for b in mine)
    assert found >= 20  # faces were there to compare (27 here, six in the photo alone)


def test_tiny_and_empty_batches_have_no_face():
    ours = MTCNN(CPU)
    assert [len(b) for b in ours.detect(np.zeros((2, 10, 10, 3), np.uint8), 20)] == [0, 0]
    assert ours.detect(np.zeros((0, 64, 64, 3), np.uint8), 20) == []
    flat = np.full((1, 200, 300, 3), 128, np.uint8)  # candidates nowhere
    assert [len(b) for b in ours.detect(flat, 20)] == [0]


class LibraryNets:
    """The pipeline's networks with facenet-pytorch's MTCNN.detect for detection: the code before."""

    def __init__(self, nets):
        self.embed = nets.embed

    def detect(self, frames, min_face_size):
        return library_detect(frames, min_face_size)


@pytest.mark.parametrize('name', ['yhffcuhhjy.mp4', 'abofeumbvv.mp4'])
def test_tracks_and_embeddings_equal_those_of_the_librarys_detection(name, face_weights):
    """Two people (720p) and a dark, small face: the same frames, boxes within float rounding (a box of the
    dark clip moves 1.1 px on an Intel AMX CPU: tests/face_checks.py), and each embedding that of its own
    box's crop. Only a borderline re-detection where a track ends may flip with float rounding (the dark
    clip's last two frames on one Intel CPU): the frames must agree but for two at each end. A box 8 px
    off would fail the same check."""
    pipeline = dp.DetectionPipeline(face_weights=face_weights, device='cpu', keep_all_tracks=True)
    clip = testdata('dfdc_sample', name)
    ours = pipeline(clip)
    theirs = fp.faces_of(clip, pipeline.cfg, LibraryNets(pipeline.nets))
    assert len(ours.tracks) == len(theirs.tracks) >= 1 and ours.n_detections == theirs.n_detections
    for a, b in zip(ours.tracks, theirs.tracks):
        common, ia, ib = np.intersect1d(a.frames, b.frames, return_indices=True)
        assert len(common) >= max(len(a.frames), len(b.frames)) - 2 and len(common) >= 10
        odd = np.setxor1d(a.frames, b.frames)
        assert ((odd < common.min()) | (odd > common.max())).all()  # only at the ends
        assert_same_boxes(a.boxes[ia], b.boxes[ib])
        for dx, dy in ((8, 0), (0, 8), (-8, -8)):  # a box 8 px off: every one is caught
            shifted = a.boxes[ia] + np.array([dx, dy, dx, dy], np.float32)
            assert min(box_error(s, t) for s, t in zip(shifted, b.boxes[ib])) > BOX_SIDE_FRACTION
        assert_embeddings_are_of_their_crops(clip, a, pipeline)  # theirs come from the same embedding code
