"""The networks of face extraction on one device: MTCNN (faces/mtcnn.py) and InceptionResnetV1.

Their inputs are small uint8 images (downscaled frames, regions around faces, face crops) cut on the CPU
(faces/images.py); they travel to the device once per batch and only boxes and embeddings come back.
"""
import numpy as np
import torch

from common.device import autocast
from common.weights import describe, face_embedder
from faces.mtcnn import MTCNN


class Nets:
    """detect(images, min_face_size) and embed(crops) on `device`, in batches of at most batch_size."""

    def __init__(self, device, face_weights, amp=True, batch_size=64):
        self.device, self.amp, self.batch_size = device, amp, batch_size
        self.mtcnn = MTCNN(device)
        self.embedder = face_embedder(face_weights).to(device)
        self.embedder_name = describe(face_weights)
        if device.type == 'cpu':
            # oneDNN's convolutions and max-pooling are faster channels-last (BENCHMARKS.md, Video)
            for net in (self.mtcnn, self.embedder):
                net.to(memory_format=torch.channels_last)

    def detect(self, images, min_face_size):
        """(n, h, w, 3) uint8 -> n arrays of boxes (faces, 4) float32, the largest first."""
        out = []
        for start in range(0, len(images), self.batch_size):
            out.extend(self.mtcnn.detect(images[start:start + self.batch_size], min_face_size))
        return out

    @torch.inference_mode()
    def embed(self, crops):
        """(faces, 160, 160, 3) uint8 -> (faces, 512) float16: InceptionResnetV1 before its L2 norm."""
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
