"""faces/clip.py and common/weights.py's clip_encoder: GenD's checkpoint layout loaded into transformers'
CLIPVisionModel, strictly; CLIP's preprocessing; GenD's video score."""
import copy
import glob
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import config
from common.weights import clip_encoder, describe
from conftest import ROOT, TESTDATA, testdata
from faces.clip import for_inference, preprocess, video_score
from gend_models import tiny_gend


def face_photos():
    """Real face photos of ../shared/testdata/faces, RGB uint8, at their own (non-square) sizes."""
    testdata('faces')
    return [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in sorted(glob.glob(os.path.join(TESTDATA, 'faces', '*.jpg')))]


def test_tiny_gend_checkpoint_gives_transformers_outputs_and_gends_score(tmp_path):
    """Loaded from the hub's layout, the encoder is transformers' model with the saved weights: on real face
    crops its L2-normalised pooler_output and FAKE logit are those of the model and head that were saved
    (the same float32 operations on the same weights: equal to float rounding), and the video score is the
    mean of the head's softmax P(FAKE)."""
    vision, head = tiny_gend(tmp_path)
    ours = clip_encoder('gend', str(tmp_path))
    assert ours.name == f'gend:file:{tmp_path.name}' and ours.dim == 32
    crops = np.stack([cv2.resize(p, (256, 256), interpolation=cv2.INTER_AREA) for p in face_photos()])
    pixels = preprocess(torch.from_numpy(crops))
    with torch.inference_mode():
        features, fake_logit = ours(pixels)
        pooled = vision(pixel_values=pixels).pooler_output
        logits = head(F.normalize(pooled, dim=1))  # GenD's LinearNorm head: (faces, 2)
    torch.testing.assert_close(features, F.normalize(pooled, dim=1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fake_logit, logits[:, 1] - logits[:, 0], atol=1e-6, rtol=1e-5)
    assert len(set(np.round(fake_logit.numpy(), 4))) == len(crops)  # the faces differ, so do their logits
    p_fake = torch.softmax(logits.double(), dim=1)[:, 1].mean().item()
    assert video_score(fake_logit.numpy()) == pytest.approx(p_fake, abs=1e-6)  # float32 logits
    with pytest.raises(ValueError, match='no face'):
        video_score([])


def test_for_inference_keeps_the_numbers(tmp_path):
    """for_inference on the tiny model and real face crops. QuickGELU folded into fc1, SiLU and fc2 is the same
    function: equal to float32 rounding (the weights times 1.702; measured 5e-7 on outputs of ~0.8). In
    bfloat16 (on any CPU: torch emulates what the CPU lacks) it rounds what autocast rounds, every matrix
    product's inputs, and keeps the LayerNorms and the residual stream in float32 as autocast does: within
    twice autocast's error from float32 (measured 0.7-0.95 of it over 5 seeds; a network wholly in bfloat16
    is ~2.7 times it and fails), and never equal to float32 (bfloat16 did run)."""
    vision, _ = tiny_gend(tmp_path)
    pixels = preprocess(torch.from_numpy(np.stack([cv2.resize(p, (256, 256)) for p in face_photos()])))
    with torch.inference_mode():
        want = vision(pixel_values=pixels).pooler_output  # (faces, 32)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            autocast_error = (vision(pixel_values=pixels).pooler_output.float() - want).abs().max()
        folded = for_inference(copy.deepcopy(vision))
        assert isinstance(folded.encoder.layers[0].mlp.activation_fn, torch.nn.SiLU)
        torch.testing.assert_close(folded(pixel_values=pixels).pooler_output, want, atol=1e-5, rtol=1e-5)
        mixed = for_inference(copy.deepcopy(vision), torch.bfloat16)(pixel_values=pixels).pooler_output
    assert mixed.dtype == torch.float32 and mixed.shape == want.shape
    assert 0 < (mixed - want).abs().max() <= 2 * autocast_error


def test_preprocessing_is_clip_image_processors(tmp_path):
    """On real faces, as GenD's aligned 256 px crops and at the photos' own sizes: the pixel values of
    transformers' CLIPImageProcessor with CLIP's defaults. Both resize uint8 images with torchvision's
    antialiased bicubic (as PIL's) and then do the same float32 arithmetic: equal to float rounding
    (a few 1e-7) for square crops. A non-square photo may land one pixel off on the centre crop's half-pixel
    (transformers' rounding of 275.5 px); those are compared on their mean."""
    from transformers import CLIPImageProcessor
    processor = CLIPImageProcessor()  # CLIP's defaults: shortest side 224, bicubic, centre 224, CLIP's mean/std
    photos = face_photos()
    for photo in photos:
        square = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
        want = processor(images=square, return_tensors='pt')['pixel_values']
        torch.testing.assert_close(preprocess(torch.from_numpy(square)[None]), want, atol=1e-5, rtol=0)
        want = processor(images=photo, return_tensors='pt')['pixel_values']
        got = preprocess(torch.from_numpy(photo)[None])
        assert got.shape == want.shape == (1, 3, 224, 224)
        assert (got - want).abs().mean() < 0.1  # a one-pixel shift of a face, at most; else 1e-7


def cli(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize('case', ['missing', 'unexpected', 'shape'])
def test_a_wrong_checkpoint_is_one_line_naming_the_tensor_and_exit_2(tmp_path, case):
    name = 'feature_extractor.vision_model.encoder.layers.1.mlp.fc2.bias'
    if case == 'missing':
        tiny_gend(tmp_path, drop=[name])
    elif case == 'unexpected':
        name = 'feature_extractor.vision_model.encoder.layers.2.mlp.fc2.bias'
        tiny_gend(tmp_path, extra={name: torch.zeros(32)})
    else:
        name = 'model.linear.weight'
        tiny_gend(tmp_path, drop=[name], extra={name: torch.zeros(3, 32)})
    with pytest.raises(config.UserError, match=name.replace('.', r'\.')):
        clip_encoder('gend', str(tmp_path))
    video = testdata('dfdc_sample', 'lynaeydofd.mp4')
    run = cli('DetectionPipeline.py', f'--video={video}', '--face_encoder=gend', f'--face_weights={tmp_path}',
              '--device=cpu')
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), run.stderr
    assert name in lines[0]


def test_a_hub_id_that_cannot_be_downloaded_is_one_line_that_says_to_give_a_folder(tmp_path):
    run = cli('DetectionPipeline.py', f'--video={tmp_path}/x.mp4', '--face_encoder=gend', '--device=cpu',
              env={'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf')})  # no network, an empty cache
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and 'cannot download yermandy/GenD_CLIP_L_14' in lines[0], run.stderr
    assert '--face_weights=DIR' in lines[0] and 'hf download yermandy/GenD_CLIP_L_14' in lines[0]


def test_names_a_table_records():
    assert describe('default') == describe('vggface2') == 'vggface2'  # FaceNet's, as before
    assert describe('default', 'gend') == 'gend:yermandy/GenD_CLIP_L_14'
    assert describe('none', 'clip') == 'clip:untrained(seed=0)'
    with pytest.raises(config.UserError, match='not a folder'):
        clip_encoder('clip', '/no/such/folder')
