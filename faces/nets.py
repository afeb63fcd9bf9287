"""The networks of face extraction on one device: MTCNN (faces/mtcnn.py) and the face encoder:
InceptionResnetV1 (FACE_ENCODER='facenet'), or a ViT: GenD's CLIP ViT-L/14, DINOv3 ViT-L/16 or Perception
Encoder ViT-L/14, or OpenAI's CLIP ViT-L/14 (faces/clip.py).

Their inputs are small uint8 images (downscaled frames, regions around faces, face crops) cut on the CPU
(faces/images.py); they travel to the device once per batch and only boxes and embeddings come back.
"""
import numpy as np
import torch

from common.device import amp_dtype, autocast
from common.weights import describe, face_embedder, tensors_digest, vit_encoder
from faces.clip import for_inference
from faces.mtcnn import MTCNN

# faces per ViT batch on a CPU: the MLP's activations of 2 faces (4 MB in bfloat16) stay in the caches, those
# of 64 go through memory and cost more than the matrix products (BENCHMARKS.md, Face encoders)
CPU_VIT_BATCH = 2


class Nets:
    """detect(images, min_face_size) and embed(crops) on `device`, in batches of at most batch_size."""

    def __init__(self, device, face_weights, amp=True, batch_size=64, face_encoder='facenet'):
        self.device, self.amp, self.batch_size = device, amp, batch_size
        self.mtcnn = MTCNN(device)
        self.face_encoder = face_encoder
        embedder = face_embedder(face_weights) if face_encoder == 'facenet' else vit_encoder(face_encoder, face_weights)
        # the weights by their tensors (as loaded, before AMP's casts), which a table records beside their name
        self.weights_digest = None if face_weights == 'none' else tensors_digest(embedder)
        self.embedder = embedder.to(device)
        if face_encoder == 'facenet':
            self.dim = 512
        else:
            for_inference(self.embedder.vision, amp_dtype(device, amp))
            self.dim = self.embedder.dim
            self.vit_batch = batch_size if device.type == 'cuda' else min(batch_size, CPU_VIT_BATCH)
        self.embedder_name = describe(face_weights, face_encoder)
        if device.type == 'cpu':
            # oneDNN's convolutions and max-pooling are faster channels-last (BENCHMARKS.md, Video)
            for net in (self.mtcnn, self.embedder) if face_encoder == 'facenet' else (self.mtcnn,):
                net.to(memory_format=torch.channels_last)

    def detect(self, images, min_face_size):
        """(n, h, w, 3) uint8 -> n arrays (faces, 14) float32, the largest first: boxes x1, y1, x2, y2, then
        MTCNN's 5 landmarks x, y (faces/mtcnn.py)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            out.extend(self.mtcnn.detect(images[start:start + self.batch_size], min_face_size, points=True))
        return out

    @torch.inference_mode()
    def embed(self, crops):
        """FaceNet: (faces, 160, 160, 3) uint8 -> (faces, 512) float16, InceptionResnetV1 before its L2 norm.
        ViT: (faces, 256, 256, 3) aligned uint8 -> (faces, 1024) float16 L2-normalised features; GenD's
        with its FAKE logit beside them: a record array of 'embedding' and 'logit' (float32)."""
        if self.face_encoder != 'facenet':
            return self._embed_vit(crops)
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.batch_size]))
            x = x.to(self.device).permute(0, 3, 1, 2).float()  # (batch, 3, 160, 160)
            x = (x - 127.5) / 128.0  # facenet-pytorch's fixed_image_standardization
            if self.device.type == 'cpu':
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.amp):
                out.append(self.embedder(x).float().cpu().numpy().astype(np.float16))
        return np.concatenate(out) if out else np.zeros((0, 512), np.float16)

    def _embed_vit(self, crops):
        head = self.embedder.head is not None
        out = (np.zeros(len(crops), [('embedding', np.float16, (self.dim,)), ('logit', np.float32)]) if head
               else np.zeros((len(crops), self.dim), np.float16))
        for start in range(0, len(crops), self.vit_batch):
            x = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.vit_batch])).to(self.device)
            # (batch, D), (batch,) or None; AMP: for_inference
            features, logits = self.embedder(self.embedder.preprocess(x))
            part = slice(start, start + len(x))
            features = features.float().cpu().numpy().astype(np.float16)
            if head:
                out['embedding'][part], out['logit'][part] = features, logits.float().cpu().numpy()
            else:
                out[part] = features
        return out
