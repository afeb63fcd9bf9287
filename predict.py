"""Raw videos in, submission.csv out, in one pass: the DFDC submission.

Reads INPUT (one video, or a folder of them and its subfolders) and CHECKPOINT (training.py's best.pt; none: GenD's
encoders score with their own head). Each video's faces and voice are embedded as the checkpoint's training table's
were (DetectionPipeline.py, extract_audio.py, create_audio_embedding.py) and scored as test.py scores a table, so
this pass and the stage chain give the same probability. Writes OUTPUT (submission.csv): `filename,label`, a row a
video (its path relative to INPUT), label p(FAKE) clipped to the checkpoint's range (the log loss's guard); a video
that cannot be read or has no face gets a fallback (the audio-only model where it has audio, else PRIOR), listed
with its reason in OUTPUT's .fallbacks.csv, as is one whose audio track breaks (scored without it). One video
prints its probability and writes nothing unless --output is given. EXPLAIN, a folder, gets a PNG a video
(explain.py). Killed, a rerun resumes where the checkpoint, settings and video files are the same (README).

Example:
    python predict.py --input=../shared/testdata/dfdc_sample --checkpoint=runs/lstm/best.pt --output=submission.csv
    python predict.py --input=../shared/testdata/dfdc_sample/abofeumbvv.mp4 --face_encoder=gend --explain=figures
"""
from common import config
# -h: answered before the heavy imports
config.help_if_asked(__name__, __file__, 'DetectionPipeline.py', 'create_audio_embedding.py')

import functools
import os
import time
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

import DetectionPipeline as dp
import create_audio_embedding as cae
import explain
import extract_audio as ea
from common.config import UserError
from common.dataset import (VIDEO_EXTENSIONS, file_source, is_video, key, list_inputs, named_like_input,
                            row_keys, say_passed)
from common.device import pick_device
from common.files import NAMES, atomic_path, digest, shown, submission_files
from common.stage import StageRun, claim
from common.store import Store
from common.video import VideoError
from common.weights import HEAD_ENCODERS, has_head
from faces.clip import video_score
from model import (check_dims, check_embedder, fallback_logit, head_logit, load_scorer, predict_logits, prior_shift,
                   recorded_settings, sigmoid, window_starts)

# ----------------------------------------------------------------------------- config
INPUT = ''                  # a folder of videos, or one video file
CHECKPOINT = ''             # training.py's best.pt; '': the face encoder's own head (--face_encoder=gend: GenD's)
OUTPUT = ''                 # the CSV filename,label (p of FAKE), a row a video; '': submission.csv (one video: none)
PRIOR = 0.5                 # share of fakes expected in INPUT (DFDC's test sets: 0.5), as test.py's --prior
BATCH_SIZE = 512            # windows per network batch
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1'
EXPLAIN = ''                # a folder: one PNG a video, its windows' scores and face crops ('': none)
# -----------------------------------------------------------------------------


def main():
    face, audio = config.configure(globals(), dp, cae)  # the settings of DetectionPipeline and AudioEmbedder given
    for what, value in (('--input', INPUT), ('--checkpoint', CHECKPOINT or '.')):  # '': the encoder's head
        if not value or not os.path.exists(value):
            raise UserError(f'{what}={value!r} does not exist')
    # one video prints its probability: files only where --output asks for them
    writes = os.path.isdir(INPUT) or OUTPUT != ''
    output = OUTPUT or 'submission.csv'
    if not (os.path.isdir(INPUT) or is_video(INPUT)):
        raise UserError(f'--input={INPUT} is not named like a video ({", ".join(VIDEO_EXTENSIONS)}; not macOS\'s '
                        f'._ file beside one): give a video or a folder of them')
    if writes:
        if named_like_input(output):
            raise UserError(f'--output={output} is named like a video or a part\'s labels: give a .csv name')
        for path in (output, fallbacks_path(output)):
            config.writable_file(path, '--output', reads=(CHECKPOINT,))
    if EXPLAIN:
        config.writable_folder(EXPLAIN, '--explain')
    others, passed = [], []
    videos = list_inputs(INPUT, others, passed)
    if others:
        print(f'{len(others)} files in {INPUT} not named like a video ({", ".join(VIDEO_EXTENSIONS)}; macOS\'s ._ '
              f'files neither) passed over, e.g. {others[0]}')
    say_passed(passed)
    if not videos:
        raise UserError(f'no video file (.mp4, .avi, .mov, ...) in {INPUT} or its subfolders')
    if writes:  # one process at a time, an array's other task too (each predicts every video); lock files from here
        claim(output + '.pkl', alone=True)
    predictor = Predictor(CHECKPOINT, DEVICE, PRIOR, BATCH_SIZE, face, audio)
    print(f'scorer: {predictor.scorer}')
    if not writes:
        [(path, _, name)] = videos
        png = explain.png_path(EXPLAIN, '', name) if EXPLAIN else None
        _, _, result = score_video(predictor, path, png)
        note = (f' (fallback: {result.fallback})' if result.fallback else '') + (f' (figure: {png})' if png else '')
        print(f'{shown(name)}: p(FAKE) = {result.p_fake:.4f}{shown(note)}')
        return
    write_submission(*predict_all(predictor, videos, output), videos, output, predictor.clip)


def predict_all(predictor, videos, output):
    """(the table of every video predicted, now or by an earlier run; the paths predicted now; the seconds they
    took): the run's records in OUTPUT.pkl (common.stage), resumed where the checkpoint and settings are the same."""
    where = {path: (folder, name) for path, folder, name in videos}
    # results of another checkpoint or settings are discarded (said in one line), and every video predicted
    run = StageRun(output + '.pkl', made_with=predictor.made_with(), redo=True, alone=True)  # every video: claim()'s
    # a video whose file changed since (another INPUT's of that name, or a chmod) leaves run.before: predicted
    # again; with --explain, one done before but not drawn too (its row stays the first one's)
    run.todo(videos, where=lambda video: video[1:], source=lambda video: file_source(video[0]))
    todo = [path for path, folder, name in videos if key(folder, name) not in run.before
            or EXPLAIN and not os.path.exists(explain.png_path(EXPLAIN, folder, name))]
    start = time.perf_counter()
    bar = tqdm(predictor.stream(todo), total=len(todo), unit='video', desc='predict', disable=len(videos) == 1)
    for path, faces, voice, result in bar:
        folder, name = where[path]
        if EXPLAIN:
            predictor.explain(explain.png_path(EXPLAIN, folder, name), path, key(folder, name), faces, voice, result)
        run.add({'filename': name, 'folder': folder,
                 'rows': [{'filename': name, 'folder': folder, 'label': result.p_fake, 'fallback': result.fallback,
                           'has_audio': result.has_audio, 'unexpected': result.unexpected}]})
    seconds = time.perf_counter() - start
    table, _ = run.finish(lambda rec: rec['rows'])
    return table, todo, seconds


def fallbacks_path(output):
    return submission_files(output)[1]


def write_submission(table, todo, seconds, videos, output, clip):
    """OUTPUT (filename,label: p clipped to `clip`, the log loss's guard) and its .fallbacks.csv from the run's
    table, and the summary lines."""
    # the submission's filename: the path relative to INPUT, which for a flat folder (DFDC's) is the file name
    table['filename'] = row_keys(table)
    table = table[table['filename'].isin({key(folder, name) for _, folder, name in videos})]
    table = table.sort_values('filename', kind='stable').assign(p=lambda t: t['label'].clip(*clip))
    fallbacks, side = table[table['fallback'] != ''], fallbacks_path(output)
    for path, rows, columns in ((output, table, ['p']), (side, fallbacks, ['p', 'fallback', 'unexpected'])):
        with atomic_path(path) as tmp:  # NAMES: a name's bytes as they are
            out = rows[['filename', *columns]].rename(columns={'p': 'label'})
            out.to_csv(tmp, index=False, float_format='%.6f', errors=NAMES)
    if len(videos) == 1:
        row = table.iloc[0]
        note = f' (fallback: {row.fallback})' if row.fallback else ''
        print(f'{shown(os.path.basename(row.filename))}: p(FAKE) = {row.label:.4f}{shown(note)}')
    rate = f', {len(todo) / seconds:.2f} videos/s' if todo else ''
    print(f'{output}: {len(table)} videos, {len(todo)} predicted now{rate}; {len(fallbacks)} fallbacks, '
          f'{int(fallbacks["unexpected"].sum())} of them after an unexpected error (listed in {side})')
    for r in fallbacks.itertuples():
        print(f'  fallback: {shown(r.filename)}: {shown(r.fallback)}')
    if EXPLAIN:
        print(f'{EXPLAIN}: a figure of each video predicted now ({len(todo)})')


def settings_from(ckpt, face, audio):
    """The settings of DetectionPipeline and of AudioEmbedder, lower-case: {**recorded, **given}, those the
    checkpoint's training table recorded (its made_with; an older table's none: the embedder check says what
    to give) and over them the user's (config.configure()'s overrides). UserError where a setting given differs
    from the recorded one (the network learnt on faces sampled or cropped so, on audio whose silence was cut so;
    a weights file's path may: the weights are checked by their tensors, model.check_embedder), or a weights file
    recorded is not here."""
    attrs = ckpt.get('dataset', {}).get('attrs', {})
    found = [{k[2:]: v for k, v in recorded_settings(attrs, what).items()
              if k[2:] in known} for what, known in (('face', dp.settings()), ('audio', config.settings(cae)))]
    found[0].update({k: attrs[k] for k in ('face_weights',) if k in attrs})
    for what, recorded, given in zip(('faces', 'audio'), found, (face, audio)):
        if differ := sorted(k for k, v in recorded.items() if k in given and given[k] != v and '_weights' not in k):
            raise UserError(f'the checkpoint was trained on {what} made with ' + ', '.join(
                f'--{k}={recorded[k]}' for k in differ) + '; this run has ' + ', '.join(
                f'--{k}={given[k]}' for k in differ) + ": leave them out to take the checkpoint's")
    for what, recorded, given in zip(('face', 'audio'), found, (face, audio)):
        for k in ('face_weights', 'voice_weights', 'cnn_weights'):  # the settings that may name a weights file
            if k in recorded and k not in given and os.sep in recorded[k] and not os.path.exists(recorded[k]):
                raise UserError(f'the checkpoint was trained on {what} embeddings made with the weights file '
                                f'{recorded[k]}, which is not here: give --{k}=/path/to/'
                                f'{os.path.basename(recorded[k])}')
    return [{**recorded, **given} for recorded, given in zip(found, (face, audio))]


class Prediction(NamedTuple):
    p_fake: float       # the probability of FAKE (a submission clips it: write_submission)
    fallback: str       # why this is not the network's prediction (or, scored, what it went without); '' if none
    has_audio: bool
    unexpected: bool    # the fallback is for an unexpected error (a bug to report), not a bad input
    scored: bool        # p_fake is the network's (or the encoder head's), even with a note in fallback
    prior: bool = False  # p_fake is PRIOR itself: nothing of the video was read (no face, no audio model's)


class Predictor:
    """Video path in, a Prediction (probability of FAKE, fallback reason or '', ...) out; every network
    loads once. The embedders are made with settings_from(), and must be those the checkpoint learnt on."""

    def __init__(self, checkpoint, device='auto', prior=PRIOR, batch_size=BATCH_SIZE, face=None, audio=None):
        self.device = pick_device(device)
        self.net, self.ckpt, self.scorer = load_scorer(checkpoint, self.device)
        self.evaluation, self.clip, self.batch_size = self.ckpt['evaluation'], tuple(self.ckpt['clip']), batch_size
        self.checkpoint, self.prior, self.shift = checkpoint, prior, prior_shift(prior)
        face, self.audio_settings = settings_from(self.ckpt, face or {}, audio or {})
        chosen = dp.settings(**face)  # its embedder checked before the weights load
        if self.net is None and not has_head(chosen['face_encoder']):
            raise UserError(f'no --checkpoint: give one (training.py\'s best.pt), or --face_encoder='
                            f'{" or ".join(HEAD_ENCODERS)}, whose own head scores a video without training')
        trained = self.ckpt.get('dataset', {}).get('attrs', {})  # its training table's
        todo = "give the {} of the training data, or leave them out to take the checkpoint's"
        face_todo = todo.format('--face_encoder and --face_weights')
        if not trained.get('video_embedder_digest'):  # else the weights by their tensors, once loaded
            check_embedder(trained, 'face', dp.embedder_name(chosen), face_todo)
        self.pipeline = dp.DetectionPipeline(**{**face, 'device': str(self.device)})
        check_embedder(trained, 'face', self.pipeline.embedder_name, face_todo, self.pipeline.nets.weights_digest)
        if self.net is None:  # the head's weights are the verdict's: named ('gend:untrained(seed=0)' means nothing)
            self.scorer = f'{self.scorer}, weights {self.pipeline.embedder_name}'
        self.audio = cae.AudioEmbedder(**{**self.audio_settings, 'device': str(self.device)})
        self.cpu_audio = None  # the decoding workers' copy, where self.audio is on a GPU (stream())
        check_embedder(trained, 'audio', self.audio.name, todo.format('--audio_encoder and its settings'))
        check_dims(self.ckpt, self.pipeline.nets.dim, self.audio.dim, f'--face_encoder={chosen["face_encoder"]}')

    def predict(self, faces, voice):
        """A Prediction for one video from its faces (a VideoFaces) and its voice (voice()), each possibly the
        exception met making it: the network's, else a fallback with its reason. Any exception but a
        VideoError (an unreadable file, expected) is unexpected: the fallback records its type and message."""
        embedding, has_audio, unheard = np.zeros(self.audio.dim, np.float32), False, ''
        try:
            if isinstance(voice, VideoError):  # an unreadable file (said below), or its audio track alone
                # noted where the network reads audio (GenD's head reads none)
                unheard = f'audio not decoded ({voice}): scored without it' if self.net is not None else ''
                voice = (embedding, False)
            if isinstance(voice, Exception):
                raise voice
            embedding, has_audio = voice
            if isinstance(faces, VideoError):
                return self._fallback(embedding, has_audio, f'unreadable video: {faces}')
            if isinstance(faces, Exception):
                raise faces
            if not faces.tracks:
                return self._fallback(embedding, has_audio, faces.no_face()
                                      + (f', {unheard}' if unheard else ''))
            logit = self.video_logit(faces, voice)
            if not np.isfinite(logit):  # a face embedding inf or NaN: a NaN row would void the submission
                return self._fallback(embedding, has_audio, 'the network gave no finite logit (a face embedding '
                                      'is inf or NaN)', True)
            return Prediction(float(sigmoid(logit + self.shift)), unheard, has_audio, False, True)
        except Exception as err:  # noqa: BLE001 - one video's bug must not cost the others their rows
            message = ' '.join(str(err).split())[:300]  # one line in the summary and the CSV
            return self._fallback(embedding, has_audio, f'unexpected {type(err).__name__}: {message}', True)

    def stream(self, paths):
        """Yield (path, faces, voice, Prediction) for each path as the videos finish (faces, voice: as predict()
        takes them). DetectionPipeline's decoding workers (faces/workers.py) also embed each video's voice, on
        their CPU: this process, which feeds the GPU for all of them, would cost every video its turn."""
        audio = self.audio
        if self.pipeline.workers(len(paths)) and audio.device.type != 'cpu':
            if self.cpu_audio is None:  # built once, in this process: the forked workers share it
                self.cpu_audio = cae.AudioEmbedder(**{**self.audio_settings, 'device': 'cpu'})
            audio = self.cpu_audio
        for path, faces, voice in self.pipeline.stream(paths, also=functools.partial(voice_of, audio)):
            yield path, faces, voice, self.predict(faces, voice)

    def video_logit(self, faces, voice):
        """A video's logit before the shift to PRIOR: the network's (the mean over its windows), or without a
        checkpoint the log-odds of the encoder head's score (the mean of its faces' P(FAKE)). Faces: a track."""
        track, (embedding, has_audio) = faces.tracks[0], voice
        if self.net is None:
            return float(head_logit(video_score(track.logits)))
        table = Store.one(track.embeddings, embedding, has_audio)
        return predict_logits(self.net, table, [0], self.device, self.evaluation['crop'],
                              self.evaluation['stride'], self.batch_size)[0]

    def window_logits(self, faces, voice):
        """(starts (windows,) int64, logits (windows,) float64) before the shift to PRIOR: the network's logit of
        each window predict_logits reads (their mean: the video's), or the head's of each face (a scored video)."""
        if self.net is None:
            return np.arange(len(faces.tracks[0].frames)), faces.tracks[0].logits.astype(np.float64)
        faces, (embedding, has_audio), crop = faces.tracks[0].embeddings, voice, self.evaluation['crop']
        starts = np.asarray(window_starts(len(faces), crop, self.evaluation['stride']), np.int64)  # (windows,)
        table = Store.one(faces, embedding, has_audio, starts, np.minimum(len(faces) - starts, crop))
        return starts, predict_logits(self.net, table, np.arange(len(starts)), self.device, crop,
                                      self.evaluation['stride'], self.batch_size)

    def explain(self, png, path, name, faces, voice, result):
        """explain.py's figure of one video (what stream() yielded for it) in `png`."""
        read = not isinstance(faces, Exception)
        if isinstance(voice, VideoError):  # an audio track not decoded: the video was scored without it (predict())
            voice = (np.zeros(self.audio.dim, np.float32), False)
        explain.draw(png, path, name, result, faces if read else None, self.pipeline.cfg,
                     self.window_logits(faces, voice) if result.scored else None, self.evaluation['crop'], self.shift)

    def made_with(self):
        """What the probabilities depend on (common.stage's made_with): a resumed run must have made its parts
        with the same (the checkpoint by its bytes: a retrained best.pt at the same path is another)."""
        # no checkpoint: the encoder's head, by its weights (dp.made_with)
        return {'checkpoint': digest(self.checkpoint or os.devnull), '--prior': self.prior,
                **dp.made_with(self.pipeline.cfg), 'audio embedder': self.audio.name, **cae.numbers(self.audio.cfg)}

    def _fallback(self, embedding, has_audio, reason, unexpected=False):
        # as test.py scores a video without a face: the audio-only model, else no evidence (PRIOR itself, not
        # the training set's share of fakes, which would cost log loss on a set with another share)
        heard = bool((audio_only := self.ckpt.get('audio_only')) and has_audio)  # by the audio-only model
        how = 'audio-only model' if heard else f'prior {self.prior:g}'
        p = sigmoid(fallback_logit(audio_only, embedding, has_audio) + self.shift)
        return Prediction(float(p), f'{reason}; {how}', has_audio, unexpected, False, not heard)


def score_video(predictor, path, explain_png=None):
    """(faces, voice, Prediction) of one video, as Predictor.stream() yields them, and its explain.py figure in
    `explain_png` where given: predict.py's one video and web.py's page both score here, so they agree."""
    [(_, faces, voice, result)] = predictor.stream([path])
    if explain_png:
        predictor.explain(explain_png, path, os.path.basename(path), faces, voice, result)
    return faces, voice, result


def voice_of(audio, path):
    """(embedding (D,) float32, has_audio) of a video's audio track (or an audio-only file's): zeros and False
    where it has none. Raises VideoError where it is not decoded or embedded (not finite): Predictor.predict
    scores the video without it, and says so."""
    track = ea.decode_audio(path, need_video=False)
    if track is None:
        return np.zeros(audio.dim, np.float32), False
    embedding, status = audio(ea.pcm_to_float(track.pcm))
    return embedding, status in cae.HAS_AUDIO


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    config.cli(main)
