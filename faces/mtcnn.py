"""MTCNN face detection on a batch of images, on the device, without a host round trip per candidate.

facenet-pytorch's `detect_face` crops and resizes every candidate box of stages 2 and 3 on its own (one
`adaptive_avg_pool2d` and one `.item()` each: thousands a clip, the GPU idling between them). Here the
same crops come from one gather on a summed-area table of the batch: the mean of each output pixel's
source rectangle is four look-ups, which is exactly what area interpolation (`adaptive_avg_pool2d`)
computes, for every candidate of every image at once. The stage-1 candidates of all the pyramid's
scales are thresholded with one `nonzero`, NMS runs on the device (torchvision), and the boxes come back
to the host once. Networks, weights, thresholds, pyramid, box regression and the final 'Min' NMS are
facenet-pytorch's own (imported, not copied), so the boxes are the library's within float rounding
(tests/test_mtcnn.py compares them).
"""
import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import (batched_nms_numpy, bbreg, fixed_batch_process,
                                                       imresample, rerec)
from torchvision.ops import batched_nms

THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults, per stage
FACTOR = 0.709                # the pyramid's scale step
CROPS_AT_ONCE = 4096          # candidates gathered per call (bounds the gather's memory)


def pyramid(h, w, min_face_size, factor=FACTOR):
    """The scales at which PNet (12 px windows) sees faces of min_face_size px and up (as the library)."""
    m = 12.0 / min_face_size
    scales, side = [], min(h, w) * m
    while side >= 12:
        scales.append(m * factor ** len(scales))
        side *= factor
    return scales


def summed_area(images):
    """(batch, h, w, 3) uint8 -> (batch, h+1, w+1, 3) integer sums of the pixels above and left of each
    point (a zero first row and column). Integers: exact whatever the image's size."""
    b, h, w, c = images.shape
    dtype = torch.int32 if 255 * h * w < 2 ** 31 else torch.int64
    sat = torch.zeros((b, h + 1, w + 1, c), dtype=dtype, device=images.device)
    sat[:, 1:, 1:] = images.to(dtype).cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
    return sat


def area_crops(sat, image_inds, x0, y0, x1, y1, size):
    """Rectangles [x0, x1) x [y0, y1) (integer tensors, non-empty) of the images of `sat`, each resized to
    size x size by area interpolation: (k, 3, size, size) float32, as facenet-pytorch's
    imresample(img[..., y0:y1, x0:x1], (size, size)) gives one at a time."""
    out = []
    steps = torch.arange(size + 1, device=sat.device)
    for s in range(0, len(image_inds), CROPS_AT_ONCE):
        part = slice(s, s + CROPS_AT_ONCE)
        # adaptive_avg_pool2d's bins: output i averages rows floor(i*h/size) .. ceil((i+1)*h/size) - 1
        h, w = (y1[part] - y0[part])[:, None], (x1[part] - x0[part])[:, None]
        r0 = y0[part, None] + steps[:-1] * h // size          # (k, size)
        r1 = y0[part, None] + (steps[1:] * h + size - 1) // size
        c0 = x0[part, None] + steps[:-1] * w // size
        c1 = x0[part, None] + (steps[1:] * w + size - 1) // size
        b = image_inds[part, None, None]
        r0, r1, c0, c1 = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
        total = sat[b, r1, c1] - sat[b, r0, c1] - sat[b, r1, c0] + sat[b, r0, c0]  # (k, size, size, 3)
        count = (r1 - r0) * (c1 - c0)                                               # (k, size, size)
        out.append((total.float() / count[..., None].float()).permute(0, 3, 1, 2))
    return torch.cat(out) if out else torch.zeros((0, 3, size, size), device=sat.device)


def _regions(boxes, w, h):
    """The library's pad(): the integer rectangle each box is cropped from, on the device, and which of
    them are not empty (the library skips the empty ones)."""
    b = boxes[:, :4].trunc().int()
    x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
    x1, y1 = b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
    return x0, y0, x1, y1, (x1 > x0) & (y1 > y0)


class MTCNN(torch.nn.Module):
    """facenet-pytorch's P-, R- and O-nets with their shipped weights; detect() finds the faces of a
    batch of same-sized images."""

    def __init__(self, device, thresholds=THRESHOLDS, factor=FACTOR):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.thresholds, self.factor = thresholds, factor
        self.device = device
        self.to(device).eval()

    @torch.inference_mode()
    def detect(self, images, min_face_size, points=False):
        """images: (batch, h, w, 3) uint8 (numpy or tensor). A list of (faces, 4) float32 arrays of boxes
        x1, y1, x2, y2 in the images' pixels, one per image, the largest first (as MTCNN.detect's
        select_largest), empty where there is no face. points: (faces, 14), each box followed by ONet's 5
        landmarks x, y (eyes, nose, mouth corners, image-left first: the library's `landmarks=True`)."""
        images = torch.as_tensor(images).to(self.device)
        n, h, w = images.shape[:3]
        scales = pyramid(h, w, min_face_size, self.factor)
        width = 14 if points else 4
        if not n or not scales:
            return [np.zeros((0, width), np.float32) for _ in range(n)]
        imgs = images.permute(0, 3, 1, 2).float()  # (batch, 3, h, w)
        boxes, image_inds = self._stage1(imgs, scales)
        sat = summed_area(images) if len(boxes) else None
        marks = torch.zeros((len(boxes), 10), device=boxes.device)  # (k, 10) landmarks x0, y0, ..., x4, y4
        for stage, (net, size) in enumerate(((self.rnet, 24), (self.onet, 48)), 1):
            if not len(boxes):
                break
            x0, y0, x1, y1, ok = _regions(boxes, w, h)
            boxes, image_inds = boxes[ok], image_inds[ok]
            if not len(boxes):
                break
            crops = area_crops(sat, image_inds, x0[ok], y0[ok], x1[ok], y1[ok], size)
            out = fixed_batch_process((crops - 127.5) * 0.0078125, net)
            score = out[-1][:, 1]
            keep = score > self.thresholds[stage]
            boxes = torch.cat((boxes[keep, :4], score[keep, None]), dim=1)
            image_inds, reg = image_inds[keep], out[0][keep]
            if stage == 2:  # ONet's points, relative to the box it was shown (before regression), as the library
                wh = boxes[:, 2:4] - boxes[:, 0:2] + 1  # (k, 2)
                rel = out[1][keep].reshape(-1, 2, 5).transpose(1, 2)  # (k, 5, 2): its xs, then its ys
                marks = (rel * wh[:, None] + boxes[:, None, 0:2] - 1).flatten(1)
            if stage == 1:
                pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
                boxes, image_inds = rerec(bbreg(boxes[pick], reg[pick])), image_inds[pick]
            else:
                boxes = bbreg(boxes, reg).cpu()
                image_inds, marks = image_inds.cpu(), marks.cpu()
                pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, 'Min')
                boxes, image_inds, marks = boxes[pick], image_inds[pick], marks[pick]
        if len(marks) != len(boxes):  # stopped before ONet: no face left
            marks = marks[:0]
        boxes = torch.cat((boxes[:, :4].cpu(), marks.cpu()), 1)[:, :width].numpy()
        image_inds = image_inds.cpu().numpy()
        found = []
        for i in range(n):
            mine = boxes[image_inds == i]
            area = (mine[:, 2] - mine[:, 0]) * (mine[:, 3] - mine[:, 1])
            found.append(mine[np.argsort(area)[::-1]].astype(np.float32))
        return found

    def _stage1(self, imgs, scales):
        """PNet over the pyramid: the candidates after NMS within each scale (0.5) and each image (0.7),
        regressed and squared: ((k, 5) x1, y1, x2, y2, score; (k,) image index)."""
        n, _, h, w = imgs.shape
        probs, regs, shapes = [], [], []
        for scale in scales:
            data = imresample(imgs, (int(h * scale + 1), int(w * scale + 1)))
            reg, prob = self.pnet((data - 127.5) * 0.0078125)  # (n, 4, hs, ws), (n, 2, hs, ws)
            probs.append(prob[:, 1].flatten(1))
            regs.append(reg.flatten(2))
            shapes.append(prob.shape[2:])
        probs, regs = torch.cat(probs, 1), torch.cat(regs, 2)  # (n, cells), (n, 4, cells)
        image, cell = (probs >= self.thresholds[0]).nonzero(as_tuple=True)  # one sync for every scale
        sizes = torch.tensor([hs * ws for hs, ws in shapes], device=imgs.device)
        starts = torch.cumsum(sizes, 0) - sizes
        level = torch.searchsorted(starts, cell, right=True) - 1
        widths = torch.tensor([ws for _, ws in shapes], device=imgs.device)
        local = cell - starts[level]
        yx = torch.stack((local // widths[level], local % widths[level]), 1).float()
        scale = torch.tensor(scales, dtype=torch.float32, device=imgs.device)[level, None]
        bb = yx.flip(1)  # (k, 2) x, y of the 12 px window, as generateBoundingBox
        q1, q2 = ((2 * bb + 1) / scale).floor(), ((2 * bb + 12) / scale).floor()
        score = probs[image, cell]
        reg = regs[image, :, cell]  # (k, 4)
        boxes = torch.cat((q1, q2, score[:, None], reg), 1)
        pick = batched_nms(boxes[:, :4], score, image * len(scales) + level, 0.5)
        boxes, image = boxes[pick], image[pick]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image, 0.7)
        boxes, image = boxes[pick], image[pick]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        corners = torch.cat((boxes[:, 0:2] + boxes[:, 5:7] * wh, boxes[:, 2:4] + boxes[:, 7:9] * wh), 1)
        return rerec(torch.cat((corners, boxes[:, 4:5]), 1)), image
