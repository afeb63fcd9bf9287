"""predict.py --explain: one PNG per video, to see why it got its probability.

Above, the probability of FAKE of every window the network read (model.window_starts: `crop` consecutive
faces at `stride`), each drawn as a segment over the frames it covers with a dot at its centre face, and the
video's own probability (what the submission holds: the mean logit over the windows, moved to PRIOR and
clipped) as a horizontal line. The windows' probabilities are moved to PRIOR too but not clipped. Below, a
strip of crops of the face track the windows came from, at evenly spaced frames (marked above by dotted
lines): the sampled frames are decoded again (common/video.py, the one decoder) and cropped as the pipeline
crops them (faces/images.py: FaceNet's box, margin and size; GenD's alignment on the landmarks), so they are
what the face embedder saw. A video the network did not score has its fallback reason in the title; one
without a face is a figure that says so. Nothing here changes a probability.
"""
import contextlib
import os
import textwrap

import numpy as np

from common.files import fit_name
from common.video import VideoError, sampled_frames
from faces import images
from model import sigmoid

N_CROPS = 8  # faces in the strip


def png_path(folder, video_folder, filename):
    """The figure of video `filename` in subfolder `video_folder` of INPUT ('' at its top): the same tree
    under `folder`, so two videos of one name in two subfolders get two figures (a name too long for the file
    system: common.files.fit_name's)."""
    return os.path.join(folder, *[p for p in video_folder.split('/') if p], fit_name(filename, '.png'))


def face_strip(path, track, cfg, n=N_CROPS):
    """[(frame index, (size, size, 3) uint8 crop)] of up to n faces of `track`, evenly spaced along it, as the
    face encoder saw them (faces/pipeline.py's embed_tracks): FaceNet's box with its margin, a ViT's (GenD's)
    face aligned on its landmarks. Raises VideoError where the video cannot be decoded again."""
    positions = np.unique(np.linspace(0, len(track.frames) - 1, min(n, len(track.frames))).round().astype(int))
    wanted = {int(track.frames[p]): p for p in positions}
    crops = {}
    # the track's frames are sampled ones (multiples of the frame step): the same decoder, the same step
    with contextlib.closing(sampled_frames(path, cfg['frame_step'])) as frames:
        for index, rgb in frames:
            if index in wanted:
                p = wanted[index]
                crops[index] = (images.crop(rgb, track.boxes[p], cfg['margin'], cfg['face_size'])
                                if cfg['face_encoder'] == 'facenet' else images.align(rgb, track.landmarks[p]))
                if len(crops) == len(wanted):
                    break
    return sorted(crops.items())


def draw(png, path, name, result, faces, cfg, windows=None, crop=0, shift=0.0):
    """Write the figure of one video to `png` (atomically).

    result: its predict.Prediction; faces: its faces.pipeline.VideoFaces (None where the video was not read),
    whose first track is the one the network read; windows: (starts (windows,), logits (windows,)) of the network
    over that track, or None where it did not score the video;
    crop: the checkpoint's window length in faces; shift: the logit shift to PRIOR (model.prior_shift)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    from common.metrics import save_figure  # here: scikit-learn, which it imports, is not needed otherwise

    title = f'{name}: p(FAKE) = {result.p_fake:.4f}'
    if result.fallback:  # a note where the network scored it all the same (without its audio: predict.py)
        title += '\n' + textwrap.fill(f'{"note" if result.scored else "fallback"}: {result.fallback}', 110)
    # a file name that is not UTF-8 (common.files.NAMES) is drawn escaped, as Python prints it: no font has
    # its surrogates
    title = title.encode('utf-8', 'backslashreplace').decode('utf-8')
    track = faces.tracks[0] if faces is not None and faces.tracks else None
    if track is None or not len(track.frames):
        what = 'the video could not be read' if faces is None else faces.no_face()
        fig, ax = plt.subplots(figsize=(8, 2.5))
        ax.axis('off')
        ax.text(0.5, 0.5, what, ha='center', va='center', fontsize=14, transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        save_figure(fig, png)
        return
    try:
        strip, strip_error = face_strip(path, track, cfg), ''
    except VideoError as err:  # said on the figure: the scores above are still the video's
        strip, strip_error = [], f'crops unavailable: {err}'
    columns = max(1, len(strip))
    fig = plt.figure(figsize=(max(8.0, 1.1 * columns), 6.0))
    grid = fig.add_gridspec(2, columns, height_ratios=[2.3, 1], hspace=0.4)  # the x label clear of the crops' titles
    ax = fig.add_subplot(grid[0, :])
    ylim = _windows(ax, result, track, windows, crop, shift)
    for index, _ in strip:
        ax.axvline(index, color='grey', ls=':', lw=0.8)
    ax.axhline(0.5, color='grey', lw=0.5)
    ax.set(xlim=(-0.5, max(faces.n_frames, int(track.frames[-1]) + 1)), ylim=ylim, xlabel='frame',
           ylabel='p(FAKE)')
    if windows is not None:
        ax.legend(loc='upper right', fontsize=8)
    ax.set_title(title, fontsize=9)
    _crops(fig, grid, strip, strip_error)
    save_figure(fig, png)


def _crops(fig, grid, strip, strip_error):
    """draw()'s row of face crops [(frame index, (h, w, 3) uint8)], or why there are none."""
    for k, (index, face) in enumerate(strip):
        below = fig.add_subplot(grid[1, k])
        below.imshow(face)
        below.set_title(f'frame {index}', fontsize=8)
        below.axis('off')
    if strip_error:
        below = fig.add_subplot(grid[1, :])
        below.axis('off')
        below.text(0.5, 0.5, textwrap.fill(strip_error, 100), ha='center', va='center', transform=below.transAxes)


def _windows(ax, result, track, windows, crop, shift):
    """draw()'s windows on `ax`: each window's p(FAKE) over its frames and the video's; returns the y range."""
    if windows is None:
        ax.text(0.5, 0.5, 'the network did not score this video', ha='center', va='center',
                transform=ax.transAxes)
        return -0.02, 1.02
    starts, logits = windows
    p = sigmoid(np.asarray(logits) + shift)  # (windows,) unclipped
    starts = np.asarray(starts)
    lengths = np.minimum(crop, len(track.frames) - starts)  # (windows,): a short video's one is short
    ax.hlines(p, track.frames[starts], track.frames[starts + lengths - 1], colors='tab:blue', alpha=0.35, lw=3)
    what = (f'{len(p)} window{"s" * (len(p) > 1)} of up to {crop} faces (at its centre face)' if crop > 1 else
            f"{len(p)} faces, each scored by the encoder's head")  # crop 1: no checkpoint (model.HEAD)
    ax.plot(track.frames[starts + (lengths - 1) // 2], p, 'o-', color='tab:blue', ms=4, lw=1, label=what)
    how = 'mean logit' if crop > 1 else 'mean P(FAKE)' + (', moved to --prior' if shift else '')  # not the dots' mean
    ax.axhline(result.p_fake, color='tab:red', lw=1.5, label=f'video: {result.p_fake:.4f} ({how})')
    # an untrained or unsure model's windows differ in the third digit: the axis spans what is drawn
    lo, hi = min(p.min(), result.p_fake), max(p.max(), result.p_fake)
    pad = max(0.05, 0.15 * (hi - lo))
    return max(-0.02, lo - pad), min(1.02, hi + pad)


if __name__ == '__main__':  # a module: predict.py draws its figures
    import sys
    from common import config
    if {'-h', '--help'} & set(sys.argv[1:]):
        print(__doc__.strip())
        raise SystemExit(0)
    config.fail('explain.py is a module, not a script: predict.py --input=VIDEO --explain=DIR draws the figures')
