"""Faces of a video, as a sequence of embeddings: decode, sample, detect, track, crop, embed.

Reads one video; returns (or, run as a script, prints) its face tracks: for each sampled frame that has
the face, the frame index, the box, MTCNN's 5 landmarks, and an embedding (float16): FaceNet's 512-d, or
with --face_encoder=gend GenD's 1024-d CLIP features and its FAKE logit (gend_dinov3, gend_pe: GenD's DINOv3
ViT-L/16, Perception Encoder ViT-L/14 features and logits; clip: OpenAI's CLIP, no logit).
Writes nothing (create_video_embeddings.py stores what it returns; predict.py uses it directly).
How and why each step is done (sampling, chunks, MTCNN on a downscaled copy, interpolation, tracks,
cropping, the 512-d embedding before the L2 normalisation): faces/pipeline.py's docstring.

The parts are in faces/: mtcnn.py and nets.py (detection and embedding networks), tracking.py (pure
functions of boxes), images.py (cropping), pipeline.py (one video, joining them), workers.py (decoding
processes feeding this process's networks with many videos at once: stream() with WORKERS, the default
on a GPU).

Example:
    python DetectionPipeline.py --video=../shared/testdata/dfdc_sample/lynaeydofd.mp4 --face_weights=none
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import os
import sys

from tqdm import tqdm

from common.device import my_cores, pick_device, torch_threads
from common.files import shown
from common.stage import ends_the_run
from common.video import VideoError, nvdec_error
from common.weights import FACE_ENCODERS, describe, weights_stamp
from faces import workers
from faces.clip import video_score
from faces.nets import Nets
from faces.pipeline import VideoFaces, faces_of  # noqa: F401 - what the pipeline returns
from faces.tracking import Track, iou  # noqa: F401 - the boxes' tools, for the stages and tests

# ----------------------------------------------------------------------------- config
FRAME_STEP = 6              # sample frames 0, 6, 12, ... (50 of a 300-frame DFDC clip)
DETECT_SIZE = 640           # long side, in pixels, of the copy MTCNN searches (1080p: 1/3, 720p: 1/2)
MIN_FACE_SIZE = 20          # MTCNN's smallest face, in pixels of that copy (60 px of a 1080p frame)
DETECT_EVERY = 10           # run MTCNN on every 10th sampled frame (and the last); carry boxes between
LINK_IOU = 0.5              # a face's boxes on two detected frames must overlap this much to interpolate
MAX_GAP = 10                # ... and be at most this many sampled frames apart (MTCNN flickers on dark faces)
ROI_SIZE = 128              # re-detect each box in a square twice its size, resized to this (0: off)
MIN_TRACK_FRACTION = 0.25   # a track must be found on this share of the frames MTCNN ran on (else: noise)
KEEP_ALL_TRACKS = False     # False: the largest face track only; True: every track (DFDC has two-person clips)
MARGIN = 0.2                # crop margin on each side, as a fraction of the box's width and height
FACE_SIZE = 160             # crop side in pixels (InceptionResnetV1's input)
FACE_ENCODER = 'facenet'    # 'facenet' (InceptionResnetV1, VGGFace2) | 'gend' (GenD's CLIP ViT-L/14 + its head) | 'gend_dinov3' (GenD's DINOv3 ViT-L/16 + its head) | 'gend_pe' (GenD's PE ViT-L/14 + its head) | 'clip' (OpenAI's, frozen)
FACE_WEIGHTS = 'default'    # the encoder's: 'default' (vggface2; GenD's or OpenAI's hub id, downloaded once) | a local file or folder | 'none' (untrained, seeded)
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1' ...
AMP = True                  # embed in float16 on CUDA, bfloat16 on CPUs with bf16 units (faster: BENCHMARKS.md; stored as float16)
BATCH_SIZE = 64             # faces per face-encoder batch (a ViT on a CPU: 2, faces/nets.py), frames per MTCNN batch
WORKERS = -1                # decoding processes feeding the networks (-1: every core on a GPU, none on a CPU)
WORKER_TIMEOUT = 1800       # seconds a worker may spend on one video; then it is stopped, the video failed (0: none)
CHUNK = 60                  # sampled frames held at once (1080p: 6 MB each); a DFDC clip's 50 are one chunk
DECODER = 'cpu'             # 'cpu' (FFmpeg's decoders) | 'nvdec' (the NVIDIA GPU's video decoder, through PyAV: README)
# -----------------------------------------------------------------------------
# ----------------------------------------------------------------------------- config: this script only
VIDEO = ''                  # the video to run on
# -----------------------------------------------------------------------------


def main():
    config.configure(globals())
    if not VIDEO:
        raise config.UserError('give a video: --video=PATH')
    pipeline = DetectionPipeline()  # its settings and weights first: their errors say more
    if not os.path.lexists(VIDEO) or os.path.isdir(VIDEO):  # the setting, not the video (a bad file: exit 1)
        raise config.UserError(f'--video={VIDEO} ' + ('is a folder: give one video (create_video_embeddings.py '
                                                      'takes a folder)' if os.path.isdir(VIDEO) else 'does not exist'))
    try:
        faces = pipeline(VIDEO)
    except VideoError as err:
        print('error: ' + ' '.join(f'{VIDEO}: {err}'.split()), file=sys.stderr)  # one line, as config.fail's
        raise SystemExit(1) from None
    print(f'{shown(VIDEO)}: {faces.width}x{faces.height}, {faces.n_frames} frames decoded ({faces.decoder}), '
          f'MTCNN on {faces.n_detections} of them, embedder {pipeline.embedder_name}')
    for k, track in enumerate(faces.tracks):
        score = '' if track.logits is None else f", GenD's P(FAKE) {video_score(track.logits):.3f}"
        print(f'track {k}: {len(track.frames)} faces on frames {track.frames[0]}..{track.frames[-1]}, '
              f'embeddings {track.embeddings.shape} {track.embeddings.dtype}{score}')
    if not faces.tracks:
        print(faces.no_face())
    print('seconds: ' + ', '.join(f'{k} {v:.2f}' for k, v in faces.seconds.items()))


def settings(**overrides):
    """This module's constants as lower-case settings, with overrides: what DetectionPipeline runs with."""
    cfg = config.settings(globals(), **overrides)
    if cfg['face_encoder'] not in FACE_ENCODERS:
        raise config.UserError(f'--face_encoder must be one of {", ".join(FACE_ENCODERS)}, not {cfg["face_encoder"]!r}')
    return cfg


def embedder_name(cfg):
    """The name a table records for the embedder of settings `cfg` (common.weights.describe)."""
    return describe(cfg['face_weights'], cfg['face_encoder'])


# where and how fast the faces are made, not what they are (the weights: by the embedder's name, describe())
_NOT_IN_NUMBERS = {'device', 'amp', 'batch_size', 'workers', 'worker_timeout', 'decoder', 'face_weights'}


def numbers(cfg):
    """{'--name': value} of the settings of `cfg` (settings()'s) that the tracks and embeddings depend on:
    what a video table records it was made with (made_with()), for a rerun and predict.py to match."""
    return config.recorded(globals(), cfg, _NOT_IN_NUMBERS)


def made_with(cfg):
    """What a face table's results depend on (common.stage's made_with): numbers(cfg), the embedder's name
    and the --face_weights that give it (a file or folder by its absolute path), which predict.py takes, and
    that file's size and time: weights replaced at the same path make other embeddings."""
    weights = config.recorded(globals(), cfg, set(cfg) - {'face_weights'})['--face_weights']
    stamp = weights_stamp(weights)  # None (a hub id, a name): not recorded, as before there was one
    return {**numbers(cfg), 'embedder': embedder_name(cfg), 'face_weights': weights,
            **({'face_weights_file': stamp} if stamp else {})}


class DetectionPipeline:
    """Video in, face tracks with embeddings out. Settings default to this module's constants."""

    def __init__(self, **overrides):
        self.cfg = cfg = settings(**overrides)
        self.device = pick_device(cfg['device'])
        self.gpu = None  # the CUDA device whose NVDEC decodes: the networks' one
        if cfg['decoder'] == 'nvdec':
            self.gpu = (self.device.index or 0) if self.device.type == 'cuda' else 0
            reason = nvdec_error(self.gpu)
            if reason:
                raise config.UserError(
                    f"--decoder=nvdec: FFmpeg cannot decode on GPU {self.gpu}'s NVDEC ({reason}): it needs an "
                    f'NVIDIA GPU and its driver\'s video library, libnvcuvid (in a container: '
                    f'NVIDIA_DRIVER_CAPABILITIES=compute,utility,video); --decoder=cpu decodes on the CPU')
        self.nets = Nets(self.device, cfg['face_weights'], cfg['amp'], cfg['batch_size'], cfg['face_encoder'])
        self.embedder_name = self.nets.embedder_name

    def __call__(self, path):
        """Face tracks of one video (faces/pipeline.py), in this process. Raises VideoError for an
        unreadable video (no face is not an error)."""
        return faces_of(path, self.cfg, self.nets, gpu=self.gpu)

    def workers(self, n_videos):
        """Decoding processes for n_videos: WORKERS, or for -1 every core this process may use (its share
        under torchrun) where the networks are on a GPU, and none on a CPU, whose cores the networks need
        (decoding beside them is slower: BENCHMARKS.md); never more than the videos, and none for
        one video."""
        n = self.cfg['workers']
        if n < 0:
            n = my_cores() if self.device.type == 'cuda' else 0
        return 0 if n_videos < 2 else min(n, n_videos)

    def stream(self, paths, also=None):
        """Yield (path, VideoFaces or the exception met on it, also(path) or its exception (None without
        `also`)) for every path: in order in this process, in the order they finish with workers. A full
        disk or a signal ends the run (common.stage.ends_the_run); any other error is the video's. With
        NVDEC, the videos it failed on (decoded on the CPU instead) are counted in a line at the end."""
        on_cpu = []
        for path, faces, extra in self._stream(paths, also):
            if self.gpu is not None and isinstance(faces, VideoFaces) and faces.decoder != 'nvdec':
                on_cpu.append(f'{path}: {faces.decoder}')
            yield path, faces, extra
        if on_cpu:
            tqdm.write(f'--decoder=nvdec: {len(on_cpu)} of {len(paths)} videos decoded on the CPU instead, '
                       f'e.g. {on_cpu[0]}')

    def _stream(self, paths, also):
        n = self.workers(len(paths))
        if n:
            # This process's own CPU work is small (its networks are on the GPU), and the workers keep every
            # core busy: torch's thread pool would spin against them (on 2 shared cores, 10-25x slower).
            with torch_threads(1 if self.device.type == 'cuda' else 0):
                yield from workers.stream(paths, self.cfg, self.nets, n, also, max(1, my_cores() // n),
                                          gpu=self.gpu, timeout=self.cfg['worker_timeout'])
            return
        for path in paths:
            faces = workers.attempt(self, path)
            extra = workers.attempt(also, path) if also else None
            for err in (faces, extra):
                if isinstance(err, Exception) and ends_the_run(err):
                    raise err
            yield path, faces, extra


if __name__ == '__main__':
    config.cli(main)
