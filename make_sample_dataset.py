"""A small DFDC-format dataset the project can carry: the main job's default input.

Reads nothing but two public-domain photos that scikit-image ships (`astronaut`: Eileen Collins, NASA;
`camera`: the CC0 cameraman). Writes OUTPUT_DIR/metadata.json and four short clips (H.264 + AAC, made
with PyAV), as DFDC lays them out:
    astronaut_real.mp4   REAL  640x360, the photo panned and zoomed slowly, a synthetic voice
    camera_real.mp4      REAL  360x640 (portrait), likewise, a lower voice
    astronaut_fake.mp4   FAKE  of astronaut_real.mp4: the cameraman's face blended onto the astronaut's
    camera_fake.mp4      FAKE  of camera_real.mp4: the astronaut's face blended in, the voice pitched up
                               (DFDC has fakes with altered audio too)
The clips are deterministic: the same bytes of pixels every run (the encoder's output may differ between
FFmpeg versions). It writes nothing when the four clips and the metadata are already there, made with these
SECONDS, FPS and SAMPLE_RATE (read back from the clips); else it makes them again. A metadata.json of other
videos (a DFDC part's) is refused, not replaced.

Example:
    python make_sample_dataset.py --output_dir=data/sample
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import json
import os

import av
import cv2
import numpy as np

from common.files import atomic_path, sweep_temporaries, write_text

# ----------------------------------------------------------------------------- config
OUTPUT_DIR = 'data/sample'  # where metadata.json and the clips go
SECONDS = 4.0               # clip length
FPS = 30                    # frames a second, a whole number (DFDC's clips: 29.97)
SAMPLE_RATE = 44100         # audio rate (DFDC: 44.1 or 48 kHz, mono AAC)
# -----------------------------------------------------------------------------

AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# MTCNN's boxes (x1, y1, x2, y2) of the one face in each photo, from facenet-pytorch's defaults.
FACE_BOX = {'astronaut': (181, 62, 268, 172), 'camera': (199, 119, 254, 192)}
CLIPS = {  # name: (photo, face pasted from, (width, height), voice pitch in Hz, label, original)
    'astronaut_real.mp4': ('astronaut', None, (640, 360), 190.0, 'REAL', None),
    'camera_real.mp4': ('camera', None, (360, 640), 120.0, 'REAL', None),
    'astronaut_fake.mp4': ('astronaut', 'camera', (640, 360), 190.0, 'FAKE', 'astronaut_real.mp4'),
    'camera_fake.mp4': ('camera', 'astronaut', (360, 640), 150.0, 'FAKE', 'camera_real.mp4'),
}


def main():
    config.configure(globals())
    n = int(round(SECONDS * FPS))
    if SAMPLE_RATE not in AAC_RATES or n < 1:
        raise config.UserError(f'--sample_rate must be one of AAC\'s, {", ".join(map(str, AAC_RATES))}, not '
                               f'{SAMPLE_RATE}' if n else f'--seconds={SECONDS:g} at --fps={FPS} is no frame')
    config.writable_folder(OUTPUT_DIR, '--output_dir')  # made where it is not there
    meta_path = os.path.join(OUTPUT_DIR, 'metadata.json')
    listed = sample_listed(meta_path)
    meta = {name: {'label': label, 'split': 'train', 'original': original}
            for name, (_, _, _, _, label, original) in CLIPS.items()}
    for name in (*CLIPS, 'metadata.json'):  # what a run killed while writing left
        sweep_temporaries(os.path.join(OUTPUT_DIR, name))
    made = [made_with(os.path.join(OUTPUT_DIR, name)) for name in CLIPS]
    if listed == meta and made == [(n, FPS, SAMPLE_RATE)] * len(CLIPS):  # an entry changed since: written again
        print(f'{OUTPUT_DIR}: the sample dataset is there already')
        return
    for seed, (name, (target, source, size, pitch, _, _)) in enumerate(CLIPS.items()):
        image = swap_face(target, source) if source else photo(target)
        write_clip(os.path.join(OUTPUT_DIR, name), frames(image, size, n), size,
                   voice(pitch, SECONDS, SAMPLE_RATE, seed), FPS, SAMPLE_RATE)
    write_text(json.dumps(meta, indent=1), meta_path)
    print(f'{OUTPUT_DIR}: {len(CLIPS)} clips of {SECONDS:g} s and metadata.json written')


def sample_listed(meta_path):
    """What OUTPUT_DIR's metadata.json holds ({} where there is none; some of the sample's videos, or entries
    edited: it is made again), or UserError where it is not the sample's (a DFDC part's: ours would replace it)."""
    if not os.path.exists(meta_path):
        return {}
    try:
        with open(meta_path, encoding='utf-8-sig') as f:
            listed = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise config.UserError(f'{meta_path} is not the sample\'s ({err}): give another --output_dir') from None
    if not isinstance(listed, dict):
        raise config.UserError(f'{meta_path} is not a metadata.json (JSON {json.dumps(listed)[:20]}, not an object of '
                               f'videos): give another --output_dir')
    if other := sorted(set(listed) - set(CLIPS)):
        raise config.UserError(f'{meta_path} lists other videos than the sample\'s ({len(other)}, e.g. '
                               f'{other[0]!r}): give another --output_dir')
    return listed


def made_with(path):
    """(frames, frame rate, sample rate) of a clip write_clip wrote; None where there is none."""
    if not os.path.isfile(path):
        return None
    try:
        with av.open(path) as clip:
            video, audio = clip.streams.video[0], clip.streams.audio[0]
            return video.frames, round(float(video.average_rate or 0)), audio.sample_rate
    except (av.FFmpegError, IndexError):  # not a clip of ours: made again
        return None


def photo(name):
    import skimage.data
    image = getattr(skimage.data, name)()
    return np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]


def swap_face(target_name, source_name):
    """The target photo with the source's face resized, colour-matched and blended in with a soft
    elliptical mask: a crude face swap, the kind of seam a detector should learn to see."""
    target, source = photo(target_name).astype(np.float32), photo(source_name).astype(np.float32)
    tx1, ty1, tx2, ty2 = FACE_BOX[target_name]
    sx1, sy1, sx2, sy2 = FACE_BOX[source_name]
    face = cv2.resize(source[sy1:sy2, sx1:sx2], (tx2 - tx1, ty2 - ty1), interpolation=cv2.INTER_AREA)
    region = target[ty1:ty2, tx1:tx2]
    face = (face - face.mean((0, 1))) / (face.std((0, 1)) + 1e-6) * region.std((0, 1)) + region.mean((0, 1))
    h, w = region.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    mask = np.clip(1.5 - 1.5 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2), 0, 1)
    target[ty1:ty2, tx1:tx2] = mask[..., None] * face + (1 - mask[..., None]) * region
    return np.clip(target, 0, 255).astype(np.uint8)


def frames(image, size, n):
    """n frames of `image` on a (width, height) canvas, slowly panned and zoomed (a head moving)."""
    w, h = size
    ih, iw = image.shape[:2]
    base = min(w / iw, h / ih) * 1.1
    for i in range(n):
        t = i / max(n - 1, 1)
        zoom = base * (1.0 + 0.08 * np.sin(2 * np.pi * t))
        dx, dy = 12 * np.sin(2 * np.pi * 0.7 * t * 3), 8 * np.cos(2 * np.pi * 0.5 * t * 3)
        matrix = np.array([[zoom, 0, w / 2 - zoom * iw / 2 + dx],
                           [0, zoom, h / 2 - zoom * ih / 2 + dy]], np.float32)
        yield cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def voice(pitch, seconds, rate, seed):
    """A voiced, syllabic sound: harmonics of a wavering pitch through two vowel formants, plus breath."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = pitch * (1 + 0.06 * np.sin(2 * np.pi * 3.1 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    signal = sum(np.sin(k * phase) / k * (1.5 if 500 < k * pitch < 900 or 1100 < k * pitch < 1500 else 0.5)
                 for k in range(1, 20))
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, 1) ** 0.5
    audio = signal * syllables + 0.02 * rng.standard_normal(t.size)
    return (0.25 * audio / np.abs(audio).max()).astype(np.float32)


def write_clip(path, video_frames, size, audio, fps, rate):
    with atomic_path(path) as tmp:
        with av.open(tmp, 'w', format='mp4') as out:
            vs = out.add_stream('libx264', rate=fps, options={'crf': '20', 'preset': 'medium'})
            vs.width, vs.height = size
            vs.pix_fmt = 'yuv420p'
            aus = out.add_stream('aac', rate=rate, layout='mono')
            for rgb in video_frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(rgb, format='rgb24')):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
            chunk = 1024
            for start in range(0, audio.size, chunk):
                piece = audio[None, start:start + chunk]  # (channels, samples) planar float
                frame = av.AudioFrame.from_ndarray(piece, format='fltp', layout='mono')
                frame.sample_rate = rate
                for packet in aus.encode(frame):
                    out.mux(packet)
            for packet in aus.encode():
                out.mux(packet)


if __name__ == '__main__':
    config.cli(main)
