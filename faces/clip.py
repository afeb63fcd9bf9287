"""CLIP ViT-L/14 as a face encoder: GenD's (its LayerNorms tuned for deepfakes, its linear head) or OpenAI's.

GenD (Yermakov et al., WACV 2026, github.com/yermandy/GenD, MIT) reads a face aligned on 5 landmarks
(faces/images.py's align) through CLIP's preprocessing, takes the vision tower's pooler_output (1024-d),
L2-normalises it and applies a linear head: 2 logits, class 1 = FAKE; a video scores the mean of its
faces' P(FAKE). The architecture is transformers' CLIPVisionModel (not a copy); the weights come from
common/weights.py's clip_encoder. The features and FAKE logit are what DetectionPipeline stores.
"""
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

# CLIP's preprocessing (openai/clip-vit-large-patch14's preprocessor_config.json, transformers' defaults)
CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess(crops):
    """(batch, h, w, 3) uint8 tensor (on any device) -> (batch, 3, 224, 224) float32 as CLIPImageProcessor
    makes them: the shortest side resized to 224 (bicubic, antialiased: torchvision's resize, which
    transformers' processor calls, on uint8 as PIL's), the centre 224 x 224, scaled to [0, 1], normalised
    with CLIP's mean and std."""
    x = crops.permute(0, 3, 1, 2)  # (batch, 3, h, w) uint8
    h, w = x.shape[2:]
    short = min(h, w)
    size = [CLIP_SIZE, int(CLIP_SIZE * w / short)] if h == short else [int(CLIP_SIZE * h / short), CLIP_SIZE]
    if size != [h, w]:
        x = TF.resize(x, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, [CLIP_SIZE, CLIP_SIZE]).float() / 255.0
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


class ClipEncoder(nn.Module):
    """pixel values (batch, 3, 224, 224) -> (features (batch, D) L2-normalised, FAKE logits (batch,) or None).

    vision: a transformers CLIPVisionModel; head: GenD's nn.Linear(D, 2) over the normalised features, or
    None (OpenAI's CLIP has no head). The FAKE logit is logit[1] - logit[0]: its sigmoid is softmax's P(FAKE).
    """

    def __init__(self, vision, head=None, name=''):
        super().__init__()
        self.vision, self.head, self.name = vision, head, name
        self.dim = vision.config.hidden_size

    def forward(self, pixel_values):
        pooled = self.vision(pixel_values=pixel_values).pooler_output  # (batch, D)
        features = F.normalize(pooled.float(), p=2, dim=1)
        if self.head is None:
            return features, None
        logits = self.head(features.to(self.head.weight.dtype)).float()  # (batch, 2)
        return features, logits[:, 1] - logits[:, 0]


def for_inference(vision, dtype=None):
    """transformers' CLIPVisionModel made faster to run, in place, for the same numbers. QuickGELU,
    x * sigmoid(1.702 x), is SiLU(1.702 x) / 1.702: fc1 is scaled by 1.702 and fc2 by 1 / 1.702 around one
    SiLU (one pass over the MLP's 4096-wide activations instead of three; the weights' rounding the only
    change). With a dtype (common.device.amp_dtype) the attention and MLP blocks run in it while the
    LayerNorms, the residual stream and the pooled output stay float32: autocast's precision without its
    casts of the inputs and weights of every layer at every call (BENCHMARKS.md, Face encoders)."""
    for layer in vision.encoder.layers:
        mlp = layer.mlp
        if vision.config.hidden_act == 'quick_gelu':
            with torch.no_grad():
                mlp.fc1.weight.mul_(1.702), mlp.fc1.bias.mul_(1.702), mlp.fc2.weight.div_(1.702)
            mlp.activation_fn = nn.SiLU()
        if dtype is not None:
            layer.self_attn.to(dtype), mlp.to(dtype)
            for norm in (layer.layer_norm1, layer.layer_norm2):  # their outputs feed the blocks
                norm.register_forward_hook(lambda module, args, out: out.to(dtype))
    return vision


def video_score(frame_logits):
    """GenD's video score: the mean over the video's faces of P(FAKE) = sigmoid(FAKE logit) (= the softmax's
    class 1 of the head's two logits). frame_logits: (faces,) the column `frame_logits` of a video table
    made with --face_encoder=gend. A float in [0, 1]; ValueError for a video without faces."""
    logits = np.asarray(frame_logits, np.float64).reshape(-1)
    if not len(logits):
        raise ValueError('no face: GenD scores a video by its faces')
    return float(np.mean(0.5 * (1.0 + np.tanh(logits / 2))))  # sigmoid, without overflow
