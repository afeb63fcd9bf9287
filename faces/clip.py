"""ViTs as face encoders: GenD's (CLIP ViT-L/14, DINOv3 ViT-L/16 or Perception Encoder ViT-L/14, their
LayerNorms tuned for deepfakes, their linear head) or OpenAI's CLIP ViT-L/14.

GenD (Yermakov et al., WACV 2026, github.com/yermandy/GenD, MIT) reads a face aligned on 5 landmarks
(faces/images.py's align) through its backbone's preprocessing, takes the backbone's pooled output (CLIP's
pooler_output, DINOv3's CLS token, PE's attention pooling: 1024-d), L2-normalises it and applies a linear
head: 2 logits, class 1 = FAKE; a video scores the mean of its faces' P(FAKE). The architectures are
transformers' CLIPVisionModel and DINOv3ViTModel and timm's Eva (not copies); the weights come from
common/weights.py's vit_encoder. The features and FAKE logit are what DetectionPipeline stores.
"""
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

# Each backbone's preprocessing, as transformers' image processor with its defaults does it. CLIP
# (openai/clip-vit-large-patch14's preprocessor_config.json): the shortest side to 224, bicubic, on uint8 (as
# PIL's), the centre 224 x 224. DINOv3 (DINOv3ViTImageProcessor's defaults, which GenD's DINOv3 read): scaled
# to [0, 1] first, then 224 x 224, bilinear (as DINOv3's own ToTensor, Resize). PE (timm's transform for its
# data config with GenD's 224 px input: crop_pct 1.0): CLIP's steps with mean and std 0.5.
SIZE = 224
PREPROCESS = {
    'clip': dict(square=False, float_first=False, interpolation=TF.InterpolationMode.BICUBIC,
                 mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)),
    'dinov3': dict(square=True, float_first=True, interpolation=TF.InterpolationMode.BILINEAR,
                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),  # ImageNet's
}
PREPROCESS['pe'] = dict(PREPROCESS['clip'], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def preprocess(crops, arch='clip'):
    """(batch, h, w, 3) uint8 tensor (on any device) -> (batch, 3, 224, 224) float32 as the backbone's image
    processor makes them (PREPROCESS): resized with torchvision's antialiased resize (what transformers'
    processors call), centre-cropped, scaled to [0, 1], normalised."""
    how = PREPROCESS[arch]
    x = crops.permute(0, 3, 1, 2)  # (batch, 3, h, w) uint8
    if how['float_first']:
        x = x.float() / 255.0
    h, w = x.shape[2:]
    short = min(h, w)
    size = ([SIZE, SIZE] if how['square'] else
            [SIZE, int(SIZE * w / short)] if h == short else [int(SIZE * h / short), SIZE])
    if size != [h, w]:
        x = TF.resize(x, size, interpolation=how['interpolation'], antialias=True)
    x = TF.center_crop(x, [SIZE, SIZE])
    if not how['float_first']:
        x = x.float() / 255.0
    mean = torch.tensor(how['mean'], device=x.device)[:, None, None]
    std = torch.tensor(how['std'], device=x.device)[:, None, None]
    return (x - mean) / std


class VitEncoder(nn.Module):
    """pixel values (batch, 3, 224, 224) -> (features (batch, D) L2-normalised, FAKE logits (batch,) or None).

    vision: transformers' CLIPVisionModel or DINOv3ViTModel, or timm's Eva (arch 'clip', 'dinov3', 'pe');
    head: whether it has GenD's nn.Linear(D, 2) over the normalised features (OpenAI's CLIP has none). The
    FAKE logit is logit[1] - logit[0]: its sigmoid is softmax's P(FAKE).
    """

    def __init__(self, vision, head=False, name='', arch='clip'):
        super().__init__()
        self.vision, self.name, self.arch = vision, name, arch
        self.dim = vision.num_features if arch == 'pe' else vision.config.hidden_size
        self.head = nn.Linear(self.dim, 2) if head else None

    def preprocess(self, crops):
        return preprocess(crops, self.arch)

    def forward(self, pixel_values):
        pooled = self.vision(pixel_values)  # (batch, D): PE's attention pooling (timm returns a tensor)
        pooled = pooled if self.arch == 'pe' else pooled.pooler_output  # CLIP's, DINOv3's CLS
        features = F.normalize(pooled.float(), p=2, dim=1)
        if self.head is None:
            return features, None
        logits = self.head(features.to(self.head.weight.dtype)).float()  # (batch, 2)
        return features, logits[:, 1] - logits[:, 0]


def for_inference(vision, dtype=None):
    """transformers' CLIPVisionModel or DINOv3ViTModel, or timm's Eva, made faster to run, in place, for the
    same numbers. CLIP's QuickGELU, x * sigmoid(1.702 x), is SiLU(1.702 x) / 1.702: fc1 is scaled by 1.702 and
    fc2 by 1 / 1.702 around one SiLU (one pass over the MLP's 4096-wide activations instead of three; the
    weights' rounding the only change). With a dtype (common.device.amp_dtype) the attention and MLP blocks
    run in it (DINOv3's RoPE sines and cosines too, which meet the queries and keys there; Eva casts its
    RoPE's results to the values' dtype itself) while the LayerNorms, the residual stream (DINOv3's layer
    scales) and the pooled output stay float32: autocast's precision without its casts of the inputs and
    weights of every layer at every call (BENCHMARKS.md, Face encoders)."""
    clip, eva = hasattr(vision, 'encoder'), hasattr(vision, 'blocks')  # else DINOv3ViTModel
    for layer in vision.encoder.layers if clip else vision.blocks if eva else vision.model.layer:
        if clip and vision.config.hidden_act == 'quick_gelu':
            mlp = layer.mlp
            with torch.no_grad():
                mlp.fc1.weight.mul_(1.702), mlp.fc1.bias.mul_(1.702), mlp.fc2.weight.div_(1.702)
            mlp.activation_fn = nn.SiLU()
        if dtype is not None:
            blocks, norms = (((layer.self_attn, layer.mlp), (layer.layer_norm1, layer.layer_norm2)) if clip else
                             ((layer.attn, layer.mlp), (layer.norm1, layer.norm2)) if eva else
                             ((layer.attention, layer.mlp), (layer.norm1, layer.norm2)))
            for block in blocks:
                block.to(dtype)
            for norm in norms:  # their outputs feed the blocks
                norm.register_forward_hook(lambda module, args, out: out.to(dtype))
    if dtype is not None and not clip and not eva:
        vision.rope_embeddings.register_forward_hook(lambda module, args, out: tuple(t.to(dtype) for t in out))
    return vision


def video_score(frame_logits):
    """GenD's video score: the mean over the video's faces of P(FAKE) = sigmoid(FAKE logit) (= the softmax's
    class 1 of the head's two logits). frame_logits: (faces,) the column `frame_logits` of a video table
    made with --face_encoder=gend. A float in [0, 1]; ValueError for a video without faces."""
    logits = np.asarray(frame_logits, np.float64).reshape(-1)
    if not len(logits):
        raise ValueError('no face: GenD scores a video by its faces')
    return float(np.mean(0.5 * (1.0 + np.tanh(logits / 2))))  # sigmoid, without overflow
