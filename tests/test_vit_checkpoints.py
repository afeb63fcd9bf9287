"""common/weights.py's vit_encoder on the checkpoints a user may hold besides the hub's one model.safetensors
(a sharded one, PyTorch's pytorch_model.bin, float16 or bfloat16 tensors) and on damaged ones: each loads the
network that was saved, or is one line that says what to do."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file, save_file

from common import config
from common.weights import vit_encoder, weights_stamp
from conftest import testdata
from faces.clip import preprocess
from gend_models import TINY, tiny_gend
from test_gend_encoder import assert_gends_outputs, cli, face_photos


def assert_loads_the_saved_network(folder, vision, head):
    """vit_encoder('gend', folder) (or a checkpoint file) gives, on real face crops, the saved CLIPVisionModel's L2-normalised
    pooler_output and its head's FAKE logit (the same float32 operations: equal to float rounding)."""
    ours = vit_encoder('gend', str(folder))
    pixels = preprocess(torch.from_numpy(np.stack([cv2.resize(p, (256, 256)) for p in face_photos()])))
    with torch.inference_mode():
        features, fake_logit = ours(pixels)
        want = F.normalize(vision(pixel_values=pixels).pooler_output, dim=1)
        assert_gends_outputs(features, fake_logit, want, head(want))


@pytest.mark.parametrize('safe, shard, index', [
    (True, '40KB', 'model.safetensors.index.json'),  # large models on the hub: shards and their index
    (False, '5GB', 'pytorch_model.bin'),  # older repos and Kaggle copies: PyTorch's pickle
    (False, '40KB', 'pytorch_model.bin.index.json'),
])
def test_sharded_and_pytorch_checkpoints_load_the_saved_network(tmp_path, safe, shard, index):
    """A folder holding the checkpoint as huggingface_hub's save_torch_state_dict writes it (what
    save_pretrained calls) in place of model.safetensors loads the same network (these were refused as a
    folder without model.safetensors); the table records the stamps of the files read (a sharded one's index
    and every shard: the index alone stays the same when a shard of new weights of the same shapes replaces one)."""
    vision, head = tiny_gend(tmp_path)
    state = load_file(tmp_path / 'model.safetensors')
    os.remove(tmp_path / 'model.safetensors')
    save_torch_state_dict(state, tmp_path, max_shard_size=shard, safe_serialization=safe)
    assert (tmp_path / index).is_file() and len(os.listdir(tmp_path)) > (3 if index.endswith('json') else 1)
    assert_loads_the_saved_network(tmp_path, vision, head)
    shards = json.loads((tmp_path / index).read_text())['weight_map'] if index.endswith('json') else {}
    files = [tmp_path / index, *(tmp_path / name for name in sorted(set(shards.values())))]
    recorded = weights_stamp(str(tmp_path))  # what the face table records of them (DetectionPipeline.made_with)
    stat = [[os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files]
    assert recorded == ({str(f): s for f, s in zip(files, stat)} if shards else stat[0])
    if shards:  # one shard downloaded again under the index it had (new weights, the same shapes): other weights
        os.utime(files[-1], ns=(stat[-1][1] + 10**9, stat[-1][1] + 10**9))
        assert weights_stamp(str(tmp_path)) != recorded
        assert weights_stamp(str(tmp_path))[str(files[1])] == recorded[str(files[1])]
    if shards:  # a shard lost in the copy: one line naming it
        lost = sorted(set(shards.values()))[-1]
        os.remove(tmp_path / lost)
        with pytest.raises(config.UserError, match=f'cannot read weights file .*{lost}.* download it again'):
            vit_encoder('gend', str(tmp_path))
        (tmp_path / index).write_text('{"weight_map": ')
        with pytest.raises(config.UserError, match=f'cannot read .*{index}: JSONDecodeError'):
            vit_encoder('gend', str(tmp_path))


def test_a_state_dict_saved_by_torch_save_as_a_pth_file_loads_the_saved_network(tmp_path):
    """A .pth file of the checkpoint's tensors (torch.save: how a user's own training saves them), config.json
    beside it: the saved network (it was read as a safetensors file: 'header too large', and told to download
    it again)."""
    vision, head = tiny_gend(tmp_path)
    torch.save(load_file(tmp_path / 'model.safetensors'), tmp_path / 'gend.pth')
    os.remove(tmp_path / 'model.safetensors')
    assert_loads_the_saved_network(tmp_path / 'gend.pth', vision, head)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_tensors_load_as_float32(tmp_path, dtype):
    """A checkpoint saved in float16 or bfloat16 (as the hub holds some) runs in float32 with those values:
    the outputs of transformers' model whose weights were rounded to that dtype, to float32 rounding."""
    vision, head = tiny_gend(tmp_path)
    state = load_file(tmp_path / 'model.safetensors')
    save_file({k: v.to(dtype) for k, v in state.items()}, tmp_path / 'model.safetensors')
    assert_loads_the_saved_network(tmp_path, vision.to(dtype).float(), head.to(dtype).float())


def test_a_damaged_checkpoint_is_one_line_that_says_to_download_it_again(tmp_path):
    """A partial download (cut in its header or in its tensors) or an empty file is one line naming the file
    and saying to download it again, exit 2 (safetensors' own message said only what it could not read)."""
    tiny_gend(tmp_path)
    whole = (tmp_path / 'model.safetensors').read_bytes()
    for cut in (len(whole) // 2, 20, 0):
        (tmp_path / 'model.safetensors').write_bytes(whole[:cut])
        with pytest.raises(config.UserError, match=r'cannot read weights file .*model\.safetensors: .*download it '
                                                   r'again, as hf download yermandy/GenD_CLIP_L_14 --local-dir'):
            vit_encoder('gend', str(tmp_path))
    video = testdata('dfdc_sample', 'lynaeydofd.mp4')
    run = cli('DetectionPipeline.py', f'--video={video}', '--face_encoder=gend', f'--face_weights={tmp_path}',
              '--device=cpu')
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and 'download it again' in lines[0], run.stderr
    # the folder's config.json given for its weights: no download would help (it said to download it again)
    with pytest.raises(config.UserError, match=rf'^--face_weights={tmp_path}/config\.json is a folder\'s config\.json, '
                                               rf'not its weights: give the folder \({tmp_path}\) or its model'):
        vit_encoder('gend', str(tmp_path / 'config.json'))


def test_an_activation_transformers_lacks_is_one_line(tmp_path):
    """A config.json whose vision_config names a hidden_act transformers does not have (a KeyError in its
    ACT2FN) is one line as the other sizes it refuses, not a traceback."""
    tiny_gend(tmp_path)
    cfg = json.loads((tmp_path / 'config.json').read_text())
    cfg['vision_config']['hidden_act'] = 'quick_gelu2'
    (tmp_path / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(config.UserError, match="vision_config does not build openai/clip-vit-large-patch14 "
                                               r"\(KeyError: 'quick_gelu2'\)"):
        vit_encoder('gend', str(tmp_path))


def test_gends_clip_and_openais_given_to_each_other_name_the_encoder_that_reads_them(tmp_path):
    """GenD's CLIP checkpoint and OpenAI's have the same backbone, so config.json cannot tell them apart: given
    to the other encoder (a new user's likely slip: GenD is a CLIP), the one line names the encoder whose
    tensors they are (it said only that a tensor was missing)."""
    (tmp_path / 'gend').mkdir(), (tmp_path / 'openai').mkdir()
    vision, _ = tiny_gend(tmp_path / 'gend')
    openai = {f'vision_model.{k}': v for k, v in vision.state_dict().items()}
    save_file(openai, tmp_path / 'openai' / 'model.safetensors')
    (tmp_path / 'openai' / 'config.json').write_text(json.dumps({'model_type': 'clip', 'vision_config': TINY}))
    for encoder, folder, reader in (('clip', 'gend', 'gend'), ('gend', 'openai', 'clip'),
                                    ('gend_dinov3', 'openai', 'clip')):
        says = f'missing .*: not the checkpoint of a {encoder} encoder .* read by --face_encoder={reader}\\)$'
        with pytest.raises(config.UserError, match=says):
            vit_encoder(encoder, str(tmp_path / folder))
    assert vit_encoder('clip', str(tmp_path / 'openai')).head is None


def test_a_local_path_that_is_not_there_is_said_missing_not_downloaded(tmp_path, monkeypatch):
    """A mistyped path inside a folder that is here (models/GenD_CLIP_L14), or one with characters a hub id
    cannot hold, is one line saying it is not a folder or file; these were taken for hub ids: 'cannot
    download models/GenD_CLIP_L14 from the Hugging Face hub', with `hf download` of it to do."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'models').mkdir()
    for weights, says in (('models/GenD_CLIP_L14', r"not a folder, .* \(models/ is a folder here: not taken for a hub "
                                                   r"id\)$"),
                          ('my weights/GenD', r'not a folder, a checkpoint file, a hub id \(owner/name\), default or '
                                              r'none$')):
        with pytest.raises(config.UserError, match=rf"^--face_weights='{weights}': {says}"):
            vit_encoder('gend', weights)
