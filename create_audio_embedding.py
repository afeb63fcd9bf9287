"""One embedding per video from its audio track: the second step of the audio half.

Reads AUDIO_DIR, which extract_audio.py wrote: index.pkl (one row per video), its failures file, and the
WAVs (16 kHz mono).
Writes OUTPUT, a pandas pickle, one row per video of the index: filename, folder; audio_embedding (D,)
float32; has_audio (False for no track, an empty or a silent one: a zero embedding, never NaN); audio_status
('ok'; 'no speech': the VAD heard no voice, the whole track was embedded; 'silent': peak below SILENCE_DBFS;
'empty'; 'no track'); seconds; lead_rms (the index's, NaN in an older one); audio_encoder and audio_dim (also
in the attrs, with made_with: the settings the embeddings depend on, which predict.py takes; a rerun with
others into the same OUTPUT is refused). And OUTPUT.failures.csv (filename, folder, reason): failed
extractions (from extract_audio.py), unreadable WAVs, unexpected errors. No success: a table without rows.
AUDIO_ENCODER: 'resemblyzer' (default), Resemblyzer's pretrained 256-d speaker encoder on the voiced
stretches; or 'cnn', an ImageNet CNN from torchvision (ResNet-18, 512-d) on a log-mel image of the track.
Why each, and how: the AudioEmbedder class. Resumable (one part file per video); several processes split
the work: torchrun --standalone --nproc_per_node=N create_audio_embedding.py ..., or a SLURM array.

Example:
    python create_audio_embedding.py --audio_dir=out/audio --output=out/audio_embeddings.pkl
    python create_audio_embedding.py --audio_dir=out/audio --output=out/audio_cnn.pkl --audio_encoder=cnn
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import os
import warnings
from importlib.metadata import version

import numpy as np
import torch
from tqdm import tqdm

from common.dataset import filename_of
from common.device import autocast, pick_device, share_cpu, torch_threads
from common.files import read_pickle, stamp
from common.stage import StageRun, claim, print_failures, read_failures
from common.video import VideoError
import extract_audio as ea
from common.weights import audio_cnn, voice_encoder

# ----------------------------------------------------------------------------- config: this script only
AUDIO_DIR = 'audio'         # extract_audio.py's output: WAVs and index.pkl
OUTPUT = 'audio_embeddings.pkl'  # the table this writes
RETRY_FAILED = False        # a rerun tries the failed videos again (else they stay failed)
SHOW = 20                   # failures listed at the end of a run (all of them are in the failures file)
# -----------------------------------------------------------------------------
# ----------------------------------------------------------------------------- config
AUDIO_ENCODER = 'resemblyzer'  # 'resemblyzer' (shipped weights, 256-d) | 'cnn' (torchvision ImageNet CNN)
VOICE_WEIGHTS = 'resemblyzer'  # 'resemblyzer' (the package's own) | path to a VoiceEncoder checkpoint
CNN_ARCH = 'resnet18'       # the CNN: resnet18 (512-d) | resnet34 | resnet50 | resnext50_32x4d (2048-d) ...
CNN_WEIGHTS = 'imagenet'    # 'imagenet' (torchvision's download) | 'IMAGENET1K_V2' | path to a .pth | 'none'
N_MELS = 128                # mel bands of the CNN's image (its height)
N_FFT = 512                 # FFT window in samples (32 ms at 16 kHz)
HOP = 160                   # samples between spectrogram columns (10 ms: a 10 s clip is 1001 columns wide)
TOP_DB = 80.0               # dynamic range of the log-mel image, below the track's loudest bin
CNN_WINDOW_SECONDS = 10.0   # longer tracks are embedded in windows of about this length, then averaged
SILENCE_DBFS = -60.0        # a track whose peak is below this is silent: zero embedding, has_audio False
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' ...
THREADS = 1                 # torch CPU threads while embedding (0: torch's default); why 1: see AudioEmbedder
AMP = False                 # bf16/fp16 for the CNN: a little faster, 2 digits less exact (BENCHMARKS.md, Audio)
# -----------------------------------------------------------------------------

_RATE = ea.ENCODER_RATE     # Hz the encoders take
COLUMNS = ('filename', 'folder', 'audio_embedding', 'has_audio', 'audio_status', 'seconds', 'audio_encoder',
           'audio_dim', 'lead_rms')


def main():
    config.configure(globals())
    claim(OUTPUT)  # before any work: an output that cannot be written, or that another run writes
    index, extract_failures = read_index(AUDIO_DIR)
    embed_all(index, extract_failures)


class Status:
    """The values of audio_status."""
    OK = 'ok'
    NO_SPEECH = 'no speech'
    SILENT = 'silent'
    EMPTY = 'empty'
    NO_TRACK = 'no track'


HAS_AUDIO = (Status.OK, Status.NO_SPEECH)  # the statuses with a real embedding
# ImageNet's per-channel mean and std, which the torchvision CNNs were trained on
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_bands(n_mels, n_fft):
    """config.UserError where some of the n_mels mel bands hold no bin of an n_fft spectrum: librosa warns, twice,
    and those rows of every image are zero."""
    import librosa
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # said below, in one line
        basis = librosa.filters.mel(sr=_RATE, n_fft=n_fft, n_mels=n_mels)  # (n_mels, 1 + n_fft // 2)
    if empty := int((basis.max(axis=1) <= 0).sum()):
        raise config.UserError(f'--n_mels={n_mels} is too many bands for --n_fft={n_fft} (a {1 + n_fft // 2}-bin '
                               f'spectrum): {empty} would hold no bin; give a larger --n_fft or fewer --n_mels')


class AudioEmbedder:
    """A waveform in, (embedding (D,) float32, status) out; the weights load once.

    predict.py uses this object too, on the array extract_audio.decode_audio gives, so that the two paths
    give the same numbers.

    The encoders (AUDIO_ENCODER), on mel spectrograms made with librosa:
    - 'resemblyzer' (default): Resemblyzer's pretrained voice encoder (a 3-layer LSTM on 40-band mel
      frames, 256-d, trained for speaker verification), with the weights its package ships, so it works
      offline. As Resemblyzer does, the volume is normalised and silences longer than ~0.2 s are cut by
      webrtcvad before embedding; the embedding is the normalised mean over 1.6 s windows. A speaker
      embedding is what a voice swap changes.
    - 'cnn': the README's "pretrained convolutional network on the spectrogram": a log-mel image (N_MELS
      bands, 10 ms hop, dB relative to the track's loudest bin, TOP_DB range, low frequencies at the bottom
      as a plotted spectrogram has them) through an ImageNet CNN from torchvision, whose globally pooled
      features are the embedding. ResNet-18 by default, not the ResNeXt-50 of the notebook the README
      cites: its 512-d features are as wide as a face embedding instead of 2048-d, which would outweigh the
      video half in the classifier's concatenation, and it is faster (BENCHMARKS.md, Audio);
      --cnn_arch=resnext50_32x4d gives the notebook's network. Tracks longer than 1.5 CNN_WINDOW_SECONDS
      are embedded in near-equal windows of about that length and the embeddings averaged, so any length
      works.

    On a CPU it runs on THREADS torch threads (1 by default): Resemblyzer's LSTM is 160 tiny steps per
    1.6 s window, each a barrier for every thread, and on a machine whose cores other processes share a
    descheduled thread stalls each barrier; the CNN loses less (figures: BENCHMARKS.md, Audio). More cores
    are used by more processes (torchrun), not more threads.
    """

    def __init__(self, **settings):
        """settings: this module's shared settings, lower-case (audio_encoder='cnn', device='cpu', ...);
        the others are its constants."""
        self.cfg = c = config.settings(globals(), **settings)
        self.encoder = c['audio_encoder']
        self.device = pick_device(c['device'])
        if self.encoder == 'resemblyzer':
            self.net = voice_encoder(c['voice_weights'], self.device)
            self.dim = self.net.linear.out_features
            self.name = f'resemblyzer-{version("Resemblyzer")}'
            if c['voice_weights'] != 'resemblyzer':
                self.name += f'(file:{os.path.basename(c["voice_weights"])})'
        else:
            self.net = audio_cnn(c['cnn_weights'], c['cnn_arch']).to(self.device)
            self.dim = self.net.embedding_dim
            self.name = (f'cnn:{c["cnn_arch"]}:{self.net.weights_name}:logmel{c["n_mels"]}x{c["n_fft"]}/{c["hop"]}:'
                         f'{c["top_db"]:g}dB')
        # The first embedding imports librosa and has numba compile its kernels (seconds): here, with Ctrl-C held,
        # not in a video's work, where a Ctrl-C was dropped (the run went on) or became the video's failure
        with config.interrupt_held():
            if self.encoder == 'cnn':
                _check_bands(c['n_mels'], c['n_fft'])
            self(np.random.default_rng(0).standard_normal(_RATE).astype(np.float32) / 10)  # 1 s of noise

    def __call__(self, wav):
        """wav: (samples,) float32 at 16 kHz, any length."""
        with torch_threads(self.cfg['threads'] if self.device.type == 'cpu' else 0):
            return self._embed(wav)

    def _embed(self, wav):
        if wav.size == 0:
            return np.zeros(self.dim, np.float32), Status.EMPTY
        peak = float(np.abs(wav).max())
        # peak, not RMS: a track with any sound above the bar (one word in ten seconds) is not silent
        if peak <= 0 or 20 * np.log10(peak) < self.cfg['silence_dbfs']:
            return np.zeros(self.dim, np.float32), Status.SILENT
        embedding, status = (self._voice(wav) if self.encoder == 'resemblyzer' else self._cnn(wav))
        if not np.isfinite(embedding).all():
            raise VideoError(f'the {self.encoder} encoder gave a non-finite embedding')
        return embedding.astype(np.float32), status

    def _voice(self, wav):
        from resemblyzer import audio as rz_audio, hparams
        wav = rz_audio.normalize_volume(wav, hparams.audio_norm_target_dBFS, increase_only=True)
        voiced = rz_audio.trim_long_silences(wav)  # (<= samples,) the voiced stretches, short pauses kept
        # Music or noise without a voice leaves nothing: the whole track is embedded, and the row says so
        status = Status.OK if voiced.size else Status.NO_SPEECH
        return self.net.embed_utterance(voiced if voiced.size else wav), status

    def log_mel(self, wav):
        """(N_MELS, columns) float32 log-mel in dB, in [-TOP_DB, 0], row 0 the lowest band."""
        import librosa
        c = self.cfg
        if wav.size < c['n_fft']:  # a few milliseconds: zero-padded to one window, which is defined
            wav = np.pad(wav, (0, c['n_fft'] - wav.size))
        mel = librosa.feature.melspectrogram(y=wav, sr=_RATE, n_fft=c['n_fft'], hop_length=c['hop'],
                                             n_mels=c['n_mels'])
        return librosa.power_to_db(mel, ref=np.max, top_db=c['top_db']).astype(np.float32)

    def _cnn(self, wav):
        db = self.log_mel(wav)  # (N_MELS, T)
        top_db = self.cfg['top_db']
        # Low frequencies at the bottom, as in the plotted spectrograms the notebook fed its CNN
        image = (db[::-1] + top_db) / top_db  # (N_MELS, T) in [0, 1]
        n_windows = max(1, round(wav.size / _RATE / self.cfg['cnn_window_seconds']))
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        embeddings = []
        for piece in np.array_split(image, n_windows, axis=1):  # (N_MELS, ~T / n_windows) each
            x = torch.from_numpy(np.ascontiguousarray(piece)).expand(3, -1, -1)  # (3, N_MELS, t) grey
            x = ((x - mean) / std).unsqueeze(0).to(self.device)  # (1, 3, N_MELS, t)
            with torch.inference_mode(), autocast(self.device, self.cfg['amp']):
                embeddings.append(self.net(x).float().cpu())  # (1, D)
        return torch.cat(embeddings).mean(0).numpy(), Status.OK  # (D,)


def embed_row(embedder, entry, audio_dir):
    """The output row of one index entry (a dict of extract_audio.py's index). Raises VideoError."""
    row = {'filename': entry['filename'], 'folder': entry['folder']}
    if not entry['has_track']:
        embedding, status, seconds = np.zeros(embedder.dim, np.float32), Status.NO_TRACK, 0.0
    else:
        wav = ea.read_wav(os.path.join(audio_dir, entry['wav']), _RATE)
        if wav.size != entry['samples']:  # a WAV cut short (a full disk, a copy that stopped) or replaced since
            raise VideoError(f'{entry["wav"]} holds {wav.size} samples, the index records {entry["samples"]}: '
                             f'{"truncated" if wav.size < entry["samples"] else "replaced"} since extract_audio.py '
                             f'wrote it: rerun extract_audio.py into an empty --audio_dir')
        embedding, status = embedder(wav)
        seconds = wav.size / _RATE
    row.update(audio_embedding=embedding, has_audio=status in HAS_AUDIO, audio_status=status,
               seconds=seconds, audio_encoder=embedder.name, audio_dim=embedder.dim,
               lead_rms=float(entry.get('lead_rms', float('nan'))))  # an older index has none: NaN, not 0
    return row


def made_from(entry, audio_dir):
    """What an index entry's row is made from: its video's file (the index's source: a video extracted again from
    a changed file is embedded again) and its WAV's size and time (a WAV replaced or deleted since, too)."""
    if not isinstance(entry.get('source'), str):
        return None
    if not entry['has_track']:
        return entry['source']
    try:
        return entry['source'] + ' wav ' + ':'.join(map(str, stamp(os.path.join(audio_dir, entry['wav']))))
    except FileNotFoundError:
        return entry['source'] + ' wav absent'


def read_index(audio_dir):
    """extract_audio.py's index and failures: (DataFrame, {key: (folder, reason)}).
    Raises config.UserError where there is no finished index."""
    path = os.path.join(audio_dir, ea.INDEX)
    if not os.path.exists(path):
        raise config.UserError(f'{path} does not exist: run extract_audio.py --audio_dir={audio_dir} first')
    if os.path.isdir(path + '.parts') and os.listdir(path + '.parts'):
        raise config.UserError(f'{path}.parts exists: extract_audio.py did not finish; run it again first')
    index = read_pickle(path, f'delete it and rerun extract_audio.py --audio_dir={audio_dir}')
    if index.attrs.get('sample_rate') != _RATE:
        raise config.UserError(f'{audio_dir} holds WAVs at {index.attrs.get("sample_rate")} Hz; the encoders take '
                               f'{_RATE}: run extract_audio.py --sample_rate={_RATE} into another --audio_dir')
    return index, read_failures(path + '.failures.csv')


# where and how fast the embeddings are made, not what they are
_NOT_IN_NUMBERS = {'device', 'threads'}
# the settings of one encoder only: the other's are not recorded
_ONLY = {'resemblyzer': ('voice_weights',),
         'cnn': ('cnn_arch', 'cnn_weights', 'n_mels', 'n_fft', 'hop', 'top_db', 'cnn_window_seconds', 'amp')}


def numbers(cfg):
    """{'--name': value} of the settings of `cfg` (settings()'s) that the embeddings depend on: what an audio
    table records it was made with, for a rerun and predict.py (which takes them) to match."""
    other = {k for encoder, names in _ONLY.items() if encoder != cfg['audio_encoder'] for k in names}
    return config.recorded(globals(), cfg, _NOT_IN_NUMBERS | other)


def embed_all(index, extract_failures):
    """One process's share of the index; the last process to finish writes OUTPUT."""
    embedder = AudioEmbedder()  # this script's settings are its module's constants
    share_cpu()
    # a rerun with another encoder or settings is refused: its rows would sit beside these as one table
    run = StageRun(OUTPUT, RETRY_FAILED,
                   made_with={**numbers(embedder.cfg), 'embedder': f'{embedder.name} ({embedder.dim}-d)'})
    who = run.who
    run.record([(filename_of(k, folder), folder, f'audio extraction failed: {reason}')
                for k, (folder, reason) in extract_failures.items()])
    entries = [] if not len(index) else index.to_dict('records')
    todo = run.todo(entries, where=lambda e: (e['folder'], e['filename']), source=lambda e: made_from(e, AUDIO_DIR),
                    folders=index.attrs.get('parts', ()))  # a part whose every video was taken out
    print(f'{who}{embedder.name}, {embedder.dim}-d, on {embedder.device}: {len(entries)} videos in the '
          f'index, {run.done_before} done before, {len(todo)} to embed')
    for entry in tqdm(todo, desc=f'{who}embed audio', unit='video'):
        with run.video(entry['filename'], entry['folder']):
            run.add({'filename': entry['filename'], 'folder': entry['folder'],
                     'rows': [embed_row(embedder, entry, AUDIO_DIR)]})
    if not run.merging(OUTPUT):
        return
    table, failures = run.finish(lambda rec: rec['rows'], attrs={'audio_encoder': embedder.name,
                                                                 'audio_dim': embedder.dim}, columns=COLUMNS)
    counts = table['audio_status'].value_counts().to_dict() if len(table) else {}
    print(f'{OUTPUT}: {len(table)} videos ({", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"}); '
          f'{len(failures)} failed')
    print_failures(failures, run.failures_path, SHOW, made=len(table))


if __name__ == '__main__':
    config.cli(main)
