"""DetectionPipeline on real clips: which frames, which faces, which embeddings."""
import numpy as np
import pytest
import torch

import DetectionPipeline as dp
from common import video
from common.video import VideoError, sampled_frames
from common.weights import WeightsUnavailable, face_embedder
from conftest import testdata


@pytest.fixture(scope='module')
def pipeline():
    return dp.DetectionPipeline(face_weights='none', device='cpu')


def test_samples_exactly_every_sixth_frame_and_converts_only_those(monkeypatch):
    clip = testdata('talking_heads', '3.mp4')  # 125 frames
    every = {i: f for i, f in sampled_frames(clip, 1)}
    converted = []
    monkeypatch.setattr(video, '_to_rgb', lambda frame: converted.append(1) or frame.to_ndarray(format='rgb24'))
    sampled = list(sampled_frames(clip, 6))
    assert [i for i, _ in sampled] == list(range(0, 125, 6))
    assert len(converted) == len(sampled) == 21
    for i, rgb in sampled:  # the very frames, not consecutive ones
        np.testing.assert_array_equal(rgb, every[i])
    assert not np.array_equal(sampled[1][1], every[1])


def test_dfdc_clip_gives_50_faces_on_multiples_of_6(pipeline):
    faces = pipeline(testdata('dfdc_sample', 'lynaeydofd.mp4'))
    assert faces.n_frames == 300 and (faces.width, faces.height) == (1920, 1080)
    track = faces.tracks[0]
    assert track.frames.tolist() == list(range(0, 300, 6))
    assert track.embeddings.shape == (50, 512) and track.embeddings.dtype == np.float16
    assert np.isfinite(track.embeddings.astype(np.float32)).all()
    assert faces.n_detections < 50  # boxes were carried between detections


def test_boxes_agree_with_full_resolution_mtcnn(pipeline):
    """The downscaled detection and the carried boxes find the face naive MTCNN finds."""
    from facenet_pytorch import MTCNN
    clip = testdata('dfdc_sample', 'brtujopkby.mp4')  # portrait 1080x1920
    faces = pipeline(clip)
    assert (faces.width, faces.height) == (1080, 1920)
    mine = dict(zip(faces.tracks[0].frames.tolist(), faces.tracks[0].boxes))
    mtcnn = MTCNN(device='cpu')
    checked = []
    for index, rgb in sampled_frames(clip, 60):
        boxes, _ = mtcnn.detect(rgb)
        checked.append(dp.iou(mine[index], np.asarray(boxes[0], np.float32))[0, 0])
    assert len(checked) == 5 and min(checked) >= 0.7 and np.mean(checked) >= 0.8, checked
    assert (faces.tracks[0].boxes[:, [0, 2]] <= 1080).all() and (faces.tracks[0].boxes[:, [1, 3]] <= 1920).all()


def test_two_people_largest_by_default_every_track_on_request(pipeline):
    clip = testdata('dfdc_sample', 'yhffcuhhjy.mp4')
    one = pipeline(clip)
    assert len(one.tracks) == 1
    both = dp.DetectionPipeline(face_weights='none', device='cpu', keep_all_tracks=True)(clip)
    assert len(both.tracks) == 2
    big, small = both.tracks
    # the same person (keeping both tracks runs MTCNN on more frames, so boxes may move a little)
    assert big.frames.tolist() == one.tracks[0].frames.tolist()
    overlap = [dp.iou(a, b)[0, 0] for a, b in zip(big.boxes, one.tracks[0].boxes)]
    assert np.median(overlap) > 0.9 and min(overlap) > 0.5
    area = lambda b: ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).mean()  # noqa: E731
    assert area(big.boxes) > 3 * area(small.boxes)
    common = sorted(set(big.frames.tolist()) & set(small.frames.tolist()))
    assert len(common) > 25  # both people are there most of the time, as separate tracks
    b = dict(zip(big.frames.tolist(), big.boxes))
    s = dict(zip(small.frames.tolist(), small.boxes))
    assert max(dp.iou(b[f], s[f])[0, 0] for f in common) == 0


def test_frames_without_a_face_are_left_out_not_zero_filled(pipeline, tmp_path):
    """A clip whose first half has no face: the track starts where the face appears."""
    import make_sample_dataset as sample
    face = sample.photo('astronaut')
    n = 60
    frames = [np.full_like(face, 128) if i < 30 else face for i in range(n)]
    path = str(tmp_path / 'half.mp4')
    sample.write_clip(path, frames, (512, 512), sample.voice(150, 2, 16000, 0), 30, 16000)
    faces = pipeline(path)
    track = faces.tracks[0]
    assert track.frames.min() >= 30 and track.frames.tolist() == list(range(30, 60, 6))
    assert (np.abs(track.embeddings.astype(np.float32)).sum(1) > 0).all()


def test_no_face_gives_no_track_and_unreadable_raises(pipeline, tmp_path):
    import make_sample_dataset as sample
    sky = np.zeros((256, 256, 3), np.uint8)
    sky[..., 2] = np.linspace(80, 255, 256)[:, None]
    path = str(tmp_path / 'sky.mp4')
    sample.write_clip(path, [sky] * 24, (256, 256), np.zeros(16000, np.float32), 24, 16000)
    assert pipeline(path).tracks == []
    bad = tmp_path / 'text.mp4'
    bad.write_text('not a video')
    with pytest.raises(VideoError, match='not a readable video'):
        pipeline(str(bad))


def test_untrained_embeddings_are_seeded_and_local_weights_load(tmp_path):
    clip = testdata('talking_heads', '5.mp4')
    a = dp.DetectionPipeline(face_weights='none', device='cpu')(clip).tracks[0].embeddings
    b = dp.DetectionPipeline(face_weights='none', device='cpu')(clip).tracks[0].embeddings
    np.testing.assert_array_equal(a, b)
    # a local weight file in facenet-pytorch's format (with its VGGFace2 classifier) loads
    torch.manual_seed(1)
    from facenet_pytorch import InceptionResnetV1
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631)
    torch.save(model.state_dict(), tmp_path / 'w.pt')
    loaded = face_embedder(str(tmp_path / 'w.pt'))
    torch.testing.assert_close(loaded.last_linear.weight, model.last_linear.weight)
    c = dp.DetectionPipeline(face_weights=str(tmp_path / 'w.pt'), device='cpu')(clip).tracks[0].embeddings
    assert c.shape == a.shape and not np.array_equal(a, c)


def test_weights_that_cannot_be_had_are_one_clear_line(tmp_path, monkeypatch):
    from facenet_pytorch.models import inception_resnet_v1 as irv1
    from urllib.error import URLError

    def offline(url, dst, *args, **kwargs):
        raise URLError('Name or service not known')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(irv1, 'download_url_to_file', offline)
    with pytest.raises(WeightsUnavailable) as err:
        face_embedder('vggface2')
    message = str(err.value)
    assert '\n' not in message and '--face_weights=' in message and str(tmp_path) in message
    (tmp_path / 'junk.pt').write_text('junk')
    with pytest.raises(WeightsUnavailable, match='cannot read weights file'):
        face_embedder(str(tmp_path / 'junk.pt'))
    with pytest.raises(WeightsUnavailable, match='not a file'):
        face_embedder('imagenet')
