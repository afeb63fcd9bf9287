"""Decoding workers feeding one process's networks: how a GPU machine is used whole.

Each worker process takes a video at a time, decodes it and does all the CPU work of faces/pipeline.py
(downscaling, regions, crops); where it needs a network it sends the small images to this process and
waits for the boxes or embeddings. This process owns the networks (one GPU, or the CPU) and answers every
request that has arrived, from all the workers, in one batch per image size: batches hold frames of
several videos, and only ~10 MB a 1080p clip crosses between processes (a DataLoader that shipped the
decoded frames would move 300 MB a clip). Workers are forked, as DataLoader's are, and never touch CUDA;
with DECODER='nvdec' they decode on the GPU and are spawned instead (CUDA does not survive a fork).

A worker that dies (a decoder crash, the kernel's OOM killer) costs its video only: the video is a
VideoError with the exit code, and a new worker takes the next video. So does one that spends more than
`timeout` seconds on a video (a decoder caught in a loop would stall the whole run): it is stopped. A worker
whose process is gone (SIGKILL, the OOM killer) ends within CHECK_EVERY seconds (_orphaned).
"""
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time

import numpy as np
import threadpoolctl
import torch

from common.video import VideoError
from faces.pipeline import faces_of

CHECK_EVERY = 1.0   # seconds between looks at whether a busy worker died


class Remote:
    """A worker's networks: each call is a request to the process that owns them, answered in order."""

    def __init__(self, wid, requests, inbox):
        self.wid, self.requests, self.inbox = wid, requests, inbox

    def detect(self, images, min_face_size):
        self.requests.put(('detect', self.wid, (images, min_face_size)))
        return self.inbox.get()

    def embed(self, crops):
        self.requests.put(('embed', self.wid, (crops,)))
        return self.inbox.get()


def attempt(function, *args):
    """function(*args), or the exception it raised (a result to hand on, never raised here)."""
    try:
        return function(*args)
    except Exception as err:  # noqa: BLE001 - the caller records it as the video's failure
        return err


def _sendable(value):
    """value, or, for an exception that cannot be pickled, a RuntimeError that says what it was."""
    if isinstance(value, Exception):
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - whatever its reduction raises
            return RuntimeError(f'{type(value).__name__}: {value}')
    return value


def _orphaned(parent):
    """End this worker once `parent` is no longer its parent: killed, the parent runs no `finally`, and its workers
    waited for their next video for ever, holding the output's lock (common.stage.claim): no rerun could start."""
    while os.getppid() == parent:
        time.sleep(CHECK_EVERY)
    os._exit(1)


def _work(wid, cfg, threads, gpu, also, requests, inbox, parent):
    # The terminal's Ctrl-C reaches the whole process group: the parent answers it in one line and stops its
    # workers (stream's finally), where each worker printed its own KeyboardInterrupt's traceback; a SIGTERM (a
    # scheduler's, to every process of the job) ends a worker at once, as before cli() took it as the parent's stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_orphaned, args=(parent,), daemon=True).start()
    # A fork keeps the parent's pool sizes: OpenBLAS (numpy, scipy, OpenCV) and OpenMP at one thread a core.
    # librosa's mel spectrogram (predict.py's voice) then woke a pool of every core in every worker, and
    # its spinning threads took the cores the decoders needed (BENCHMARKS.md, issue 11).
    threadpoolctl.threadpool_limits(threads)
    torch.set_num_threads(threads)
    nets = Remote(wid, requests, inbox)
    for path in iter(inbox.get, None):
        faces = attempt(faces_of, path, cfg, nets, threads, gpu)
        extra = attempt(also, path) if also else None
        requests.put(('done', wid, (path, _sendable(faces), _sendable(extra))))


def stream(paths, cfg, nets, workers, also=None, threads=1, gpu=None, start_method=None, timeout=0):
    """Yield (path, VideoFaces or the exception, also(path) or its exception, or None) for every path, in
    the order they finish, with `workers` processes decoding (FFmpeg on `threads` threads each, or on CUDA
    device `gpu`'s NVDEC) and `nets` (faces/nets.py) answering their requests in batches. The workers are
    forked, or spawned where they decode on the GPU (start_method: either, chosen). A worker still on one
    video after `timeout` seconds (0: never) is stopped, and the video is a VideoError."""
    ctx = mp.get_context(start_method or ('fork' if gpu is None else 'spawn'))
    requests = ctx.Queue()
    inboxes, procs, doing, since = {}, {}, {}, {}
    todo = list(reversed(paths))
    ids = iter(range(10 ** 9))

    def give(wid):
        if todo:
            doing[wid], since[wid] = todo.pop(), time.monotonic()
            inboxes[wid].put(doing[wid])
        else:
            inboxes[wid].put(None)

    def start():
        wid = next(ids)
        inboxes[wid] = ctx.Queue()
        procs[wid] = ctx.Process(target=_work, args=(wid, cfg, threads, gpu, also, requests, inboxes[wid],
                                                          os.getpid()), name=f'decode-{wid}', daemon=True)
        # SIGINT blocked while it starts, and so in the worker from its first instruction (the mask is inherited):
        # a spawned one imports for seconds before _work ignores Ctrl-C, and printed its traceback meanwhile
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            procs[wid].start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C that came meanwhile is raised here
        give(wid)

    try:
        for _ in range(min(workers, len(paths))):
            start()
        checked = time.monotonic()
        while doing:
            messages = [m for m in _arrived(requests) if m[1] in doing]  # not from a worker given up as dead
            _answer([m for m in messages if m[0] != 'done'], nets, inboxes)
            for _, wid, (path, faces, extra) in (m for m in messages if m[0] == 'done'):
                del doing[wid]
                give(wid)
                yield path, faces, extra
            if time.monotonic() - checked > CHECK_EVERY:
                checked = time.monotonic()
                for path, err in _given_up(doing, procs, since, timeout, checked):
                    yield path, err, None
                    start()  # in its place
    finally:
        for wid, proc in procs.items():
            proc.join(timeout=0.1 if proc.exitcode is not None or wid in doing else 5)
            if proc.is_alive():
                proc.kill()
            inboxes[wid].cancel_join_thread()


def _arrived(requests):
    """The messages of the workers: the first within CHECK_EVERY seconds, and everything that has arrived
    with it (one batch for the networks)."""
    try:
        messages = [requests.get(timeout=CHECK_EVERY)]
    except queue.Empty:
        messages = []
    while True:
        try:
            messages.append(requests.get_nowait())
        except queue.Empty:
            return messages


def _given_up(doing, procs, since, timeout, now):
    """Yield (path, VideoError) of each video whose worker died, then of each one a worker has been on for
    more than `timeout` seconds at `now` (0: never), its worker stopped; each taken out of `doing`."""
    for wid in [w for w in doing if procs[w].exitcode is not None]:
        yield doing.pop(wid), VideoError(f'the decoding worker died on it (exit code {procs[wid].exitcode})')
    for wid in [w for w in doing if timeout and now - since[w] > timeout]:
        procs[wid].kill()
        yield doing.pop(wid), VideoError(f'still decoding after {timeout} s (--worker_timeout): its worker was '
                                         f'stopped')


def _answer(messages, nets, inboxes):
    """Run the networks on every request of `messages`, grouped (detection by image size and face size,
    embedding all together), and put each worker's answer in its inbox."""
    groups = {}
    for kind, wid, args in messages:
        key = (kind, args[0].shape[1:], args[1]) if kind == 'detect' else (kind,)
        groups.setdefault(key, []).append((wid, args))
    for key, group in groups.items():
        batch = np.concatenate([args[0] for _, args in group])
        out = nets.detect(batch, key[2]) if key[0] == 'detect' else nets.embed(batch)
        start = 0
        for wid, args in group:
            inboxes[wid].put(out[start:start + len(args[0])])
            start += len(args[0])
