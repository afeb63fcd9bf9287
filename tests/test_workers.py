"""Decoding workers (faces/workers.py) on the CPU: the same faces as in one process, every video's result
or its error, a worker's crash costing its video only."""
import os
import time

import numpy as np
import pytest

import DetectionPipeline as dp
from common.video import VideoError
from faces import pipeline as fp
from conftest import testdata
from face_checks import assert_embeddings_are_of_their_crops, assert_same_boxes


@pytest.fixture(scope='module')
def pipeline(face_weights):
    return dp.DetectionPipeline(face_weights=face_weights, device='cpu', frame_step=15, workers=2)


def inputs(tmp_path):
    bad = tmp_path / 'text.mp4'
    bad.write_text('not a video')
    return [testdata('talking_heads', '5.mp4'), str(bad), testdata('dfdc_sample', 'yhffcuhhjy.mp4'),
            testdata('talking_heads', '3.mp4'), str(tmp_path / 'missing.mp4')]


def test_two_workers_give_what_one_process_gives(pipeline, tmp_path):
    """Every path once, with its faces (frames the same, boxes within float rounding: the networks' batches
    mix videos; each embedding that of its own box's crop) or its VideoError, and what `also` made of it."""
    paths = inputs(tmp_path)
    assert pipeline.workers(len(paths)) == 2
    got = {path: (faces, extra) for path, faces, extra in pipeline.stream(paths, also=os.path.getsize)}
    assert sorted(got) == sorted(paths)
    for path in paths:
        faces, extra = got[path]
        if path.endswith(('text.mp4', 'missing.mp4')):
            assert isinstance(faces, VideoError)
            expected = 'file is missing' if 'missing' in path else 'not a readable video'
            assert str(faces).startswith(expected)
            assert isinstance(extra, FileNotFoundError) if 'missing' in path else extra == 11
            continue
        assert extra == os.path.getsize(path)
        alone = pipeline(path)
        assert len(faces.tracks) == len(alone.tracks) == 1
        assert (faces.n_frames, faces.width, faces.height) == (alone.n_frames, alone.width, alone.height)
        a, b = faces.tracks[0], alone.tracks[0]
        np.testing.assert_array_equal(a.frames, b.frames)
        assert_same_boxes(a.boxes, b.boxes)  # within what another batch's float sums move MTCNN
        assert_embeddings_are_of_their_crops(path, a, pipeline)


@pytest.mark.parametrize('how, timeout, reason', [
    ('dies', 1800, 'the decoding worker died on it (exit code 3)'),
    # far above what a clip takes here, even with the networks' process and both workers on 2 cores (15 s
    # was once too little for yhffcuhhjy.mp4)
    ('hangs', 90, 'still decoding after 90 s (--worker_timeout): its worker was stopped')])
def test_a_worker_that_dies_or_hangs_costs_its_video_only(tmp_path, monkeypatch, how, timeout, reason):
    """A decoder that kills its process (as a crash in FFmpeg or the OOM killer would), or one caught in a
    loop (it held its worker, and the run, forever; now for --worker_timeout seconds): that video is a
    VideoError; a new worker takes the videos after it."""
    chunks = fp.chunks

    def broken(path, *args):
        if path.endswith('3.mp4'):
            os._exit(3) if how == 'dies' else time.sleep(3600)
        return chunks(path, *args)
    monkeypatch.setattr(fp, 'chunks', broken)  # the workers are forked: theirs too
    pipeline = dp.DetectionPipeline(face_weights='none', device='cpu', frame_step=15, workers=2,
                                    worker_timeout=timeout)
    paths = inputs(tmp_path)
    t0 = time.monotonic()
    got = {path: faces for path, faces, _ in pipeline.stream(paths)}
    assert time.monotonic() - t0 < 300  # not the hour the stuck decoder would take
    assert sorted(got) == sorted(paths)
    failed = got[testdata('talking_heads', '3.mp4')]
    assert isinstance(failed, VideoError) and str(failed) == reason
    assert len(got[testdata('talking_heads', '5.mp4')].tracks) == 1
    assert len(got[testdata('dfdc_sample', 'yhffcuhhjy.mp4')].tracks) == 1


def test_how_many_workers(monkeypatch):
    """--workers, never more than the videos and none for one; -1 on a CPU: none (the networks need the
    cores). FFmpeg's threads per worker: this process's share of the cores (under torchrun, a local
    rank's), over the workers."""
    four = dp.DetectionPipeline(face_weights='none', device='cpu', workers=4)
    assert [four.workers(n) for n in (1, 2, 3, 10)] == [0, 2, 3, 4]
    auto = dp.DetectionPipeline(face_weights='none', device='cpu')
    assert auto.cfg['workers'] == -1 and auto.workers(100) == 0
    from common import device
    from faces import workers
    monkeypatch.setattr(device, 'usable_cores', lambda: 16)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')  # two ranks on this machine: 8 cores each
    given = []
    monkeypatch.setattr(workers, 'stream', lambda *args, **kw: given.append(args[-1]) or iter(()))
    assert list(four.stream(['a.mp4'] * 10)) == [] and given == [2]


def _pools(path):
    """The thread count of every BLAS and OpenMP pool of this process, and torch's."""
    import threadpoolctl
    import torch
    return sorted({pool['num_threads'] for pool in threadpoolctl.threadpool_info()}), torch.get_num_threads()


def test_a_worker_sizes_its_thread_pools_to_its_share(pipeline, tmp_path):
    """A forked worker inherits pools of one thread a core (OpenBLAS for numpy, scipy and OpenCV; OpenMP for
    torch): every worker waking all of them (predict.py's voice, librosa's mel spectrogram) would spin
    against the decoders. Each worker's pools have its share of the cores, as FFmpeg's threads do."""
    from common.device import my_cores
    share = max(1, my_cores() // 2)
    paths = [str(tmp_path / f'{k}.mp4') for k in range(2)]  # missing: only `also` matters here
    pools = [extra for _, _, extra in pipeline.stream(paths, also=_pools)]
    assert pools == [([share], share)] * 2
