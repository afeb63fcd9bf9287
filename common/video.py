"""The one place that decodes video: PyAV (FFmpeg inside the wheel, no system binary).

On the CPU by default; given a CUDA device index (`gpu`), the NVIDIA GPU's video decoder (NVDEC) decodes
through the same PyAV (its wheel's FFmpeg is built with it): the frames stay on the GPU, and only the
sampled ones are copied to memory (NV12), repacked to the CPU decoder's planar YUV and converted to RGB as
the CPU's are, so that both decoders give the same RGB (H.264 decodes to the same YUV on both; swscale
converts NV12 itself with other rounding: up to 5 levels, half the values off by one on DFDC's clips).

Every frame of the clip has to go through the decoder (H.264 predicts frames from each other), but only
the sampled ones are converted to RGB: conversion of a 1080p frame costs about as much as a tenth of its
decoding, so converting 1 frame in 6 saves most of it. FFmpeg's own frame threads do the decoding.

Frames come out upright: a phone clip stored sideways with a display matrix (the 'rotate' tag of older
files) is turned as a player shows it, so its width and height are the displayed ones. A clip that ends
well before its container says it does (a file cut short) is a VideoError, not a short video.
"""
import errno
import io
import math
import os
import stat

import av
import numpy as np
from av.codec.hwaccel import HWAccel

TRUNCATED_SLACK = 3         # frames a clip may fall short of its header's count (headers are approximate) ...
TRUNCATED_SHARE = 0.02      # ... or this share of it, whichever is more
TRUNCATED_SECONDS = 1.0     # ... or this, where only the whole file's duration is known (audio may be longer)


class VideoError(Exception):
    """A video that cannot be read; str(err) is the reason recorded in a failures file."""


def reason(err):
    """An error as a failure's reason: an FFmpeg error by its message and the last line FFmpeg logged (its
    str() adds '[Errno 1094995529]' and the file's path, which the failure's row names already)."""
    if not isinstance(err, av.FFmpegError) or not err.strerror:
        return str(err)
    last = f' ({err.log[1].strip()}: {err.log[2].strip()})' if err.log else ''  # (level, component, message)
    return err.strerror + last


def check_file(path):
    """Raise VideoError for what can be told before decoding: missing (a link whose file is gone too), a link that
    leads back to itself, not a regular file (a pipe would block the decoder), empty."""
    try:
        st = os.stat(path)
    except OSError as err:
        why = {errno.ELOOP: 'a link that leads back to itself', errno.ENOENT: 'file is missing'}
        raise VideoError(why.get(err.errno, f'cannot be read: {err.strerror}')) from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoError('not a regular file (a pipe, a device or a folder)')
    if st.st_size == 0:
        raise VideoError('file is empty (0 bytes)')


def nvdec(gpu):
    """PyAV's settings for decoding on CUDA device `gpu`'s NVDEC: no quiet fallback to the CPU (a stream it
    cannot decode is an error); frames left on the GPU until converted (to_ndarray copies them over), so
    the 5 in 6 never sampled never cross; FFmpeg on CUDA's primary context (a video opens no context)."""
    return HWAccel('cuda', device=str(gpu), allow_software_fallback=False, options={'primary_ctx': '1'},
                   is_hw_owned=True)


def nvdec_error(gpu):
    """'' where NVDEC decodes H.264 on CUDA device `gpu`, else FFmpeg's reason: tried on a 2-frame clip
    encoded here (the driver's video library is loaded only when a decoder starts)."""
    clip = io.BytesIO()
    with av.open(clip, 'w', format='mp4') as out:
        stream = out.add_stream('libx264', rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, 'yuv420p'
        for k in range(2):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((256, 256, 3), 60 * k, np.uint8), 'rgb24')))
        out.mux(stream.encode())
    clip.seek(0)
    try:
        with av.open(clip, hwaccel=nvdec(gpu)) as container:
            n = sum(1 for _ in container.decode(video=0))
    except av.FFmpegError as err:
        return str(err)
    return '' if n == 2 else f'{n} of 2 frames came out'


def open_video(path, need_video=True, gpu=None):
    """An open PyAV container, decoding on CUDA device `gpu`'s NVDEC where given; VideoError with the reason
    (need_video=False also takes an audio-only file)."""
    check_file(path)
    try:
        container = av.open(str(path), hwaccel=None if gpu is None else nvdec(gpu))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        if cut_before_index(path):  # FFmpeg says only 'moov atom not found'
            raise VideoError('truncated: an MP4 cut short before its index (moov), which it keeps at its end: a '
                             'download or copy that stopped') from None
        raise VideoError(f'not a readable video{"" if gpu is None else " by NVDEC"}: {reason(err)}') from None
    if need_video and not container.streams.video:
        container.close()
        raise VideoError('no video stream')
    return container


def cut_before_index(path):
    """Whether `path` is an MP4 (its first box 'ftyp') whose boxes run past the file's end, none of them the index
    ('moov'): a file that writes its index last (DFDC's clips do) cut short."""
    kinds, at = [], 0
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            while at + 8 <= size:
                f.seek(at)
                head = f.read(16)
                n = int.from_bytes(head[:4], 'big')
                n = int.from_bytes(head[8:16], 'big') if n == 1 else size - at if n == 0 else n  # 64-bit; to the end
                if n < 8:  # not a box: not an MP4
                    return False
                kinds.append(head[4:8])
                at += n
    except OSError:  # FFmpeg's own reason stands
        return False
    return kinds[:1] == [b'ftyp'] and b'moov' not in kinds and at > size


def main_stream(container, kind='video'):
    """The stream of `kind` FFmpeg's own tools take (av_find_best_stream), not the first one: a file may hold a
    still (cover art, a thumbnail track) or another track before the clip's own."""
    return container.streams.best(kind)


def probe(path):
    """Width and height as displayed (upright), frame count (from the header, may be 0) and frame rate,
    decoding one frame only (the rotation is on the frames)."""
    with open_video(path) as container:
        stream = main_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError:
            first = None
        if first is not None and _quarter_turns(first.rotation) % 2:
            width, height = height, width
        return {'width': width, 'height': height, 'n_frames': int(stream.frames or 0),
                'fps': float(stream.average_rate) if stream.average_rate else 0.0}


# NVDEC's frame formats, and the CPU decoder's planar formats that hold the same samples
_PLANAR = {'nv12': 'yuv420p', 'p010le': 'yuv420p10le', 'p016le': 'yuv420p16le'}


def _to_rgb(frame):
    on_gpu = frame.sw_format  # None for a frame the CPU decoded
    if on_gpu is not None and on_gpu.name in _PLANAR:
        frame = frame.reformat(format=_PLANAR[on_gpu.name])  # copied from the GPU, then repacked (lossless)
    return frame.to_ndarray(format='rgb24')


def _quarter_turns(rotation):
    """Counterclockwise quarter turns that show a frame upright, from its display matrix's rotation
    (PyAV's VideoFrame.rotation: degrees counterclockwise, in [-180, 180]; phones write multiples of 90)."""
    return round(rotation / 90) % 4


def upright(rgb, rotation):
    """(h, w, 3) as stored -> as displayed: (w, h, 3) for a quarter turn."""
    turns = _quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def expected_frames(container, stream):
    """(frame count, frames it may fall short by, how the container says it), or (None, 0, '') where it
    says nothing: the header's count, else the stream's (or the whole file's) duration times the rate."""
    if stream.frames:
        n = int(stream.frames)
        return n, max(TRUNCATED_SLACK, math.ceil(TRUNCATED_SHARE * n)), f'{n} frames'
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None, 0, ''
    rate, extra = float(rate), 0.0
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds, extra = container.duration / av.time_base, TRUNCATED_SECONDS
    else:
        return None, 0, ''
    n = round(seconds * rate)
    slack = max(TRUNCATED_SLACK, math.ceil(TRUNCATED_SHARE * n), math.ceil(extra * rate))
    return n, slack, f'{seconds:.2f} s at {rate:.2f} fps'


def truncation(decoded, container, stream):
    """The reason a clip of `decoded` frames is cut short of what its container says, or ''."""
    expected, slack, says = expected_frames(container, stream)
    if expected is None or decoded >= expected - slack:
        return ''
    return f'truncated: decoded {decoded} of {expected} frames (container says {says})'


def sampled_frames(path, step, threads=0, convert=True, count_all=False, gpu=None):
    """Yield (frame_index, rgb) for frames 0, step, 2*step, ...: rgb is (height, width, 3) uint8, upright.

    Frame indices count decoded frames from the start, which is what DFDC's 300-frame clips mean by
    a frame number. A stream that breaks part-way, or ends well short of the frame count its container
    gives (a file cut short), raises VideoError after the frames read so far.
    `convert=False` decodes without converting (the decoding floor the benchmarks compare against);
    `count_all=True` also yields (index, None) for the frames between samples, so the caller knows the
    clip's length. `gpu`: decode on that CUDA device's NVDEC (the CPU only parses the stream: one thread).
    """
    container = open_video(path, gpu=gpu)
    try:
        stream = main_stream(container)
        if gpu is not None:
            stream.codec_context.thread_count = 1
        else:
            stream.thread_type = 'AUTO'  # frame + slice threads: faster (BENCHMARKS.md, Video notes)
            if threads:
                stream.codec_context.thread_count = threads
        index = -1
        failed = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % step == 0:
                    yield index, (upright(_to_rgb(frame), frame.rotation) if convert else None)
                elif count_all:
                    yield index, None
        except av.FFmpegError as err:
            failed = reason(err)
        if index < 0:
            raise VideoError('no frame could be decoded' + (f': {failed}' if failed else ''))
        cut = truncation(index + 1, container, stream)
        if cut:
            raise VideoError(cut + (f'; decoding failed: {failed}' if failed else ''))
        if failed:
            raise VideoError(f'decoding failed after {index + 1} frames: {failed}')
    finally:
        container.close()


def count_frames(path):
    """Decode the whole clip without conversion: its frame count, and the floor any pipeline pays."""
    n = 0
    for n, _ in enumerate(sampled_frames(path, 1, convert=False), 1):
        pass
    return n


def remux(src, dst, times=1, faststart=False):
    """Write dst: the video packets of src, `times` over one after the other (timestamps shifted by one
    copy's duration each time), without re-encoding: a longer clip of the same bytes. faststart puts the
    index (moov) before the data, as streaming sites do, so that a file cut short still opens."""
    options = {'movflags': 'faststart'} if faststart else {}
    with av.open(str(src)) as inp, av.open(str(dst), 'w', options=options) as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = [p for p in inp.demux(ist) if p.dts is not None]  # the last, empty one has none
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        for k in range(times):
            for p in packets:
                copy = av.Packet(bytes(p))
                copy.pts, copy.dts = p.pts + k * span, p.dts + k * span
                copy.duration, copy.is_keyframe, copy.time_base = p.duration, p.is_keyframe, p.time_base
                copy.stream = ost
                out.mux(copy)
