"""Raw videos in, submission.csv out, in one continuous pass: the DFDC submission.

Reads INPUT, a folder of videos (no metadata needed) or one video file, and CHECKPOINT, a file training.py
wrote. For each video: decode, sample frames, detect and embed the faces (DetectionPipeline.py), decode
and embed the audio track (extract_audio.py's decoder, create_audio_embedding.py's encoder), and run the
network the way test.py scores a table (model.predict_logits: the mean logit over all windows, moved to
PRIOR, the share of fakes expected: DFDC's test sets are 50/50). The same functions as the stage scripts,
imported, so this pass and `create_video_embeddings.py -> extract_audio.py -> create_audio_embedding.py ->
merge_embeddings.py -> test.py` give the same probability for the same video.

Writes OUTPUT, a CSV `filename,label` with one row per input video, sorted by file name, label the
probability that the video is FAKE, clipped to the checkpoint's range (test.py's, [0.01, 0.99] by
default). Every input gets a row: a video that cannot be read, or in which no face is found, gets a
fallback, the audio-only model's prediction where there is audio (a logistic regression on the audio
embeddings that training.py fits and stores in the checkpoint), else the training set's share of fakes.
Fallbacks are counted, printed, and listed with their reasons in OUTPUT's .fallbacks.csv.
A single video prints its probability. Killed, a rerun resumes (OUTPUT.parts/ holds finished videos).

On a GPU, decoding (video and audio) runs in a background thread, PREFETCH videos ahead, while the
networks work (on a CPU both would compete for the same cores);
weights load once; the GPU is used where there is one; pretrained weights can come from local files.

Example:
    python predict.py --input=../shared/testdata/dfdc_sample --checkpoint=runs/lstm/best.pt \
        --output=submission.csv --face_weights=none
"""
import csv
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import DetectionPipeline as dp
import create_audio_embedding as cae
import extract_audio as ea
from common import config
from common.device import pick_device
from common.prefetch import default_ahead, prefetched
from common.stage import Journal, atomic_path, is_video
from common.video import VideoError
from common.weights import WeightsUnavailable
from model import CheckpointError, audio_only_logit, load_checkpoint, predict_logits, prior_shift, sigmoid

# ----------------------------------------------------------------------------- config
INPUT = ''                  # a folder of videos, or one video file
CHECKPOINT = ''             # training.py's best.pt
OUTPUT = 'submission.csv'   # filename,label (the probability of FAKE), one row per video
PRIOR = 0.5                 # share of fakes expected in INPUT (DFDC's test sets: 0.5), as test.py's --prior
PREFETCH = -1               # videos decoded ahead in a background thread (-1: 2 on a GPU, 0 on a CPU)
BATCH_SIZE = 512            # windows per network batch
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1'
# -----------------------------------------------------------------------------


class OneVideo:
    """One video's embeddings, read the way model.predict_logits reads common.lazytable's tables."""

    def __init__(self, faces, audio, has_audio):
        self.faces = faces                                  # (faces, video_dim) float16
        self.n_faces = np.array([len(faces)], np.int64)
        self.video_dim = faces.shape[1]
        self.has_audio = np.array([has_audio])
        self.audio = np.where(has_audio, audio, 0).astype(np.float32)[None]  # (1, audio_dim)
        self.labels = np.array([-1], np.int8)

    def read_faces(self, i, start=0, length=None, out=None):
        length = len(self.faces) - start if length is None else length
        if out is None:
            return self.faces[start:start + length]
        out[:length] = self.faces[start:start + length]
        return out[:length]

    def read_audio(self, indices):
        return self.audio[np.zeros(len(indices), np.int64)]


class Predictor:
    """Video path in, (probability of FAKE, fallback reason or '') out; every network loads once."""

    def __init__(self, checkpoint, device='auto', prior=PRIOR, batch_size=BATCH_SIZE):
        self.device = pick_device(device)
        self.net, self.ckpt = load_checkpoint(checkpoint, self.device)
        self.evaluation = self.ckpt['evaluation']
        self.clip = tuple(self.ckpt['clip'])
        self.shift = prior_shift(prior)
        self.batch_size = batch_size
        self.pipeline = dp.DetectionPipeline(device=str(self.device))
        self.audio = cae.AudioEmbedder(device=str(self.device))
        self._check_embedders()

    def _check_embedders(self):
        """The checkpoint's network only means something on the embeddings it was trained on."""
        trained = self.ckpt.get('dataset', {}).get('attrs', {})
        ours = {'video_embedder': self.pipeline.embedder_name, 'audio_encoder': self.audio.name}
        for key, value in ours.items():
            if trained.get(key) not in (None, value):
                raise CheckpointError(f'the checkpoint was trained on {key} {trained[key]!r}, this run has '
                                      f'{value!r}: give the same weights settings as the training data')

    def load(self, path):
        """Decoding, for the background thread: (frames or VideoError, audio track or None or VideoError)."""
        frames = self.pipeline.load_or_error(path)
        try:
            track = ea.decode_audio(path)
        except VideoError as err:
            track = err
        return frames, track

    def predict(self, loaded):
        """(p_fake clipped, fallback reason or '', has_audio)."""
        frames, track = loaded
        if isinstance(track, VideoError) or track is None:
            embedding, has_audio = np.zeros(self.audio.dim, np.float32), False
        else:
            embedding, status = self.audio(ea.pcm_to_float(track.pcm))
            has_audio = status in cae.HAS_AUDIO
        if isinstance(frames, VideoError):
            reason = f'unreadable video: {frames}'
        else:
            faces = self.pipeline.process(frames)
            if faces.tracks:
                table = OneVideo(faces.tracks[0].embeddings, embedding, has_audio)
                logit = predict_logits(self.net, table, [0], self.device, self.evaluation['crop'],
                                       self.evaluation['stride'], self.batch_size)[0]
                return self._clip(sigmoid(logit + self.shift)), '', has_audio
            reason = f'no face found in {faces.n_frames} frames'
        return self._fallback(embedding, has_audio, reason)

    def run(self, paths, prefetch=PREFETCH):
        """Yield (path, p_fake, fallback reason or '', has_audio) for each path, in order, decoding
        `prefetch` videos ahead in a background thread (-1: 2 on a GPU, 0 on a CPU)."""
        for path, loaded in prefetched(self.load, paths, default_ahead(self.device, prefetch)):
            yield (path, *self.predict(loaded))

    def _fallback(self, embedding, has_audio, reason):
        audio_only = self.ckpt.get('audio_only')
        if has_audio and audio_only:
            logit = audio_only_logit(audio_only, embedding)
            return self._clip(sigmoid(logit + self.shift)), f'{reason}; audio-only model', True
        return self._clip(self.ckpt['prior']), f'{reason}; training prior {self.ckpt["prior"]:.3f}', has_audio

    def _clip(self, p):
        return float(np.clip(p, *self.clip))


def list_inputs(path):
    if os.path.isfile(path):
        return [path]
    return [os.path.join(path, n) for n in sorted(os.listdir(path))
            if is_video(n) and os.path.isfile(os.path.join(path, n))]


def main():
    config.configure(globals(), dp, cae)
    for what, value in (('--input', INPUT), ('--checkpoint', CHECKPOINT)):
        if not value or not os.path.exists(value):
            print(f'error: {what}={value!r} does not exist', file=sys.stderr)
            raise SystemExit(2)
    paths = list_inputs(INPUT)
    if not paths:
        print(f'error: no video file (.mp4, .avi, .mov, ...) in {INPUT}', file=sys.stderr)
        raise SystemExit(2)
    try:
        predictor = Predictor(CHECKPOINT, DEVICE, PRIOR, BATCH_SIZE)
    except (CheckpointError, WeightsUnavailable) as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2) from None
    journal = Journal(OUTPUT + '.pkl')
    done = journal.done()
    todo = [p for p in paths if os.path.basename(p) not in done]
    start = time.perf_counter()
    bar = tqdm(predictor.run(todo, PREFETCH), total=len(todo), unit='video', desc='predict',
               disable=len(paths) == 1)
    for path, p, reason, has_audio in bar:
        name = os.path.basename(path)
        journal.add({'filename': name, 'rows': [{'filename': name, 'folder': '', 'label': p,
                                                 'fallback': reason, 'has_audio': has_audio}]})
    seconds = time.perf_counter() - start
    table, _ = journal.finish(lambda rec: rec['rows'], sort_by=('filename',))
    table = table[table['filename'].isin({os.path.basename(p) for p in paths})]
    with atomic_path(OUTPUT) as tmp:
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(['filename', 'label'])
            writer.writerows((r.filename, f'{r.label:.6f}') for r in table.itertuples())
    fallbacks = table[table['fallback'] != '']
    side = os.path.splitext(OUTPUT)[0] + '.fallbacks.csv'
    with atomic_path(side) as tmp:
        fallbacks[['filename', 'label', 'fallback']].to_csv(tmp, index=False)
    if len(paths) == 1:
        row = table.iloc[0]
        note = f' (fallback: {row.fallback})' if row.fallback else ''
        print(f'{row.filename}: p(FAKE) = {row.label:.4f}{note}')
    rate = f', {len(todo) / seconds:.2f} videos/s' if todo else ''
    print(f'{OUTPUT}: {len(table)} videos{rate}; {len(fallbacks)} fallbacks (listed in {side})')
    for r in fallbacks.itertuples():
        print(f'  fallback: {r.filename}: {r.fallback}')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    config.cli(main)
