"""A small random CLIP vision tower saved as GenD's hub checkpoint is (config.json + model.safetensors, its
tensor names), for the tests of the CLIP face encoders (tests/test_gend_*.py)."""
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
