"""The audio half: extract_audio.py and create_audio_embedding.py on real clips, a clip stripped of its
audio track, silent and empty tracks, broken files; the encoders on audio of any length."""
import os
import signal
import subprocess
import sys
import time
import urllib.error

import numpy as np
import pandas as pd
import pytest
import torch

import create_audio_embedding as cae
import extract_audio as ea
from audio_clips import dfdc_part, faststart, remux, run_script
from common import config
from common.video import VideoError
from common.weights import audio_cnn, face_embedder
from common.stage import Journal
from conftest import ROOT, testdata

DFDC = ['abofeumbvv.mp4', 'brtujopkby.mp4']  # AAC mono, 48 and 44.1 kHz
RATE = ea.SAMPLE_RATE
PART = 'dfdc_train_part_0'  # the part's folder; keys and WAVs are under it


def keyed(*names):
    """The keys (folder/filename) of videos in PART."""
    return sorted(f'{PART}/{n}' for n in names)


@pytest.fixture(scope='module')
def part(tmp_path_factory):
    """A DFDC part with two real DFDC clips, a stereo talking head, that head stripped of its audio
    track, with a silent track and with an empty one, a text file named .mp4, a zero-byte and a
    truncated file, and one listed that is not there."""
    head = testdata('talking_heads', '1.mp4')
    build = tmp_path_factory.mktemp('build')
    files = {name: testdata('dfdc_sample', name) for name in DFDC}
    files.update({
        'head.mp4': head,
        'stripped.mp4': remux(head, build / 'stripped.mp4'),
        'silent.mp4': remux(head, build / 'silent.mp4', np.zeros(2 * 44100, np.float32)),
        'emptytrack.mkv': remux(head, build / 'emptytrack.mkv', np.zeros(0, np.float32)),
        'text.mp4': b'this is not a video\n',
        'zero.mp4': b'',
        'truncated.mp4': open(head, 'rb').read()[:20000],
        'missing.mp4': None,
    })
    folder = tmp_path_factory.mktemp('data') / 'dfdc_train_part_0'
    return dfdc_part(str(folder), files)


@pytest.fixture(scope='module')
def extracted(part, tmp_path_factory):
    audio_dir = tmp_path_factory.mktemp('audio')
    r = run_script('extract_audio.py', f'--data_dir={os.path.dirname(part)}', f'--audio_dir={audio_dir}')
    assert r.returncode == 0, r.stderr
    return str(audio_dir), r


@pytest.fixture(scope='module')
def voice():
    return cae.AudioEmbedder(audio_encoder='resemblyzer', device='cpu')


@pytest.fixture(scope='module')
def cnn():
    # ImageNet weights cannot be had offline; the code is the same
    return cae.AudioEmbedder(audio_encoder='cnn', cnn_weights='none', device='cpu')


def index_and_failures(audio_dir):
    return cae.read_index(audio_dir)


# ----------------------------------------------------------------------------- decoding and extraction
def test_decoding_real_clips_gives_16k_mono_of_the_clip_length():
    for name, rate, channels in [(DFDC[0], 48000, 1), (DFDC[1], 44100, 1)]:
        track = ea.decode_audio(testdata('dfdc_sample', name))
        assert (track.source_rate, track.source_channels, track.codec) == (rate, channels, 'aac')
        assert track.pcm.dtype == np.int16 and track.pcm.ndim == 1
        # DFDC clips are 10 s; an AAC track ends on a frame of 1024 samples (21-23 ms) and starts after a
        # priming frame: two frames either way
        assert abs(len(track.pcm) / RATE - 10.0) < 0.05
        wav = ea.pcm_to_float(track.pcm)
        assert 20 * np.log10(np.sqrt(np.mean(wav ** 2))) > -50  # DFDC's own sound, not silence
    head = ea.decode_audio(testdata('talking_heads', '1.mp4'))
    # stereo downmixed; 6.1 s to its one decimal, and AAC's frames (above)
    assert head.source_channels == 2 and abs(len(head.pcm) / RATE - 6.1) < 0.1


def test_stripped_clip_has_no_track_and_broken_files_raise_with_a_reason(part):
    assert ea.decode_audio(os.path.join(part, 'stripped.mp4')) is None
    assert len(ea.decode_audio(os.path.join(part, 'emptytrack.mkv')).pcm) == 0
    for name, reason in [('text.mp4', 'not a readable video'), ('zero.mp4', 'empty'),
                         ('missing.mp4', 'missing')]:
        with pytest.raises(VideoError, match=reason):
            ea.decode_audio(os.path.join(part, name))


def test_a_clip_cut_short_is_a_failure_not_a_short_wav(tmp_path):
    """A file cut short with its index first (it opens) gave the WAV of what was left as the whole track, ok: a
    clip that ends early. Its container says how many audio frames it has (217 AAC frames, 5.0 s)."""
    whole = faststart(testdata('talking_heads', '2.mp4'), tmp_path / 'whole.mp4')
    data = whole.read_bytes()
    for share in (0.4, 0.97):  # the last cut leaves all but 17 of the frames: more than the 2% slack
        (tmp_path / 'cut.mp4').write_bytes(data[:int(len(data) * share)])
        with pytest.raises(VideoError, match=r'^audio (truncated: decoded \d+ of 217 frames|decoding failed after)'):
            ea.decode_audio(str(tmp_path / 'cut.mp4'))
    assert abs(len(ea.decode_audio(str(whole)).pcm) / RATE - 5.0) < 0.05  # the whole copy: its 5 s


def test_extraction_writes_a_wav_per_track_and_records_the_rest(part, extracted):
    audio_dir, r = extracted
    index, failures = index_and_failures(audio_dir)
    assert index.attrs['sample_rate'] == RATE
    assert sorted(index.filename) == sorted(DFDC + ['head.mp4', 'stripped.mp4', 'silent.mp4',
                                                    'emptytrack.mkv'])
    assert set(index.folder) == {'dfdc_train_part_0'}  # relative to DATA_DIR, as the video table has it
    rows = index.set_index('filename')
    assert not rows.at['stripped.mp4', 'has_track'] and pd.isna(rows.at['stripped.mp4', 'wav'])
    assert rows.at['emptytrack.mkv', 'has_track'] and rows.at['emptytrack.mkv', 'samples'] == 0
    for name in DFDC + ['head.mp4', 'silent.mp4']:
        assert rows.at[name, 'has_track'] and rows.at[name, 'samples'] > RATE
    assert sorted(failures) == keyed('missing.mp4', 'text.mp4', 'truncated.mp4', 'zero.mp4')
    reason = {k.split('/')[-1]: r for k, (_, r) in failures.items()}
    assert 'not a readable video' in reason['text.mp4'] and 'empty' in reason['zero.mp4']
    assert 'missing' in reason['missing.mp4'] and reason['truncated.mp4']
    wavs = sorted(n for n in os.listdir(os.path.join(audio_dir, PART)) if n.endswith('.wav'))
    assert wavs == sorted(f'{n}.wav' for n in DFDC + ['head.mp4', 'silent.mp4', 'emptytrack.mkv'])
    assert rows.at['head.mp4', 'wav'] == f'{PART}/head.mp4.wav'  # in AUDIO_DIR
    assert not os.path.exists(os.path.join(audio_dir, ea.INDEX + '.parts'))
    assert '4 failed' in r.stdout


def test_the_wav_holds_exactly_the_decoded_samples(part, extracted):
    """So that predict.py, which embeds the decoded array without a WAV, gets the same numbers."""
    audio_dir, _ = extracted
    for name in (DFDC[0], 'head.mp4'):
        wav = ea.read_wav(os.path.join(audio_dir, ea.wav_name(name, PART)))
        memory = ea.pcm_to_float(ea.decode_audio(os.path.join(part, name)).pcm)
        np.testing.assert_array_equal(wav, memory)


def test_a_killed_run_resumes_without_redoing_or_dropping(part, extracted, tmp_path):
    """A run killed after its first video left that video's WAV and part file: the rerun does the rest,
    and its index equals an uninterrupted run's."""
    reference, _ = extracted
    audio_dir = tmp_path / 'audio'
    first = DFDC[0]
    journal = Journal(os.path.join(audio_dir, ea.INDEX))
    journal.add({'filename': first, 'folder': PART, 'row': ea.extract(os.path.join(part, first), PART,
                                                                       str(audio_dir))})
    stamp = os.stat(audio_dir / ea.wav_name(first, PART)).st_mtime_ns
    r = run_script('extract_audio.py', f'--data_dir={os.path.dirname(part)}', f'--audio_dir={audio_dir}')
    assert r.returncode == 0, r.stderr
    assert '9 videos to extract' in r.stdout  # 10 listed, missing.mp4 included; 1 done
    assert os.stat(audio_dir / ea.wav_name(first, PART)).st_mtime_ns == stamp  # not written again
    a, _ = index_and_failures(str(audio_dir))
    b, _ = index_and_failures(reference)
    assert a.filename.tolist() == b.filename.tolist() and a.filename.is_unique
    assert a.samples.tolist() == b.samples.tolist()
    again = run_script('extract_audio.py', f'--data_dir={os.path.dirname(part)}', f'--audio_dir={audio_dir}')
    assert '0 videos to extract' in again.stdout and len(index_and_failures(str(audio_dir))[0]) == len(a)


def test_a_run_killed_part_way_resumes_to_the_uninterrupted_index(tmp_path):
    """A real SIGKILL after at least one video is done and before the last: the rerun does the rest, and
    its index and WAVs equal an uninterrupted run's, every video once. 28 videos (seven real clips linked
    under four names each) keep the run going for a second or more after its first video."""
    clips = [testdata('dfdc_sample', n) for n in DFDC] + [testdata('talking_heads', f'{i}.mp4') for i in range(1, 6)]
    names = {f'copy{k}_{os.path.basename(c)}': c for k in range(4) for c in clips}
    data = tmp_path / 'data'
    dfdc_part(str(data / 'dfdc_train_part_0'), names)
    reference, audio_dir = tmp_path / 'reference', tmp_path / 'audio'
    assert run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={reference}').returncode == 0
    parts = audio_dir / (ea.INDEX + '.parts')
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'extract_audio.py'), f'--data_dir={data}',
                             f'--audio_dir={audio_dir}'], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and any(n.endswith('.pkl') for n in os.listdir(parts)):  # a video recorded
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (audio_dir / ea.INDEX).exists(), 'the run finished before it could be killed'
    assert proc.returncode == -signal.SIGKILL
    done = len([n for n in os.listdir(parts) if n.endswith('.pkl')])
    assert 1 <= done < len(names)
    (audio_dir / PART / '.copy3_1.mp4.wav.k1ll3d00.tmp').write_bytes(b'RIFF')  # a WAV killed mid-write
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio_dir}')
    assert r.returncode == 0 and f'{len(names) - done} videos to extract' in r.stdout, r.stdout
    assert [n for n in os.listdir(audio_dir / PART) if n.endswith('.tmp')] == []
    (a, a_failed), (b, b_failed) = index_and_failures(str(audio_dir)), index_and_failures(str(reference))
    assert a.filename.tolist() == sorted(names) and a.filename.is_unique
    assert a.equals(b) and a_failed == b_failed == {}
    wavs = sorted(n for n in os.listdir(reference / PART) if n.endswith('.wav'))
    assert wavs == sorted(n for n in os.listdir(audio_dir / PART) if n.endswith('.wav')) == sorted(f'{n}.wav' for n in names)
    for name in wavs:
        assert (audio_dir / PART / name).read_bytes() == (reference / PART / name).read_bytes(), name


def test_missing_data_dir_and_other_sample_rate_are_one_line_and_exit_2(extracted, tmp_path):
    r = run_script('extract_audio.py', f'--data_dir={tmp_path / "nowhere"}', f'--audio_dir={tmp_path}')
    assert r.returncode == 2 and 'does not exist' in r.stderr and r.stderr.strip().count('\n') == 0
    audio_dir, _ = extracted
    r = run_script('extract_audio.py', f'--data_dir={testdata("dfdc_sample")}', f'--audio_dir={audio_dir}',
                   '--sample_rate=8000')
    assert r.returncode == 2 and '16000 Hz' in r.stderr and r.stderr.strip().count('\n') == 0
    assert "\nnote: --sample_rate=8000: create_audio_embedding.py takes 16000 Hz WAVs only; " in r.stdout
    # 7 Hz ran the whole extraction (96-byte WAVs), which the next stage then refused
    r = run_script('extract_audio.py', f'--data_dir={testdata("dfdc_sample")}', f'--audio_dir={tmp_path / "a7"}',
                   '--sample_rate=7')
    assert r.returncode == 2 and r.stderr == 'error: --sample_rate must be from 4000 to 192000 (Hz), not 7\n'


# ----------------------------------------------------------------------------- the encoders
def test_resemblyzer_tells_the_speakers_apart():
    """The pretrained voice encoder: the two halves of one speaker's clip are closer to each other than to
    any half of another speaker's."""
    embedder = cae.AudioEmbedder(audio_encoder='resemblyzer', device='cpu')
    halves = []
    for i in range(1, 6):
        wav = ea.pcm_to_float(ea.decode_audio(testdata('talking_heads', f'{i}.mp4')).pcm)
        n = len(wav) // 2
        halves.append([embedder(wav[:n]), embedder(wav[n:])])
    assert all(status == cae.Status.OK for pair in halves for _, status in pair)
    first = np.stack([h[0][0] for h in halves])   # (5, 256)
    second = np.stack([h[1][0] for h in halves])  # (5, 256)
    # L2-normalised in float32: the norm of 256 rounded values is 1 within ~1e-7; unnormalised, it is not 1
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    similarity = first @ second.T  # (5, 5)
    same = np.diag(similarity)
    assert (same > 0.7).all()
    others = similarity - 2 * np.eye(5)  # the diagonal out of the way
    assert (same[:, None] > others).all() and (same[None, :] > others).all()


def test_a_built_embedder_imports_and_compiles_nothing_in_a_videos_work():
    """The first embedding imported librosa and had numba compile its kernels, seconds inside the first video,
    where a Ctrl-C landed in numba's ctypes callbacks, which print it and drop it: the run went on and exited 0
    (1 in 4 of test_reruns' Ctrl-C test). Building the embedder does both, Ctrl-C held (config.interrupt_held).
    In a new process: this one has imported and compiled them already."""
    code = ('import sys; import create_audio_embedding as cae, extract_audio as ea\n'
            f'wav = ea.pcm_to_float(ea.decode_audio({testdata("talking_heads", "1.mp4")!r}).pcm)\n'
            'for encoder in ("resemblyzer", "cnn"):\n'
            '    embedder = cae.AudioEmbedder(audio_encoder=encoder, cnn_weights="none", device="cpu")\n'
            '    before = set(sys.modules)\n'
            '    status = embedder(wav)[1]\n'
            '    print(encoder, status, sorted(set(sys.modules) - before))\n')
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split('\n')[:2] == ['resemblyzer ok []', 'cnn ok []'], r.stdout


@pytest.mark.parametrize('which', ['voice', 'cnn'])
def test_any_length_gives_a_finite_embedding(which, request):
    embedder = request.getfixturevalue(which)
    speech = ea.pcm_to_float(ea.decode_audio(testdata('talking_heads', '2.mp4')).pcm)
    for n in (1, 100, 479, RATE // 2, 3 * RATE, 25 * RATE):
        wav = np.resize(speech[RATE:], n)  # speech from 1 s on, repeated to reach 25 s
        embedding, status = embedder(wav)
        assert embedding.shape == (embedder.dim,) and embedding.dtype == np.float32
        assert np.isfinite(embedding).all() and np.abs(embedding).sum() > 0, (n, status)
        assert status in cae.HAS_AUDIO


@pytest.mark.parametrize('which', ['voice', 'cnn'])
def test_empty_and_silent_audio_give_zeros_and_a_flag(which, request):
    embedder = request.getfixturevalue(which)
    rng = np.random.default_rng(0)
    quiet = (10 ** (-70 / 20) * rng.uniform(-1, 1, RATE)).astype(np.float32)  # peak below -60 dBFS
    for wav, expected in [(np.zeros(0, np.float32), cae.Status.EMPTY),
                          (np.zeros(RATE, np.float32), cae.Status.SILENT), (quiet, cae.Status.SILENT)]:
        embedding, status = embedder(wav)
        assert status == expected and embedding.shape == (embedder.dim,)
        assert not embedding.any() and status not in cae.HAS_AUDIO
    # a mains hum has sound but no voice: Resemblyzer embeds the whole track and says so
    hum = (0.05 * np.sin(2 * np.pi * 50 * np.arange(2 * RATE) / RATE)).astype(np.float32)
    embedding, status = embedder(hum)
    assert np.isfinite(embedding).all() and embedding.any()
    assert status == (cae.Status.NO_SPEECH if which == 'voice' else cae.Status.OK)


def test_cnn_embeds_real_clips_deterministically(cnn):
    """Untrained but seeded: a second model gives the same numbers; different clips, different numbers."""
    other = cae.AudioEmbedder(audio_encoder='cnn', cnn_weights='none', device='cpu')
    a = ea.pcm_to_float(ea.decode_audio(testdata('dfdc_sample', DFDC[0])).pcm)
    b = ea.pcm_to_float(ea.decode_audio(testdata('dfdc_sample', DFDC[1])).pcm)
    np.testing.assert_array_equal(cnn(a)[0], other(a)[0])
    # the seeded CNN's embeddings are ~1.4 (mean |value|) and two clips' differ by ~2.3 at most: 1e-3 is far
    # above float32 rounding (~1e-6 of 6.5) and far below another clip
    assert np.abs(cnn(a)[0] - cnn(b)[0]).max() > 1e-3
    assert cnn.log_mel(a).shape == (cae.N_MELS, len(a) // cae.HOP + 1)  # (128, 1001) for 10 s
    assert cnn.dim == 512 and cnn.name.startswith('cnn:resnet18:untrained(seed=0)')


def test_cnn_weights_from_a_local_file_and_a_failed_download_in_one_line(tmp_path, monkeypatch):
    import torchvision
    reference = torchvision.models.resnet18()  # a torchvision state dict, classifier included
    path = tmp_path / 'resnet18.pth'
    torch.save(reference.state_dict(), path)
    model = audio_cnn(str(path), 'resnet18')
    assert model.weights_name == 'file:resnet18.pth' and model.embedding_dim == 512
    x = torch.randn(1, 3, 128, 200)  # (batch, 3, mels, columns)
    reference.fc = torch.nn.Identity()
    with torch.inference_mode():
        # the same weights, input and kernels: equal within float32 rounding (assert_close's float32 default)
        torch.testing.assert_close(model(x), reference.eval()(x))
    (tmp_path / 'bad.pth').write_text('not weights')
    for weights, arch, message in [(str(tmp_path / 'bad.pth'), 'resnet18', 'cannot read weights file'),
                                   ('IMAGENET1K_V9', 'resnet18', 'not one of imagenet'),
                                   ('none', 'vgg16', 'not one of resnet18'),
                                   # the message stopped at 'Error(s) in loading state_dict for ResNet:'
                                   (str(path), 'resnet50', r'is not a resnet50 state dict \((Missing|Unexpected) '
                                                           r'key\(s\) in state_dict: .+\): give the --cnn_arch of')]:
        with pytest.raises(config.UserError, match=message) as err:
            audio_cnn(weights, arch)
        assert '\n' not in str(err.value) and 'weights_only' not in str(err.value)  # torch's advice: run its code
    with pytest.raises(config.UserError, match=r'is not an InceptionResnetV1 state dict \((Missing|Unexpected) key\(s\)'
                                               r' in state_dict: .+\): give facenet-pytorch\'s weights file') as err:
        face_embedder(str(path))
    assert '\n' not in str(err.value)
    # files torch.load reads that hold no state dict: FaceNet's loader raised AttributeError ('list' object has
    # no attribute 'items'), a traceback, where the ViT encoders' said it in one line
    for what, obj in [('list', [1, 2]), ('Tensor', torch.zeros(3)), ('NoneType', None),
                      ('dict whose keys are not all names', {1: torch.zeros(2)})]:
        torch.save(obj, tmp_path / 'odd.pt')
        for load in (face_embedder, lambda w: audio_cnn(w, 'resnet18')):
            with pytest.raises(config.UserError, match=f'odd.pt: holds a {what}, not a state dict'):
                load(str(tmp_path / 'odd.pt'))
    with pytest.raises(config.UserError, match=r'cannot read weights file .+ \(a damaged or partial copy: download'):
        face_embedder(str(tmp_path / 'bad.pth'))

    def offline(*args, **kwargs):
        raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(torchvision.models._api, 'load_state_dict_from_url', offline)
    with pytest.raises(config.UserError) as err:
        audio_cnn('imagenet', 'resnet18')
    assert 'resnet18-f37072fd.pth' in str(err.value) and '--cnn_weights=' in str(err.value)
    assert '\n' not in str(err.value)
    from facenet_pytorch.models import inception_resnet_v1
    monkeypatch.setattr(inception_resnet_v1, 'load_weights', offline)
    for weights, file in [('vggface2', '20180402-114759-vggface2.pt'), ('casia-webface', '20180408-102900-casia-'
                                                                                        'webface.pt')]:
        with pytest.raises(config.UserError, match=f'cannot download the {weights} weights .+; put {file} in '):
            face_embedder(weights)  # casia-webface's named vggface2's file


# ----------------------------------------------------------------------------- create_audio_embedding.py
def test_the_embedding_script_gives_a_row_per_video_flags_and_refuses_another_encoder(extracted, tmp_path):
    audio_dir, _ = extracted
    out = tmp_path / 'audio.pkl'
    r = run_script('create_audio_embedding.py', f'--audio_dir={audio_dir}', f'--output={out}')
    assert r.returncode == 0, r.stderr
    table = pd.read_pickle(out)
    index, _ = index_and_failures(audio_dir)
    assert table.filename.tolist() == sorted(index.filename) and table.filename.is_unique
    rows = table.set_index('filename')
    status = rows['audio_status'].to_dict()
    assert status['stripped.mp4'] == cae.Status.NO_TRACK and status['silent.mp4'] == cae.Status.SILENT
    assert status['emptytrack.mkv'] == cae.Status.EMPTY
    assert all(status[n] == cae.Status.OK for n in DFDC + ['head.mp4'])
    assert rows['has_audio'].to_dict() == {n: s in cae.HAS_AUDIO for n, s in status.items()}
    for name, row in rows.iterrows():
        assert row.audio_embedding.shape == (256,) and np.isfinite(row.audio_embedding).all()
        assert row.audio_embedding.any() == row.has_audio, name
    assert set(table.audio_encoder) == {'resemblyzer-0.1.4'} and set(table.audio_dim) == {256}
    # made_with: what the table was made with (common.stage), beside the attrs it had before
    attrs = {k: v for k, v in table.attrs.items() if k != 'made_with'}
    assert attrs == {'audio_encoder': 'resemblyzer-0.1.4', 'audio_dim': 256}
    failures = cae.read_failures(str(out) + '.failures.csv')
    assert sorted(failures) == keyed('missing.mp4', 'text.mp4', 'truncated.mp4', 'zero.mp4')
    assert all(reason.startswith('audio extraction failed: ') for _, reason in failures.values())

    r = run_script('create_audio_embedding.py', f'--audio_dir={audio_dir}', f'--output={out}',
                   '--audio_encoder=cnn', '--cnn_weights=none')
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0
    assert 'resemblyzer-0.1.4 (256-d)' in r.stderr and 'cnn:resnet18' in r.stderr
    r = run_script('create_audio_embedding.py', f'--audio_dir={audio_dir}', f'--output={out}')
    assert r.returncode == 0 and '0 to embed' in r.stdout and len(pd.read_pickle(out)) == len(table)


def test_two_processes_split_both_scripts_and_give_one_process_tables(part, extracted, tmp_path):
    """Two ranks as torchrun starts them (here one after the other, so the second merges): the index,
    the failures and the embeddings equal a single process's."""
    reference, _ = extracted
    single = tmp_path / 'single.pkl'
    r = run_script('create_audio_embedding.py', f'--audio_dir={reference}', f'--output={single}')
    assert r.returncode == 0, r.stderr
    audio_dir, out = tmp_path / 'audio', tmp_path / 'split.pkl'
    data = os.path.dirname(part)
    for script, args in [('extract_audio.py', [f'--data_dir={data}', f'--audio_dir={audio_dir}']),
                         ('create_audio_embedding.py', [f'--audio_dir={audio_dir}', f'--output={out}'])]:
        for rank in (0, 1):
            env = dict(os.environ, WORLD_SIZE='2', RANK=str(rank), LOCAL_WORLD_SIZE='2',
                       TORCHELASTIC_RUN_ID='test')
            r = run_script(script, *args, env=env)
            assert r.returncode == 0, r.stderr
            assert f'rank {rank}/2: ' in r.stdout and ('share done' in r.stdout) == (rank == 0)
    (a, a_failed), (b, b_failed) = index_and_failures(str(audio_dir)), index_and_failures(reference)
    assert a.equals(b) and a_failed == b_failed
    split, whole = pd.read_pickle(out), pd.read_pickle(single)
    assert split.filename.tolist() == whole.filename.tolist()
    assert split.audio_status.tolist() == whole.audio_status.tolist()
    for x, y in zip(split.audio_embedding, whole.audio_embedding):
        np.testing.assert_array_equal(x, y)


def test_the_embedding_script_without_an_index_is_one_line_and_exit_2(tmp_path):
    r = run_script('create_audio_embedding.py', f'--audio_dir={tmp_path}', f'--output={tmp_path / "a.pkl"}')
    assert r.returncode == 2 and 'run extract_audio.py' in r.stderr and r.stderr.strip().count('\n') == 0


def test_mel_bands_without_a_bin_of_the_spectrum_are_refused_in_one_line():
    # --n_fft=7 beside the 128 default bands: librosa warned twice, and 122 rows of every image were zero
    for n_fft, empty in [(7, 122), (256, 13)]:
        with pytest.raises(config.UserError, match=rf'^--n_mels=128 is too many bands for --n_fft={n_fft} \(a '
                                                   rf'{1 + n_fft // 2}-bin spectrum\): {empty} would hold no bin; '):
            cae.AudioEmbedder(audio_encoder='cnn', cnn_weights='none', device='cpu', n_fft=n_fft)
    assert cae.AudioEmbedder(audio_encoder='cnn', cnn_weights='none', device='cpu', n_fft=400).dim == 512
