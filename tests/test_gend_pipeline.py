"""The ViT face encoders behind DetectionPipeline.py (--face_encoder=gend | gend_dinov3 | gend_pe | clip): the faces,
features and FAKE logits a table stores, and the full-size ViT-L/14 through create_video_embeddings.py."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import DetectionPipeline as dp
from common.device import cpu_has_bf16
from common.video import sampled_frames
from conftest import ROOT, testdata
from faces import images
from faces.clip import video_score
from gend_models import TINY, tiny_gend, tiny_gend_dinov3, tiny_gend_pe, timm_pixels


@pytest.mark.parametrize('encoder', ['gend', 'gend_dinov3', 'gend_pe'])
def test_gend_tracks_hold_transformers_features_and_logits_of_gends_crops(tmp_path, encoder):
    """A real clip through the pipeline with a tiny GenD checkpoint, CLIP's, DINOv3's or PE's (float32): each
    face's stored features and FAKE logit are the library's model (CLIP's pooler_output, DINOv3's CLS token,
    timm's Eva's pooled output) and the saved head on that face aligned as GenD aligns it and preprocessed
    by the backbone's own preprocessing (transformers' image processor; timm's transform, through PIL)
    (float16 storage of unit-norm features: 1e-3; logits float32 over the same pixels: 1e-4; PE's through
    PIL's resize, a grey level off on 0.1-0.4% of the values: 1e-3); the video's score is the mean of the
    head's softmax."""
    from transformers import CLIPImageProcessor, DINOv3ViTImageProcessor
    make = {'gend': tiny_gend, 'gend_dinov3': tiny_gend_dinov3, 'gend_pe': tiny_gend_pe}[encoder]
    vision, head = make(tmp_path)
    pipeline = dp.DetectionPipeline(face_encoder=encoder, face_weights=str(tmp_path), device='cpu', amp=False)
    assert pipeline.embedder_name == f'{encoder}:file:{tmp_path.name}'
    path = testdata('dfdc_sample', 'brtujopkby.mp4')
    [track] = pipeline(path).tracks
    assert track.embeddings.shape == (len(track.frames), TINY['hidden_size']) and track.embeddings.dtype == np.float16
    assert track.logits.shape == (len(track.frames),) and track.logits.dtype == np.float32
    frames = dict(sampled_frames(path, dp.FRAME_STEP))
    crops = [images.align(frames[f], points) for f, points in zip(track.frames, track.landmarks)]
    with torch.inference_mode():
        if encoder == 'gend_pe':
            pooled = vision(timm_pixels(vision, crops))
        else:
            processor = CLIPImageProcessor if encoder == 'gend' else DINOv3ViTImageProcessor
            out = vision(pixel_values=processor()(images=crops, return_tensors='pt')['pixel_values'])
            pooled = out.last_hidden_state[:, 0] if encoder == 'gend_dinov3' else out.pooler_output
        features = F.normalize(pooled, dim=1)
        logits = head(features).double()  # (faces, 2)
    np.testing.assert_allclose(track.embeddings.astype(np.float32), features.numpy(), atol=1e-3)
    np.testing.assert_allclose(track.logits, (logits[:, 1] - logits[:, 0]).numpy(),
                               atol=1e-3 if encoder == 'gend_pe' else 1e-4)
    assert video_score(track.logits) == pytest.approx(torch.softmax(logits, 1)[:, 1].mean().item(), abs=1e-4)


def test_gend_dinov3_in_mixed_precision_stays_near_float32(tmp_path):
    """With AMP, DINOv3's attention and MLP blocks run in bfloat16 on a CPU with bf16 units (AMX, AVX-512 BF16;
    faces/clip.py's for_inference) and the LayerNorms, layer scales and residual stream in float32: each
    matrix product's inputs are rounded to bfloat16 (2^-9 relative), which through the tiny model's 2 blocks
    moves the unit-norm features by 1.5-1.8e-3 and the logits by 0.6-0.8e-3 (3 seeds; autocast: 1.3-2.3e-3
    and 1.3-1.9e-3). 5e-3 bounds both, and they must move (bfloat16 did run). Without bf16 units AMP is off
    on the CPU: the same numbers."""
    tiny_gend_dinov3(tmp_path)
    path = testdata('dfdc_sample', 'brtujopkby.mp4')
    [exact], [mixed] = (dp.DetectionPipeline(face_encoder='gend_dinov3', face_weights=str(tmp_path), device='cpu',
                                             amp=amp)(path).tracks for amp in (False, True))
    np.testing.assert_array_equal(mixed.frames, exact.frames)
    error = np.abs(mixed.embeddings.astype(np.float32) - exact.embeddings.astype(np.float32)).max()
    assert error <= 5e-3 and np.abs(mixed.logits - exact.logits).max() <= 5e-3
    assert (error > 0) == cpu_has_bf16()


def test_clip_loads_openais_layout_without_its_text_tower_and_has_no_logit(tmp_path):
    """OpenAI's CLIP checkpoint (CLIPConfig's config.json with its vision_config; vision_model.*, the text
    tower, the projections, logit_scale): the vision tower is read, the rest left; the tracks have no logit."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel
    torch.manual_seed(2)
    vision = CLIPVisionModel(CLIPVisionConfig(**TINY)).eval()
    state = {f'vision_model.{k}': v for k, v in vision.state_dict().items()}
    state.update({'text_model.embeddings.token_embedding.weight': torch.zeros(10, 8), 'logit_scale': torch.ones(()),
                  'visual_projection.weight': torch.zeros(8, 32), 'text_projection.weight': torch.zeros(8, 8),
                  'vision_model.embeddings.position_ids': torch.arange(257)[None]})
    save_file(state, str(tmp_path / 'model.safetensors'))
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'clip', 'vision_config': TINY}))
    pipeline = dp.DetectionPipeline(face_encoder='clip', face_weights=str(tmp_path / 'model.safetensors'),
                                    device='cpu', amp=False)
    assert pipeline.embedder_name == 'clip:file:model.safetensors'
    [track] = pipeline(testdata('dfdc_sample', 'lynaeydofd.mp4')).tracks
    assert track.logits is None and track.embeddings.shape == (len(track.frames), 32)
    norms = np.linalg.norm(track.embeddings.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)  # L2-normalised, stored in float16


def test_full_size_gend_runs_through_create_video_embeddings_on_a_real_clip(tmp_path):
    """GenD's ViT-L/14 (untrained, seeded: --face_weights=none) on one real DFDC clip on the CPU: a table of
    1024-d features with their FAKE logits, recorded as made with gend (on this 2-core VM: ~1-2 min)."""
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')
    data = tmp_path / 'data'
    data.mkdir()
    os.symlink(clip, data / 'lynaeydofd.mp4')
    meta = json.loads(open(os.path.join(os.path.dirname(clip), 'metadata.json')).read())
    (data / 'metadata.json').write_text(json.dumps({'lynaeydofd.mp4': meta['lynaeydofd.mp4']}))
    out = tmp_path / 'video.pkl'
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, 'create_video_embeddings.py', f'--data_dir={data}', f'--output={out}',
                          '--face_encoder=gend', '--face_weights=none', '--device=cpu'],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    print(f'full-size gend, one clip, CPU: {time.perf_counter() - t0:.0f} s')  # a note, never asserted
    table = pd.read_pickle(out)
    [row] = table.itertuples()
    assert row.embedder == 'gend:untrained(seed=0)' and row.label == 0
    assert row.video_embedding.shape == (len(row.frames), 1024) and row.video_embedding.dtype == np.float16
    assert len(row.frames) == 50
    np.testing.assert_allclose(np.linalg.norm(row.video_embedding.astype(np.float32), axis=1), 1.0, atol=3e-3)
    assert row.frame_logits.shape == (50,) and np.isfinite(row.frame_logits).all()
    assert 0.0 < video_score(row.frame_logits) < 1.0
    made = table.attrs['made_with']
    assert made['--face_encoder'] == 'gend' and made['embedder'] == 'gend:untrained(seed=0)'
    again = subprocess.run([sys.executable, 'create_video_embeddings.py', f'--data_dir={data}', f'--output={out}',
                            '--face_weights=none', '--device=cpu'], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)  # the same table with FaceNet: refused, not mixed
    assert again.returncode == 2 and 'face_encoder' in again.stderr, again.stderr


def test_a_gend_dinov3_table_holds_its_logits(tmp_path):
    """create_video_embeddings.py with --face_encoder=gend_dinov3 (a tiny checkpoint): the table holds the
    pipeline's features and FAKE logits (frame_logits, as gend's), which test.py and predict.py score. The
    script runs with this process's thread count: with another, the float32 sums (MTCNN's, the ViT's) run in
    another order, which moved a logit by up to 2e-5 (measured), more than 1e-5."""
    weights = tmp_path / 'weights'
    weights.mkdir()
    tiny_gend_dinov3(weights)
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')
    out = tmp_path / 'video.pkl'
    run = subprocess.run([sys.executable, 'create_video_embeddings.py', f'--data_dir={os.path.dirname(clip)}',
                          f'--output={out}', '--face_encoder=gend_dinov3', f'--face_weights={weights}',
                          '--device=cpu', '--amp=false', '--frame_step=30'], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())})
    assert run.returncode == 0, run.stderr
    table = pd.read_pickle(out).set_index('filename')
    [track] = dp.DetectionPipeline(face_encoder='gend_dinov3', face_weights=str(weights), device='cpu', amp=False,
                                   frame_step=30)(clip).tracks
    row = table.loc['lynaeydofd.mp4']
    assert row.embedder == 'gend_dinov3:file:weights'
    np.testing.assert_array_equal(row.frames, track.frames)
    np.testing.assert_allclose(row.frame_logits, track.logits, atol=1e-5)  # float32, the same faces
    np.testing.assert_allclose(row.video_embedding.astype(np.float32), track.embeddings.astype(np.float32),
                               atol=1e-3)  # float16 of unit-norm features


def test_decoding_workers_carry_gends_features_and_logits(tmp_path):
    """With decoding workers (the default on a GPU) the aligned crops travel to the networks and the record
    array of features and logits back: the same tracks as in one process (the workers' batches mix the two
    videos' faces, and a matrix kernel may sum in another order for another batch size: float rounding,
    1e-3 on float16 features, 1e-4 on logits)."""
    tiny_gend(tmp_path)
    pipeline = dp.DetectionPipeline(face_encoder='gend', face_weights=str(tmp_path), device='cpu', amp=False,
                                    workers=2)
    paths = [testdata('dfdc_sample', 'lynaeydofd.mp4'), testdata('dfdc_sample', 'yhffcuhhjy.mp4')]
    streamed = {path: faces for path, faces, _ in pipeline.stream(paths)}
    for path in paths:
        [a], [b] = streamed[path].tracks, pipeline(path).tracks
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_allclose(a.embeddings.astype(np.float32), b.embeddings.astype(np.float32), atol=1e-3)
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-4)


def test_detection_pipeline_script_prints_gends_verdict(tmp_path):
    """`python DetectionPipeline.py --face_encoder=gend` on one real clip says GenD's P(FAKE) of its face
    track: the video score of the logits the pipeline gives in this process (3 decimals)."""
    tiny_gend(tmp_path)
    clip = testdata('dfdc_sample', 'lynaeydofd.mp4')
    run = subprocess.run([sys.executable, 'DetectionPipeline.py', f'--video={clip}', '--face_encoder=gend',
                          f'--face_weights={tmp_path}', '--device=cpu', '--amp=false'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    [track] = dp.DetectionPipeline(face_encoder='gend', face_weights=str(tmp_path), device='cpu', amp=False)(clip).tracks
    assert f"GenD's P(FAKE) {video_score(track.logits):.3f}" in run.stdout
