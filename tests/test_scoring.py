"""test.py's subset (by default the videos the checkpoint held out) and its calibration plot, on a real
checkpoint that training.py trained on a small table."""
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import script_module

import training
from common import config, store
from model import synthetic_table

torch.set_num_threads(1)  # steadier than two threads on a shared 2-core machine (training.py's THREADS)


scoring = script_module('test')
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A table, a checkpoint trained on it (its split recorded), and another table it never saw; each
    table with its training store, as merge_embeddings.py writes them."""
    tmp = tmp_path_factory.mktemp('scoring')
    store.save(synthetic_table(120, faces=10, video_dim=16, audio_dim=4, seed=3), str(tmp / 'merged.pkl'))
    other = synthetic_table(30, faces=10, video_dim=16, audio_dim=4, seed=4)
    other['folder'] = 'other_part'  # no key of the training table: folder/filename
    store.save(other, str(tmp / 'other.pkl'))
    training.run(training.settings(dataset=str(tmp / 'merged.pkl'), out_dir=str(tmp / 'run'), crop=6, project=8,
                                   hidden=8, fc=0, max_epochs=1, progress=False), **QUIET)
    return tmp


def score(run, out, log=lambda *_: None, dataset='merged.pkl', checkpoint='run/best.pt', **kw):
    return scoring.run(scoring.settings(dataset=str(run / dataset), checkpoint=str(run / checkpoint),
                                        report=str(run / out / 'r.json'), **kw), log=log)


def test_the_default_scores_the_videos_the_checkpoint_held_out(run):
    split = torch.load(run / 'run' / 'best.pt', weights_only=True)['split']
    lines = []
    rep = score(run, 'default', log=lines.append)
    assert rep['n_videos'] == split['n_val'] == len(split['val_keys']) < 120
    assert rep['subset'] == 'val' and 'held out' in rep['subset_note']
    assert f'scoring the {split["n_val"]} videos the checkpoint held out (--subset=all scores every video)' in lines
    back = pd.read_csv(run / 'default' / 'r_predictions.csv', keep_default_na=False)
    assert sorted(back.folder + '/' + back.filename) == sorted(split['val_keys'])
    assert json.loads((run / 'default' / 'r.json').read_text())['subset'] == 'val'
    # --subset=all scores every video, training videos included
    rep = score(run, 'all', subset='all')
    assert rep['n_videos'] == 120 and rep['subset'] == 'all'


def test_the_report_has_the_new_figures_and_the_calibration_plot(run, monkeypatch):
    titles = []
    for name in ('save_roc_png', 'save_calibration_png'):
        real = getattr(scoring.metrics, name)
        monkeypatch.setattr(scoring.metrics, name,
                            lambda y, p, path, title, real=real: titles.append(title) or real(y, p, path, title))
    lines = []
    rep = score(run, 'figures', log=lines.append)
    for key in ('average_precision', 'eer', 'ece'):
        assert 0 <= rep[key] <= 1 and f'{key} {rep[key]:.4f}' in lines[-2], (key, lines)
    assert rep['calibration_bins'] == scoring.metrics.CALIBRATION_BINS
    png = run / 'figures' / 'r_calibration.png'
    assert rep['calibration_png'] == str(png) and png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert len(titles) == 2 and all(f'subset=val ({rep["n_videos"]} videos)' in t for t in titles), titles


def test_a_table_the_checkpoint_never_saw_is_scored_whole_unless_val_is_asked_for(run, monkeypatch, capsys):
    lines = []
    rep = score(run, 'other', log=lines.append, dataset='other.pkl')
    assert rep['n_videos'] == 30 and rep['subset'] == 'all' and 'held none of them out' in rep['subset_note']
    assert sum('scoring all 30 videos' in line for line in lines) == 1
    with pytest.raises(config.UserError, match="no video of the table is on that side of the checkpoint's split"):
        score(run, 'other_val', dataset='other.pkl', subset='val')
    # the command line tells a given --subset=val from the default too
    base = ['test.py', f'--dataset={run / "other.pkl"}', f'--checkpoint={run / "run" / "best.pt"}',
            f'--report={run / "cli" / "r.json"}']
    monkeypatch.setattr(scoring, 'SUBSET', scoring.SUBSET)  # main() sets the script's globals: restored after
    monkeypatch.setattr(sys, 'argv', base)
    scoring.main()
    assert 'scoring all 30 videos: the checkpoint held none of them out' in capsys.readouterr().out
    monkeypatch.setattr(sys, 'argv', [*base, '--subset=val'])
    with pytest.raises(config.UserError, match='no video of the table is on that side'):
        scoring.main()


def test_a_checkpoint_without_a_split_is_scored_whole_by_default(run):
    ckpt = torch.load(run / 'run' / 'best.pt', weights_only=True)
    del ckpt['split']
    torch.save(ckpt, run / 'nosplit.pt')
    rep = score(run, 'nosplit', checkpoint='nosplit.pt')
    assert rep['n_videos'] == 120 and rep['subset'] == 'all' and 'recorded no split' in rep['subset_note']
    for subset in ('val', 'train'):
        with pytest.raises(config.UserError, match=f'--subset={subset}: the checkpoint recorded no split'):
            score(run, 'nosplit', checkpoint='nosplit.pt', subset=subset)


def test_a_single_class_leaves_ap_and_eer_undefined_with_the_reason(run):
    table = pd.read_pickle(run / 'merged.pkl')
    store.save(table[table.label == 1].reset_index(drop=True), str(run / 'fakes.pkl'))
    lines = []
    rep = score(run, 'fakes', log=lines.append, dataset='fakes.pkl', subset='all')
    for key in ('roc_auc', 'average_precision', 'eer'):
        assert rep[key] is None and rep[key + '_note'] == 'undefined: the set has only fake videos'
    assert 0 <= rep['ece'] <= 1 and (run / 'fakes' / 'r_calibration.png').exists()
    assert not (run / 'fakes' / 'r_roc.png').exists()
    assert 'eer n/a' in lines[-2] and lines[-2].endswith('(n/a: undefined: the set has only fake videos)')
    assert rep['n_fake'] == rep['n_videos'] == (table.label == 1).sum()


def test_a_video_without_a_face_is_scored_as_predict_py_scores_it(run):
    """No face: the audio-only model where the video has audio, else no evidence, both moved to PRIOR (as
    predict.py's fallback). It was p = 0.5 whatever PRIOR and the audio: a wrong log loss on a set of
    another share of fakes."""
    from model import audio_only_logit, prior_shift, sigmoid
    table = synthetic_table(30, faces=10, video_dim=16, audio_dim=4, seed=5)
    table['folder'] = 'faceless_part'
    for i, has_audio in ((0, True), (1, False)):
        table.at[i, 'video_embedding'] = np.zeros((0, 16), np.float16)
        table.at[i, 'has_audio'] = has_audio
        if not has_audio:
            table.at[i, 'audio_embedding'] = np.zeros(4, np.float32)
    assert table.loc[0, 'has_audio'] and table['audio_embedding'][0].any()
    store.save(table, str(run / 'faceless.pkl'))
    lines = []
    rep = score(run, 'faceless', log=lines.append, dataset='faceless.pkl', prior=0.8)
    assert rep['n_no_face'] == 2
    assert "\n2 of the 30 videos have no face embedding: scored by predict.py's fallback" in lines[-2]
    back = pd.read_csv(run / 'faceless' / 'r_predictions.csv', keep_default_na=False).set_index('filename')
    audio_only = torch.load(run / 'run' / 'best.pt', weights_only=False)['audio_only']
    assert audio_only is not None
    with_audio = sigmoid(audio_only_logit(audio_only, table['audio_embedding'][0]) + prior_shift(0.8))
    # float32 embedding and weights: the logit summed in another order differs by ~1e-7
    assert back.loc[table.filename[0], 'p_fake'] == pytest.approx(with_audio, abs=1e-6)
    assert back.loc[table.filename[1], 'p_fake'] == pytest.approx(0.8, abs=1e-6)
    assert back.loc[table.filename[0], 'no_face'] in (1, True, 'True')


def test_the_training_table_of_a_run_that_held_nothing_out_is_scored_as_training_videos(run):
    """--val_fraction=0 holds nothing out: its own table was scored 'all', as a test set it never saw."""
    training.run(training.settings(dataset=str(run / 'merged.pkl'), out_dir=str(run / 'all_in'), crop=6, project=8,
                                   hidden=8, fc=0, max_epochs=1, val_fraction=0, progress=False), **QUIET)
    lines = []
    rep = score(run, 'all_in_scored', log=lines.append, checkpoint='all_in/best.pt')
    assert rep['n_videos'] == 120 and rep['subset'] == 'train' and 'training figures, not a test' in rep['subset_note']
    assert any('the checkpoint was trained on them and held none of them out' in line for line in lines)
    rep = score(run, 'all_in_other', dataset='other.pkl', checkpoint='all_in/best.pt')  # another table: a test
    assert rep['subset'] == 'all' and 'held none of them out' in rep['subset_note']
    # the same videos in another pickle (a copy, a merge again): its stamp is another, its videos are not
    table = pd.read_pickle(run / 'merged.pkl')
    store.save(table.iloc[::-1].reset_index(drop=True), str(run / 'merged_again.pkl'))
    rep = score(run, 'all_in_again', dataset='merged_again.pkl', checkpoint='all_in/best.pt')
    assert rep['n_videos'] == 120 and rep['subset'] == 'train'
    # some of its training videos beside new ones: a test would score them
    mixed = pd.concat([table.iloc[:5], pd.read_pickle(run / 'other.pkl')], ignore_index=True)
    store.save(mixed, str(run / 'mixed.pkl'))
    with pytest.raises(config.UserError, match=r"mixed.pkl: 5 of its 35 videos are the checkpoint's training videos"):
        score(run, 'mixed', dataset='mixed.pkl', checkpoint='all_in/best.pt')
    assert score(run, 'mixed_all', dataset='mixed.pkl', checkpoint='all_in/best.pt', subset='all')['n_videos'] == 35


def with_attrs(run, name, **attrs):
    """A copy of the training table (as merged.pkl) and of run/best.pt, each with these attrs (merge_embeddings.py's
    face_settings, audio_settings as JSON); their names."""
    table = pd.read_pickle(run / 'merged.pkl')
    table.attrs.update({k: json.dumps(v) for k, v in attrs.items()})
    store.save(table, str(run / f'{name}.pkl'))
    ckpt = torch.load(run / 'run' / 'best.pt', weights_only=True)
    ckpt['dataset']['attrs'].update({k: json.dumps(v) for k, v in attrs.items()})
    torch.save(ckpt, run / 'run' / f'{name}.pt')
    return f'{name}.pkl', f'run/{name}.pt'


def test_a_table_made_with_other_face_or_audio_settings_than_the_checkpoints_is_refused(run):
    """predict.py refuses to make faces otherwise than the checkpoint's table; test.py scored such a table."""
    face, audio = {'--margin': 0.2, '--frame_step': 6}, {'--n_mels': 64, '--cnn_weights': '/box/a/cnn.pt'}
    _, checkpoint = with_attrs(run, 'settings', face_settings=face, audio_settings=audio)
    dataset, _ = with_attrs(run, 'margin', face_settings={**face, '--margin': 0.6}, audio_settings=audio)
    with pytest.raises(config.UserError, match=r"margin.pkl: made with --margin=0.6, the checkpoint's training "
                                               r"table with --margin=0.2: make it again"):
        score(run, 'margin', dataset=dataset, checkpoint=checkpoint)
    dataset, _ = with_attrs(run, 'mels', face_settings=face, audio_settings={**audio, '--n_mels': 40})
    with pytest.raises(config.UserError, match='made with --n_mels=40'):
        score(run, 'mels', dataset=dataset, checkpoint=checkpoint)
    # the same weights at another path (another machine): scored
    dataset, _ = with_attrs(run, 'moved', face_settings=face, audio_settings={**audio, '--cnn_weights': '/l/cnn.pt'})
    assert score(run, 'moved', dataset=dataset, checkpoint=checkpoint)['subset'] == 'val'


def test_a_video_of_several_face_tracks_is_scored_once_by_its_largest(run):
    """--keep_all_tracks makes a row per track: every figure counted a crowd clip once per face, and its
    predictions held a row per track, where predict.py scores a video by its largest track (its first row)."""
    table = pd.read_pickle(run / 'other.pkl')
    extra = table.iloc[:3].copy()  # three videos with a second, smaller track each, after their first
    extra['video_embedding'] = [e[::-1].copy() for e in extra['video_embedding']]
    tracks = pd.concat([table, extra]).sort_values(['folder', 'filename'], kind='stable').reset_index(drop=True)
    store.save(tracks, str(run / 'tracks.pkl'))
    lines = []
    rep = score(run, 'tracks', log=lines.append, dataset='tracks.pkl')
    alone = score(run, 'alone', dataset='other.pkl')
    assert lines[0].startswith('3 rows are further face tracks of 30 videos (--keep_all_tracks)')
    assert lines[1] == 'scoring all 30 videos: the checkpoint held none of them out (--subset=all)'
    # the same videos in another order (tracks.pkl sorted by name): the mean log loss sums them in another order
    assert rep['n_videos'] == alone['n_videos'] == 30 and rep['log_loss'] == pytest.approx(alone['log_loss'], rel=1e-12)
    back, first = (pd.read_csv(run / d / 'r_predictions.csv', keep_default_na=False).sort_values('filename')
                   .reset_index(drop=True) for d in ('tracks', 'alone'))
    pd.testing.assert_frame_equal(back, first)


def test_held_out_videos_whose_group_now_holds_training_videos_are_left_out(run):
    """A metadata.json corrected after training (a fake's original, or FF++'s second name, now a training
    video's) joins a held-out group to a trained one: test.py scored the group as held out, a leak."""
    split = torch.load(run / 'run' / 'best.pt', weights_only=True)['split']
    table = pd.read_pickle(run / 'merged.pkl')
    keys = (table.folder + '/' + table.filename).str.lstrip('/')
    old = store.open_store(str(run / 'merged.pkl'))
    fake = next(i for i, k in enumerate(keys) if k in split['val_keys'] and table.label[i] == 1)
    trained = next(i for i, k in enumerate(keys) if k in split['train_keys'])
    joined = {k for k, g in zip(old.keys, old.groups) if g == old.groups[fake]}  # held out, the fake's group
    assert joined <= set(split['val_keys']) and len(joined) >= 2
    table['original'] = [[o, table.filename[trained]] if i == fake else o for i, o in enumerate(table.original)]
    store.save(table, str(run / 'corrected.pkl'))
    lines = []
    rep = score(run, 'corrected', log=lines.append, dataset='corrected.pkl')
    assert rep['n_videos'] == split['n_val'] - len(joined), lines
    back = pd.read_csv(run / 'corrected' / 'r_predictions.csv', keep_default_na=False)
    assert not joined & set(back.folder + '/' + back.filename)
    assert any(line.startswith(f'scoring the {rep["n_videos"]} videos the checkpoint held out (--subset=all scores '
                               f'every video); {len(joined)} others it held out are left out: their group now holds '
                               f'training videos (e.g. ') for line in lines), lines
    # every video it held out rejoined: one line that says so (was: 'no video of the table is on that side')
    table['original'] = [[o if isinstance(o, str) else '', table.filename[trained]] if k in split['val_keys'] else o
                         for k, o in zip(keys, table.original)]
    store.save(table, str(run / 'rejoined.pkl'))
    with pytest.raises(config.UserError, match=rf'^--subset=val: each of the {split["n_val"]} videos the checkpoint '
                                               rf'held out is now in a group with its training videos \(e.g. '):
        score(run, 'rejoined', dataset='rejoined.pkl')


def test_the_videos_a_table_marks_test_are_never_trained_on_and_subset_test_scores_them(run):
    """training.py leaves out the videos the table marks 'test' (Celeb-DF-v2's official list), which test.py
    --subset=test then scores, all and only them (--subset=train: none of them); a run trained on them
    (--hold_test=false) cannot score them as a test, and a table without such marks is one line."""
    table = pd.read_pickle(run / 'merged.pkl')
    table['split'] = np.where(np.arange(len(table)) % 4 == 1, 'test', 'train')  # it cuts groups, as lists do
    listed = (table.folder + '/' + table.filename)[table.split == 'test']
    tested = set(listed)
    store.save(table, str(run / 'listed.pkl'))
    lines = []
    for out, hold in (('held', True), ('trained_on', False)):
        training.run(training.settings(dataset=str(run / 'listed.pkl'), out_dir=str(run / out), crop=6, project=8,
                                       hidden=8, fc=0, max_epochs=1, progress=False, hold_test=hold),
                     log=lines.append)
    assert (f"{len(tested)} videos the table marks 'test' (e.g. {listed.iloc[0]}) are left out of training and "
            f"validation: test.py --subset=test scores them (--hold_test=false trains on them)") in lines
    split = torch.load(run / 'held' / 'best.pt', weights_only=True)['split']
    assert not tested & {*split['train_keys'], *split['val_keys']}
    assert len(split['train_keys']) + len(split['val_keys']) == len(table) - len(tested)
    lines = []
    rep = score(run, 'test', log=lines.append, dataset='listed.pkl', checkpoint='held/best.pt', subset='test')
    back = pd.read_csv(run / 'test' / 'r_predictions.csv', keep_default_na=False)
    assert rep['subset'] == 'test' and set(back.folder + '/' + back.filename) == tested
    groups = store.open_store(str(run / 'listed.pkl'))
    trained_groups = set(groups.groups[np.isin(groups.keys, split['train_keys'])])
    shared = sum(g in trained_groups for k, g in zip(groups.keys, groups.groups) if k in tested)
    assert 0 < shared < len(tested)
    assert (f"scoring the {len(tested)} videos the table marks 'test' (an official test list); {shared} of them share "
            f"a group (an original) with training videos, as the list has them") in lines
    score(run, 'train', dataset='listed.pkl', checkpoint='held/best.pt', subset='train')
    back = pd.read_csv(run / 'train' / 'r_predictions.csv', keep_default_na=False)
    assert set(back.folder + '/' + back.filename) == set(split['train_keys'])
    with pytest.raises(config.UserError, match=r"^--subset=test: \d+ of the videos the table marks 'test' are the "
                                               r"checkpoint's training videos \(e\.g\. .*--hold_test=false, or on a "
                                               r"table that marked them otherwise$"):
        score(run, 'refused', dataset='listed.pkl', checkpoint='trained_on/best.pt', subset='test')
    # a checkpoint that does not say what it trained on (an older training.py's) scored its own training videos
    old = torch.load(run / 'trained_on' / 'best.pt', weights_only=True)
    del old['split']['train_keys']
    torch.save(old, run / 'older.pt')
    with pytest.raises(config.UserError, match=r"^--subset=test: the checkpoint does not record the videos it "):
        score(run, 'older', dataset='listed.pkl', checkpoint='older.pt', subset='test')
    with pytest.raises(config.UserError, match=r"^--subset=test: no video of .*merged\.pkl is marked 'test'"):
        score(run, 'none', subset='test')
    # a folder held out whose videos are all marked 'test': it was 'no folder ... in the table', without why
    names = sorted(set(groups.groups))
    table['folder'] = [f'part_{names.index(g) % 3}' for g in groups.groups]  # whole groups: no leak between parts
    table['split'] = np.where(table.folder == 'part_0', 'test', 'train')
    store.save(table, str(run / 'folder_tested.pkl'))
    with pytest.raises(config.UserError, match=r"--val_folders: no folder part_0 in the table; the videos it marks "
                                               r"'test' are not drawn from \(--hold_test\)$"):
        training.run(training.settings(dataset=str(run / 'folder_tested.pkl'), out_dir=str(run / 'ft'), split='folder',
                                       val_folders='part_0', progress=False), **QUIET)


def test_ff_official_splits_train_validate_and_test_on_their_own_videos(run):
    """FF++'s protocol (make_metadata.py --ff_splits marks whole pairs): --split=recorded validates on the videos
    marked 'val', trains on those marked 'train', and test.py scores 'val' by default and 'test' when asked."""
    table = pd.read_pickle(run / 'merged.pkl')
    groups = store.open_store(str(run / 'merged.pkl')).groups
    names = sorted(set(groups))
    table['split'] = [('train', 'val', 'test', 'train', 'train')[names.index(g) % 5] for g in groups]
    keys = table.folder + '/' + table.filename
    store.save(table, str(run / 'official.pkl'))
    training.run(training.settings(dataset=str(run / 'official.pkl'), out_dir=str(run / 'official'), crop=6,
                                   project=8, hidden=8, fc=0, max_epochs=1, progress=False, split='recorded'), **QUIET)
    split = torch.load(run / 'official' / 'best.pt', weights_only=True)['split']
    assert split['how'] == 'recorded'
    assert set(split['val_keys']) == set(keys[table.split == 'val'])
    assert set(split['train_keys']) == set(keys[table.split == 'train'])
    for subset, out in (('auto', 'val'), ('test', 'test')):
        rep = score(run, f'official_{out}', dataset='official.pkl', checkpoint='official/best.pt', subset=subset)
        back = pd.read_csv(run / f'official_{out}' / 'r_predictions.csv', keep_default_na=False)
        assert rep['subset'] == out and set(back.folder + '/' + back.filename) == set(keys[table.split == out])
    assert 'share a group' not in rep['subset_note']  # whole pairs: the test side shares none with training
    with pytest.raises(config.UserError, match="^cannot split .*merged.pkl: --split=recorded: no video is marked"):
        training.run(training.settings(dataset=str(run / 'merged.pkl'), out_dir=str(run / 'unmarked'), crop=6,
                                       max_epochs=1, progress=False, split='recorded'), **QUIET)


def test_a_checkpoint_replaced_while_it_is_scored_is_said_and_its_stamp_recorded(run, monkeypatch):
    # test.py on a training run's last.pt: the next epoch replaced it between its load and the report, which then
    # stood beside the new one as its own (training.py removes a report at the next replacement, by its path)
    import shutil
    shutil.copy2(run / 'run' / 'best.pt', run / 'copy.pt')
    made = os.stat(run / 'copy.pt')
    write = scoring._write_predictions

    def replaced(*args):
        write(*args)
        os.utime(run / 'copy.pt', ns=(made.st_atime_ns, made.st_mtime_ns + 10 ** 9))
    monkeypatch.setattr(scoring, '_write_predictions', replaced)
    lines = []
    rep = score(run, 'replaced', log=lines.append, checkpoint='copy.pt')
    assert rep['checkpoint_stamp'] == [made.st_size, made.st_mtime_ns]
    assert (f'warning: {run / "copy.pt"} was replaced while it was scored (a training run at work?): the report is '
            f'of the checkpoint before; score it again') in lines
    monkeypatch.undo()
    lines = []
    assert score(run, 'replaced', log=lines.append, checkpoint='copy.pt')['checkpoint_stamp'][1] > made.st_mtime_ns
    assert not any(line.startswith('warning') for line in lines), lines
