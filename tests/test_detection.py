"""DetectionPipeline on real clips: which frames, which faces, which embeddings."""
import numpy as np
import pytest
import torch

import DetectionPipeline as dp
from common import config
from common import video
from common.video import VideoError, sampled_frames
from common.weights import face_embedder
from faces import pipeline as fp
from conftest import testdata
from face_checks import assert_embeddings_are_of_their_crops, assert_same_boxes


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
    # not rounding but another computation: MTCNN on a third of the resolution, and carried boxes
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
    with pytest.raises(config.UserError) as err:
        face_embedder('vggface2')
    message = str(err.value)
    assert '\n' not in message and '--face_weights=' in message and str(tmp_path) in message
    (tmp_path / 'junk.pt').write_text('junk')
    with pytest.raises(config.UserError, match='cannot read weights file'):
        face_embedder(str(tmp_path / 'junk.pt'))
    with pytest.raises(config.UserError, match='not a file'):
        face_embedder('imagenet')


def _encode(path, frames, fps=25, rotation=0):
    """An H.264 mp4 of the RGB frames; `rotation` (degrees counterclockwise) goes into its display
    matrix, as a phone writes one for a clip it stored sideways."""
    import av
    h, w = frames[0].shape[:2]
    with av.open(str(path), 'w') as out:
        stream = out.add_stream('libx264', rate=fps, options={'crf': '18'})
        stream.width, stream.height, stream.pix_fmt = w, h, 'yuv420p'
        if rotation:
            stream.set_display_rotation(rotation)
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format='rgb24')))
        out.mux(stream.encode())
    return str(path)


@pytest.mark.parametrize('width,height', [(16, 16), (40, 30), (30, 600), (2000, 48)])
def test_tiny_video_has_no_face_and_never_raises(pipeline, tmp_path, width, height):
    """Frames whose short side is under MIN_FACE_SIZE once downscaled (16x16; 2000x48 is 640x15 for
    MTCNN) made MTCNN raise (`torch.cat(): expected a non-empty list`): such a frame has no face."""
    import cv2
    import make_sample_dataset as sample
    face = cv2.resize(sample.photo('astronaut'), (width, height), interpolation=cv2.INTER_AREA)
    path = _encode(tmp_path / f'{width}x{height}.mp4', [face] * 30)
    faces = pipeline(path)
    assert (faces.n_frames, faces.width, faces.height) == (30, width, height)
    if min(width, height) * min(1.0, dp.DETECT_SIZE / max(width, height)) < dp.MIN_FACE_SIZE:
        assert faces.tracks == [] and faces.n_detections == 0
    # the re-detection around a box resizes its region to ROI_SIZE: a box in a tiny frame is no crash
    frame = np.ascontiguousarray(face)
    box = np.array([2, 2, 6, 6], np.float32)
    assert fp.roi_detect([frame], [(0, box)], dp.ROI_SIZE, pipeline.nets.detect) == [None]


def _boxes(faces):
    return dict(zip(faces.tracks[0].frames.tolist(), faces.tracks[0].boxes))


@pytest.mark.parametrize('rotation', [90, -90, 180])
def test_rotated_phone_clip_is_decoded_upright(pipeline, tmp_path, rotation):
    """A clip stored sideways with a display matrix: its frames, width, height and faces are the upright
    clip's (it was embedded sideways, width and height unrotated)."""
    import cv2
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')  # 1920x1080
    frames = [cv2.resize(rgb, (640, 360), interpolation=cv2.INTER_AREA)
              for _, rgb in zip(range(36), (rgb for _, rgb in sampled_frames(clip, 1)))]
    upright = _encode(tmp_path / 'upright.mp4', frames)
    # stored turned the other way, so that the display matrix's turn puts it upright
    stored = [np.rot90(rgb, -rotation // 90) for rgb in frames]
    assert stored[0].shape[:2] == ((640, 360) if rotation % 180 else (360, 640))
    rotated = _encode(tmp_path / 'rotated.mp4', stored, rotation=rotation)
    assert video.probe(rotated)[('width')] == 640 and video.probe(rotated)['height'] == 360
    a = dict(sampled_frames(upright, 6))
    b = dict(sampled_frames(rotated, 6))
    assert a.keys() == b.keys() and all(b[i].shape == (360, 640, 3) for i in b)
    assert max(np.abs(a[i].astype(int) - b[i]).mean() for i in a) < 3  # the same pictures (re-encoded)
    faces_a, faces_b = pipeline(upright), pipeline(rotated)
    assert (faces_b.width, faces_b.height) == (640, 360)
    box_a, box_b = _boxes(faces_a), _boxes(faces_b)
    assert box_a.keys() == box_b.keys() and len(box_a) == 6
    # the same face, within what two encodes of the picture move MTCNN's box (above 0.8 in most runs,
    # 0.797 once); a sideways frame's box would not overlap the upright one's at all
    assert min(dp.iou(box_a[f], box_b[f])[0, 0] for f in box_a) > 0.7


def test_clip_cut_short_is_truncated_and_intact_clips_are_not(tmp_path):
    """An mp4 with its index first (faststart) cut in half still opens and decodes its first half: it
    is recorded as truncated, not taken as a complete short video. Every intact clip passes."""
    import av
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')
    whole = tmp_path / 'whole.mp4'
    video.remux(clip, whole, faststart=True)
    data = whole.read_bytes()
    with av.open(str(whole)) as container:  # where the 150th packet ends: a cut the decoder cannot see
        ends = sorted(p.pos + p.size for p in container.demux(video=0) if p.pos is not None and p.size)
    cuts = {'half.mp4': len(data) // 2, 'clean.mp4': ends[150]}
    for name, size in cuts.items():
        (tmp_path / name).write_bytes(data[:size])
        with pytest.raises(VideoError, match=r'^truncated: decoded \d+ of 300 frames \(container says 300'):
            for _ in sampled_frames(str(tmp_path / name), 6):
                pass
    # a DFDC clip keeps its index (moov) at its end: cut short, FFmpeg cannot open it ('moov atom not found')
    with open(clip, 'rb') as f:
        (tmp_path / 'dfdc_cut.mp4').write_bytes(f.read()[:len(data) // 2])
    with pytest.raises(VideoError, match=r'^truncated: an MP4 cut short before its index \(moov\)'):
        video.open_video(str(tmp_path / 'dfdc_cut.mp4'))
    assert not video.cut_before_index(clip) and not video.cut_before_index(str(whole))  # whole: not cut
    (tmp_path / 'text.mp4').write_text('ftyp is not a box')  # neither is a text file
    with pytest.raises(VideoError, match='^not a readable video: '):
        video.open_video(str(tmp_path / 'text.mp4'))
    # Matroska has no frame count: its duration (of the whole file) says how long the clip is
    mkv = tmp_path / 'whole.mkv'
    video.remux(testdata('talking_heads', '5.mp4'), mkv)  # 122 frames, 4.88 s
    (tmp_path / 'half.mkv').write_bytes(mkv.read_bytes()[:mkv.stat().st_size // 2])
    with pytest.raises(VideoError, match=r'^truncated: decoded \d+ of 122 frames \(container says 4.88 s'):
        for _ in sampled_frames(str(tmp_path / 'half.mkv'), 6):
            pass
    assert len(list(sampled_frames(str(mkv), 6))) == 21
    pipeline = dp.DetectionPipeline(face_weights='none', device='cpu')
    with pytest.raises(VideoError, match='^truncated: decoded 15'):
        pipeline(str(tmp_path / 'clean.mp4'))
    import glob
    intact = [str(whole)] + sorted(glob.glob(testdata('') + '/**/*.mp4', recursive=True))
    assert len(intact) >= 11
    for path in intact:
        n = sum(1 for _ in sampled_frames(path, 6, convert=False, count_all=True))
        assert n == video.probe(path)['n_frames'], path


def test_long_clip_is_worked_in_chunks_with_bounded_memory_and_one_track(tmp_path, monkeypatch, face_weights):
    """A clip of several chunks (a real clip's packets 4 times over, 488 frames: 82 sampled, chunks of 60
    and 22) gives one continuous track, each embedding that of its own frame's crop, and holds one chunk
    of frames at a time (the old code held all 82)."""
    import weakref
    clip = tmp_path / 'long.mp4'
    video.remux(testdata('talking_heads', '5.mp4'), clip, times=4)  # 122 frames, 524x524
    decoded, chunks = [], []
    to_rgb = video._to_rgb

    def tracked(frame):
        rgb = to_rgb(frame)
        decoded.append(weakref.ref(rgb))
        return rgb
    monkeypatch.setattr(video, '_to_rgb', tracked)
    pipeline = dp.DetectionPipeline(face_weights=face_weights, device='cpu')  # it tells crops apart
    assert pipeline.cfg['chunk'] == 60
    find_tracks = fp.find_tracks
    held = []  # at each chunk's detection: (chunk arrays alive, decoded frames alive outside them)

    def counting(frames, *args):
        chunks.append(weakref.ref(frames if frames.base is None else frames.base))
        held.append((sum(r() is not None for r in chunks), sum(r() is not None for r in decoded)))
        return find_tracks(frames, *args)
    monkeypatch.setattr(fp, 'find_tracks', counting)
    faces = pipeline(str(clip))
    assert faces.n_frames == 488 and len(decoded) == 82
    assert len(chunks) == 2 and all(c() is None for c in chunks)  # freed once the video is done
    # while a chunk is worked on: it alone, and the next chunk's first frame (decoded to know there is one)
    assert held == [(1, 1), (1, 0)], held
    assert len(faces.tracks) == 1
    track = faces.tracks[0]
    assert track.frames.tolist() == list(range(0, 488, 6))  # across the chunks' seam, no gap
    # each embedding is its frame's crop's, not the next frame's (chunks kept frames, boxes and embeddings
    # in step)
    monkeypatch.undo()
    assert_embeddings_are_of_their_crops(str(clip), track, pipeline)
    # the seam: the last box of chunk 0 and the first of chunk 1 are one face
    assert dp.iou(track.boxes[59], track.boxes[60])[0, 0] > 0.5


def test_dfdc_clip_is_one_chunk_and_small_chunks_find_the_same_face(pipeline):
    """A DFDC clip (50 sampled frames) is one chunk: the result of the whole clip at once. Cut into
    chunks of 8, the joined track covers the same frames with the same boxes (MTCNN runs per chunk, so
    boxes may move a little)."""
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')
    one = pipeline(clip)
    whole = dp.DetectionPipeline(face_weights='none', device='cpu', chunk=10 ** 6)(clip)
    assert len(one.tracks) == len(whole.tracks) == 1
    for a, b in zip(one.tracks, whole.tracks):  # the same computation in this process: bit for bit
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
    # the boxes the code gave before chunks (its output was bit for bit today's on the 4 DFDC clips), on
    # another CPU: within what float rounding can move MTCNN (tests/face_checks.py: 7.8 px of these 188 px)
    expected = {0: [857.35, 248.49, 1045.43, 496.56], 150: [879.1, 251.74, 1063.68, 490.95],
                294: [840.45, 255.64, 1025.6, 496.84]}
    for frame, box in expected.items():
        assert_same_boxes(_boxes(one)[frame], np.asarray(box, np.float32))
    small = dp.DetectionPipeline(face_weights='none', device='cpu', chunk=8)(clip)
    assert len(small.tracks) == 1
    assert small.tracks[0].frames.tolist() == one.tracks[0].frames.tolist() == list(range(0, 300, 6))
    overlap = [dp.iou(a, b)[0, 0] for a, b in zip(small.tracks[0].boxes, one.tracks[0].boxes)]
    assert np.median(overlap) > 0.9 and min(overlap) > 0.7


def test_long_clip_cut_short_after_its_first_chunk_is_a_video_error_in_the_stream(pipeline, tmp_path):
    """The truncation of a clip of several chunks is found while its later chunks decode, after the first
    was worked on: stream() yields it as the video's VideoError, like one found at once."""
    whole = tmp_path / 'whole.mp4'
    video.remux(testdata('talking_heads', '5.mp4'), whole, times=4, faststart=True)  # 488 frames
    data = whole.read_bytes()
    cut = tmp_path / 'cut.mp4'
    cut.write_bytes(data[:len(data) * 9 // 10])
    first = next(fp.chunks(str(cut), dp.FRAME_STEP, dp.CHUNK))  # the first chunk (360 frames) decodes
    assert len(first[1]) == 60 and first[2] is None
    [(path, result, _)] = list(pipeline.stream([str(cut)]))
    assert path == str(cut) and isinstance(result, VideoError)
    assert str(result).startswith('truncated: decoded ') and 'of 488 frames' in str(result)
