"""The one table that training reads: the video table and the audio table joined on each video's folder and
file name (two DFDC-style parts may hold the same file name).

Reads VIDEO_TABLE (create_video_embeddings.py's pickle), AUDIO_TABLE (create_audio_embedding.py's), and
the failures files beside them, to say why a video has no match. Writes
  OUTPUT        a pandas pickle: every row of the video table with all its columns, plus audio_embedding
                (A,) float32 (zeros without audio), has_audio, audio_status ('ok', 'no speech', 'silent',
                'empty', 'no track', 'audio failed: <reason>', 'not in the audio table'), audio_seconds,
                audio_encoder, audio_dim; attrs: video_embedder, video_dim, audio_encoder, audio_dim (and
                video_embedder_digest: the face weights' tensors, where the video table recorded them)
  OUTPUT.store/ the training store that training.py, test.py and predict.py read (common/store.py)
  OUTPUT.failures.csv  the videos left out, with the reason: those of the audio table without a video row
Prints how many videos matched an audio row, and which did not (or have no audio) and why, and the audio
rows without a video. Tables that mix embedders or dimensions, and a missing, unreadable or empty table,
are refused in one line (exit code 2): a model trained on mixed embeddings would learn noise. Rerun with
its inputs unchanged and the store in place, it does nothing.

Example:
    python merge_embeddings.py --video_table=out/video_embeddings.pkl \\
        --audio_table=out/audio_embeddings.pkl --output=out/merged.pkl
"""
from common import config
config.help_if_asked(__name__, __file__)  # -h: answered before the heavy imports

import json
import os

import numpy as np

from common import store
from common.dataset import row_keys
from common.files import read_pickle, shown, stamps
from common.stage import claim, read_failures, sources_of, write_failures

# ----------------------------------------------------------------------------- config
VIDEO_TABLE = 'video_embeddings.pkl'  # create_video_embeddings.py's output
AUDIO_TABLE = 'audio_embeddings.pkl'  # create_audio_embedding.py's output
OUTPUT = 'merged.pkl'       # the merged table
SHOW = 20                   # videos listed by name in each group of the report (all are counted)
# -----------------------------------------------------------------------------

VIDEO_COLUMNS = ('filename', 'video_embedding', 'label', 'original', 'folder')
AUDIO_COLUMNS = ('filename', 'folder', 'audio_embedding', 'has_audio', 'audio_status', 'audio_encoder',
                 'audio_dim')
ON = ['folder', 'filename']  # a video's key: the two tables' rows of one video


def main():
    config.configure(globals())
    # before any work: an output that cannot be written, is an input, or that another merge writes (it would
    # remove the files this one writes)
    claim(OUTPUT, reads=(VIDEO_TABLE, AUDIO_TABLE))
    # the very files it was made from (paths, sizes, mtimes), not only files older than it: another pair of
    # tables merged into the same output is merged, however old; stamped before reading, so that a table
    # rewritten while this runs is merged again next time
    made_with = {'inputs': stamps((VIDEO_TABLE, AUDIO_TABLE, VIDEO_TABLE + '.failures.csv',
                                   AUDIO_TABLE + '.failures.csv'))}
    up_to_date = (os.path.exists(OUTPUT) and os.path.exists(VIDEO_TABLE) and os.path.exists(AUDIO_TABLE)
                  and store.is_current(OUTPUT, made_with))
    if up_to_date:  # a missing table is still read_table's one-line error, output or not
        # rewriting it would make training see another table (its resume checks the file)
        print(f'{OUTPUT} is up to date: made from {VIDEO_TABLE} and {AUDIO_TABLE} as they are now; nothing to merge')
        return
    video = read_table(VIDEO_TABLE, 'video table', 'create_video_embeddings.py')
    audio = read_table(AUDIO_TABLE, 'audio table', 'create_audio_embedding.py')
    video_failures = read_failures(VIDEO_TABLE + '.failures.csv')
    table, lines = merge(video, audio, read_failures(AUDIO_TABLE + '.failures.csv'), video_failures, VIDEO_TABLE,
                         AUDIO_TABLE)
    print('\n'.join(lines))
    write_failures(OUTPUT + '.failures.csv', left_out(row_keys(table), audio, video_failures))
    # so that a stage given OUTPUT as its own refuses it (common.stage); the store records the inputs
    table.attrs['made_with'] = {'merge_embeddings.py': 'the merged table'}
    store.save(table, OUTPUT, made_with)  # the pickle, and the store that training, test.py and predict.py read
    n_audio = int(table.drop_duplicates(ON)['has_audio'].sum())
    print(f'{OUTPUT}: {len(table)} rows, {n_audio} videos with audio; training store {store.store_dir(OUTPUT)}')


def read_table(path, what, script):
    if not os.path.exists(path):
        raise config.UserError(f'{what} {path} does not exist')
    return read_pickle(path, f'make it again with {script} (delete it and rerun that)')


def _one(values, what, path):
    """The single value of `values`, or config.UserError naming them all."""
    values = sorted(set(values))  # all str or all int: the callers convert
    if len(values) != 1:
        raise config.UserError(f'{path} mixes {what}: {", ".join(map(str, values))}; '
                               f'make it again with one setting')
    return values[0]


def _not_merged(table, path, script):
    """config.UserError where `table` is a merged one: as an input it merged again with its own audio kept beside
    the new table's settings, and lost its face settings."""
    if {'video_embedding', 'audio_embedding'} <= set(table.columns):
        raise config.UserError(f'{path} is a merged table (merge_embeddings.py\'s), not a {script} table: give the '
                               f'table it was made from')


def check_video(video, path='the video table'):
    """(embedder, D, digest of its weights' tensors or None) of a video table; config.UserError where columns lack or
    it mixes embedders, weights or D."""
    _not_merged(video, path, 'create_video_embeddings.py')
    missing = [c for c in VIDEO_COLUMNS if c not in video.columns]
    if missing:
        raise config.UserError(f'{path} has no column {", ".join(missing)}: not a create_video_embeddings.py table')
    if not len(video):
        raise config.UserError(f'{path} has no rows: no video was embedded (its .failures.csv says why)')
    flat = [name for name, e in zip(video['filename'], video['video_embedding']) if np.ndim(e) != 2]
    if flat:
        raise config.UserError(f'{path}: the video_embedding of {flat[0]} is not (faces, D)')
    dim = _one([int(np.shape(e)[1]) for e in video['video_embedding']], 'face embedding sizes', path)
    embedder = (_one(video['embedder'].astype(str), 'face embedders', path) if 'embedder' in video
                else 'unknown')
    digests = [d for d in video.get('embedder_digest', ()) if isinstance(d, str)]  # None: untrained, or older rows
    return embedder, int(dim), _one(digests, 'face weights (their tensors\' digests)', path) if digests else None


def check_audio(audio, path='the audio table'):
    """(encoder, A) of an audio table; config.UserError where columns lack, it mixes encoders or A, or it has
    a file name twice."""
    _not_merged(audio, path, 'create_audio_embedding.py')
    missing = [c for c in AUDIO_COLUMNS if c not in audio.columns]
    if missing:
        raise config.UserError(f'{path} has no column {", ".join(missing)}: not a create_audio_embedding.py table')
    if not len(audio):
        raise config.UserError(f'{path} has no rows: no audio was embedded (its .failures.csv says why)')
    encoder = _one(audio['audio_encoder'].astype(str), 'audio encoders', path)
    dim = _one([int(d) for d in audio['audio_dim']] + [int(np.size(e)) for e in audio['audio_embedding']],
               'audio embedding sizes', path)
    twice = audio[audio.duplicated(ON)]
    if len(twice):
        raise config.UserError(f'{path} has {len(twice)} videos twice, e.g. {row_keys(twice)[0]}')
    return encoder, int(dim)


def check_sources(video, audio, video_path, audio_path):
    """config.UserError where a video's two rows were made from different files: its file changed (replaced,
    re-encoded) between the stages, and its faces would be joined with another file's voice. The sources are
    common.dataset.source_of's, 'size:mtime:label:original'; only the file's part is compared."""
    audio_files, video_files = ({k: s.split(':')[:2] for k, s in sources_of(t).items()} for t in (audio, video))
    changed = [k for k, f in video_files.items() if audio_files.get(k, f) != f]
    if changed:
        raise config.UserError(f'{len(changed)} videos differ between the stages: their rows in {video_path} and '
                               f'{audio_path} were made from files of another size or time (a file replaced since, '
                               f'or two copies of the data: cp without -a), e.g. {sorted(changed)[0]}: run both '
                               f'stages on the same --data_dir (each redoes the videos whose file changed), then '
                               f'the merge')


def merge(video, audio, audio_failures=None, video_failures=None, video_path='the video table',
          audio_path='the audio table'):
    """(merged table, report lines). Raises config.UserError for tables that cannot be merged.

    audio_failures / video_failures: {key: (folder, reason)} of the stages' failures files (read_failures)."""
    embedder, video_dim, digest = check_video(video, video_path)
    encoder, audio_dim = check_audio(audio, audio_path)
    check_sources(video, audio, video_path, audio_path)
    audio_failures, video_failures = audio_failures or {}, video_failures or {}
    keep = [c for c in audio.columns if c not in video.columns or c in ON]
    side = audio[keep].rename(columns={'seconds': 'audio_seconds'})
    # many_to_one: a video table that keeps every face track has one row per track, each gets the audio
    table = video.merge(side, on=ON, how='left', validate='many_to_one', indicator=True)
    matched = (table['_merge'] == 'both').to_numpy()
    table = table.drop(columns='_merge')
    zero = np.zeros(audio_dim, np.float32)
    names = row_keys(table)
    if len(table) and not matched.any():  # a --data_dir given a level up or down to one stage, or two datasets
        raise config.UserError(f'no video of {video_path} is in {audio_path} (e.g. {names[0]}; there, e.g. '
                               f'{row_keys(audio)[0]}): make both from the same --data_dir')
    for i in np.flatnonzero(~matched):
        table.at[i, 'audio_status'] = (f'audio failed: {audio_failures[names[i]][1]}' if names[i] in audio_failures
                                       else 'not in the audio table')
    table['audio_embedding'] = [e if ok else zero for e, ok in zip(table['audio_embedding'], matched)]
    table['has_audio'] = [bool(h) and ok for h, ok in zip(table['has_audio'], matched)]
    table['audio_encoder'], table['audio_dim'] = encoder, audio_dim
    if 'audio_seconds' in table:
        table['audio_seconds'] = table['audio_seconds'].fillna(0.0).astype(float)
    table.attrs.update(video_embedder=embedder, video_dim=video_dim, audio_encoder=encoder, audio_dim=audio_dim,
                       **({'video_embedder_digest': digest} if digest else {}))  # model.check_embedder
    # the settings each table records it was made with (common.stage's made_with): predict.py takes them
    for what, made in (('face', video.attrs.get('made_with')), ('audio', audio.attrs.get('made_with'))):
        if made:
            table.attrs[f'{what}_settings'] = json.dumps({k: v for k, v in made.items() if k.startswith('--')})
            table.attrs.update({k: made[k] for k in ('face_weights',) if k in made})

    videos = table.drop_duplicates(ON)
    video_keys, audio_keys = row_keys(videos), row_keys(audio)
    n_matched = len(set(video_keys) & set(audio_keys))
    lines = [f'{len(videos)} videos in {video_path} ({embedder}, {video_dim}-d), {len(table)} rows; '
             f'{n_matched} matched an audio row of {audio_path} ({encoder}, {audio_dim}-d), '
             f'{len(videos) - n_matched} did not']
    return table, lines + unmatched(videos, audio, video_failures)


def left_out(video_keys, audio, video_failures):
    """{key: (folder, reason)} of the audio table's videos without a video row, which the merge leaves out."""
    have, folders = set(video_keys), audio['folder'] if 'folder' in audio else [''] * len(audio)
    return {k: (folder, f'video failed: {video_failures[k][1]}' if k in video_failures else 'not in the video table')
            for k, folder in zip(row_keys(audio), folders) if k not in have}


def unmatched(videos, audio, video_failures):
    """The report's lines on the videos without audio (and why), and the audio rows without a video."""
    lines = []
    silent = videos[~videos['has_audio']]
    if len(silent):
        lines.append(f'{len(silent)} videos without audio (zero embedding, has_audio False):')
        lines += [f'  {shown(name)}: {shown(status)}'
                  for name, status in zip(row_keys(silent.head(SHOW)), silent['audio_status'])]
        if len(silent) > SHOW:
            lines.append(f'  ... and {len(silent) - SHOW} more (audio_status says why)')
    orphans = sorted(left_out(row_keys(videos), audio, video_failures).items())
    if len(orphans):
        lines.append(f'{len(orphans)} audio rows have no video row (left out):')
        lines += [f'  {shown(name)}: {shown(reason)}' for name, (_, reason) in orphans[:SHOW]]
        if len(orphans) > SHOW:
            lines.append(f'  ... and {len(orphans) - SHOW} more')
    return lines


if __name__ == '__main__':
    config.cli(main)
