"""--decoder=nvdec: the NVIDIA GPU's video decoder through PyAV (common/video.py), its workers spawned
(faces/workers.py), and the CPU taking over a video NVDEC fails on (faces/pipeline.py).

Each test asserts what holds on the machine it runs on: where NVDEC works (a GPU with its driver's
libnvcuvid), that it gives the CPU's frames and faces; elsewhere, that it is refused in one line and that
a video it fails on is decoded on the CPU, counted. The spawned workers run on every machine."""
import functools
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import DetectionPipeline as dp
import create_audio_embedding as cae
import predict
from common.config import UserError
from common.video import nvdec_error, sampled_frames
from faces import workers
from conftest import ROOT, testdata
from face_checks import assert_embeddings_are_of_their_crops, assert_same_boxes

NVDEC = nvdec_error(0)  # '' where GPU 0's NVDEC decodes, else why not
CLIPS = ('talking_heads', '5.mp4'), ('dfdc_sample', 'yhffcuhhjy.mp4')


@pytest.fixture(scope='module')
def cpu(face_weights):
    return dp.DetectionPipeline(face_weights=face_weights, device='cpu', frame_step=15)


def same_faces(a, b):
    """One track each, on the same frames, with the same boxes and embeddings, bit for bit: the same frames
    through the same networks in the same batches."""
    assert (a.n_frames, a.width, a.height) == (b.n_frames, b.width, b.height)
    assert len(a.tracks) == len(b.tracks) == 1
    for field in ('frames', 'boxes', 'embeddings'):
        np.testing.assert_array_equal(getattr(a.tracks[0], field), getattr(b.tracks[0], field), err_msg=field)


def same_faces_in_other_batches(path, a, b, pipeline):
    """As same_faces, where the networks' batches mixed videos: boxes within float rounding, each
    embedding that of its own box's crop (tests/face_checks.py)."""
    assert (a.n_frames, a.width, a.height) == (b.n_frames, b.width, b.height)
    assert len(a.tracks) == len(b.tracks) == 1
    np.testing.assert_array_equal(a.tracks[0].frames, b.tracks[0].frames)
    assert_same_boxes(a.tracks[0].boxes, b.tracks[0].boxes)
    assert_embeddings_are_of_their_crops(path, a.tracks[0], pipeline)


def test_nvdec_is_refused_in_one_line_where_it_cannot_decode():
    """Without NVDEC (no GPU, or a container without the driver's video library) --decoder=nvdec stops
    before any work with what to do; with it, the pipeline decodes on the networks' GPU."""
    if NVDEC:
        with pytest.raises(UserError) as err:
            dp.DetectionPipeline(face_weights='none', decoder='nvdec')
        message = str(err.value)
        assert '\n' not in message and NVDEC in message
        assert 'libnvcuvid' in message and '--decoder=cpu' in message
    else:
        pipeline = dp.DetectionPipeline(face_weights='none', decoder='nvdec')
        assert pipeline.gpu == (pipeline.device.index or 0)


def test_nv12_repacked_gives_the_cpu_rgb():
    """What the conversion of NVDEC's frames relies on, checked on the CPU's: NV12 repacked to planar YUV
    and converted gives the very RGB of the planar frame, where swscale's own NV12 conversion does not."""
    import av
    with av.open(testdata('dfdc_sample', 'abofeumbvv.mp4')) as container:
        frame = next(f for k, f in enumerate(container.decode(video=0)) if k == 30)
    assert frame.format.name == 'yuv420p'
    rgb = frame.to_ndarray(format='rgb24')
    nv12 = frame.reformat(format='nv12')
    assert not np.array_equal(nv12.to_ndarray(format='rgb24'), rgb)  # why the repacking
    np.testing.assert_array_equal(nv12.reformat(format='yuv420p').to_ndarray(format='rgb24'), rgb)


@pytest.mark.skipif(bool(NVDEC), reason=f'NVDEC cannot decode here: {NVDEC}')
def test_nvdec_frames_are_the_cpu_frames():
    """The same sampled frames, upright, as the CPU decodes them, to the last bit: H.264 decodes to the
    same YUV on both (the standard fixes it), and the RGB is converted alike (common/video.py)."""
    path = testdata('dfdc_sample', 'brtujopkby.mp4')  # portrait: stored sideways
    on_cpu = list(sampled_frames(path, 6))
    on_gpu = list(sampled_frames(path, 6, gpu=0))
    assert [i for i, _ in on_gpu] == [i for i, _ in on_cpu] and len(on_cpu) == 50
    for (_, a), (_, b) in zip(on_cpu, on_gpu):
        assert a.shape == b.shape == (1920, 1080, 3)
        np.testing.assert_array_equal(b, a)


def test_faces_decoded_by_nvdec_or_by_the_cpu_instead(cpu):
    """faces_of with a GPU: NVDEC's faces are the CPU's (the same frames); where NVDEC fails on the video,
    the CPU decodes it and VideoFaces.decoder says why."""
    path = testdata(*CLIPS[0])
    alone = cpu(path)
    assert alone.decoder == 'cpu'
    faces = dp.faces_of(path, cpu.cfg, cpu.nets, gpu=0)
    if NVDEC:
        assert faces.decoder.startswith('cpu (NVDEC failed: not a readable video by NVDEC')
        same_faces(faces, alone)
    else:
        assert faces.decoder == 'nvdec'
        same_faces(faces, alone)


def test_spawned_workers_give_what_one_process_gives(cpu, tmp_path, monkeypatch, capsys, face_weights):
    """With NVDEC the decoding workers are spawned, not forked; they get the settings and predict.py's
    voice embedder by pickling. Every video's faces and voice are those of one process. Where NVDEC cannot
    decode (its check bypassed here), every video is decoded on the CPU instead, and a line counts them."""
    if NVDEC:
        monkeypatch.setattr(dp, 'nvdec_error', lambda gpu: '')
    pipeline = dp.DetectionPipeline(face_weights=face_weights, device='cpu', frame_step=15, workers=2,
                                    decoder='nvdec')
    voice = functools.partial(predict.voice_of, cae.AudioEmbedder(device='cpu'))
    paths = [testdata(*clip) for clip in CLIPS]
    bad = tmp_path / 'text.mp4'
    bad.write_text('not a video')
    got = {path: (faces, extra) for path, faces, extra in pipeline.stream([*paths, str(bad)], also=voice)}
    said = capsys.readouterr().out
    assert sorted(got) == sorted([*paths, str(bad)])
    assert str(got[str(bad)][0]).startswith('not a readable video: ')  # the CPU's reason, not NVDEC's
    for path in paths:
        faces, (embedding, has_audio) = got[path]
        if NVDEC:
            assert faces.decoder.startswith('cpu (NVDEC failed')
        else:
            assert faces.decoder == 'nvdec'
        same_faces_in_other_batches(path, faces, cpu(path), cpu)  # the networks' batches mix videos
        alone, alone_has_audio = voice(path)
        assert has_audio == alone_has_audio is True
        # float32 on other threads in the worker (its share of the cores): sums in another order
        np.testing.assert_allclose(embedding, alone, atol=1e-5)
    if NVDEC:
        assert re.search(rf'^--decoder=nvdec: 2 of 3 videos decoded on the CPU instead, e.g. '
                         rf'({"|".join(map(re.escape, paths))}): cpu \(NVDEC failed: ', said, re.M), said
    else:
        assert '--decoder=nvdec' not in said


def test_workers_fork_unless_they_decode_on_the_gpu(cpu, monkeypatch):
    """Forked workers share this process's memory at no cost, but a forked child cannot use CUDA once
    this process has: spawned ones only where they decode on the GPU."""
    methods = []
    real = workers.mp.get_context
    monkeypatch.setattr(workers.mp, 'get_context', lambda method: methods.append(method) or real(method))
    paths = [testdata(*CLIPS[0])] * 2
    for gpu in (None, 0):
        assert len(list(workers.stream(paths, cpu.cfg, cpu.nets, 2, gpu=gpu))) == 2
    assert methods == ['fork', 'spawn']


def test_a_ctrl_c_while_spawned_workers_start_is_one_line(face_weights):
    """A spawned worker imports torch and the pipeline for seconds before its code ignores Ctrl-C, and the
    terminal's SIGINT reaches every process of the group: each printed a KeyboardInterrupt's traceback then."""
    clip = testdata(*CLIPS[0])
    code = ("import os, signal, sys, threading; sys.argv = ['predict.py']; from common import config\n"
            "config.help_if_asked('__main__', 'predict.py')\nimport DetectionPipeline as dp\n"
            "from faces import workers\n"
            f"pipeline = dp.DetectionPipeline(face_weights={str(face_weights)!r}, device='cpu', frame_step=15)\n"
            "def main():\n    threading.Timer(1.0, os.killpg, (os.getpgid(0), signal.SIGINT)).start()  # importing\n"
            f"    for _ in workers.stream([{clip!r}] * 4, pipeline.cfg, pipeline.nets, 2, start_method='spawn'):\n"
            "        pass\nconfig.cli(main)")
    run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert run.returncode == 130 and 'Traceback' not in run.stderr, (run.returncode, run.stderr[-3000:])
    assert run.stderr.strip() == 'interrupted: run the same command again to go on from here', run.stderr
