"""A local web page for one video: drop a clip (or choose one), get its probability of FAKE and why.

Reads CHECKPOINT (training.py's best.pt; without one, --face_encoder=gend's own head: the scorer, named on the
page beside every verdict) and the videos uploaded to the page. Each is scored by predict.py's own one-video path
(predict.score_video), so the page and `predict.py --input=VIDEO` give the same number, with the same figure as
`predict.py --explain` (the windows' scores and the face crops) and the fallback reason where there is one; a file
that is not a readable video, or is over MAX_MB, gets a message. One video at a time: a second upload waits in a
queue (the page shows its place); the bar shows how much of the file has been read. Writes nothing outside its own
temporary folder (made at start, removed at exit): uploads (deleted once scored) and figures. No analytics.
Listens on HOST=127.0.0.1, this machine only; --host=0.0.0.0 lets anyone who can reach this machine upload videos
to it and run the networks on them (README).

Example:
    python web.py --face_encoder=gend    # GenD's verdict, no training (or --checkpoint=runs/lstm/best.pt)
    # then open http://127.0.0.1:7860 in a browser; Ctrl-C stops it
"""
from common import config
# -h: answered before the heavy imports
config.help_if_asked(__name__, __file__, 'DetectionPipeline.py', 'create_audio_embedding.py')

import contextlib
import errno
import html
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
import uuid

from common.config import UserError
# torch, the networks and Gradio are imported once the server's own folder is made and is TMPDIR (serve()):
# importing torch makes a folder in TMPDIR

# ----------------------------------------------------------------------------- config
HOST = '127.0.0.1'          # address the page listens on: 127.0.0.1 this machine only; 0.0.0.0 anyone on the network
PORT = 7860                 # its port: http://HOST:PORT
CHECKPOINT = ''             # training.py's best.pt: the scorer; '': --face_encoder=gend's own head
PRIOR = 0.5                 # share of fakes expected, as predict.py's --prior
BATCH_SIZE = 512            # windows per network batch
DEVICE = 'auto'             # 'auto' (CUDA where present) | 'cpu' | 'cuda' | 'cuda:1'
MAX_MB = 500.0              # uploads larger than this many MB (2^20 bytes) are refused before they are stored
# -----------------------------------------------------------------------------

POLL_SECONDS = 0.5  # how often the progress bar is updated
ANSWERS_KEPT = 16  # the last uploads' answers kept (Page.answers): a clip dropped twice at once is answered twice


def read_share(path):
    """The share (0-1) of file `path` this process has read: the furthest offset of its open files on it
    (Linux's /proc/self/fdinfo) over its size; None where it is not open now or /proc cannot tell."""
    try:
        size = os.path.getsize(path)
        fds = os.listdir('/proc/self/fd')
    except OSError:
        return None
    furthest = None
    for fd in fds:
        try:
            if os.readlink(f'/proc/self/fd/{fd}') != path:
                continue
            with open(f'/proc/self/fdinfo/{fd}') as f:
                pos = int(next(line for line in f if line.startswith('pos:')).split()[1])
        except (OSError, StopIteration, ValueError, IndexError):  # closed meanwhile, or another /proc
            continue
        furthest = max(furthest or 0, pos)
    return None if furthest is None or not size else min(1.0, furthest / size)


def paragraph(text, kind):
    """One line of the verdict, escaped: a file's name may hold quotes, angle brackets, any character."""
    return f'<p class="{kind}">{html.escape(text)}</p>'


class Page:
    """Scores one upload at a time for the page: predict.score_video on it, the verdict as HTML, the figure,
    and the upload deleted. `scorer` says what made the verdicts ('checkpoint best.pt'); every upload must
    lie in `folder`, the server's own (Gradio stores them there)."""

    def __init__(self, predictor, scorer, folder, max_mb):
        self.predictor, self.scorer, self.max_mb = predictor, scorer, max_mb
        self.folder = os.path.realpath(folder)
        # the answers of the last uploads, by path: Gradio stores an upload at <hash of its bytes>/<name>, so the
        # same clip dropped twice at once (two people, two tabs) is one file, which the first job deletes
        self.answers = {}
        self.figures = os.path.join(self.folder, 'figures')
        os.makedirs(self.figures, exist_ok=True)

    def message(self, name, text):
        """The page's answer where there is no verdict: (verdict HTML, no figure, an emptied upload box)."""
        return (paragraph(name, 'name') if name else '') + paragraph(text, 'message'), None, None

    def score(self, upload, progress=None):
        """Gradio's handler: the path of an upload -> (verdict HTML, figure PNG or None, None: the upload box
        emptied, its file deleted)."""
        if not upload:
            return self.message('', 'no file was uploaded')
        path = os.path.realpath(upload)
        name = os.path.basename(path)
        if os.path.commonpath([path, self.folder]) != self.folder:  # only what Gradio stored for this page
            return self.message(name, 'not a file uploaded to this page')
        if not os.path.exists(path):  # scored by the job before this one, which deleted it
            if path not in self.answers:
                return self.message(name, 'the upload is gone from the server: upload it again')
            print(f'answered {ascii(name)} again: the same file, uploaded twice at once', flush=True)
            return self.answers[path]
        try:
            size = os.path.getsize(path)
            if size > self.max_mb * 2 ** 20:  # Gradio refuses these before storing them; a second look
                return self.message(name, f'the file is {size / 2 ** 20:.1f} MB, over the limit of {self.max_mb:g} MB')
            answer = self._score(path, name, progress)
            drop_figure(self.answers.pop(path, (None, None))[1])  # the newest last: the oldest go first
            self.answers[path] = answer
            for old in list(self.answers)[:-ANSWERS_KEPT]:
                drop_figure(self.answers.pop(old)[1])  # Gradio served a copy (its cache); ~100 KB each, kept no longer
            return answer
        finally:
            forget(path, self.folder)

    def _score(self, path, name, progress):
        import predict
        from common.video import VideoError
        print(f'scoring {ascii(name)}', flush=True)
        png = os.path.join(self.figures, uuid.uuid4().hex, 'explain.png')  # its folder made where it is drawn
        try:
            faces, voice, result = in_thread(lambda: predict.score_video(self.predictor, path, png), path, progress)
        except (UserError, OSError) as err:
            print(f'failed {ascii(name)}: {err}', flush=True)
            drop_figure(png)  # drawn before the error, where it was: no answer shows it
            return self.message(name, f'could not be scored: {err}'.replace(path, name))
        except Exception as err:  # noqa: BLE001 - one upload's bug must not stop the page: said, and logged
            traceback.print_exc()
            drop_figure(png)
            return self.message(name, f'could not be scored: unexpected {type(err).__name__}: {err} (a bug: '
                                      f'the server log has its traceback)'.replace(path, name))
        print(f'scored {ascii(name)}: p(FAKE) = {result.p_fake:.4f}', flush=True)
        lines = [paragraph(name, 'name')]
        if isinstance(faces, VideoError):
            lines.append(paragraph(f'This file could not be read: {faces}.'.replace(path, name), 'message'))
        if result.prior:  # no evidence: a bold number would read as a verdict
            lines.append(paragraph(f'No verdict: nothing of the file could be scored. predict.py writes the prior, '
                                   f'p(FAKE) = {result.p_fake:.4f}', 'none'))
        else:
            lines.append(paragraph(f'p(FAKE) = {result.p_fake:.4f}', 'p'))
        lines.append(paragraph(f'scorer: {self.scorer}', 'scorer'))
        if result.fallback:
            # a note where the network scored the video all the same (without an audio track that did not decode)
            what = ('fallback after an unexpected error (a bug to report)' if result.unexpected else
                    'note' if result.scored else 'fallback')
            # a message that names the file (an OSError's): by its name, not where the server stored it
            lines.append(paragraph(f'{what}: {result.fallback}'.replace(path, name), 'fallback'))
        if not isinstance(faces, Exception):
            n_faces = len(faces.tracks[0].frames) if faces.tracks else 0
            heard = 'yes' if result.has_audio else 'not decoded' if isinstance(voice, VideoError) else 'none'
            lines.append(paragraph(f'{n_faces} faces read of {faces.n_frames} frames; voice: {heard}', 'detail'))
        return '\n'.join(lines), (png if os.path.exists(png) else None), None


def in_thread(work, path, progress):
    """work()'s value, run in a thread (without autograd, as predict.py runs) while `progress` (Gradio's)
    shows how much of `path` has been read; its exception is raised here."""
    import torch
    out = {}

    def run():
        try:
            with torch.no_grad():
                out['value'] = work()
        except BaseException as err:  # noqa: BLE001 - handed over, raised below in the handler's thread
            out['error'] = err

    thread = threading.Thread(target=run, name='score', daemon=True)
    thread.start()
    while thread.is_alive():
        if progress is not None:
            share = read_share(path)
            progress(share, desc='reading the video' if share is not None else 'scoring')
        thread.join(POLL_SECONDS)
    if 'error' in out:
        raise out['error']
    return out['value']


def drop_figure(png):
    """Delete a figure no answer the page keeps shows (and the folder made for it), where there is one."""
    if png is not None:
        with contextlib.suppress(FileNotFoundError):  # none drawn, or removed already
            shutil.rmtree(os.path.dirname(png))


def forget(path, folder):
    """Delete an upload, and the folder Gradio made for it where that is now empty (never `folder` itself)."""
    with contextlib.suppress(FileNotFoundError):  # gone already: its bytes uploaded twice, deleted by the first job
        os.remove(path)
    parent = os.path.dirname(path)
    if parent != folder and os.path.commonpath([parent, folder]) == folder:
        try:
            os.rmdir(parent)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):  # gone; another upload in it (POSIX)
                raise


def build(page, gr):
    """The page's Blocks: an upload box, the verdict, the figure; one job at a time (the queue)."""
    with gr.Blocks(title='Deepfake detector: one video', analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:  # figures served are removed after an hour
        gr.Markdown('## Is this video a deepfake?\nDrop a video file below, or click to choose one. It is '
                    f'scored by **{page.scorer}** and deleted once scored; one video at a time (a second '
                    'one waits its turn). Below: why, as `predict.py --explain` draws it: the probability '
                    'of each window of faces the network read, and the face crops it saw.')
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label='video', file_count='single', type='filepath', elem_id='video')
                verdict = gr.HTML(elem_id='verdict')
            with gr.Column(scale=2):
                figure = gr.Image(label='why', type='filepath', format='png', interactive=False,
                                  buttons=['download', 'fullscreen'], elem_id='figure')

        def score(path, progress=gr.Progress()):
            return page.score(path, progress)

        upload.upload(score, inputs=upload, outputs=[verdict, figure, upload], concurrency_limit=1,
                      show_progress='full')
    demo.queue(default_concurrency_limit=1, api_open=False)
    return demo


CSS = '#verdict .p {font-size: 2em; font-weight: bold} #verdict .message {color: #b00020; font-weight: bold}'


def main():
    folder = tempfile.mkdtemp(prefix='web-')
    # Gradio keeps its uploads and the files it serves in GRADIO_TEMP_DIR; torch, matplotlib and the rest
    # write to TMPDIR and MPLCONFIGDIR: all this server's folder, removed at exit
    for name in ('GRADIO_TEMP_DIR', 'TMPDIR', 'MPLCONFIGDIR'):
        os.environ[name] = folder
    tempfile.tempdir = folder
    os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'
    os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'
    try:
        serve(folder)
    finally:
        shutil.rmtree(folder, onerror=lambda _, path, err: print(f'cannot remove {path}: {err[1]}', file=sys.stderr))


def can_listen(host, port):
    """UserError in one line where the page cannot listen on host:port (gradio's own error is two lines, and its
    advice names gradio's environment variables)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UserError(f'--host={host}: {err.strerror}; give a name or address of this machine (127.0.0.1: '
                        f'this machine only)') from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's: a port just freed is free
        try:
            probe.bind(address)
        except OSError as err:
            which = '--port' if err.errno in (errno.EADDRINUSE, errno.EACCES) else '--host'
            raise UserError(f'cannot listen on {host}:{port} ({err.strerror}); give another {which}') from None


def serve(folder):
    """Load the scorer, start the page, and wait for Ctrl-C or SIGTERM."""
    import DetectionPipeline as dp
    import create_audio_embedding as cae
    import predict

    face, audio = config.configure(globals(), dp, cae)  # the settings of DetectionPipeline and AudioEmbedder given
    if CHECKPOINT and not os.path.exists(CHECKPOINT):
        raise UserError(f'--checkpoint={CHECKPOINT!r} does not exist')
    can_listen(HOST, PORT)  # before the networks load
    # no checkpoint: --face_encoder=gend's own head scores (Predictor refuses other encoders in one line)
    predictor = predict.Predictor(CHECKPOINT, DEVICE, PRIOR, BATCH_SIZE, face, audio)
    scorer = predictor.scorer
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    import gradio as gr
    demo = build(Page(predictor, scorer, folder, MAX_MB), gr)
    try:
        demo.launch(server_name=HOST, server_port=PORT, max_file_size=int(MAX_MB * 2 ** 20),
                    allowed_paths=[folder], prevent_thread_lock=True, quiet=True, ssr_mode=False,
                    mcp_server=False, pwa=False, css=CSS, footer_links=[])
    except OSError:  # the port taken since can_listen (gradio's message names its own variables)
        raise UserError(f'cannot listen on {HOST}:{PORT} (another program took the port); give another '
                        f'--port') from None
    where = 'this machine only' if HOST in ('127.0.0.1', 'localhost', '::1') else 'anyone who can reach it may upload'
    print(f'page: http://{HOST}:{PORT} ({where}); scorer: {scorer}; temporary folder: {folder}; '
          f'Ctrl-C stops it', flush=True)
    while not stop.wait(1):
        pass
    demo.close()
    print('stopped', flush=True)


if __name__ == '__main__':
    config.cli(main)
