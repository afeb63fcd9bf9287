"""Face-embedding sequences of every video of a DFDC-style dataset.

Reads DATA_DIR: every folder under it (itself included) with a metadata.json is a DFDC part; the videos it
lists are run through DetectionPipeline.py (videos on disk that it does not list are skipped and counted).
Writes OUTPUT, a pandas pickle with one row per video (one per face track with --keep_all_tracks):
filename and folder (together the key of every stage), video_embedding (faces, D) float16 (D: 512 with
--face_encoder=facenet, 1024 with gend or clip), label (1 = FAKE), original (the REAL video a FAKE was made
from), split (the entry's: Celeb-DF-v2's test list is 'test'), frames (faces,) int32, n_frames, boxes (faces,
4) float32 x1 y1 x2 y2, track (0: the largest), width, height, embedder, source (what it was made from); with
gend also frame_logits (faces,) float32, GenD's FAKE logit a face (faces/clip.py's video_score). And
OUTPUT.failures.csv (filename, folder, reason, source): unreadable, truncated or missing videos, no face,
a bad metadata.json or entry, unexpected errors.
Resumable: each finished video is saved at once (OUTPUT.parts/); a rerun does what is left, new videos and
replaced or relabelled ones, and refuses other face settings (OUTPUT's attrs record them). On a GPU one
process uses the whole machine: DetectionPipeline.py's --workers decoding processes feed its networks.
Several processes split the work (common/stage.py): `torchrun --standalone --nproc_per_node=4
create_video_embeddings.py ...` (one per GPU; machines: README) or a SLURM array (sbatch --array=0-63).

Example:
    python create_video_embeddings.py --data_dir=../shared/testdata/dfdc_sample --output=video.pkl \
        --face_weights=none
"""
from common import config
config.help_if_asked(__name__, __file__, 'DetectionPipeline.py')  # -h: answered before the heavy imports

import time

from tqdm import tqdm

import DetectionPipeline as dp
from common.dataset import label_of, plan, row_keys, source_of
from common.device import share_cpu
from common.stage import StageRun, claim, print_failures
from common.video import VideoError, check_file
from common.weights import has_head

# ----------------------------------------------------------------------------- config
DATA_DIR = 'data/sample'        # folder tree with DFDC parts (folders with a metadata.json)
OUTPUT = 'video_embeddings.pkl'  # the table; OUTPUT.failures.csv and OUTPUT.parts/ beside it
RETRY_FAILED = False            # a rerun tries the failed videos again (else they stay failed)
# -----------------------------------------------------------------------------

COLUMNS = ('filename', 'video_embedding', 'label', 'original', 'folder', 'frames', 'n_frames', 'boxes', 'track',
           'width', 'height', 'embedder', 'embedder_digest', 'split')


def rows_of(record):
    return record['rows']


def main():
    face, = config.configure(globals(), dp)  # DetectionPipeline.py's settings given here
    claim(OUTPUT)  # before any work: an output that cannot be written, or that another run writes
    parts = []  # every part read, one that lists no video now too: the rows of a video taken out are dropped
    videos = plan(DATA_DIR, parts)
    embed(*videos, face, parts)


def embed(todo, bad, skipped, face, parts=()):
    """One process's share of plan()'s videos (`parts`: plan()'s), with the pipeline's settings `face` (a dict of
    overrides); the last process to finish writes OUTPUT."""
    share_cpu()
    cfg = dp.settings(**face)
    # a rerun with other face settings or weights is refused: its rows would sit beside these as one table
    run = StageRun(OUTPUT, RETRY_FAILED, made_with=dp.made_with(cfg))
    who = run.who
    columns = COLUMNS + (('frame_logits',) if has_head(cfg['face_encoder']) else ())
    run.record(bad)
    todo = run.todo(todo, where=lambda t: t[:2], source=lambda t: source_of(t, split=True),  # rows record it
                    folders=parts)
    # before the plan line: a wrong --device or weights file is refused before it says what it will do
    pipeline = dp.DetectionPipeline(**face) if todo else None
    print(f'{who}{len(todo)} videos to embed ({run.done_before} done before, {skipped} without a metadata '
          f'entry skipped) from {DATA_DIR}')
    if todo:
        embedder = pipeline.embedder_name, pipeline.nets.weights_digest
        t0 = time.perf_counter()  # the video work starts (bench/bench_scale.py reads the line it ends with)
        by_path = {}
        paths = []
        for rel, name, path, entry in todo:
            with run.video(name, rel):
                check_file(path)
                by_path[path] = (rel, name, entry)
                paths.append(path)
        bar = tqdm(pipeline.stream(paths), total=len(paths), unit='video', desc=f'{who}video embeddings')
        for path, result, _ in bar:
            rel, name, entry = by_path[path]
            with run.video(name, rel):
                if isinstance(result, Exception):
                    raise result
                if not result.tracks:
                    raise VideoError(result.no_face())
                run.add({'filename': name, 'folder': rel, 'rows': table_rows(result, name, rel, entry, *embedder)})
        seconds = time.perf_counter() - t0
        print(f'{who}{len(todo)} videos in {seconds:.2f} s of video work ({seconds / len(todo):.2f} s a video)')
    if not run.merging(OUTPUT):
        return
    table, failures = run.finish(rows_of, sort_by=('folder', 'filename', 'track'), columns=columns)
    embedders = sorted(set(table['embedder'])) if len(table) else []
    print(f'{OUTPUT}: {len(set(row_keys(table)))} videos '
          f'({len(table)} rows), embedder {", ".join(embedders) or "-"}; '
          f'{len(failures)} failed (see {run.failures_path}), {skipped} skipped without a '
          f'metadata entry')
    print_failures(failures, run.failures_path, made=len(table))


def table_rows(result, name, rel, entry, embedder, digest=None):
    """OUTPUT's rows of one video: one per face track of `result` (a VideoFaces with tracks); `embedder`, `digest`:
    the face weights' name and tensors' digest (Nets.weights_digest; None: untrained)."""
    return [{
        'filename': name,
        'video_embedding': track.embeddings,
        'label': label_of(entry),
        'original': entry.get('original'),
        'folder': rel,
        'frames': track.frames,
        'n_frames': result.n_frames,
        'boxes': track.boxes,
        'track': k,
        'width': result.width,
        'height': result.height,
        'embedder': embedder,
        'embedder_digest': digest,
        'split': entry.get('split'),  # test.py's breakdown: Celeb-DF-v2's test list
        **({} if track.logits is None else {'frame_logits': track.logits}),
    } for k, track in enumerate(result.tracks)]


if __name__ == '__main__':
    config.cli(main)
