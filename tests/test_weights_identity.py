"""Which face weights a checkpoint's network was trained on, told by their tensors, not their name: a local copy
of the weights it learnt on (the README's offline and Kaggle way: `hf download ... --local-dir DIR`, a file in a
Kaggle dataset) is accepted by predict.py and test.py, other weights under the same folder name are refused.
Both went the other way when the names were compared: break-it pass 4's D1 and D2. Real clips, tiny GenD
checkpoints in the hub's layout (tests/gend_models.py)."""
import os
import re
import shutil

import pandas as pd
import pytest
import torch

from audio_clips import dfdc_part, run_script
from common import weights
from conftest import testdata
from gend_models import tiny_gend

HEADS = ['2.mp4', '3.mp4', '4.mp4', '5.mp4']
FACES = ['--face_encoder=gend', '--frame_step=30', '--device=cpu', '--amp=false']


def test_the_digest_is_of_the_tensors_whatever_their_name_file_or_format(tmp_path, monkeypatch):
    """One digest for one set of tensors: a folder, its copy under another name, the same tensors saved by
    torch.save (pytorch_model.bin); another for other tensors of the same shapes and file size. FaceNet's: the
    name vggface2 (facenet-pytorch's download, here placed in its cache) and a file of the same bytes."""
    folders = {name: tmp_path / name for name in ('a', 'copy', 'bin', 'b')}
    for folder in folders.values():
        folder.mkdir()
    tiny_gend(folders['a'], seed=1)
    tiny_gend(folders['b'], seed=2)
    assert os.path.getsize(folders['a'] / 'model.safetensors') == os.path.getsize(folders['b'] / 'model.safetensors')
    shutil.copy(folders['a'] / 'model.safetensors', folders['copy'])
    shutil.copy(folders['a'] / 'config.json', folders['copy'])
    from safetensors.torch import load_file
    torch.save(load_file(str(folders['a'] / 'model.safetensors')), folders['bin'] / 'pytorch_model.bin')
    shutil.copy(folders['a'] / 'config.json', folders['bin'])
    digest = {name: weights.tensors_digest(weights.vit_encoder('gend', str(folder)))
              for name, folder in folders.items()}
    assert digest['a'] == digest['copy'] == digest['bin'] != digest['b']
    assert re.fullmatch('[0-9a-f]{64}', digest['a'])

    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    (tmp_path / 'torch' / 'checkpoints').mkdir(parents=True)
    torch.manual_seed(7)
    from facenet_pytorch import InceptionResnetV1
    cached = tmp_path / 'torch' / 'checkpoints' / weights.FACENET_FILES['vggface2']
    # as facenet-pytorch's download: with the logits of VGGFace2's 8631 people
    torch.save(InceptionResnetV1(classify=True, num_classes=8631).state_dict(), cached)
    shutil.copy(cached, tmp_path / 'kaggle.pt')
    facenet = [weights.tensors_digest(weights.face_embedder(w)) for w in ('vggface2', str(tmp_path / 'kaggle.pt'))]
    assert facenet[0] == facenet[1] != weights.tensors_digest(weights.face_embedder('none'))


def stages(data, out, face_weights):
    """The face stage, the audio stages (once) and the merge into out/merged.pkl."""
    steps = [('create_video_embeddings.py', f'--data_dir={data}', f'--output={out / "video.pkl"}',
              f'--face_weights={face_weights}', *FACES)]
    if not (data.parent / 'audio.pkl').exists():
        steps += [('extract_audio.py', f'--data_dir={data}', f'--audio_dir={data.parent / "audio"}'),
                  ('create_audio_embedding.py', f'--audio_dir={data.parent / "audio"}',
                   f'--output={data.parent / "audio.pkl"}', '--device=cpu')]
    steps.append(('merge_embeddings.py', f'--video_table={out / "video.pkl"}',
                  f'--audio_table={data.parent / "audio.pkl"}', f'--output={out / "merged.pkl"}'))
    for step in steps:
        r = run_script(*step)
        assert r.returncode == 0, (step[0], r.stdout[-1500:], r.stderr[-1500:])
    return out / 'merged.pkl'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A network trained on the faces of weights w/A/gend; the same tensors copied to w/GenD_CLIP_L_14 (another
    name, as hf download gives it) and other tensors (seeded otherwise, the same file size) in w/B/gend."""
    tmp = tmp_path_factory.mktemp('identity')
    a, b, copy = tmp / 'w' / 'A' / 'gend', tmp / 'w' / 'B' / 'gend', tmp / 'w' / 'GenD_CLIP_L_14'
    for folder in (a, b):
        folder.mkdir(parents=True)
    tiny_gend(a, seed=1)
    tiny_gend(b, seed=2)
    shutil.copytree(a, copy)
    data = tmp / 'data'
    dfdc_part(str(data / 'part'), {n: testdata('talking_heads', n) for n in HEADS},
              {n: ('FAKE' if i % 2 else 'REAL') for i, n in enumerate(HEADS)})
    merged = stages(data, tmp / 'A', a)
    r = run_script('training.py', f'--dataset={merged}', f'--out_dir={tmp / "run"}', '--max_epochs=2',
                   '--val_fraction=0.5')
    assert r.returncode == 0, r.stderr[-1500:]
    return tmp


def test_predict_takes_a_copy_of_the_weights_under_another_name_and_refuses_other_weights_of_the_same_name(trained):
    clip, ckpt = os.path.join(trained, 'data', 'part', '3.mp4'), trained / 'run' / 'best.pt'
    p = {}
    for name, given in [('recorded', []), ('copy', [f'--face_weights={trained / "w" / "GenD_CLIP_L_14"}'])]:
        r = run_script('predict.py', f'--input={clip}', f'--checkpoint={ckpt}', *given, *FACES[1:])
        assert r.returncode == 0, r.stderr  # it said: trained on 'gend:file:gend', this run has 'gend:file:GenD_...'
        p[name] = float(re.search(r'^3\.mp4: p\(FAKE\) = ([\d.]+)', r.stdout, re.M)[1])
    assert p['copy'] == p['recorded']  # the same tensors, the same float32 kernels: the same number
    other = trained / 'w' / 'B' / 'gend'
    r = run_script('predict.py', f'--input={clip}', f'--checkpoint={ckpt}', f'--face_weights={other}', *FACES[1:])
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr  # it gave another p(FAKE), exit 0
    assert r.stderr.startswith("error: the checkpoint was trained on face embeddings 'gend:file:gend', this run has "
                               "'gend:file:gend' (other weights under that name: their tensors differ)"), r.stderr


def test_test_py_scores_a_table_of_the_copy_and_refuses_a_table_of_other_weights_of_the_same_name(trained):
    data, ckpt = trained / 'data', trained / 'run' / 'best.pt'
    digest = pd.read_pickle(trained / 'A' / 'merged.pkl').attrs['video_embedder_digest']
    for folder, weights_folder in [('copy', trained / 'w' / 'GenD_CLIP_L_14'), ('B', trained / 'w' / 'B' / 'gend')]:
        merged = stages(data, trained / folder, weights_folder)
        assert (pd.read_pickle(merged).attrs['video_embedder_digest'] == digest) == (folder == 'copy')
        r = run_script('test.py', f'--dataset={merged}', f'--checkpoint={ckpt}', f'--report={trained / folder}.json',
                       '--subset=all')
        if folder == 'copy':
            assert r.returncode == 0, r.stderr  # it said: made with embedder 'gend:file:GenD_CLIP_L_14', ...
            assert os.path.exists(f'{trained / folder}.json')
        else:
            assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr  # it scored them, exit 0
            assert f"{merged} has 'gend:file:gend' (other weights under that name" in r.stderr, r.stderr
