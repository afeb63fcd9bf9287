"""The audio track of every video, as a 16 kHz mono WAV: the first step of the audio half.

Reads DATA_DIR: the videos create_video_embeddings.py reads (common.dataset.plan: those a DFDC part's
metadata.json lists with a label; files it does not list are skipped and counted), under the same keys.
Writes, in AUDIO_DIR:
  <folder>/<video file name>.wav   16-bit PCM, SAMPLE_RATE Hz, mono, e.g. dfdc_train_part_0/abofeumbvv.mp4.wav
                           (folder and whole file name: x.mp4 and x.avi, or one name in two parts, do not
                           collide); one per video with an audio track (an empty track: an empty WAV).
  index.pkl                one row per video read: filename, folder, has_track (False: no audio stream,
                           recorded, not a failure), samples, seconds, source_rate, source_channels, codec,
                           wav (its name in AUDIO_DIR, or None), lead_rms (leading_rms: NaN without samples);
                           attrs: sample_rate, made_with.
  index.pkl.failures.csv   filename, folder, reason: undecodable or missing videos, unreadable metadata.json
                           files, unexpected errors.
PyAV decodes (FFmpeg in the wheel); libswresample downmixes and resamples to 16 kHz, Resemblyzer's rate, which
keeps speech (below 8 kHz) at a third of 48 kHz's size. Resumable: each WAV, then its record, written atomically.
Several processes: torchrun --standalone --nproc_per_node=N extract_audio.py ..., or a SLURM array.

Example:
    python extract_audio.py --data_dir=../shared/testdata/dfdc_sample --audio_dir=out/audio
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import io
import os
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
from tqdm import tqdm

from common.dataset import key, plan, row_keys, source_of
from common.files import atomic_path, fit_name, read_pickle, sweep_temporaries
from common.stage import StageRun, claim, print_failures
from common.video import VideoError, open_video, reason, truncation

# ----------------------------------------------------------------------------- config
DATA_DIR = 'data'           # folder tree of DFDC parts (folders with a metadata.json)
AUDIO_DIR = 'audio'         # where the WAVs and index.pkl go
SAMPLE_RATE = 16000         # Hz of the WAVs: Resemblyzer's rate; speech lives below 8 kHz
RETRY_FAILED = False        # a rerun tries the failed videos again (else they stay failed)
INDEX = 'index.pkl'         # the index's name in AUDIO_DIR (its failures file is INDEX + '.failures.csv')
SHOW = 20                   # failures listed at the end of a run (all of them are in the failures file)
# -----------------------------------------------------------------------------

COLUMNS = ('filename', 'folder', 'has_track', 'samples', 'seconds', 'source_rate', 'source_channels', 'codec',
           'wav', 'lead_rms')
ENCODER_RATE = 16000        # Hz create_audio_embedding.py's encoders take (Resemblyzer's): not a setting there
LEAD_SECONDS = 0.5          # the start of a track whose loudness test.py's shortcut check reads (leading_rms)
LATE_START = 0.1            # s: an audio track that starts this much after the video gets that silence first


def main():
    config.configure(globals())
    if SAMPLE_RATE != ENCODER_RATE:
        print(f'note: --sample_rate={SAMPLE_RATE}: create_audio_embedding.py takes {ENCODER_RATE} Hz WAVs only; '
              f'these are for other tools')
    index = os.path.join(AUDIO_DIR, INDEX)
    claim(index, '--audio_dir')  # before any work: an index that cannot be written, or that another run writes
    # the video step's own listing: both halves read the same videos under the same keys
    parts = []  # every part read, one that lists no video now too: the rows of a video taken out are dropped
    videos, problems, skipped = plan(DATA_DIR, parts)
    extract_all(videos, problems, skipped, index, parts)


@dataclass
class AudioTrack:
    pcm: np.ndarray          # (samples,) int16, SAMPLE_RATE Hz, mono
    rate: int                # Hz of pcm
    source_rate: int         # Hz of the track in the video
    source_channels: int
    codec: str


def decode_audio(path, rate=SAMPLE_RATE, need_video=True):
    """The first audio track of `path`, downmixed to mono and resampled: an AudioTrack, or None where the
    video has no audio stream. Raises VideoError with the reason for a file that cannot be read, whose audio
    breaks while decoding or ends well short of what its container says (a file cut short: its WAV would pass for
    a short clip's), or (need_video=False) has no video stream."""
    container = open_video(path, need_video)
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        # int16 straight from the resampler: the WAV stores exactly these numbers, so an embedding made
        # from the WAV equals one made from this array in memory (predict.py).
        resampler = av.AudioResampler(format='s16', layout='mono', rate=rate)
        chunks, first, n = [], None, 0  # (1, samples) int16 each; the first frame's time (s); frames decoded
        try:
            for n, frame in enumerate(container.decode(stream), 1):
                first = frame.time if first is None else first
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))  # the resampler's tail
        except (av.FFmpegError, ValueError) as err:  # ValueError: a frame the resampler cannot take
            done = sum(c.shape[1] for c in chunks) / rate
            raise VideoError(f'audio decoding failed after {done:.2f} s: {reason(err)}') from None
        if stream.frames and (cut := truncation(n, container, stream)):  # an MP4's count (Matroska has none)
            raise VideoError(f'audio {cut}')
        pcm = np.concatenate(chunks, axis=1)[0] if chunks else np.zeros(0, np.int16)
        pcm = np.concatenate([np.zeros(round(late_start(container, first) * rate), np.int16), pcm])
        return AudioTrack(pcm=pcm, rate=rate, source_rate=int(stream.rate or 0),
                          source_channels=int(stream.channels or 0), codec=stream.codec_context.name)
    finally:
        container.close()


def late_start(container, first):
    """Seconds the audio track starts after the video (its first frame's time `first`), where it is more than
    LATE_START: a track muxed late plays silence first, which its samples hold none of (the lead's loudness, the
    voice's place). Shorter offsets (encoders' few ms) are left as FFmpeg's tools leave them; so is a file with
    no video."""
    video = container.streams.video
    if first is None or not video or video[0].start_time is None:
        return 0.0
    late = first - float(video[0].start_time * video[0].time_base)
    return late if late > LATE_START else 0.0


def pcm_to_float(pcm):
    """(samples,) int16 -> (samples,) float32 in [-1, 1): what the audio encoders take."""
    return pcm.astype(np.float32) / 32768.0


def leading_rms(pcm, rate=SAMPLE_RATE, seconds=LEAD_SECONDS):
    """RMS of the first `seconds` of (samples,) int16 pcm, in full scale (pcm_to_float's units, 0 = silence);
    NaN where there is no sample. Fakes of FakeAVCeleb and AV-Deepfake1M start with silence (AVH-Align, CVPR
    2025): test.py scores this number alone, to tell whether a model could be reading it."""
    head = pcm_to_float(pcm[:int(round(seconds * rate))]).astype(np.float64)
    return float(np.sqrt(np.mean(np.square(head)))) if head.size else float('nan')


def wav_name(filename, folder=''):
    """The WAV's path in AUDIO_DIR: the video's key (folder/filename) and '.wav' (common.files.fit_name: a name
    too long for the file system is cut and given a hash)."""
    return key(folder, fit_name(filename, '.wav'))


def write_wav(pcm, path, rate=SAMPLE_RATE):
    """Write `pcm` at `path` as a WAV, atomically; OSError naming `path` where it cannot be written."""
    wav = io.BytesIO()
    # int16 data is written as it is (no scaling), so reading it back gives the same numbers
    sf.write(wav, pcm, rate, subtype='PCM_16', format='WAV')
    # Python writes the file, not libsndfile: on a full disk libsndfile raises 'System error.' without an errno,
    # which failed every video left for good, where ENOSPC ends the run (common.stage.ends_the_run)
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(wav.getbuffer())


def read_wav(path, rate=SAMPLE_RATE):
    """A WAV this script wrote, as (samples,) float32 in [-1, 1). Raises VideoError with the reason."""
    try:
        # as bytes: libsndfile takes a str path as UTF-8, which a file name that is not (Latin-1) cannot be
        pcm, found = sf.read(os.fsencode(path), dtype='int16', always_2d=False)
    except (sf.LibsndfileError, OSError) as err:
        if not os.path.exists(path):  # libsndfile says only 'System error.'
            raise VideoError(f'{os.path.basename(path)} is missing (deleted since extract_audio.py wrote it, or the '
                             f'index is another folder\'s): rerun extract_audio.py, which writes it again') from None
        raise VideoError(f'cannot read {os.path.basename(path)}: {err}') from None
    if found != rate or pcm.ndim != 1:
        raise VideoError(f'{os.path.basename(path)} is {found} Hz with shape {pcm.shape}, '
                         f'not {rate} Hz mono: rerun extract_audio.py into an empty AUDIO_DIR')
    return pcm_to_float(pcm)


def extract(path, folder, audio_dir, rate=SAMPLE_RATE):
    """Write the WAV of the video at `path` (where it has an audio track) and return its index row;
    `folder` is what the row records (the part, relative to DATA_DIR). Raises VideoError for a video
    that cannot be decoded."""
    filename = os.path.basename(path)
    track = decode_audio(path, rate)
    row = {'filename': filename, 'folder': folder, 'has_track': track is not None,
           'samples': 0, 'seconds': 0.0, 'source_rate': 0, 'source_channels': 0, 'codec': None,
           'wav': None, 'lead_rms': float('nan')}
    if track is not None:
        write_wav(track.pcm, os.path.join(audio_dir, wav_name(filename, folder)), rate)
        row.update(samples=len(track.pcm), seconds=len(track.pcm) / rate, source_rate=track.source_rate,
                   source_channels=track.source_channels, codec=track.codec, wav=wav_name(filename, folder),
                   lead_rms=leading_rms(track.pcm, rate))
    return row


def lost_wavs(index, audio_dir, keys):
    """The `keys` whose WAV the index lists and `audio_dir` lacks (deleted since): extracted again."""
    if not os.path.exists(index):
        return set()
    table = read_pickle(index, 'delete it (and its .failures.csv) and rerun: the videos are done again')
    return {k for k, wav in zip(row_keys(table), table.get('wav', ()))
            if k in keys and isinstance(wav, str) and not os.path.exists(os.path.join(audio_dir, wav))}


def extract_all(videos, problems, skipped, index, parts=()):
    """One process's share of plan()'s videos (`parts`: plan()'s); the last process to finish writes the index,
    which records the parts for create_audio_embedding.py's listing."""
    # a rerun at another rate is refused: the index would list WAVs of two rates
    run = StageRun(index, RETRY_FAILED, made_with={'--sample_rate': f'{SAMPLE_RATE} Hz'}, setting='--audio_dir')
    who = run.who
    run.record(problems)
    if lost := lost_wavs(index, AUDIO_DIR, {key(*v[:2]) for v in videos} & run.before):  # its index row stays
        print(f'{who}{len(lost)} WAVs the index lists are gone (deleted by hand?), e.g. {min(lost)}: written again')
        run.before -= lost
    todo = [(rel, name, path) for rel, name, path, _ in
            run.todo(videos, where=lambda v: v[:2], source=source_of, folders=parts)]
    print(f'{who}{len(todo)} videos to extract into {AUDIO_DIR} ({run.done_before} done before, '
          f'{skipped} without a metadata entry skipped) from {DATA_DIR}')
    for rel, name, path in tqdm(todo, desc=f'{who}extract audio', unit='video'):
        with run.video(name, rel):
            run.add({'filename': name, 'folder': rel, 'row': extract(path, rel, AUDIO_DIR, SAMPLE_RATE)})
    if not run.merging(index):
        return
    table, failures = run.finish(lambda rec: [rec['row']], columns=COLUMNS,
                                 attrs={'sample_rate': SAMPLE_RATE, 'parts': sorted(parts)})
    for folder in sorted({rel for rel, *_ in videos}):  # WAVs of killed runs, written again since
        sweep_temporaries(os.path.join(AUDIO_DIR, folder, '*.wav'))
    with_track = int(table['has_track'].sum()) if len(table) else 0
    print(f'{os.path.join(AUDIO_DIR, INDEX)}: {len(table)} videos, {with_track} with an audio track, '
          f'{len(table) - with_track} without; {len(failures)} failed')
    print_failures(failures, run.failures_path, SHOW, made=len(table))


if __name__ == '__main__':
    config.cli(main)
