"""test.py's shortcut check: how well one cue alone, which a detector should not need, separates the scored
videos, against the full model on the same videos. The cues:
  audio         the checkpoint's audio-only model (model.fallback_logit: 0 for a video without audio)
  lead_silence  the RMS of the first 0.5 s of the audio (extract_audio.leading_rms): fakes of FakeAVCeleb and
                AV-Deepfake1M start with silence (AVH-Align, CVPR 2025)
  face_size     the face track's size in pixels (common.store.face_size, from the table's boxes)
A cue is scored by ROC AUC over the videos that have it, and so is the model on those videos. A raw cue
(lead_silence, face_size) is a shortcut whichever way it points, so its `separation` is max(AUC, 1 - AUC); the
audio model's is its AUC. One warning line where a cue's separation comes within MARGIN of the model's AUC,
and beats chance (0.5) by more than MARGIN and by more than CHANCE_SDS standard deviations of a chance AUC on
that many videos: a cue at chance separates nothing, however poor the model, and on a few videos (main.sh's
sample: one real, one fake) any cue separates them perfectly by chance alone.
A cue the table or checkpoint lacks is unavailable, with the reason, never zero.
"""
import numpy as np

from common import metrics
from model import fallback_logit

MARGIN = 0.02  # a cue this close to the full model's ROC AUC (or above it) is warned about
RAW = ('lead_silence', 'face_size')  # cues without a direction of their own
CHANCE_SDS = 3  # a separation within this many of chance_sd() above 0.5 is what chance gives


def chance_sd(n_real, n_fake):
    """The standard deviation of the ROC AUC of a score that is independent of the labels (Mann-Whitney's U over
    n_real * n_fake, without ties)."""
    return float(np.sqrt((n_real + n_fake + 1) / (12 * n_real * n_fake)))


def cues(table, indices, audio_only):
    """{cue: (scores (videos,) float64 with NaN where a video lacks it, or None, why it is unavailable)} of
    the Store's videos `indices`."""
    def stored(values, what):
        if values is None:
            return None, f'the table has no {what}: made before it was recorded; make the table again'
        return np.asarray(values, np.float64)[indices], None
    audio = ((np.array([fallback_logit(audio_only, table.audio[i], table.has_audio[i]) for i in indices]), None)
             if audio_only else (None, 'no audio-only model (no checkpoint, or one without it)'))
    return {'audio': audio,
            'lead_silence': stored(table.lead_rms, "audio's leading RMS (extract_audio.py's lead_rms)"),
            'face_size': stored(table.face_size, 'face boxes')}


def check(y, p, found, margin=MARGIN):
    """The report's 'shortcuts' dict of labels y, the model's p and cues(): each cue's figures, the margin, and
    'warning': the warning line, or None."""
    y, p = np.asarray(y).astype(int), np.asarray(p, np.float64)
    out, close = {}, []
    for name, (scores, why) in found.items():
        if scores is None:
            out[name] = {'roc_auc': None, 'note': f'unavailable: {why}'}
            continue
        has = np.isfinite(scores)
        auc, why = metrics.roc_auc(y[has], scores[has])
        model, _ = metrics.roc_auc(y[has], p[has])
        entry = {'roc_auc': auc, 'n_videos': int(has.sum()), 'model_roc_auc': model}
        if auc is None:
            out[name] = {**entry, 'note': f'unavailable: {why}'}
            continue
        entry['separation'] = max(auc, 1 - auc) if name in RAW else auc
        entry['chance_sd'] = chance_sd(int((y[has] == 0).sum()), int((y[has] == 1).sum()))  # both > 0: auc is one
        out[name] = entry
        beats_chance = entry['separation'] > 0.5 + max(margin, CHANCE_SDS * entry['chance_sd'])
        if model is not None and entry['separation'] >= model - margin and beats_chance:
            close.append(f'{name} {entry["separation"]:.4f} (the model {model:.4f} on the same videos)')
    warning = (f'warning: shortcut check: a cue alone separates real from fake within {margin} ROC AUC of the model '
               f'or better: {"; ".join(close)}; see the report\'s shortcuts' if close else None)
    return {**out, 'margin': margin, 'warning': warning}
