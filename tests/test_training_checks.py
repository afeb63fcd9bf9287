"""Settings that training would otherwise ignore in silence are refused before any work: --val_folders
where the split is not by folder, or where --val_fraction=0 asks for no validation side at all. A
--split=folder --val_folders run holds out exactly the folders named. A validation side without a face is
refused, not trained on without validation."""
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT

import training
from common import config, store
from common.dataset import groups_of
from model import load_checkpoint, split_indices, synthetic_table

torch.set_num_threads(1)  # steadier on a shared 2-core machine (training.py's THREADS)
TINY = dict(crop=4, project=8, hidden=8, fc=0, batch_size=16, progress=False)


def folder_table(tmp_path):
    """90 videos in three DFDC parts, every fake in its original's part: (path of the pickle, the table)."""
    table = synthetic_table(90, faces=6, video_dim=8, audio_dim=2, folders=3, seed=5)
    assert sorted(set(table.folder)) == [f'dfdc_train_part_{i}' for i in range(3)]
    path = tmp_path / 'parts.pkl'
    store.save(table, str(path))
    return path, table


@pytest.mark.parametrize('args, message', [
    (['--split=original', '--val_folders=dfdc_train_part_0'],
     '--val_folders holds out whole folders: it needs --split=folder, not --split=original'),
    (['--split=folder', '--val_folders=dfdc_train_part_0', '--val_fraction=0'],
     '--val_folders holds those folders out for validation, --val_fraction=0 holds nothing out'),
    (['--split=folder', '--val_folders=,'], "--val_folders=',' names no folder"),
])
def test_val_folders_that_would_be_ignored_are_one_line_and_exit_2(tmp_path, args, message):
    path, _ = folder_table(tmp_path)
    out = subprocess.run([sys.executable, 'training.py', f'--dataset={path}', f'--out_dir={tmp_path / "run"}',
                          '--max_epochs=1', '--crop=4', '--project=8', '--hidden=8', '--fc=0', *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith('error: '), out.stderr
    assert message in out.stderr, out.stderr
    assert not (tmp_path / 'run').exists()  # refused before any work


def test_run_refuses_them_too_before_any_work(tmp_path):
    path, _ = folder_table(tmp_path)
    for overrides in (dict(split='original', val_folders='dfdc_train_part_0'),
                      dict(split='folder', val_folders='dfdc_train_part_0', val_fraction=0.0)):
        with pytest.raises(config.UserError, match='--val_folders') as err:
            training.run(training.settings(dataset=str(path), out_dir=str(tmp_path / 'run'), max_epochs=1,
                                           **overrides, **TINY), log=lambda *_: None)
        assert '\n' not in str(err.value)
    assert not (tmp_path / 'run').exists()


def test_a_folder_split_holds_out_exactly_the_folders_named(tmp_path):
    path, table = folder_table(tmp_path)
    wanted = 'dfdc_train_part_1'
    in_wanted = table.folder == wanted
    for fraction in (0.2, 0.5):  # with --val_folders, --val_fraction does not change the split
        out = tmp_path / f'run{fraction}'
        training.run(training.settings(dataset=str(path), out_dir=str(out), split='folder', val_folders=wanted,
                                       val_fraction=fraction, max_epochs=1, **TINY), log=lambda *_: None)
        _, ckpt = load_checkpoint(out / 'best.pt')
        split = ckpt['split']
        assert split['how'] == 'folder' and split['n_val'] == int(in_wanted.sum()) == len(split['val_keys'])
        assert sorted(split['val_keys']) == sorted(f'{wanted}/{name}' for name in table.filename[in_wanted])
        assert split['n_train'] == int((~in_wanted).sum())


def test_a_validation_side_without_faces_is_one_line_not_a_run_without_validation(tmp_path):
    # every video the split holds out has no face: training went on with no validation and no early stopping,
    # saying "no validation side (--val_fraction=0)" of a run given --val_fraction=0.2
    table = synthetic_table(40, faces=8, video_dim=8, audio_dim=4, seed=1)
    groups = np.array(groups_of(table.filename.tolist(), table.original.tolist(), table.folder.tolist()), object)
    _, val = split_indices(table.label.to_numpy(), groups, table.folder.to_numpy(), 'original', 0.2, 0)
    table['video_embedding'] = [e[:0] if i in set(val.tolist()) else e for i, e in enumerate(table.video_embedding)]
    store.save(table, str(tmp_path / 't.pkl'))
    cfg = training.settings(dataset=str(tmp_path / 't.pkl'), out_dir=str(tmp_path / 'run'), max_epochs=1,
                            progress=False)
    with pytest.raises(config.UserError, match=f'none of the {len(val)} videos of the validation side has a face'):
        training.run(cfg, log=lambda *_: None)
    assert not (tmp_path / 'run' / 'best.pt').exists()
    assert training.run({**cfg, 'val_fraction': 0.0}, log=lambda *_: None)[0]['epoch'] == 1  # as it says


def test_a_table_without_any_face_says_so_not_to_change_the_split(tmp_path):
    # it said "--val_fraction=0 trains without one, another --seed draws another side": both failed too
    table = synthetic_table(20, faces=8, video_dim=8, audio_dim=4, seed=1)
    table['video_embedding'] = [e[:0] for e in table.video_embedding]
    store.save(table, str(tmp_path / 't.pkl'))
    for val_fraction in (0.2, 0.0):
        cfg = training.settings(dataset=str(tmp_path / 't.pkl'), out_dir=str(tmp_path / 'run'), max_epochs=1,
                                progress=False, val_fraction=val_fraction)
        with pytest.raises(config.UserError, match=r't.pkl: none of its 20 videos has a face embedding \(see its '):
            training.run(cfg, log=lambda *_: None)


def test_further_face_tracks_are_trained_on_and_validated_once_a_video(tmp_path):
    # --keep_all_tracks makes a row per face track: validation (its loss, AUC and early stopping) counted a crowd
    # clip once a face where test.py and predict.py score its largest track, the split line called tracks
    # videos, and the prior weighed a video by its tracks
    _, table = folder_table(tmp_path)
    extra = table[table.label == 1].iloc[::2].copy()  # fakes of every part with a second, smaller track
    extra['video_embedding'] = [e[::-1].copy() for e in extra.video_embedding]
    tracks = pd.concat([table, extra]).sort_values(['folder', 'filename'], kind='stable').reset_index(drop=True)
    store.save(tracks, str(tmp_path / 'tracks.pkl'))
    wanted, lines = 'dfdc_train_part_1', []
    training.run(training.settings(dataset=str(tmp_path / 'tracks.pkl'), out_dir=str(tmp_path / 'run'),
                                   split='folder', val_folders=wanted, max_epochs=1, **TINY), log=lines.append)
    split = load_checkpoint(tmp_path / 'run' / 'best.pt')[1]['split']
    in_wanted, extra_in = table.folder == wanted, extra.folder == wanted
    assert sorted(split['val_keys']) == sorted(f'{wanted}/{name}' for name in table.filename[in_wanted])
    assert split['n_train'] == int((~in_wanted).sum() + (~extra_in).sum())  # every track trained on
    assert load_checkpoint(tmp_path / 'run' / 'best.pt')[1]['prior'] == table.label[~in_wanted].mean()
    assert (f'{int((~extra_in).sum())} rows are further face tracks of a video (--keep_all_tracks): trained on with '
            f'it;') in lines[0]
    [line] = [line for line in lines if line.startswith('split: ')]
    train, val = table.label[~in_wanted], table.label[in_wanted]
    assert line.startswith(f'split: train {split["n_train"]} face tracks of {len(train)} videos ({train.sum()} fake, '
                           f'{(train == 0).sum()} real, '), line
    assert f', validation {len(val)} videos ({val.sum()} fake, {(val == 0).sum()} real, ' in line, line
    # the loss weighs rows (each track is trained on), said so; the prior it says is of videos, as recorded
    [line] = [line for line in lines if line.startswith('loss weights: ')]
    assert line.endswith(f'(N / (2 N_class) of its rows, the {split["n_train"]} face tracks of {len(train)} videos); '
                         f'training prior {train.mean():.3f} fake'), line
    # a video whose original is not in the table is one, whatever its tracks (the warning counted rows)
    first = extra.iloc[0]
    lost = (tracks.folder == first.folder) & (tracks.filename == first.original)
    its = tracks[~lost & (tracks.folder == first.folder) & (tracks.original == first.original)]
    assert len(its) > its.filename.nunique()  # one of them has two tracks
    store.save(tracks[~lost].reset_index(drop=True), str(tmp_path / 'lost.pkl'))
    lines.clear()
    training.run(training.settings(dataset=str(tmp_path / 'lost.pkl'), out_dir=str(tmp_path / 'run2'), max_epochs=1,
                                   **TINY), log=lines.append)
    assert any(line.startswith(f'warning: {its.filename.nunique()} videos name an original that is not in the table')
               for line in lines), lines


def test_val_fraction_holds_out_a_share_of_videos_whatever_their_face_tracks(tmp_path):
    """--val_fraction is a share of videos: nine groups of a real and its fake, one of them a crowd clip of ten
    tracks a video (--keep_all_tracks). The draw counted rows: 0.2 held out 8 of the 18 videos, 0.5 held out 16
    or 4 by the seed (break-it pass 8, D2). Each group is 2 videos: the share is within one group of asked."""
    table = synthetic_table(200, faces=6, video_dim=8, audio_dim=4, seed=2)
    reals = table[table.label == 0].iloc[:9]
    videos = pd.concat([reals, *(table[table.original == name].iloc[:1] for name in reals.filename)])
    crowd = videos.filename.isin([reals.filename.iloc[0]]) | videos.original.isin([reals.filename.iloc[0]])
    assert crowd.sum() == 2 and len(videos) == 18  # the first group: each of its two videos has ten tracks
    tracks = pd.concat([videos] + [videos[crowd]] * 9).sort_values(['folder', 'filename'], kind='stable')
    store.save(tracks.reset_index(drop=True), str(tmp_path / 'crowd.pkl'))
    for fraction in (0.2, 0.5):
        for seed in range(4):
            cfg = training.settings(dataset=str(tmp_path / 'crowd.pkl'), val_fraction=fraction, seed=seed)
            with store.open_store(cfg['dataset']) as table_:
                _, val = training._split(cfg, table_, lambda *_: None)
                held = len(set(table_.keys[val]))
            assert abs(held - fraction * 18) <= 2, (fraction, seed, held)


def test_a_ctrl_c_a_library_drops_in_the_setup_stops_training_before_its_first_epoch(tmp_path):
    # numba's ctypes callbacks and pybind11 imports drop a KeyboardInterrupt (common.config.catch_up): the run trained
    # on to its last epoch and exited 0 as if no key had been pressed
    path, _ = folder_table(tmp_path)
    code = ("import os, signal, sys, time; import training; from common import config\n"
            f"sys.argv = ['training.py', '--dataset={path}', '--out_dir={tmp_path / 'run'}', '--max_epochs=3', "
            "'--crop=4', '--project=8', '--hidden=8', '--fc=0', '--progress=false']\n"
            "config.help_if_asked('__main__', 'training.py')\ncarried = training._carried\n"
            "def dropping(*args):\n    try:\n        os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n"
            "    except KeyboardInterrupt:\n        pass\n    return carried(*args)\n"
            "training._carried = dropping\nconfig.cli(training.main)")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal starts it
    assert out.returncode == 130 and 'Traceback' not in out.stderr, (out.returncode, out.stderr[-2000:])
    assert out.stderr.strip().splitlines()[-1] == 'interrupted: run the same command again to go on from here'
    assert 'epoch 1' not in out.stdout and not (tmp_path / 'run' / 'last.pt').exists(), out.stdout
