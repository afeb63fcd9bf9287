"""web.py in a real browser: headless Chromium (Debian's package, driven by Selenium through Debian's
chromedriver) uploads files to the page that web.py serves, started here as a user would start it, and reads
what the page shows. Skipped, with the reason, where Chromium or its driver is absent (.ci/run installs them).
WEB_SCREENSHOT=docs/web.png saves the page of the real clip's verdict there (the README's screenshot)."""
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from audio_clips import run_script
from conftest import ROOT, testdata
from test_training import fast_checkpoint

# an untrained network on untrained face embeddings, every 30th frame (10 of a DFDC clip): the numbers mean
# nothing, the path is the real one, and a clip takes seconds
FAST = ['--face_weights=none', '--frame_step=30', '--device=cpu']
CLIP, OTHER = 'lynaeydofd.mp4', 'brtujopkby.mp4'
MAX_MB = 5  # the page's limit here: the clips are 3.6-3.9 MiB
WAIT = 300  # seconds a page may take to answer on 2 loaded cores (a bound for a hang, not a timing)


def chromium():
    """(browser, driver) paths: Debian's chromium and chromium-driver; the test is skipped where absent."""
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    if not browser or not driver:
        pytest.skip('no Chromium to drive the page (chromium and chromedriver not on PATH): '
                    'apt-get install chromium chromium-driver (Debian\'s packages; .ci/run installs them)')
    return browser, driver


@pytest.fixture(scope='module')
def browsers(tmp_path_factory):
    """open(): a new headless Chromium session (each its own profile); all are closed after the module."""
    binary, driver = chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opened = []

    def open_one():
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        profile = tmp_path_factory.mktemp('chromium')
        for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1400,760',
                    f'--user-data-dir={profile}'):
            options.add_argument(arg)  # --no-sandbox: CI runs as root, where Chromium's sandbox refuses
        opened.append(webdriver.Chrome(options=options, service=Service(driver)))
        return opened[-1]

    yield open_one
    for browser in opened:
        browser.quit()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """web.py running in a subprocess: its url, its temporary folder, its log; stop() ends it (SIGTERM)."""

    def __init__(self, tmp, checkpoint):
        self.tmp, self.port = tmp, free_port()
        self.url = f'http://127.0.0.1:{self.port}/'
        for name in ('tmp', 'home'):  # its TMPDIR and HOME: nothing must be left in them
            (tmp / name).mkdir()
        env = {**os.environ, 'TMPDIR': str(tmp / 'tmp'), 'HOME': str(tmp / 'home')}
        env.pop('XDG_CACHE_HOME', None)
        self.log = tmp / 'server.log'
        with open(self.log, 'w') as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.join(ROOT, 'web.py'), f'--checkpoint={checkpoint}', f'--port={self.port}',
                 f'--max_mb={MAX_MB}', *FAST], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT
        while not (found := re.search(r'temporary folder: (\S+);', self.text())):
            assert self.proc.poll() is None, f'web.py exited {self.proc.returncode}:\n{self.text()[-3000:]}'
            assert time.monotonic() < deadline, f'web.py did not start:\n{self.text()[-3000:]}'
            time.sleep(0.5)
        self.folder = found[1]

    def text(self):
        return self.log.read_text(encoding='utf-8', errors='replace')

    def files(self):
        """Every file in the server's folder, relative to it."""
        return sorted(os.path.relpath(os.path.join(top, f), self.folder)
                      for top, _, names in os.walk(self.folder) for f in names)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    chromium()  # skipped before the server starts where there is no browser to open its page
    tmp = tmp_path_factory.mktemp('web')
    # an untrained network of predict.py's input sizes (512-d faces, Resemblyzer's 256-d voice)
    run = Server(tmp, fast_checkpoint(tmp / 'tiny.pt', video_dim=512, audio_dim=256))
    yield run
    run.stop()


def upload(browser, url, path):
    """Open the page, drop `path` into its upload box (the file input a drop or a click feeds)."""
    from selenium.webdriver.common.by import By
    browser.get(url)
    wait_for(browser, '#video input[type=file]', 60)
    browser.find_element(By.CSS_SELECTOR, '#video input[type=file]').send_keys(str(path))


def wait_for(browser, css, seconds=WAIT):
    """The elements matching `css` once there are any; fails after `seconds` with the page's text."""
    from selenium.webdriver.common.by import By
    deadline = time.monotonic() + seconds
    while not (found := browser.find_elements(By.CSS_SELECTOR, css)):
        assert time.monotonic() < deadline, f'no {css} on the page:\n{browser.find_element(By.TAG_NAME, "body").text}'
        time.sleep(0.3)
    return found


def wait_text(browser, pattern, seconds=WAIT):
    """The first match of regular expression `pattern` in the page's text, once there is one."""
    from selenium.webdriver.common.by import By
    deadline = time.monotonic() + seconds
    while not (found := re.search(pattern, text := browser.find_element(By.TAG_NAME, 'body').text)):
        assert time.monotonic() < deadline, f'no {pattern} on the page:\n{text}'
        time.sleep(0.3)
    return found[0]


def verdict(browser):
    """{class: text} of the verdict's lines, once the page has answered (a p(FAKE), no verdict, or a message)."""
    from selenium.webdriver.common.by import By
    wait_for(browser, '#verdict p.p, #verdict p.none, #verdict p.message')
    return {p.get_attribute('class'): p.text for p in browser.find_elements(By.CSS_SELECTOR, '#verdict p')}


def png_of(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.headers['Content-Type'] == 'image/png'
        return np.asarray(Image.open(io.BytesIO(response.read())).convert('RGB'))


def test_the_page_gives_predict_pys_number_and_figure_for_a_real_clip(server, browsers, tmp_path):
    clip = testdata('dfdc_sample', CLIP)
    browser = browsers()
    upload(browser, server.url, clip)
    shown = verdict(browser)
    [figure] = wait_for(browser, '#figure img')
    if os.environ.get('WEB_SCREENSHOT'):  # the README's picture of the page
        browser.save_screenshot(os.path.join(ROOT, os.environ['WEB_SCREENSHOT']))
    # predict.py's one-video path on the same clip, with its --explain figure
    r = run_script('predict.py', f'--input={clip}', f'--checkpoint={server.tmp / "tiny.pt"}', *FAST,
                   f'--explain={tmp_path}')
    assert r.returncode == 0, r.stderr[-2000:]
    said = re.search(rf'^{CLIP}: p\(FAKE\) = ([\d.]+) \(figure: {re.escape(str(tmp_path / CLIP))}\.png\)$', r.stdout,
                     re.M)
    assert said, r.stdout
    assert shown['name'] == CLIP and shown['scorer'] == 'scorer: checkpoint tiny.pt', shown
    assert 'message' not in shown and 'fallback' not in shown, shown
    page = float(re.fullmatch(r'p\(FAKE\) = ([\d.]+)', shown['p'])[1])
    # both print 4 decimals of the same computation; two processes may run it on other numbers of threads
    # (float32 sums in another order, ~1e-7): at most one unit of the 4th decimal where that crosses a rounding
    assert abs(page - float(said[1])) <= 1e-4 + 1e-9, (shown, said[0])
    assert re.fullmatch(r'\d+ faces read of 300 frames; voice: yes', shown['detail']), shown
    # the figure: the same as predict.py --explain draws (its windows' dots may move by those ~1e-7)
    ours, theirs = png_of(figure.get_attribute('src')), np.asarray(Image.open(tmp_path / f'{CLIP}.png').convert('RGB'))
    assert ours.shape == theirs.shape and ours.shape[0] > 300, (ours.shape, theirs.shape)
    assert np.mean(np.any(ours != theirs, axis=2)) < 0.001
    # the upload is gone once scored; the figure served stays in the server's folder
    assert not [f for f in server.files() if f.endswith('.mp4')], server.files()


def test_a_file_that_is_not_a_video_or_too_large_or_oddly_named_gets_a_message(server, browsers, tmp_path):
    from selenium.webdriver.common.by import By
    browser = browsers()
    name = 'it\'s "ünïcödé" <b>bold<b> ..mp4'
    text = tmp_path / name
    text.write_text('not a video at all\n', encoding='utf-8')
    upload(browser, server.url, text)
    shown = verdict(browser)
    # the name as Gradio stored it (it drops '<>' and the browser sends '"' as %22), shown as text, not HTML
    assert shown['name'] == "it's %22ünïcödé%22 bboldb ..mp4", shown
    assert not browser.find_elements(By.CSS_SELECTOR, '#verdict b')
    # FFmpeg's reason without its '[Errno N]' and the path (where the server stored the upload)
    assert shown['message'] == 'This file could not be read: not a readable video: Invalid data found when ' \
                               'processing input.', shown
    assert shown['fallback'].startswith('fallback: unreadable video: not a readable video') and \
        shown['fallback'].endswith('; prior 0.5'), shown
    # the prior is no verdict: not shown as one (it was a bold 'p(FAKE) = 0.5000' under the message)
    assert 'p' not in shown and shown['none'] == 'No verdict: nothing of the file could be scored. predict.py ' \
                                                 'writes the prior, p(FAKE) = 0.5000', shown
    assert not browser.find_elements(By.CSS_SELECTOR, '#verdict p.p')
    assert server.folder not in browser.find_element(By.TAG_NAME, 'body').text  # where uploads are stored
    assert not [f for f in server.files() if f.endswith('.mp4')], server.files()

    # over --max_mb: refused with a message before it is stored; the page still answers after it
    big = tmp_path / 'big.mp4'
    big.write_bytes(np.random.default_rng(0).bytes((MAX_MB + 1) * 2 ** 20))
    upload(browser, server.url, big)
    said = wait_text(browser, r'File\(s\) exceed the maximum allowed size of 5.0 Mb: "big.mp4"', 60)
    assert said in browser.find_element(By.CSS_SELECTOR, '.toast-body').text  # Gradio's message box
    assert server.proc.poll() is None and not [f for f in server.files() if f.endswith('big.mp4')]

    # a name with '../' sent to the upload route by hand (a browser never sends one): stored inside the
    # server's folder, under its last part
    boundary = 'x' * 20
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="../../escape.mp4"\r\n'
            f'Content-Type: video/mp4\r\n\r\nnot a video\r\n--{boundary}--\r\n').encode()
    request = urllib.request.Request(server.url + 'gradio_api/upload', body, method='POST',
                                     headers={'Content-Type': f'multipart/form-data; boundary={boundary}'})
    with urllib.request.urlopen(request, timeout=60) as response:
        [stored] = __import__('json').loads(response.read())
    assert os.path.commonpath([os.path.realpath(stored), os.path.realpath(server.folder)]) == os.path.realpath(server.folder)
    assert os.path.basename(stored) == 'escape.mp4'
    assert not os.path.exists(os.path.join(os.path.dirname(server.folder), 'escape.mp4'))


def test_two_uploads_at_once_are_both_answered_one_after_the_other(server, browsers):
    clips = [testdata('dfdc_sample', name) for name in (CLIP, OTHER)]
    first, second = browsers(), browsers()
    for browser in (first, second):
        browser.get(server.url)
        wait_for(browser, '#video input[type=file]', 60)
    mark = len(server.text())
    from selenium.webdriver.common.by import By
    for browser, clip in zip((first, second), clips):
        browser.find_element(By.CSS_SELECTOR, '#video input[type=file]').send_keys(clip)
    answers = [verdict(browser) for browser in (first, second)]
    assert [a['name'] for a in answers] == [CLIP, OTHER] and all('p' in a for a in answers), answers
    # one at a time: each video's 'scoring' line is followed by its 'scored' line before the next begins
    lines = [line for line in server.text()[mark:].splitlines() if line.startswith(('scoring ', 'scored '))]
    names = [re.match(r"scor(?:ing|ed) '([^']+)'", line)[1] for line in lines]
    assert len(lines) == 4 and names[0] == names[1] and names[2] == names[3] and set(names) == {CLIP, OTHER}, lines
    assert [line.split()[0] for line in lines] == ['scoring', 'scored', 'scoring', 'scored'], lines


def test_the_same_clip_dropped_twice_at_once_gets_its_verdict_twice(server, browsers):
    """Gradio stores an upload at <hash of its bytes>/<name>: the same clip dropped by two people at once is one
    file on the server, which the first job deletes once scored (break-it pass 5: the second page showed a bare
    'Error', and the server log two tracebacks)."""
    from selenium.webdriver.common.by import By
    clip = testdata('dfdc_sample', CLIP)
    first, second = browsers(), browsers()
    for browser in (first, second):
        browser.get(server.url)
        wait_for(browser, '#video input[type=file]', 60)
    mark = len(server.text())
    first.find_element(By.CSS_SELECTOR, '#video input[type=file]').send_keys(clip)
    deadline = time.monotonic() + WAIT
    while f"scoring '{CLIP}'" not in server.text()[mark:]:  # the second drop lands while the first is scored
        assert time.monotonic() < deadline, server.text()[mark:]
        time.sleep(0.05)
    second.find_element(By.CSS_SELECTOR, '#video input[type=file]').send_keys(clip)
    answers = [verdict(browser) for browser in (first, second)]
    assert answers[0] == answers[1] and answers[0]['name'] == CLIP and 'p' in answers[0], answers
    log = server.text()[mark:]
    assert 'Traceback' not in log and 'Error' not in log, log
    assert log.count('scoring ') == 1 and f"answered '{CLIP}' again: the same file" in log, log


def test_the_server_stops_and_leaves_nothing_behind(server):
    assert server.proc.poll() is None  # still up after every upload above
    server.stop()
    assert server.proc.returncode == 0, server.text()[-3000:]
    assert not os.path.exists(server.folder)
    # its TMPDIR and HOME are empty: it wrote nothing outside its own folder
    assert os.listdir(server.tmp / 'tmp') == [] and os.listdir(server.tmp / 'home') == []


def test_help_answers_at_once_and_a_missing_checkpoint_is_one_line(tmp_path):
    r = run_script('web.py', '-h')
    assert r.returncode == 0 and '--max_mb=500.0' in r.stdout and '--face_weights=default' in r.stdout, r.stdout
    r = run_script('web.py', f'--checkpoint={tmp_path / "none.pt"}', '--port=1')
    assert r.returncode == 2 and r.stderr.strip() == f"error: --checkpoint='{tmp_path / 'none.pt'}' does not exist"
    r = run_script('web.py', '--port=0')
    assert r.returncode == 2 and r.stderr.strip() == 'error: --port must be a TCP port, 1 to 65535, not 0', r.stderr


def test_the_page_scores_only_files_in_its_own_folder(tmp_path):
    import web
    (tmp_path / 'server').mkdir()
    outside = tmp_path / 'outside.mp4'
    outside.write_bytes(b'not a video')
    (tmp_path / 'server' / 'link.mp4').symlink_to(outside)
    page = web.Page(None, 'checkpoint none.pt', tmp_path / 'server', MAX_MB)
    for path in (outside, tmp_path / 'server' / '..' / 'outside.mp4', tmp_path / 'server' / 'link.mp4'):
        shown, figure, _ = page.score(str(path))
        assert 'not a file uploaded to this page' in shown and figure is None, shown
    assert outside.read_bytes() == b'not a video'  # neither read nor deleted


def test_a_scoring_that_fails_after_its_figure_leaves_no_figure_and_names_the_file_not_the_servers_path(
        tmp_path, monkeypatch):
    # the figure's folder was left for good (no answer showed it), and the message quoted where the server stored
    # the upload, where every other line names the file
    import predict
    import web
    from common.files import write_text

    def drawn_then_failed(predictor, path, png):
        write_text('a figure', png)
        raise OSError(5, 'Input/output error', path)
    monkeypatch.setattr(predict, 'score_video', drawn_then_failed)
    (tmp_path / 'server').mkdir()
    page = web.Page(None, 'checkpoint none.pt', tmp_path / 'server', MAX_MB)
    (tmp_path / 'server' / 'clip.mp4').write_bytes(b'a clip')
    shown, figure, _ = page.score(str(tmp_path / 'server' / 'clip.mp4'))
    assert figure is None and os.listdir(page.figures) == [] and not (tmp_path / 'server' / 'clip.mp4').exists()
    assert 'could not be scored: [Errno 5] Input/output error: &#x27;clip.mp4&#x27;</p>' in shown  # html-escaped
    assert str(tmp_path) not in shown


def test_a_video_scored_without_its_broken_audio_is_a_verdict_with_a_note_not_a_fallback(tmp_path, monkeypatch):
    """GenD's head (no checkpoint) scores a video whose audio track breaks from its faces, as the same video
    without an audio track (the same packets: the same number): the page called that a fallback and said
    'voice: none'; it is the head's verdict, which reads no audio (no note, no fallback), and its voice did not
    decode. The figure of an answer the page keeps no longer is deleted (a server's figures grew ~100 KB an
    upload)."""
    import shutil as sh
    import torch
    import predict
    import web
    from audio_clips import garble_audio, remux
    from gend_models import tiny_gend
    (tmp_path / 'gend').mkdir(), (tmp_path / 'server').mkdir()
    tiny_gend(tmp_path / 'gend')
    good = os.path.join(testdata('talking_heads'), '2.mp4')
    predictor = predict.Predictor('', 'cpu', face={'face_encoder': 'gend', 'face_weights': str(tmp_path / 'gend'),
                                                   'frame_step': 30, 'amp': False})
    page, shown = web.Page(predictor, predictor.scorer, tmp_path / 'server', MAX_MB), {}
    monkeypatch.setattr(web, 'ANSWERS_KEPT', 1)
    figures = []
    for name, make in (('bad_audio.mp4', garble_audio), ('silent.mp4', remux)):
        make(good, tmp_path / name)
        sh.copy(tmp_path / name, tmp_path / 'server' / name)  # as Gradio stores an upload: the page deletes it
        with torch.no_grad():
            shown[name], figure, _ = page.score(str(tmp_path / 'server' / name))
        assert figure and os.path.getsize(figure) > 5000
        figures.append(figure)
    assert not os.path.exists(figures[0]) and os.path.exists(figures[1])  # one answer kept: its figure only
    (tmp_path / 'server' / 'notes.mp4').write_text('not a video')
    shown['notes.mp4'], figure, _ = page.score(str(tmp_path / 'server' / 'notes.mp4'))
    assert 'could not be read' in shown['notes.mp4']
    assert os.listdir(page.figures) == [os.path.basename(os.path.dirname(figure))]  # silent.mp4's dropped in turn
    assert '>note' not in shown['bad_audio.mp4'] and '>fallback' not in shown['bad_audio.mp4']
    assert 'faces read of 125 frames; voice: not decoded<' in shown['bad_audio.mp4']
    assert 'voice: none<' in shown['silent.mp4'] and 'fallback' not in shown['silent.mp4']
    [p_broken], [p_silent] = (re.findall(r'p\(FAKE\) = (0\.\d{4})', shown[n]) for n in ('bad_audio.mp4', 'silent.mp4'))
    assert p_broken == p_silent


def test_a_host_or_port_it_cannot_listen_on_is_one_line_before_any_work():
    # gradio's own error was two lines (uvicorn's log line, then ours quoting gradio's advice to set its variables)
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, says in [
                ([f'--port={port}'], f'cannot listen on 127.0.0.1:{port} (Address already in use); give another --port'),
                (['--host=192.0.2.1'], 'cannot listen on 192.0.2.1:7860 (Cannot assign requested address); give '
                                       'another --host'),  # TEST-NET-1: never an address of this machine
                (['--host=256.1.1.1'], '--host=256.1.1.1: ')]:
            r = run_script('web.py', *args)
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
            assert r.stderr.startswith('error: ' + says), (args, r.stderr)
