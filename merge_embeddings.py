"""The one table that training reads: the video table and the audio table joined on the file name.

Reads VIDEO_TABLE (create_video_embeddings.py's pickle: filename, video_embedding (faces, D) float16, label,
original, folder, frames, n_frames, embedder, ...) and AUDIO_TABLE (create_audio_embedding.py's pickle:
filename, audio_embedding (A,) float32, has_audio, audio_status, audio_encoder, audio_dim, ...), and the
failures files beside them, to say why a video has no match.
Writes OUTPUT, a pandas pickle: every row of the video table, with all its columns, and
  audio_embedding   (A,) float32; zeros where the video has no audio
  has_audio         False where the video has no audio track, an empty or a silent one, or no audio row
                    (its audio failed): the zero embedding is then not a sound, and the network can tell
  audio_status      why: 'ok', 'no speech', 'silent', 'empty', 'no track', or, for a video the audio table
                    does not have, 'audio failed: <reason>' / 'not in the audio table'
  audio_seconds, audio_encoder, audio_dim
and in its attrs: video_embedder, video_dim, audio_encoder, audio_dim.
Prints how many videos matched an audio row, and which did not (or have no audio) and why; audio rows
without a video are counted and listed too, with the video step's reason where it has one.

Tables that mix embedders or dimensions (a resumed run with other settings, shards of two runs) are refused
with one line and exit code 2, as is a missing table: a model trained on mixed embeddings would learn noise.

Example:
    python merge_embeddings.py --video_table=out/video_embeddings.pkl \\
        --audio_table=out/audio_embeddings.pkl --output=out/merged.pkl
"""
import os
import sys

import numpy as np
import pandas as pd

from common import config
from common.stage import StageError, read_failures, write_pickle

# ----------------------------------------------------------------------------- config
VIDEO_TABLE = 'video_embeddings.pkl'  # create_video_embeddings.py's output
AUDIO_TABLE = 'audio_embeddings.pkl'  # create_audio_embedding.py's output
OUTPUT = 'merged.pkl'       # the merged table
SHOW = 20                   # videos listed by name in each group of the report (all are counted)
# -----------------------------------------------------------------------------

VIDEO_COLUMNS = ('filename', 'video_embedding', 'label', 'original', 'folder')
AUDIO_COLUMNS = ('filename', 'audio_embedding', 'has_audio', 'audio_status', 'audio_encoder', 'audio_dim')


def read_table(path, what):
    if not os.path.exists(path):
        raise StageError(f'{what} {path} does not exist')
    table = pd.read_pickle(path)
    if not isinstance(table, pd.DataFrame):
        raise StageError(f'{what} {path} is a {type(table).__name__}, not a pandas table')
    return table


def _one(values, what, path):
    """The single value of `values`, or StageError naming them all."""
    values = sorted(set(values))  # all str or all int: the callers convert
    if len(values) != 1:
        raise StageError(f'{path} mixes {what}: {", ".join(map(str, values))}; '
                         f'make it again with one setting')
    return values[0]


def check_video(video, path='the video table'):
    """(embedder, D) of a video table; StageError where columns lack or it mixes embedders or D."""
    missing = [c for c in VIDEO_COLUMNS if c not in video.columns]
    if missing:
        raise StageError(f'{path} has no column {", ".join(missing)}: not a create_video_embeddings.py table')
    if not len(video):
        raise StageError(f'{path} has no rows')
    flat = [name for name, e in zip(video['filename'], video['video_embedding']) if np.ndim(e) != 2]
    if flat:
        raise StageError(f'{path}: the video_embedding of {flat[0]} is not (faces, D)')
    dim = _one([int(np.shape(e)[1]) for e in video['video_embedding']], 'face embedding sizes', path)
    embedder = (_one(video['embedder'].astype(str), 'face embedders', path) if 'embedder' in video
                else 'unknown')
    return embedder, int(dim)


def check_audio(audio, path='the audio table'):
    """(encoder, A) of an audio table; StageError where columns lack, it mixes encoders or A, or it has
    a file name twice."""
    missing = [c for c in AUDIO_COLUMNS if c not in audio.columns]
    if missing:
        raise StageError(f'{path} has no column {", ".join(missing)}: not a create_audio_embedding.py table')
    if not len(audio):
        raise StageError(f'{path} has no rows')
    encoder = _one(audio['audio_encoder'].astype(str), 'audio encoders', path)
    dim = _one([int(d) for d in audio['audio_dim']] + [int(np.size(e)) for e in audio['audio_embedding']],
               'audio embedding sizes', path)
    twice = audio['filename'][audio['filename'].duplicated()]
    if len(twice):
        raise StageError(f'{path} has {len(twice)} file names twice, e.g. {twice.iloc[0]}')
    return encoder, int(dim)


def merge(video, audio, audio_failures=None, video_failures=None, video_path='the video table',
          audio_path='the audio table'):
    """(merged table, report lines). Raises StageError for tables that cannot be merged.

    audio_failures / video_failures: {filename: (folder, reason)} of the stages' failures files."""
    embedder, video_dim = check_video(video, video_path)
    encoder, audio_dim = check_audio(audio, audio_path)
    audio_failures, video_failures = audio_failures or {}, video_failures or {}
    keep = [c for c in audio.columns if c not in video.columns or c == 'filename']
    side = audio[keep].rename(columns={'seconds': 'audio_seconds'})
    # many_to_one: a video table that keeps every face track has one row per track, each gets the audio
    table = video.merge(side, on='filename', how='left', validate='many_to_one', indicator=True)
    matched = (table['_merge'] == 'both').to_numpy()
    table = table.drop(columns='_merge')
    zero = np.zeros(audio_dim, np.float32)
    reasons = []
    for i in np.flatnonzero(~matched):
        name = table.at[i, 'filename']
        reason = (f'audio failed: {audio_failures[name][1]}' if name in audio_failures
                  else 'not in the audio table')
        reasons.append(reason)
        table.at[i, 'audio_status'] = reason
    table['audio_embedding'] = [e if ok else zero for e, ok in zip(table['audio_embedding'], matched)]
    table['has_audio'] = [bool(h) and ok for h, ok in zip(table['has_audio'], matched)]
    table['audio_encoder'], table['audio_dim'] = encoder, audio_dim
    if 'audio_seconds' in table:
        table['audio_seconds'] = table['audio_seconds'].fillna(0.0).astype(float)
    table.attrs.update(video_embedder=embedder, video_dim=video_dim, audio_encoder=encoder,
                       audio_dim=audio_dim)

    videos = table.drop_duplicates('filename')
    n_matched = int(videos['filename'].isin(audio['filename']).sum())
    lines = [f'{len(videos)} videos in {video_path} ({embedder}, {video_dim}-d), {len(table)} rows; '
             f'{n_matched} matched an audio row of {audio_path} ({encoder}, {audio_dim}-d), '
             f'{len(videos) - n_matched} did not']
    silent = videos[~videos['has_audio']]
    if len(silent):
        lines.append(f'{len(silent)} videos without audio (zero embedding, has_audio False):')
        lines += [f'  {r.filename}: {r.audio_status}' for r in silent.head(SHOW).itertuples()]
        if len(silent) > SHOW:
            lines.append(f'  ... and {len(silent) - SHOW} more (audio_status says why)')
    orphans = audio[~audio['filename'].isin(videos['filename'])]
    if len(orphans):
        lines.append(f'{len(orphans)} audio rows have no video row (left out):')
        lines += [f'  {name}: ' + (f'video failed: {video_failures[name][1]}' if name in video_failures
                                   else 'not in the video table')
                  for name in orphans['filename'].head(SHOW)]
        if len(orphans) > SHOW:
            lines.append(f'  ... and {len(orphans) - SHOW} more')
    return table, lines


def main():
    config.configure(globals())
    try:
        video = read_table(VIDEO_TABLE, 'video table')
        audio = read_table(AUDIO_TABLE, 'audio table')
        table, lines = merge(video, audio, read_failures(AUDIO_TABLE + '.failures.csv'),
                             read_failures(VIDEO_TABLE + '.failures.csv'), VIDEO_TABLE, AUDIO_TABLE)
    except StageError as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2) from None
    print('\n'.join(lines))
    write_pickle(table, OUTPUT)
    n_audio = int(table.drop_duplicates('filename')['has_audio'].sum())
    print(f'{OUTPUT}: {len(table)} rows, {n_audio} videos with audio')


if __name__ == '__main__':
    config.cli(main)
