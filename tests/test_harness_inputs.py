"""What a held-out harness of bad settings and odd inputs found: a WAV cut short after extraction, a SLURM task
outside its array, an error message with a line break, the gone --procs, a metadata.json with a byte-order
mark or integer labels. Real clips, real files, the scripts run as a user runs them."""
import csv
import json
import os
import sys

import av
import numpy as np
import pandas as pd
import pytest

import extract_audio as ea
from audio_clips import dfdc_part, run_script
from common import config, stage
from common.config import UserError
from common.dataset import label_of, plan
from common.video import reason as failure_reason
from conftest import script_module, testdata
from test_config import SCRIPTS
from test_stage_failures import one_line_exit_2


def head(i):
    return testdata('talking_heads', f'{i}.mp4')


# ----------------------------------------------------------------------------- a WAV cut short
def test_a_wav_cut_to_30_percent_of_what_the_index_records_is_a_failure_not_an_embedding(tmp_path):
    """libsndfile reads what is left of a WAV cut short without a word: its 30% was embedded as 'ok'."""
    data, audio, out = tmp_path / 'data', tmp_path / 'audio', tmp_path / 'audio.pkl'
    dfdc_part(str(data / 'p'), {'a.mp4': head(2), 'b.mp4': head(3)})
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}')
    assert r.returncode == 0, r.stderr[-2000:]
    index = pd.read_pickle(audio / ea.INDEX).set_index('filename')
    wav = audio / 'p' / 'b.mp4.wav'
    whole = wav.read_bytes()
    wav.write_bytes(whole[:int(len(whole) * 0.3)])  # header intact, 70% of the samples gone
    r = run_script('create_audio_embedding.py', f'--audio_dir={audio}', f'--output={out}', '--device=cpu')
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_pickle(out)
    assert table.filename.tolist() == ['a.mp4'] and table.audio_status.tolist() == ['ok']
    with open(f'{out}.failures.csv', newline='', encoding='utf-8') as f:
        reasons = {row['filename']: row['reason'] for row in csv.DictReader(f)}
    assert list(reasons) == ['b.mp4'], reasons
    left = (len(whole) * 3 // 10 - 44) // 2  # 16-bit samples after the 44-byte header
    assert 'truncated' in reasons['b.mp4'] and f'records {index.at["b.mp4", "samples"]}' in reasons['b.mp4']
    assert abs(int(reasons['b.mp4'].split(' holds ')[1].split()[0]) - left) <= 1, reasons


def test_a_wav_replaced_or_deleted_after_its_embedding_is_embedded_again_not_kept(tmp_path):
    """The rows were kept by their video's file alone: a WAV edited by hand after the embedding kept the old
    embedding ('0 to embed'); a WAV deleted was read as libsndfile's 'System error.'."""
    import soundfile as sf
    data, audio, out = tmp_path / 'data', tmp_path / 'audio', tmp_path / 'audio.pkl'
    dfdc_part(str(data / 'p'), {'a.mp4': head(2), 'b.mp4': head(3), 'c.mp4': head(4)})
    embed = ('create_audio_embedding.py', f'--audio_dir={audio}', f'--output={out}', '--device=cpu')
    assert run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}').returncode == 0
    assert run_script(*embed).returncode == 0
    before = pd.read_pickle(out).set_index('filename').audio_embedding
    pcm, rate = sf.read(audio / 'p' / 'a.mp4.wav', dtype='int16')
    sf.write(audio / 'p' / 'a.mp4.wav', pcm[::-1].copy(), rate, subtype='PCM_16')  # same length, other sound
    wav_c = sf.read(audio / 'p' / 'c.mp4.wav', dtype='int16')[0]
    (audio / 'p' / 'c.mp4.wav').unlink()
    r = run_script(*embed)
    assert r.returncode == 0 and '2 videos changed since they were done' in r.stdout and '2 to embed' in r.stdout, \
        r.stdout[-2000:]
    after = pd.read_pickle(out).set_index('filename').audio_embedding
    assert list(after.index) == ['a.mp4', 'b.mp4'] and (after['b.mp4'] == before['b.mp4']).all()
    assert not np.allclose(after['a.mp4'], before['a.mp4'], atol=1e-3)  # embeddings of norm 1
    with open(f'{out}.failures.csv', newline='', encoding='utf-8') as f:
        reasons = {row['filename']: row['reason'] for row in csv.DictReader(f)}
    assert list(reasons) == ['c.mp4'] and 'c.mp4.wav is missing' in reasons['c.mp4'], reasons
    assert '0 to embed' in run_script(*embed).stdout  # and then nothing changed
    # what the reason says to do: extract_audio.py's rerun wrote no WAV ('0 videos to extract'); it now writes
    # the missing one alone, the same as the first time, and the embedding stage then embeds it
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}')
    assert r.returncode == 0 and '1 WAVs the index lists are gone' in r.stdout and '1 videos to extract' in r.stdout, \
        r.stdout[-2000:]
    assert sf.read(audio / 'p' / 'c.mp4.wav', dtype='int16')[0].tolist() == wav_c.tolist()
    r = run_script(*embed)
    assert r.returncode == 0 and '1 to embed' in r.stdout and pd.read_pickle(out).filename.tolist() == [
        'a.mp4', 'b.mp4', 'c.mp4'], r.stdout[-2000:]


# ----------------------------------------------------------------------------- a SLURM task outside its array
@pytest.mark.parametrize('task, first, count', [(2, 0, 2), (7, 5, 2), (4, 5, 2)])  # past the end; negative
def test_a_slurm_task_outside_its_array_is_one_line_exit_2_before_any_work(tmp_path, task, first, count):
    """Task 2 of 2 took the videos of task 0 (items[2::2]), said 'share done' and exited 0; no task wrote the
    index. An array with a step (--array=0-9:5: ids 0 and 5 of a count of 2) is the same case."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'a.mp4': head(1), 'b.mp4': head(2), 'c.mp4': head(3)})
    env = {**os.environ, 'SLURM_ARRAY_TASK_ID': str(task), 'SLURM_ARRAY_TASK_MIN': str(first),
           'SLURM_ARRAY_TASK_COUNT': str(count), 'SLURM_ARRAY_JOB_ID': '77'}
    env.pop('WORLD_SIZE', None)
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}', env=env)
    one_line_exit_2(r, f'SLURM_ARRAY_TASK_ID={task}', f'SLURM_ARRAY_TASK_COUNT={count}', '--array=0-1')
    assert not os.path.exists(audio / 'p'), os.listdir(audio)  # no WAV: nothing was done


def test_shard_refuses_every_rank_outside_its_world_and_takes_every_rank_inside(monkeypatch):
    for name in ('WORLD_SIZE', 'RANK', 'SLURM_ARRAY_TASK_ID', 'SLURM_ARRAY_TASK_MIN', 'SLURM_ARRAY_TASK_COUNT'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('SLURM_ARRAY_TASK_COUNT', '3')
    monkeypatch.setenv('SLURM_ARRAY_TASK_MIN', '10')
    for task, rank in ((10, 0), (11, 1), (12, 2), (13, None), (9, None)):
        monkeypatch.setenv('SLURM_ARRAY_TASK_ID', str(task))
        if rank is None:
            with pytest.raises(UserError, match='not one of the SLURM_ARRAY_TASK_COUNT=3 tasks 0..2'):
                stage.shard()
        else:
            assert stage.shard()[:2] == (rank, 3)
    monkeypatch.setenv('SLURM_ARRAY_TASK_ID', 'x')
    with pytest.raises(UserError, match="SLURM_ARRAY_TASK_ID='x' is not an integer"):
        stage.shard()
    monkeypatch.setenv('WORLD_SIZE', '2')  # torchrun's variables come first
    for rank in ('2', '-1'):
        monkeypatch.setenv('RANK', rank)
        with pytest.raises(UserError, match=f'RANK={rank} is not one of the WORLD_SIZE=2 ranks 0..1'):
            stage.shard()
    monkeypatch.setenv('RANK', '1')
    assert stage.shard()[:2] == (1, 2)


# ----------------------------------------------------------------------------- one line, always
def test_an_error_quoting_a_message_with_line_breaks_is_one_line(capsys):
    def main():
        raise UserError('x.pkl: not a readable pickle (UnpicklingError: line one\n  line two\r\n\tend)')
    with pytest.raises(SystemExit) as exit_:
        config.cli(main)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err == 'error: x.pkl: not a readable pickle (UnpicklingError: line one line two end)\n', repr(err)

    def writes_in_a_folder():
        raise OSError(21, 'Is a directory\nreally', 'out/x.pkl')
    with pytest.raises(SystemExit):
        config.cli(writes_in_a_folder)
    assert capsys.readouterr().err == 'error: out/x.pkl: Is a directory really\n'


# ----------------------------------------------------------------------------- --procs
@pytest.mark.parametrize('name', SCRIPTS)
def test_procs_is_one_line_that_points_to_torchrun_in_every_script(name, monkeypatch, capsys):
    module = script_module(name)
    monkeypatch.setattr(sys, 'argv', [f'{name}.py', '--procs=2'])
    with pytest.raises(SystemExit) as exit_:
        config.cli(module.main)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count('\n') == 1, err
    assert err.startswith('error: unknown setting --procs; --procs is gone') and \
        f'torchrun --standalone --nproc_per_node=N {name}.py ...' in err, err


# ----------------------------------------------------------------------------- metadata.json as users write it
def test_a_metadata_json_with_a_byte_order_mark_and_labels_written_as_users_write_them(tmp_path):
    """A BOM failed the whole part ('not readable JSON'); 1 and 0 read as no label (each video refused)."""
    data = tmp_path / 'data'
    names = {'a.mp4': 1, 'b.mp4': 0, 'c.mp4': '1', 'd.mp4': 'fake', 'e.mp4': 'Real', 'f.mp4': ' FAKE ',
             'g.mp4': 1.0, 'h.mp4': True, 'i.mp4': 2, 'j.mp4': 'maybe', 'k.mp4': None}
    dfdc_part(str(data / 'p'), {n: head(1) for n in names})
    meta = {n: {'label': label, 'original': None} for n, label in names.items()}
    (data / 'p' / 'metadata.json').write_bytes(b'\xef\xbb\xbf' + json.dumps(meta).encode('utf-8'))
    todo, failures, skipped = plan(str(data))
    assert {name: label_of(entry) for _, name, _, entry in todo} == {
        'a.mp4': 1, 'b.mp4': 0, 'c.mp4': 1, 'd.mp4': 1, 'e.mp4': 0, 'f.mp4': 1, 'g.mp4': 1}
    assert sorted(name for name, _, _ in failures) == ['h.mp4', 'i.mp4', 'j.mp4', 'k.mp4']
    assert all('no REAL/FAKE label' in reason for _, _, reason in failures) and skipped == 0


# ----------------------------------------------------------------------------- which files are videos
def test_every_stage_predict_and_make_metadata_take_the_same_files_for_videos(tmp_path):
    """predict.py passed .ts and .mpg files over without a row or a word; the stages' count of the videos a
    metadata.json does not list, and make_metadata.py's listing, go by the same rule (common.dataset.is_video)."""
    predict, make_metadata = script_module('predict'), script_module('make_metadata')
    videos = ['a.mp4', 'b.ts', 'c.MPG', 'd.mpeg', 'e.m2ts', 'f.mts', 'g.wmv', 'h.flv', 'i.3gp', 'j.mkv', 'k.avi']
    dfdc_part(str(tmp_path / 'p'), {'listed.mp4': b''})
    for name in videos + ['notes.txt', 'thumb.jpg', 'clip.mp4.part']:
        (tmp_path / 'p' / name).write_bytes(b'')
    others = []
    found = predict.list_inputs(str(tmp_path), others)
    assert [key for _, _, key in found] == sorted(videos + ['listed.mp4'])
    assert others == ['p/clip.mp4.part', 'p/notes.txt', 'p/thumb.jpg']  # a part's metadata.json is not passed over
    assert plan(str(tmp_path))[2] == len(videos)  # on disk, not in metadata.json: skipped and counted
    assert make_metadata.videos_in(str(tmp_path / 'p')) == sorted(videos + ['listed.mp4'])


def test_an_unreadable_video_whose_path_holds_a_line_break_is_one_line(tmp_path):
    """DetectionPipeline.py's own error line (exit 1: the video, not a setting) printed the path as it is."""
    video = tmp_path / 'two\nlines.mp4'
    video.write_bytes(b'not a video')
    r = run_script('DetectionPipeline.py', f'--video={video}', '--face_weights=none', '--device=cpu')
    assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr.startswith(f'error: {tmp_path}/two lines.mp4: not a readable video'), r.stderr


# ----------------------------------------------------------------------------- what a file is
def test_a_link_loop_a_pipe_and_a_device_are_each_recorded_as_what_they_are(tmp_path):
    """A link to itself was 'file is missing'; a pipe and /dev/zero 'file is empty (0 bytes)'."""
    from common.video import VideoError, check_file
    os.symlink(tmp_path / 'loop.mp4', tmp_path / 'loop.mp4')
    os.mkfifo(tmp_path / 'pipe.mp4')
    os.symlink(tmp_path / 'gone', tmp_path / 'dangling.mp4')
    for path, reason in [(tmp_path / 'loop.mp4', 'a link that leads back to itself'),
                         (tmp_path / 'pipe.mp4', 'not a regular file (a pipe, a device or a folder)'),
                         ('/dev/zero', 'not a regular file (a pipe, a device or a folder)'),
                         (tmp_path / 'dangling.mp4', 'file is missing')]:
        with pytest.raises(VideoError) as err:
            check_file(str(path))
        assert str(err.value) == reason
    check_file(head(2))  # a video: nothing to say


# ----------------------------------------------------------------------------- a still before the clip
def test_a_file_whose_first_video_stream_is_a_still_decodes_the_clip_as_ffmpeg_does(tmp_path):
    """A Matroska file with a one-frame picture (cover art, a thumbnail track) as its first video stream, then
    the clip: the still was taken for the video ('no face found in 1 frames'), as FFmpeg's tools never do."""
    import av
    import numpy as np
    from common import video
    path = tmp_path / 'with_cover.mkv'
    with av.open(head(2)) as inp, av.open(str(path), 'w') as out:
        still = out.add_stream('mjpeg', rate=1)
        still.width, still.height, still.pix_fmt = 160, 120, 'yuvj420p'
        clip = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], inp.streams.audio[0])}
        picture = av.VideoFrame.from_ndarray(np.zeros((120, 160, 3), np.uint8), 'rgb24').reformat(format='yuvj420p')
        for packet in [*still.encode(picture), *still.encode()]:
            out.mux(packet)
        for packet in inp.demux(*inp.streams.video[:1], *inp.streams.audio[:1]):
            if packet.dts is not None:  # the demuxer's flush packets have none
                packet.stream = clip[packet.stream.index]
                out.mux(packet)
    with av.open(str(path)) as container:
        assert [s.codec_context.name for s in container.streams.video] == ['mjpeg', 'h264']
    assert {k: v for k, v in video.probe(path).items() if k != 'n_frames'} == \
        {k: v for k, v in video.probe(head(2)).items() if k != 'n_frames'}  # Matroska's header has no count
    ours, theirs = list(video.sampled_frames(path, 25)), list(video.sampled_frames(head(2), 25))
    assert [i for i, _ in ours] == [i for i, _ in theirs] == [0, 25, 50, 75, 100]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ours, theirs))  # the same packets, decoded


# ----------------------------------------------------------------------------- a line break in a name
def test_a_name_with_a_line_break_is_one_line_of_each_report(tmp_path):
    """'  failed: p/bad' and 'name.mp4: not a readable video ...' were two lines: a reader of the report (or grep)
    took 'p/bad' for the video. So were predict.py's fallback line and its one-video verdict."""
    import pathlib
    from gend_models import tiny_gend
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'bad\nname.mp4': b'not a video', 'ok.mp4': head(2), 'gone\nx.mp4': None})
    r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}')
    assert r.returncode == 0, r.stderr[-2000:]
    failed = [line for line in r.stdout.splitlines() if line.startswith('  failed: ')]
    assert failed == ['  failed: p/bad\\nname.mp4: not a readable video: Invalid data found when processing input',
                      '  failed: p/gone\\nx.mp4: file is missing']
    weights = pathlib.Path(tmp_path / 'gend')
    weights.mkdir()
    tiny_gend(weights)
    gend = ('--face_encoder=gend', f'--face_weights={weights}', '--device=cpu', '--frame_step=30')
    r = run_script('predict.py', f'--input={data / "p" / "bad"}\nname.mp4', *gend)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(
        'bad\\nname.mp4: p(FAKE) = 0.5000 (fallback: unreadable video: not a readable video'), r.stdout
    r = run_script('predict.py', f'--input={data / "p"}', f'--output={tmp_path / "s.csv"}', *gend)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(
        '  fallback: bad\\nname.mp4: unreadable video: not a readable video'), r.stdout


def test_detection_pipeline_given_no_such_video_or_a_folder_is_a_setting_error(tmp_path):
    """--video=a path that does not exist, or a folder, exited 1 as a bad video does ('file is missing'), where
    predict.py's --input says it in one line with exit 2."""
    for path, words in [(tmp_path / 'nope.mp4', ['--video=', 'nope.mp4 does not exist']),
                        (tmp_path, ['is a folder: give one video (create_video_embeddings.py takes a folder)'])]:
        one_line_exit_2(run_script('DetectionPipeline.py', f'--video={path}', '--face_weights=none'), *words)
    video = tmp_path / 'two\nlines.mp4'
    os.symlink(head(2), video)
    r = run_script('DetectionPipeline.py', f'--video={video}', '--face_weights=none', '--device=cpu',
                   '--frame_step=30')
    said = r.stdout.splitlines()
    assert r.returncode == 0 and said[-3].startswith(f'{tmp_path}/two\\nlines.mp4: 844x844, '), r.stdout


def test_an_ffmpeg_error_is_said_by_its_message_and_last_log_line_not_its_errno_and_path():
    """Failure reasons held FFmpeg's str(): '[Errno 1094995529] ...: '/the/path'' (the row names the video)."""
    err = av.error.InvalidDataError(1094995529, 'Invalid data found when processing input', '/data/p/x.mp4',
                                    (16, 'h264', 'no frame!\n'))
    assert failure_reason(err) == 'Invalid data found when processing input (h264: no frame!)'
    assert failure_reason(av.error.InvalidDataError(1094995529, 'Invalid data found when processing input', '/d/x.mp4')) \
        == 'Invalid data found when processing input'
    assert failure_reason(ValueError('a frame the resampler cannot take')) == 'a frame the resampler cannot take'
