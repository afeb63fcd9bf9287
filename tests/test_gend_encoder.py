"""faces/clip.py and common/weights.py's vit_encoder: GenD's checkpoint layouts loaded into transformers'
CLIPVisionModel and DINOv3ViTModel and timm's Eva, strictly; their preprocessing; GenD's video score."""
import copy
import glob
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import config
from common.weights import vit_encoder, describe
from conftest import ROOT, TESTDATA, testdata
from faces.clip import for_inference, preprocess, video_score
from gend_models import tiny_gend, tiny_gend_dinov3, tiny_gend_pe, timm_pixels


def face_photos():
    """Real face photos of ../shared/testdata/faces, RGB uint8, at their own (non-square) sizes."""
    testdata('faces')
    paths = sorted(glob.glob(os.path.join(TESTDATA, 'faces', '*.jpg')))
    return [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]


def test_tiny_gend_checkpoint_gives_transformers_outputs_and_gends_score(tmp_path):
    """Loaded from the hub's layout, the encoder is transformers' model with the saved weights: on real face
    crops its L2-normalised pooler_output and FAKE logit are those of the model and head that were saved
    (the same float32 operations on the same weights: equal to float rounding), and the video score is the
    mean of the head's softmax P(FAKE)."""
    vision, head = tiny_gend(tmp_path)
    ours = vit_encoder('gend', str(tmp_path))
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


def pooled(vision, pixels):
    """The backbone's pooled output, as GenD's encoders take it: timm's Eva returns it, transformers' models
    as pooler_output (DINOv3's: its CLS token)."""
    out = vision(pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('encoder', ['gend', 'gend_dinov3', 'gend_pe'])
def test_for_inference_keeps_the_numbers(tmp_path, encoder, dtype):
    """for_inference on the tiny models and real face crops. CLIP's QuickGELU folded into fc1, SiLU and fc2 is
    the same function: equal to float32 rounding (the weights times 1.702; measured 5e-7 on outputs of ~0.8).
    In bfloat16 (on any CPU: torch emulates what the CPU lacks) it rounds what autocast rounds, every matrix
    product's inputs (and DINOv3's RoPE sines and cosines), and keeps the LayerNorms and the residual stream
    in float32 as autocast does. Its mean absolute error from float32 is within 1.4 times autocast's (over
    5 seeds: 0.90-1.09 of it, CLIP and DINOv3; a network wholly in bfloat16 is 1.63-2.41 times it and
    fails; the largest single error is too noisy to tell them apart: 0.63-1.52 against 1.59-3.15), and
    never zero (bfloat16 did run). PE: autocast also rounds its patch embedding and attention pooling, which
    for_inference leaves in float32: 0.32-0.62 of autocast's, against 0.94-1.02 wholly in bfloat16, so its
    bound is 0.8 (in the tiny 2-block model its blocks wholly in bfloat16, LayerNorms too, measure as the
    mixed ones: for PE this guards the float32 ends, not the LayerNorms). float16, the blocks' type on CUDA,
    runs the same casts and hooks on the CPU (the GPU's path, where no GPU is), against autocast's float16:
    over the same 5 seeds 0.81-1.13 (CLIP), 0.94-1.06 (DINOv3), 0.35-0.49 (PE) of autocast's error; wholly in
    float16 2.09-2.73, 1.57-2.04, 0.95-1.05: the same bounds tell them apart."""
    make, arch, bound = {'gend': (tiny_gend, 'clip', 1.4), 'gend_dinov3': (tiny_gend_dinov3, 'dinov3', 1.4),
                         'gend_pe': (tiny_gend_pe, 'pe', 0.8)}[encoder]
    vision, _ = make(tmp_path)
    pixels = preprocess(torch.from_numpy(np.stack([cv2.resize(p, (256, 256)) for p in face_photos()])), arch)
    with torch.inference_mode():
        want = pooled(vision, pixels)  # (faces, 32)
        with torch.autocast('cpu', dtype=dtype):
            autocast_error = (pooled(vision, pixels).float() - want).abs().mean()
        if encoder == 'gend' and dtype == torch.bfloat16:  # without a dtype: once
            folded = for_inference(copy.deepcopy(vision))
            assert isinstance(folded.encoder.layers[0].mlp.activation_fn, torch.nn.SiLU)
            torch.testing.assert_close(pooled(folded, pixels), want, atol=1e-5, rtol=1e-5)
        mixed = pooled(for_inference(copy.deepcopy(vision), dtype), pixels)
    assert mixed.dtype == torch.float32 and mixed.shape == want.shape
    assert 0 < (mixed - want).abs().mean() <= bound * autocast_error


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
        vit_encoder('gend', str(tmp_path))
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
    assert describe('default', 'gend_dinov3') == 'gend_dinov3:yermandy/GenD_DINOv3_L'
    assert describe('default', 'gend_pe') == 'gend_pe:yermandy/GenD_PE_L'
    with pytest.raises(config.UserError, match='not a folder'):
        vit_encoder('clip', '/no/such/folder')


def test_a_folder_without_the_hubs_files_names_the_encoders_hub_id(tmp_path):
    (tmp_path / 'model.safetensors').write_bytes(b'')  # config.json missing
    for encoder, repo in (('gend_pe', 'yermandy/GenD_PE_L'), ('clip', 'openai/clip-vit-large-patch14')):
        with pytest.raises(config.UserError, match=f'config.json and model.safetensors .*hf download {repo} '
                                                   f'--local-dir {tmp_path}'):
            vit_encoder(encoder, str(tmp_path))


def dinov3_inputs():
    """Real face photos as GenD's aligned 256 px crops, and DINOv3ViTImageProcessor's pixel values of them."""
    from transformers import DINOv3ViTImageProcessor
    crops = np.stack([cv2.resize(p, (256, 256), interpolation=cv2.INTER_AREA) for p in face_photos()])
    return crops, DINOv3ViTImageProcessor()(images=list(crops), return_tensors='pt')['pixel_values']


@pytest.mark.parametrize('legacy', [True, False], ids=['saved-by-transformers-4', 'saved-by-transformers-5'])
def test_tiny_gend_dinov3_checkpoint_gives_transformers_outputs_and_gends_score(tmp_path, legacy):
    """GenD's DINOv3 layout, with DINOv3's blocks named as transformers 4 saved them (`layer.N.`, GenD's
    release) or as 5 does (`model.layer.N.`), loads into transformers' DINOv3ViTModel: on real faces
    preprocessed as DINOv3ViTImageProcessor does, the L2-normalised CLS token and the FAKE logit are those
    of the saved model and head (the same float32 operations: equal to float rounding)."""
    vision, head = tiny_gend_dinov3(tmp_path, legacy=legacy)
    ours = vit_encoder('gend_dinov3', str(tmp_path))
    assert ours.name == f'gend_dinov3:file:{tmp_path.name}' and ours.dim == 32 and ours.arch == 'dinov3'
    crops, pixels = dinov3_inputs()
    with torch.inference_mode():
        features, fake_logit = ours(ours.preprocess(torch.from_numpy(crops)))
        out = vision(pixel_values=pixels)
        want = F.normalize(out.last_hidden_state[:, 0], dim=1)  # GenD's DINOEncoder: the CLS token
        assert_gends_outputs(features, fake_logit, want, head(want))  # the logits' spread measured: 0.06


def assert_gends_outputs(features, fake_logit, want, logits):
    """The encoder's features and FAKE logits are the saved model's L2-normalised output `want` and its head's
    `logits` (faces, 2) (the same float32 operations: equal to float rounding); the faces differ, so do their
    logits; the video score is the mean of the head's softmax P(FAKE)."""
    torch.testing.assert_close(features, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fake_logit, logits[:, 1] - logits[:, 0], atol=1e-5, rtol=1e-5)
    assert np.ptp(fake_logit.numpy()) > 1e-2
    p_fake = torch.softmax(logits.double(), dim=1)[:, 1].mean().item()
    assert video_score(fake_logit.numpy()) == pytest.approx(p_fake, abs=1e-6)


def test_dinov3_preprocessing_is_its_image_processors():
    """DINOv3's preprocessing (224 x 224 bilinear, ImageNet's mean and std) equals transformers'
    DINOv3ViTImageProcessor with its defaults on real faces, as GenD's aligned 256 px crops and at the
    photos' own (non-square) sizes: both scale to [0, 1] first, resize with torchvision's antialiased
    bilinear and then do the same float32 arithmetic (equal to float rounding: 1e-5 of values of order 1;
    resizing the uint8 image, as CLIP's does, is one grey level, 0.017, off)."""
    from transformers import DINOv3ViTImageProcessor
    processor = DINOv3ViTImageProcessor()
    crops, want = dinov3_inputs()
    torch.testing.assert_close(preprocess(torch.from_numpy(crops), 'dinov3'), want, atol=1e-5, rtol=0)
    for photo in face_photos():
        want = processor(images=photo, return_tensors='pt')['pixel_values']
        torch.testing.assert_close(preprocess(torch.from_numpy(photo)[None], 'dinov3'), want, atol=1e-5, rtol=0)
    crops = torch.from_numpy(crops)
    assert (preprocess(crops, 'clip') - preprocess(crops, 'dinov3')).abs().max() > 0.1  # CLIP's is another


def test_a_wrong_dinov3_checkpoint_is_one_line_naming_the_tensor(tmp_path):
    name = 'feature_extractor.backbone.model.layer.1.mlp.down_proj.bias'
    tiny_gend_dinov3(tmp_path, legacy=False, drop=[name])
    with pytest.raises(config.UserError, match=name.replace('.', r'\.') + ' missing'):
        vit_encoder('gend_dinov3', str(tmp_path))
    tiny_gend_dinov3(tmp_path, legacy=True, drop=['model.linear.bias'])
    with pytest.raises(config.UserError, match=r'model\.linear\.bias missing'):
        vit_encoder('gend_dinov3', str(tmp_path))


def test_a_checkpoint_of_the_other_backbone_names_the_encoder_that_reads_it(tmp_path):
    """GenD's config.json names its backbone and no sizes: a DINOv3 checkpoint given to --face_encoder=gend
    (CLIP) is one line that says which encoder reads it, before any tensor is read; and the other way round."""
    tiny_gend_dinov3(tmp_path, config=False)
    with pytest.raises(config.UserError, match="facebook/dinov3-vitl16-pretrain-lvd1689m', read by "
                                               "--face_encoder=gend_dinov3"):
        vit_encoder('gend', str(tmp_path))
    other = tmp_path / 'clip'
    other.mkdir()
    tiny_gend(other)
    (other / 'config.json').write_text('{"backbone": "openai/clip-vit-large-patch14", "head": "LinearNorm"}')
    with pytest.raises(config.UserError, match='read by --face_encoder=gend'):
        vit_encoder('gend_dinov3', str(other))
    pe = tmp_path / 'pe'
    pe.mkdir()
    tiny_gend_pe(pe, config=False)  # the same feature_extractor.backbone. prefix as DINOv3's: the config tells
    with pytest.raises(config.UserError, match="vit_pe_core_large_patch14_336', read by --face_encoder=gend_pe"):
        vit_encoder('gend_dinov3', str(pe))


def test_a_config_with_sizes_of_another_backbone_is_one_line_too(tmp_path):
    """A config.json with a vision_config (sizes) still names its backbone: each GenD encoder given another's
    checkpoint says which encoder reads it (a CLIP or DINOv3 one given to gend_pe once reached timm with a
    transformers name: a traceback)."""
    makers = {'gend': tiny_gend, 'gend_dinov3': tiny_gend_dinov3, 'gend_pe': tiny_gend_pe}
    for made, make in makers.items():
        (tmp_path / made).mkdir()
        make(tmp_path / made)
        assert 'vision_config' in json.loads((tmp_path / made / 'config.json').read_text())
        for encoder in set(makers) - {made}:
            with pytest.raises(config.UserError, match=f"config.json names backbone '.*', read by "
                                                       f"--face_encoder={made}$"):
                vit_encoder(encoder, str(tmp_path / made))


@pytest.mark.parametrize('text, says', [
    ('[1, 2]', r'config\.json: the file is \[1, 2\], not a JSON object'),
    ('{"backbone": ["x"]}', r'its backbone is \["x"\], not a JSON string'),
    ('{"backbone": "vit_pe_core_large_patch14_336", "vision_config": 5}', 'its vision_config is 5, not a JSON object'),
    ('{"backbone": "vit_pe_core_large_patch14_336", "vision_config": {"hidden_size": 32}}',
     "vision_config does not build vit_pe_core_large_patch14_336 .*unexpected keyword argument 'hidden_size'"),
])
def test_a_malformed_config_json_is_one_line_and_exit_2(tmp_path, text, says):
    """config.json is GenD's or OpenAI's JSON object; where it is not, or its sizes are not the backbone's
    (timm's Eva takes depth, embed_dim; transformers' configs check their fields' types), one line, exit 2,
    never a traceback."""
    tiny_gend_pe(tmp_path)
    (tmp_path / 'config.json').write_text(text)
    with pytest.raises(config.UserError, match=says):
        vit_encoder('gend_pe', str(tmp_path))
    run = cli('DetectionPipeline.py', f'--video={tmp_path}/x.mp4', '--face_encoder=gend_pe',
              f'--face_weights={tmp_path}', '--device=cpu')
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), run.stderr
    assert re.search(says, lines[0]), lines[0]
    tiny_gend(tmp_path)
    (tmp_path / 'config.json').write_text('{"vision_config": {"hidden_size": "x"}}')
    with pytest.raises(config.UserError, match="vision_config does not build openai/clip-vit-large-patch14 .*"
                                               "hidden_size"):
        vit_encoder('gend', str(tmp_path))


def test_tiny_gend_pe_checkpoint_gives_timms_outputs_and_gends_score(tmp_path):
    """GenD's PE layout (its PerceptionEncoder: timm's Eva made with dynamic_img_size=True, its projection head
    replaced by nn.Identity) loads into the Eva vit_encoder makes: on real faces preprocessed by timm's
    transform as GenD sets it up, the L2-normalised output of its attention pooling and the FAKE logit are
    those of the saved model and head (the same float32 operations: equal to float rounding)."""
    vision, head = tiny_gend_pe(tmp_path)
    ours = vit_encoder('gend_pe', str(tmp_path))
    assert ours.name == f'gend_pe:file:{tmp_path.name}' and ours.dim == 32 and ours.arch == 'pe'
    crops = np.stack([cv2.resize(p, (256, 256), interpolation=cv2.INTER_AREA) for p in face_photos()])
    pixels = timm_pixels(vision, crops)
    with torch.inference_mode():
        features, fake_logit = ours(pixels)
        want = F.normalize(vision(pixels), dim=1)
        assert_gends_outputs(features, fake_logit, want, head(want))  # the logits' spread measured: 0.20
    tiny_gend_pe(tmp_path, drop=['feature_extractor.backbone.attn_pool.latent'])  # strict, as the others
    with pytest.raises(config.UserError, match=r'feature_extractor\.backbone\.attn_pool\.latent missing'):
        vit_encoder('gend_pe', str(tmp_path))


def test_pe_preprocessing_is_timms(tmp_path):
    """PE's preprocessing (CLIP's steps, mean and std 0.5) against timm's transform as GenD sets it up (PIL's
    bicubic resize of the shortest side to 224, centre crop, [-1, 1]) on real faces, as GenD's aligned 256
    px crops and at the photos' own sizes. Both resize in two passes, each rounded to uint8 and clamped to
    0..255. Where the passes run in the same order (torchvision: width first, as Pillow before 13), only
    their fixed-point sums round differently: a pixel may be one grey level off (2/255 = 0.0078 in [-1, 1];
    measured: at most one, on 0.1-0.4% of the values). Pillow 13 runs the height's pass first for some sizes
    (python-pillow/Pillow#9549; here a portrait photo, 491 x 1137; requirements.txt pins 12.3.0, other
    machines may not): the first pass's rounding (half a level, through the second's kernel) and the
    clamping of the bicubic's overshoot then fall elsewhere (measured: 3 levels at most, on 20% of the
    photo's values, 0.2 of a level on average; bound: 3, and half a level on average). Bilinear in place of
    bicubic is 19-29 levels off, resizing in float before rounding 11 on the crops, a pixel's shift 160 or
    more, CLIP's mean and std 125 or more."""
    from PIL import Image
    levels, mean = (1, 0.01) if int(Image.__version__.split('.')[0]) < 13 else (3, 0.5)  # grey levels
    vision, _ = tiny_gend_pe(tmp_path)
    crops = np.stack([cv2.resize(p, (256, 256), interpolation=cv2.INTER_AREA) for p in face_photos()])
    for images in [crops, *[[photo] for photo in face_photos()]]:
        want = timm_pixels(vision, images)
        got = preprocess(torch.from_numpy(np.stack(images)), 'pe')
        assert got.shape == want.shape
        off = (got - want).abs()
        assert off.max() <= levels * 2 / 255 + 1e-6 and off.mean() <= mean * 2 / 255
    assert (preprocess(torch.from_numpy(crops), 'clip') - timm_pixels(vision, crops)).abs().max() > 0.1
