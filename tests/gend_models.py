"""Small random vision towers, CLIP's and DINOv3's, saved as GenD's hub checkpoints are (config.json +
model.safetensors, their tensor names), for the tests of the ViT face encoders (tests/test_gend_*.py)."""
import json

import torch
from safetensors.torch import save_file

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=14,
            image_size=224)


def tiny_gend(folder, drop=(), extra=None, seed=1):
    """Write GenD's layout into `folder` (without the tensors named in `drop`, with `extra` {name: tensor});
    return transformers' CLIPVisionModel and the nn.Linear head whose weights it holds."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    torch.manual_seed(seed)
    vision, head = CLIPVisionModel(CLIPVisionConfig(**TINY)).eval(), torch.nn.Linear(TINY['hidden_size'], 2)
    state = {f'feature_extractor.vision_model.{k}': v for k, v in vision.state_dict().items()}
    state.update({f'model.linear.{k}': v for k, v in head.state_dict().items()})
    state['feature_extractor.visual_projection.weight'] = torch.randn(16, TINY['hidden_size'])  # GenD keeps it
    state = {k: v.contiguous() for k, v in state.items() if k not in drop}
    save_file({**state, **(extra or {})}, str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps({
        'architectures': ['GenD'], 'backbone': 'openai/clip-vit-large-patch14', 'head': 'LinearNorm',
        'model_type': 'GenD', 'vision_config': TINY}))
    return vision, head


TINY_DINOV3 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=16,
                   image_size=224, num_register_tokens=4)


def tiny_gend_dinov3(folder, legacy=True, drop=(), extra=None, seed=1, config=True):
    """GenD's DINOv3 layout (feature_extractor.backbone.*, model.linear.*) in `folder`, as transformers < 5 saved
    DINOv3's blocks (`layer.N.`; `legacy`) or as 5 does (`model.layer.N.`), without the tensors of `drop`,
    with `extra` {name: tensor}; config.json with the tiny sizes (`config`), else GenD's own (the backbone's
    name only). Returns transformers' DINOv3ViTModel and the nn.Linear head whose weights it holds."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel
    torch.manual_seed(seed)
    vision = DINOv3ViTModel(DINOv3ViTConfig(**TINY_DINOV3)).eval()
    head = torch.nn.Linear(TINY_DINOV3['hidden_size'], 2)
    state = {f'feature_extractor.backbone.{k.replace("model.layer.", "layer.") if legacy else k}': v
             for k, v in vision.state_dict().items()}
    state.update({f'model.linear.{k}': v for k, v in head.state_dict().items()})
    state = {k: v.contiguous() for k, v in state.items() if k not in drop}
    save_file({**state, **(extra or {})}, str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps({
        'architectures': ['GenD'], 'backbone': 'facebook/dinov3-vitl16-pretrain-lvd1689m', 'head': 'LinearNorm',
        'model_type': 'GenD', **({'vision_config': TINY_DINOV3} if config else {})}))
    return vision, head
