"""Inputs met in the field: a disk that fills while the WAVs are written, a data tree with a link loop or two links
to one part, and a metadata.json name that is not UTF-8 text. Real clips, real files."""
import contextlib
import csv
import json
import os
import sys

import pandas as pd
import pytest

import extract_audio as ea
from audio_clips import dfdc_part, run_script
from common import config
from common.dataset import plan
from common.stage import Journal, atomic_path
from conftest import testdata


def head(i):
    return testdata('talking_heads', f'{i}.mp4')


def failures_csv(output):
    """{folder/filename: reason} of OUTPUT.failures.csv, read as a user would."""
    with open(f'{output}.failures.csv', newline='', encoding='utf-8') as f:
        return {f"{row['folder']}/{row['filename']}": row['reason'] for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- a full disk
def test_a_disk_full_while_the_wavs_are_written_ends_the_run_and_fails_no_video(tmp_path, monkeypatch, capsys):
    """libsndfile's own write failed with 'System error.' (no errno): every video left got a failure, which a
    rerun skipped, and the run ended with exit 0. /dev/full answers every write with ENOSPC, as a full disk."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'a.mp4': head(2), 'b.mp4': head(3)})

    @contextlib.contextmanager
    def on_a_full_disk(path):
        with atomic_path(path):  # the real one, its temporary file left unwritten
            yield '/dev/full'
    monkeypatch.setattr(ea, 'atomic_path', on_a_full_disk)
    monkeypatch.setattr(ea, 'DATA_DIR', str(data))
    monkeypatch.setattr(ea, 'AUDIO_DIR', str(audio))
    monkeypatch.setattr(sys, 'argv', ['extract_audio.py'])
    with pytest.raises(SystemExit) as exit_:
        config.cli(ea.main)
    assert exit_.value.code == 2
    wav = audio / 'p' / 'a.mp4.wav'
    assert capsys.readouterr().err.splitlines()[-1] == f'error: {wav}: No space left on device'  # after tqdm's bar
    assert Journal(audio / ea.INDEX).done() == set()  # no failure recorded: a rerun does both videos

    # room on the disk again; in this process, which holds the output's lock (common.stage.claim)
    monkeypatch.setattr(ea, 'atomic_path', atomic_path)
    config.cli(ea.main)
    assert '2 videos to extract' in capsys.readouterr().out
    assert pd.read_pickle(audio / ea.INDEX).wav.tolist() == ['p/a.mp4.wav', 'p/b.mp4.wav']
    assert failures_csv(audio / ea.INDEX) == {}


# ----------------------------------------------------------------------------- links in the data tree
def test_a_link_loop_and_a_second_link_to_a_part_list_each_video_once(tmp_path):
    """q/p/up -> .. made every video appear again under p/up/p/up/... (41 times) before the walk gave up."""
    data = tmp_path / 'q'
    dfdc_part(str(data / 'p'), {'a.mp4': head(1), 'b.mp4': head(2)})
    os.symlink('..', data / 'p' / 'up')  # the loop
    todo, failures, skipped = plan(str(data))
    assert [(rel, name) for rel, name, _, _ in todo] == [('p', 'a.mp4'), ('p', 'b.mp4')]
    assert [os.path.realpath(path) for _, _, path, _ in todo] == [os.path.realpath(head(1)),
                                                                   os.path.realpath(head(2))]
    assert failures == [] and skipped == 0
    (data / 'z').mkdir()
    os.symlink(os.path.join('..', 'p'), data / 'z' / 'again')  # the same part once more, reached after p
    assert [(rel, name) for rel, name, _, _ in plan(str(data))[0]] == [('p', 'a.mp4'), ('p', 'b.mp4')]
    os.symlink('.', data / 'a_self')  # the data folder itself: seen already
    assert [(rel, name) for rel, name, _, _ in plan(str(data))[0]] == [('p', 'a.mp4'), ('p', 'b.mp4')]
    os.symlink('p', data / 'a_link')  # the part, reached first by the sorted walk: once, under the link
    assert [(rel, name) for rel, name, _, _ in plan(str(data))[0]] == [('a_link', 'a.mp4'), ('a_link', 'b.mp4')]


# ----------------------------------------------------------------------------- names that are not UTF-8 text
def test_a_metadata_name_with_a_lone_surrogate_is_refused_and_the_run_ends_well_twice(tmp_path):
    """json.load gives "sur\\ud800.mp4" for the escape; writing the failures file then raised UnicodeEncodeError
    at the end of every run, and of every rerun."""
    data, audio = tmp_path / 'data', tmp_path / 'audio'
    dfdc_part(str(data / 'p'), {'good.mp4': head(4)})
    meta = json.loads((data / 'p' / 'metadata.json').read_text())
    meta['sur\ud800.mp4'] = {'label': 'REAL'}
    text = json.dumps(meta)  # ensure_ascii: the surrogate as the escape \ud800, as a JSON writer may give it
    assert '\\ud800' in text
    (data / 'p' / 'metadata.json').write_text(text)
    for run in range(2):  # the rerun reads the failures file and skips the refused name
        r = run_script('extract_audio.py', f'--data_dir={data}', f'--audio_dir={audio}')
        assert r.returncode == 0, r.stderr[-2000:]
        assert pd.read_pickle(audio / ea.INDEX).filename.tolist() == ['good.mp4']
        reasons = failures_csv(audio / ea.INDEX)
        assert list(reasons) == ['p/sur\\ud800.mp4'], reasons  # the name, its surrogate escaped
        assert 'that no file name holds: refused' in reasons['p/sur\\ud800.mp4']
    assert '0 videos to extract' in r.stdout
