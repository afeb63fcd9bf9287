"""Small random vision towers, CLIP's, DINOv3's and PE's, saved as GenD's hub checkpoints are (config.json +
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
    state['feature_extractor.visual_projection.weight'] = torch.randn(16, TINY['hidden_size'])  # GenD keeps it
    save_gend(folder, state, head, 'openai/clip-vit-large-patch14', TINY, drop, extra)
    return vision, head


def save_gend(folder, vision, head, backbone, sizes=None, drop=(), extra=None):
    """`vision` {checkpoint name: tensor} and the head as model.linear.* into folder/model.safetensors, less the
    names in `drop`, plus `extra` {name: tensor}; config.json as GenD's names the backbone, with the tiny
    model's `sizes` as its vision_config where given."""
    state = {**vision, **{f'model.linear.{k}': v for k, v in head.state_dict().items()}}
    state = {k: v.contiguous() for k, v in state.items() if k not in drop}
    save_file({**state, **(extra or {})}, str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps({
        'architectures': ['GenD'], 'backbone': backbone, 'head': 'LinearNorm', 'model_type': 'GenD',
        **({'vision_config': sizes} if sizes else {})}))


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
    save_gend(folder, state, head, 'facebook/dinov3-vitl16-pretrain-lvd1689m', TINY_DINOV3 if config else None,
              drop, extra)
    return vision, head


PE = 'vit_pe_core_large_patch14_336'
TINY_PE = dict(embed_dim=32, depth=2, num_heads=4)  # timm's keyword arguments over PE-L's (its 336 px grid kept)


def tiny_gend_pe(folder, drop=(), extra=None, seed=1, config=True):
    """GenD's PE layout in `folder`: its PerceptionEncoder (timm's Eva made as GenD makes it, create_model with
    dynamic_img_size=True and the projection head then replaced by nn.Identity) saved as feature_extractor.
    backbone.*, the head as model.linear.*; without `drop`, with `extra`; config.json with the tiny sizes
    (`config`), else GenD's own. Returns the Eva and the nn.Linear head whose weights it holds."""
    import timm
    torch.manual_seed(seed)
    vision = timm.create_model(PE, pretrained=False, dynamic_img_size=True, **TINY_PE)
    vision.head = torch.nn.Identity()  # GenD's PerceptionEncoder: "Remove head"
    # timm's init (std 0.02) leaves the blocks' outputs ~1/50 of the residual stream, as an untrained net's:
    # weights of a trained net's scale (1/sqrt(fan-in)) make the blocks, and their precision, count
    for layer in vision.blocks.modules():
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
    vision.eval()
    head = torch.nn.Linear(TINY_PE['embed_dim'], 2)
    save_gend(folder, {f'feature_extractor.backbone.{k}': v for k, v in vision.state_dict().items()}, head, PE,
              TINY_PE if config else None, drop, extra)
    return vision, head


def timm_pixels(vision, images):
    """timm's preprocessing of `vision` as GenD's PerceptionEncoder sets it up (its data config at 224 px) on
    RGB uint8 images, through PIL as GenD gives them: (n, 3, 224, 224) float32."""
    import timm
    from PIL import Image
    data = timm.data.resolve_model_data_config(vision)
    data['input_size'] = (3, 224, 224)
    transform = timm.data.create_transform(**data, is_training=False)
    return torch.stack([transform(Image.fromarray(image)) for image in images])
