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
Every file in INPUT named like a video gets a row, a dangling link included ('file is missing'); an
audio-only file gets the audio-only model. An unexpected error on one video (a bug, a decoder's crash) is
that video's fallback, with the exception as its reason, counted apart in the summary; the run goes on.
Fallbacks are counted, printed, and listed with their reasons in OUTPUT's .fallbacks.csv.
A single video prints its probability. Killed, a rerun resumes (OUTPUT.pkl.parts/ holds finished videos)
where the checkpoint (its bytes), PRIOR and the face and audio settings are those that made them; else
it says so in one line, discards them and predicts every video again.

On a GPU, DetectionPipeline's decoding workers (--workers, one a core by default) decode the videos and
their audio tracks while this process runs the networks on batches of many videos (faces/workers.py);
weights load once; the GPU is used where there is one; pretrained weights can come from local files.

Example:
    python predict.py --input=../shared/testdata/dfdc_sample --checkpoint=runs/lstm/best.pt \
        --output=submission.csv --face_weights=none
"""
import csv
import functools
import hashlib
import os
import shutil
import time
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

import DetectionPipeline as dp
import create_audio_embedding as cae
import extract_audio as ea
from common import config
from common.device import pick_device
from common.config import UserError
from common.stage import Journal, atomic_path, is_video
from common.video import VideoError
from model import CheckpointError, audio_only_logit, load_checkpoint, predict_logits, prior_shift, sigmoid

# ----------------------------------------------------------------------------- config
INPUT = ''                  # a folder of videos, or one video file
CHECKPOINT = ''             # training.py's best.pt
OUTPUT = 'submission.csv'   # filename,label (the probability of FAKE), one row per video
PRIOR = 0.5                 # share of fakes expected in INPUT (DFDC's test sets: 0.5), as test.py's --prior
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


# the settings of DetectionPipeline.py and create_audio_embedding.py that do not change the numbers (where
# files go, how many threads or processes, which device): every other one is part of the fingerprint
_NOT_IN_NUMBERS = {'DEVICE', 'BATCH_SIZE', 'VIDEO', 'AUDIO_DIR', 'OUTPUT', 'RETRY_FAILED', 'THREADS', 'SHOW',
                   'PROCS'}


class Prediction(NamedTuple):
    p_fake: float       # clipped to the checkpoint's range
    fallback: str       # why this is not the network's prediction; '' where it is
    has_audio: bool
    unexpected: bool    # the fallback is for an unexpected error (a bug to report), not a bad input


class Predictor:
    """Video path in, a Prediction (probability of FAKE, fallback reason or '', ...) out; every network
    loads once."""

    def __init__(self, checkpoint, device='auto', prior=PRIOR, batch_size=BATCH_SIZE):
        self.device = pick_device(device)
        self.net, self.ckpt = load_checkpoint(checkpoint, self.device)
        self.evaluation = self.ckpt['evaluation']
        self.clip = tuple(self.ckpt['clip'])
        self.checkpoint, self.prior, self.shift = checkpoint, prior, prior_shift(prior)
        self.batch_size = batch_size
        self.pipeline = dp.DetectionPipeline(device=str(self.device))
        self.audio = cae.AudioEmbedder(device=str(self.device))
        self.cpu_audio = None  # the decoding workers' copy, where self.audio is on a GPU (run())
        self._check_embedders()

    def _check_embedders(self):
        """The checkpoint's network only means something on the embeddings it was trained on."""
        trained = self.ckpt.get('dataset', {}).get('attrs', {})
        ours = {'video_embedder': self.pipeline.embedder_name, 'audio_encoder': self.audio.name}
        for key, value in ours.items():
            if trained.get(key) not in (None, value):
                raise CheckpointError(f'the checkpoint was trained on {key} {trained[key]!r}, this run has '
                                      f'{value!r}: give the same weights settings as the training data')

    def predict(self, faces, voice):
        """A Prediction for one video from its faces (a VideoFaces) and its voice (voice()), each possibly the
        exception met making it: the network's, else a fallback with its reason. Any exception but a
        VideoError (an unreadable file, expected) is unexpected: the fallback records its type and message."""
        embedding, has_audio = np.zeros(self.audio.dim, np.float32), False
        try:
            if isinstance(voice, Exception):
                raise voice
            embedding, has_audio = voice
            if isinstance(faces, VideoError):
                return self._fallback(embedding, has_audio, f'unreadable video: {faces}')
            if isinstance(faces, Exception):
                raise faces
            if not faces.tracks:
                return self._fallback(embedding, has_audio, f'no face found in {faces.n_frames} frames')
            table = OneVideo(faces.tracks[0].embeddings, embedding, has_audio)
            logit = predict_logits(self.net, table, [0], self.device, self.evaluation['crop'],
                                   self.evaluation['stride'], self.batch_size)[0]
            return Prediction(self._clip(sigmoid(logit + self.shift)), '', has_audio, False)
        except Exception as err:  # noqa: BLE001 - one video's bug must not cost the others their rows
            message = ' '.join(str(err).split())[:300]  # one line in the summary and the CSV
            return self._fallback(embedding, has_audio, f'unexpected {type(err).__name__}: {message}', True)

    def run(self, paths):
        """Yield (path, Prediction) for each path, as the videos finish. With DetectionPipeline's decoding
        workers (faces/workers.py) each worker also decodes and embeds the video's voice, on its CPU: in this
        process, which feeds the GPU for all of them, it would cost every video its turn."""
        audio = self.audio
        if self.pipeline.workers(len(paths)) and audio.device.type != 'cpu':
            if self.cpu_audio is None:  # built once, in this process: the forked workers share it
                self.cpu_audio = cae.AudioEmbedder(device='cpu')
            audio = self.cpu_audio
        for path, faces, voice in self.pipeline.stream(paths, also=functools.partial(voice_of, audio)):
            yield path, self.predict(faces, voice)

    def fingerprint(self):
        """What the probabilities depend on, as {what: value}: a resumed run must have made its parts
        with the same (the checkpoint by its bytes: a retrained best.pt at the same path is another)."""
        digest = hashlib.sha256()
        with open(self.checkpoint, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        faces = {f'--{k}': v for k, v in self.pipeline.cfg.items() if k.upper() not in _NOT_IN_NUMBERS}
        audio = {f'--{k.lower()}': v for k, v in config.constants(cae).items() if k not in _NOT_IN_NUMBERS}
        return {'checkpoint': digest.hexdigest(), '--prior': self.prior, 'face embedder': self.pipeline.embedder_name,
                'audio embedder': self.audio.name, **faces, **audio}

    def _fallback(self, embedding, has_audio, reason, unexpected=False):
        audio_only = self.ckpt.get('audio_only')
        if has_audio and audio_only:
            logit = audio_only_logit(audio_only, embedding)
            return Prediction(self._clip(sigmoid(logit + self.shift)), f'{reason}; audio-only model', True,
                              unexpected)
        return Prediction(self._clip(self.ckpt['prior']), f'{reason}; training prior {self.ckpt["prior"]:.3f}',
                          has_audio, unexpected)

    def _clip(self, p):
        return float(np.clip(p, *self.clip))


def voice_of(audio, path):
    """(embedding (D,) float32, has_audio) of the audio track of a video, or of a file with only an audio
    track (its voice is still judged): zeros and False where it has none, or one that cannot be decoded or
    embedded (a non-finite embedding). Any other error is raised: the video's unexpected fallback."""
    try:
        track = ea.decode_audio(path, need_video=False)
        if track is not None:
            embedding, status = audio(ea.pcm_to_float(track.pcm))
            return embedding, status in cae.HAS_AUDIO
    except VideoError:
        pass
    return np.zeros(audio.dim, np.float32), False


def list_inputs(path):
    """INPUT's videos: the file itself, or every entry of the folder named like a video, sorted (a
    dangling link too: it gets its row, 'file is missing')."""
    if not os.path.isdir(path):
        return [path]
    return [os.path.join(path, n) for n in sorted(os.listdir(path)) if is_video(n)]


def resumable(journal, fingerprint, n_videos):
    """{filename} done by an earlier run with the same fingerprint. Where the earlier results were made with
    another checkpoint or settings they are discarded (said in one line) and nothing is done."""
    records, previous = journal.part_records(), journal.previous_table()
    made = [rec.get('fingerprint') for rec in records]
    if previous is not None:
        made.append(previous.attrs.get('fingerprint'))
    other = [m for m in made if m != fingerprint]
    if other:
        old = other[0]
        what = (sorted(k for k in {*old, *fingerprint} if old.get(k) != fingerprint.get(k)) if old
                else ['checkpoint or settings (an earlier predict.py did not record them)'])
        print(f'{journal.output}: made with another {", ".join(what)}; discarding it, predicting all '
              f'{n_videos} videos again')
        for path in (journal.output, journal.failures_path):
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(journal.parts)
        os.makedirs(journal.parts)
        return set()
    done = {rec['filename'] for rec in records}
    if previous is not None and len(previous):
        done |= set(previous['filename'])
    return done


def main():
    config.configure(globals(), dp, cae)
    for what, value in (('--input', INPUT), ('--checkpoint', CHECKPOINT)):
        if not value or not os.path.exists(value):
            raise UserError(f'{what}={value!r} does not exist')
    config.writable_file(OUTPUT, '--output')
    paths = list_inputs(INPUT)
    if not paths:
        raise UserError(f'no video file (.mp4, .avi, .mov, ...) in {INPUT}')
    predictor = Predictor(CHECKPOINT, DEVICE, PRIOR, BATCH_SIZE)
    fingerprint = predictor.fingerprint()
    journal = Journal(OUTPUT + '.pkl')
    done = resumable(journal, fingerprint, len(paths))
    todo = [p for p in paths if os.path.basename(p) not in done]
    start = time.perf_counter()
    bar = tqdm(predictor.run(todo), total=len(todo), unit='video', desc='predict',
               disable=len(paths) == 1)
    for path, result in bar:
        name = os.path.basename(path)
        journal.add({'filename': name, 'folder': '', 'fingerprint': fingerprint,
                     'rows': [{'filename': name, 'folder': '', 'label': result.p_fake, 'fallback': result.fallback,
                               'has_audio': result.has_audio, 'unexpected': result.unexpected}]})
    seconds = time.perf_counter() - start
    table, _ = journal.finish(lambda rec: rec['rows'], sort_by=('filename',), attrs={'fingerprint': fingerprint})
    table = table[table['filename'].isin({os.path.basename(p) for p in paths})]
    with atomic_path(OUTPUT) as tmp:
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(['filename', 'label'])
            writer.writerows((r.filename, f'{r.label:.6f}') for r in table.itertuples())
    fallbacks = table[table['fallback'] != '']
    side = os.path.splitext(OUTPUT)[0] + '.fallbacks.csv'
    with atomic_path(side) as tmp:
        fallbacks[['filename', 'label', 'fallback', 'unexpected']].to_csv(tmp, index=False)
    if len(paths) == 1:
        row = table.iloc[0]
        note = f' (fallback: {row.fallback})' if row.fallback else ''
        print(f'{row.filename}: p(FAKE) = {row.label:.4f}{note}')
    rate = f', {len(todo) / seconds:.2f} videos/s' if todo else ''
    errors = int(fallbacks['unexpected'].sum())
    print(f'{OUTPUT}: {len(table)} videos, {len(todo)} predicted now{rate}; {len(fallbacks)} fallbacks, '
          f'{errors} of them after an unexpected error (listed in {side})')
    for r in fallbacks.itertuples():
        print(f'  fallback: {r.filename}: {r.fallback}')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    config.cli(main)
