"""The split does not leak, the model learns a planted temporal signal and nothing from random labels,
a run resumes where it stopped, and test.py rebuilds the model from the checkpoint file alone."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, script_module, testdata

import model
import training
from common import config
from common import store
from common.store import groups_of
from model import LeakError, assert_no_leak, class_weights, split_indices, synthetic_table
from network import NetworkConfig, build

torch.set_num_threads(1)  # steadier than two threads on a shared 2-core machine (training.py's THREADS)
QUIET = dict(progress=False)


scoring = script_module('test')


def metadata_table():
    with open(testdata('train_sample_videos_metadata.json'), encoding='utf-8') as f:
        meta = json.load(f)
    names = sorted(meta)
    labels = np.array([int(meta[n]['label'] == 'FAKE') for n in names])
    groups = np.array(groups_of(names, [meta[n]['original'] for n in names]), object)
    return meta, names, labels, groups


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('fraction', [0.1, 0.2, 0.5])
def test_every_fake_is_on_the_side_of_its_original(seed, fraction):
    meta, names, labels, groups = metadata_table()
    train, val = split_indices(labels, groups, val_fraction=fraction, seed=seed)
    side = {names[i]: 'train' for i in train} | {names[i]: 'val' for i in val}
    assert len(side) == len(names) == len(train) + len(val)
    by_original = {}
    for name in names:
        original = meta[name]['original']
        if original:
            if original in side:                     # the original itself is in the table
                assert side[name] == side[original], (name, original)
            by_original.setdefault(original, set()).add(side[name])
    assert all(len(sides) == 1 for sides in by_original.values())
    # both classes on both sides, about the fraction of each held out
    for k in (0, 1):
        share = (labels[val] == k).sum() / (labels == k).sum()
        assert abs(share - fraction) < 0.1, (k, share)  # originals go whole: a share moves by a group's size


def test_a_large_group_drawn_late_does_not_double_the_held_out_share():
    # FaceForensics++'s pairs on a small table: a group of 13 (a pair joined to a third by a fake) and three of 6;
    # --val_fraction=0.3 held out 19 of the 31 (61%) where the 13 came second, as seeds 0 and 4 draw it
    sizes = [(4, 9), (2, 4), (2, 4), (2, 4)]  # (reals, fakes) of each group
    labels = np.concatenate([[0] * r + [1] * f for r, f in sizes])
    groups = np.concatenate([[f'g{i}'] * (r + f) for i, (r, f) in enumerate(sizes)])
    shares = [len(split_indices(labels, groups, val_fraction=0.3, seed=seed)[1]) / 31 for seed in range(10)]
    assert all(0.19 <= share <= 0.42 for share in shares), shares  # one group of 6, two, or the 13: nearest 0.3


@pytest.mark.parametrize('sizes, fraction', [([(1, 5), (2, 4), (1, 3), (1, 0)], 0.1), ([(1, 1), (0, 5)], 0.2),
                                             ([(1, 0), (1, 1), (0, 6)], 0.2), ([(4, 9), (2, 4), (2, 4)], 0.5)])
def test_both_classes_stay_on_both_sides_where_groups_allow(sizes, fraction):
    # nearer the fraction must not cost a class: a draw nearest 0.1 held out (1, 0) and validated on no fake; one
    # nearest 0.2 held out the fakes-only group's neighbour and trained on fakes only
    labels = np.concatenate([[0] * r + [1] * f for r, f in sizes])
    groups = np.concatenate([[f'g{i}'] * (r + f) for i, (r, f) in enumerate(sizes)])
    for seed in range(10):
        train, val = split_indices(labels, groups, val_fraction=fraction, seed=seed)
        assert set(labels[train]) == {0, 1}, (seed, labels[val])  # the training side: always both
        # the validation side: both where one group alone holds both, or a real-only and a fake-only group exist
        assert set(labels[val]) == {0, 1} or len(sizes) == 2, (seed, labels[val])


def test_a_leaky_split_is_refused():
    _, _, labels, groups = metadata_table()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))              # a plain random split, as the first version did
    with pytest.raises(LeakError):
        assert_no_leak(groups, order[:320], order[320:])


def test_folder_split_keeps_whole_folders():
    table = synthetic_table(300, faces=2, video_dim=2, audio_dim=2, folders=10)
    groups = np.where(table.original.notna(), table.original, table.filename).astype(object)
    train, val = split_indices(table.label, groups, table.folder, how='folder', val_fraction=0.2)
    assert not set(table.folder[train]) & set(table.folder[val])
    train, val = split_indices(table.label, groups, table.folder, how='folder', val_folders='dfdc_train_part_3')
    assert set(table.folder[val]) == {'dfdc_train_part_3'}
    with pytest.raises(ValueError, match='single group'):
        split_indices([0, 1], ['a', 'a'])
    # a fake in another folder than its original: a folder split would leak, and says so
    with pytest.raises(LeakError):
        split_indices([0, 1, 0, 1], ['a', 'a', 'b', 'b'], ['p0', 'p1', 'p0', 'p1'], how='folder', val_folders='p1')


def test_a_recorded_split_holds_out_the_videos_the_table_marks_val():
    """how='recorded' (FF++'s official pairs): the marked videos are the validation side, whatever val_fraction;
    marks that cut a group are a leak, refused; no mark 'val' is the reason, not an empty side."""
    table = synthetic_table(300, faces=2, video_dim=2, audio_dim=2, folders=10)
    groups = np.where(table.original.notna(), table.original, table.filename).astype(object)
    marks = np.where(np.isin(groups, sorted(set(groups))[::4]), 'val', 'train').astype(object)  # whole groups
    train, val = split_indices(table.label, groups, how='recorded', val_fraction=0, marks=marks)
    assert sorted([*train, *val]) == list(range(300)) and 0 < len(val) < 150
    assert (marks[val] == 'val').all() and (marks[train] == 'train').all()
    marks[np.flatnonzero(marks == 'val')[0]] = 'train'  # one video of a held-out group of 5 to 7
    with pytest.raises(LeakError):
        split_indices(table.label, groups, how='recorded', marks=marks)
    with pytest.raises(ValueError, match="^--split=recorded: no video is marked 'val'"):
        split_indices(table.label, groups, how='recorded', marks=np.full(300, 'train', object))


def test_class_weights_balance_the_prior():
    labels = np.array([1] * 84 + [0] * 16)
    w_real, w_fake = class_weights(labels)
    assert w_real * 16 == pytest.approx(w_fake * 84) == pytest.approx(50)   # each class weighs half
    assert class_weights([1, 1]) == (1.0, 1.0)


def trained(tmp_path, table, name, **kw):
    path = tmp_path / f'{name}.pkl'
    store.save(table, str(path))
    cfg = training.settings(dataset=str(path), out_dir=str(tmp_path / name), crop=12, project=32, hidden=32,
                            fc=32, lr=1e-2, batch_size=32, max_epochs=8, patience=3, **QUIET, **kw)
    history = training.run(cfg, log=lambda *_: None)
    report = scoring.run(scoring.settings(dataset=str(path), checkpoint=str(tmp_path / name / 'best.pt'),
                                          subset='val'), log=lambda *_: None)
    return history, report


def test_learns_a_planted_temporal_signal(tmp_path):
    table = synthetic_table(700, faces=24, min_faces=6, video_dim=64, audio_dim=16, seed=1)
    history, report = trained(tmp_path, table, 'planted')
    # not rounding: a planted signal, learned far above chance by a seeded run on any CPU
    assert report['roc_auc'] >= 0.95, history
    assert report['n_videos'] == len(torch.load(tmp_path / 'planted' / 'best.pt')['split']['val_filenames'])
    assert report['n_fake'] and report['n_real']
    best = min(h['val_loss'] for h in history)
    assert report['balanced_log_loss'] < 0.3 and best < 0.3
    assert (tmp_path / 'planted' / 'curves.png').exists() and (tmp_path / 'planted' / 'last.pt').exists()


def test_random_labels_stay_near_chance(tmp_path):
    table = synthetic_table(700, faces=24, video_dim=64, audio_dim=16, seed=2)
    table['label'] = np.random.default_rng(0).permutation(table['label'].to_numpy())
    history, report = trained(tmp_path, table, 'random')
    # chance, within the sampling spread of an AUC on the held-out ~140 videos (sd ~0.05): 4 sd
    assert 0.3 <= report['roc_auc'] <= 0.7, report['roc_auc']
    assert history[-1]['val_loss'] > 0.6


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    path = tmp_path / 't.pkl'
    store.save(synthetic_table(120, faces=10, video_dim=16, audio_dim=4, seed=3), str(path))
    settings = dict(dataset=str(path), crop=6, project=8, hidden=8, fc=0, patience=10, **QUIET)
    straight = training.run(training.settings(out_dir=str(tmp_path / 'a'), max_epochs=3, **settings), log=print)
    training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=2, **settings), log=print)
    lines = []
    resumed = training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=3, **settings),
                           log=lines.append)
    assert any(line.startswith('resuming') for line in lines)
    keys = ('epoch', 'train_loss', 'val_loss')
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in straight]
    with pytest.raises(config.UserError, match='another table or other settings'):
        training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=4, **{**settings, 'hidden': 9}))


def cli(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_scripts_train_and_rebuild_the_checkpoint_from_the_file(tmp_path):
    table = synthetic_table(60, faces=12, min_faces=2, video_dim=24, audio_dim=8, seed=4)  # short sequences
    store.save(table, str(tmp_path / 'merged.pkl'))
    run = cli('training.py', f'--dataset={tmp_path}/merged.pkl', f'--out_dir={tmp_path}/run', '--max_epochs=2',
              '--crop=8', '--hidden=8', '--project=8')
    assert run.returncode == 0, run.stderr
    assert 'best checkpoint' in run.stdout
    # the checkpoint is all test.py gets about the model
    out = cli('test.py', f'--dataset={tmp_path}/merged.pkl', f'--checkpoint={tmp_path}/run/best.pt',
              f'--report={tmp_path}/report.json', '--subset=all')
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / 'report.json').read_text())
    for key in ('log_loss', 'balanced_log_loss', 'roc_auc', 'accuracy', 'n_videos'):
        assert key in report
    assert report['n_videos'] == 60 and report['evaluation']['choice'] == model.EVALUATION
    assert (tmp_path / 'report_roc.png').exists()
    assert len((tmp_path / 'report_predictions.csv').read_text().splitlines()) == 61


def test_a_table_of_four_videos_trains_and_reports(tmp_path):
    # the embedded sample's shape: one real and three fakes of other originals, each its own group
    table = synthetic_table(24, faces=8, video_dim=16, audio_dim=4, seed=5)
    fakes = table[table.label == 1].drop_duplicates('original').index[:3]
    table = table.loc[[table.index[table.label == 0][0], *fakes]].reset_index(drop=True)
    table['original'] = [None, 'x.mp4', 'y.mp4', 'z.mp4']
    store.save(table, str(tmp_path / 'four.pkl'))
    run = cli('training.py', f'--dataset={tmp_path}/four.pkl', f'--out_dir={tmp_path}/run', '--max_epochs=2')
    assert run.returncode == 0, run.stderr
    assert 'validation 1 videos' in run.stdout and 'ROC AUC is undefined' in run.stdout
    out = cli('test.py', f'--dataset={tmp_path}/four.pkl', f'--checkpoint={tmp_path}/run/best.pt',
              f'--report={tmp_path}/r.json', '--subset=val')
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / 'r.json').read_text())
    assert report['roc_auc'] is None and 'only' in report['roc_auc_note'] and report['n_videos'] == 1
    assert not (tmp_path / 'r_roc.png').exists()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args in (['training.py', f'--dataset={tmp_path}/missing.pkl'], ['training.py', '--epochs=3'],
                 ['test.py', f'--dataset={tmp_path}/x.pkl', f'--checkpoint={tmp_path}/missing.pt']):
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith('error: '), out.stderr
    # a checkpoint used on a table of other dimensions
    store.save(synthetic_table(12, faces=4, video_dim=6, audio_dim=2), str(tmp_path / 'a.pkl'))
    store.save(synthetic_table(12, faces=4, video_dim=7, audio_dim=2), str(tmp_path / 'b.pkl'))
    training.run(training.settings(dataset=str(tmp_path / 'a.pkl'), out_dir=str(tmp_path / 'run'), max_epochs=1,
                                   **QUIET), log=lambda *_: None)
    with pytest.raises(config.UserError, match='the checkpoint was trained on 6'):
        scoring.run(scoring.settings(dataset=str(tmp_path / 'b.pkl'), checkpoint=str(tmp_path / 'run' / 'best.pt')))



@pytest.mark.parametrize('val_fraction', ['0.2', '0'])
def test_a_diverged_training_is_one_line_not_a_nan_traceback(tmp_path, val_fraction):
    # --lr=1e30: the weights overflow float32 in the first epochs; with a validation side its logits are NaN,
    # without one the training loss is: either way one line saying so and what to change, exit 2
    store.save(synthetic_table(30, faces=6, video_dim=8, audio_dim=2, seed=2), str(tmp_path / 't.pkl'))
    run = cli('training.py', f'--dataset={tmp_path}/t.pkl', f'--out_dir={tmp_path}/run', '--max_epochs=4',
              '--lr=1e30', f'--val_fraction={val_fraction}', '--crop=4', '--hidden=8')
    assert run.returncode == 2 and run.stderr.startswith('error: epoch ') and run.stderr.count('\n') == 1, run.stderr
    assert ('the training diverged (lower --lr, now 1e+30, or --weight_decay, now 0.01, with --resume=false)'
            in run.stderr)


def test_a_network_too_big_for_memory_is_one_line_naming_its_sizes(tmp_path):
    # --hidden=10**9: the LSTM's first weight alone is terabytes; torch's allocator error was a traceback
    store.save(synthetic_table(12, faces=4, video_dim=6, audio_dim=2), str(tmp_path / 't.pkl'))
    run = cli('training.py', f'--dataset={tmp_path}/t.pkl', f'--out_dir={tmp_path}/run', '--hidden=1000000000',
              '--device=cpu')
    assert run.returncode == 2 and run.stderr.count('\n') == 1, run.stderr
    assert run.stderr.startswith('error: out of memory on cpu (') and run.stderr.rstrip().endswith(
        'give smaller --hidden, --layers, --project and --fc')

# ----------------------------------------------------------------------------- chains of originals
def chained_table(tmp_path):
    """30 originals, each with a fake and a fake of that fake (r -> f -> g), a cycle of three fakes, a
    fake whose original is not in the table and a fake of that fake: (path of the pickle, the table)."""
    rows = []
    for i in range(30):
        rows += [(f'r{i}.mp4', None, 0), (f'f{i}.mp4', f'r{i}.mp4', 1), (f'g{i}.mp4', f'f{i}.mp4', 1)]
    rows += [('c1.mp4', 'c2.mp4', 1), ('c2.mp4', 'c3.mp4', 1), ('c3.mp4', 'c1.mp4', 1), ('d.mp4', 'c3.mp4', 1)]
    rows += [('x.mp4', 'absent.mp4', 1), ('y.mp4', 'x.mp4', 1)]
    table = synthetic_table(len(rows), faces=3, video_dim=4, audio_dim=2, seed=8)
    table['filename'], table['original'], table['label'] = zip(*rows)
    path = tmp_path / 'chains.pkl'
    store.save(table, str(path))
    return path, table


def test_a_chain_of_originals_is_one_group_on_one_side(tmp_path):
    path, table = chained_table(tmp_path)
    with store.open_store(str(path)) as cached:
        groups = cached.groups
    group = dict(zip(table.filename, groups))
    part = table.folder[0] + '/'  # a group is named after a video: its folder and name
    assert group['g0.mp4'] == group['f0.mp4'] == group['r0.mp4'] == part + 'r0.mp4'      # the chain's root
    assert {group[n] for n in ('c1.mp4', 'c2.mp4', 'c3.mp4', 'd.mp4')} == {part + 'c1.mp4'}  # the cycle's smallest
    assert group['y.mp4'] == group['x.mp4'] == 'absent.mp4'                              # the last known name
    assert len(set(groups)) == 32
    for seed in range(6):
        train, val = split_indices(table.label, groups, val_fraction=0.3, seed=seed)
        side = (dict(zip(table.filename[val], ['val'] * len(val)))
                | dict(zip(table.filename[train], ['train'] * len(train))))
        for name, original in zip(table.filename, table.original):
            if original in side:
                assert side[name] == side[original], (seed, name, original)
    # the leak check sees a split that separates a chain's ends
    g0, r0 = (int(np.flatnonzero(table.filename == n)[0]) for n in ('g0.mp4', 'r0.mp4'))
    rest = [i for i in range(len(table)) if i not in (g0, r0)]
    with pytest.raises(LeakError):
        assert_no_leak(groups, [g0, *rest], [r0])


def test_groups_of_follows_chains_and_cycles():
    names = ['a', 'b', 'c', 'p', 'q', 's', 'u']
    originals = ['b', 'c', None, 'q', 'p', 's', 'gone']  # a -> b -> c; p <-> q; s its own; u -> gone
    assert groups_of(names, originals) == ['c', 'c', 'c', 'p', 'p', 's', 'gone']
    assert groups_of(['q', 'p'], ['p', 'q']) == ['p', 'p']  # the same group whichever comes first


def test_an_original_that_several_other_folders_hold_groups_the_fake_with_all_of_them():
    """FF++'s youtube/000.mp4 and a second set of originals' actors/000.mp4 under one data folder: a fake that
    names 000.mp4 from a third folder was grouped with the first (actors/) alone, so its true original could
    train while it validated (break-it pass 8, D1). Nothing says which it was made from: it joins both."""
    names = ['000.mp4', '001.mp4', '000.mp4', '001.mp4', '000_001.mp4', '002.mp4']
    folders = ['actors', 'actors', 'youtube', 'youtube', 'fakes', 'youtube']
    originals = [None, None, None, None, ['000.mp4', '001.mp4'], None]
    groups = groups_of(names, originals, folders)
    assert groups[:5] == ['actors/000.mp4'] * 5 and groups[5] == 'youtube/002.mp4'
    # a name in the fake's own folder is the one (DFDC's layout): the other folders' are other videos
    assert groups_of(['a.mp4', 'f.mp4', 'a.mp4'], [None, 'a.mp4', None], ['p1', 'p1', 'p2']) == [
        'p1/a.mp4', 'p1/a.mp4', 'p2/a.mp4']


def test_the_same_names_in_two_folders_are_two_videos_for_the_split_groups_and_scoring(tmp_path):
    """Two parts holding the same file names (other datasets' trees; DFDC's names are unique): a fake's
    original is the video of that name in its own folder, and test.py's held-out set is the held-out
    folder's videos, not every video of the same name."""
    one = synthetic_table(60, faces=6, video_dim=8, audio_dim=2, seed=3)
    table = pd.concat([one.assign(folder='part_a'), one.assign(folder='part_b')], ignore_index=True)
    with_folders = groups_of(table.filename.tolist(), table.original.tolist(), table.folder.tolist())
    assert len(set(with_folders)) == 2 * len(set(groups_of(one.filename.tolist(), one.original.tolist())))
    assert all(g.startswith(f + '/') for g, f in zip(with_folders, table.folder))
    path = tmp_path / 'twice.pkl'
    store.save(table, str(path))
    training.run(training.settings(dataset=str(path), out_dir=str(tmp_path / 'run'), split='folder',
                                   val_folders='part_b', crop=4, project=8, hidden=8, fc=8, max_epochs=1, **QUIET),
                 log=lambda *_: None)
    report = scoring.run(scoring.settings(dataset=str(path), checkpoint=str(tmp_path / 'run' / 'best.pt'),
                                          report=str(tmp_path / 'r.json'), subset='val'), log=lambda *_: None)
    assert report['n_videos'] == len(one)
    back = pd.read_csv(tmp_path / 'r_predictions.csv', keep_default_na=False)
    assert set(back.folder) == {'part_b'} and sorted(back.filename) == sorted(one.filename)


# ----------------------------------------------------------------------------- corrupt inputs, outputs
def fast_checkpoint(path, video_dim=6, audio_dim=2, clip=(0.01, 0.99)):
    """An untrained checkpoint with every field test.py reads: model.save_checkpoint's real file."""
    torch.manual_seed(0)
    net = build(NetworkConfig(video_dim=video_dim, audio_dim=audio_dim, hidden=4, fc=0, project=4, crop=4))
    model.save_checkpoint(path, net, prior=0.8, clip=list(clip), epoch=0,
                          evaluation={'choice': model.EVALUATION, 'crop': 4, 'stride': 2},
                          split={'val_filenames': []}, dataset={'attrs': {}})
    return path


def test_a_corrupt_checkpoint_is_one_line_that_names_it(tmp_path):
    store.save(synthetic_table(12, faces=4, video_dim=6, audio_dim=2), str(tmp_path / 'a.pkl'))
    good = fast_checkpoint(tmp_path / 'good.pt')
    data = good.read_bytes()
    bad = {'truncated.pt': data[:len(data) // 2], 'tail_cut.pt': data[:-10], 'empty.pt': b'',
           'garbage.pt': np.random.default_rng(0).bytes(3000), 'text.pt': b'not a checkpoint\n'}
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(config.UserError, match=f'{tmp_path / name}: not a .*best.pt'):
            scoring.run(scoring.settings(dataset=str(tmp_path / 'a.pkl'), checkpoint=str(tmp_path / name)),
                        log=lambda *_: None)
    (tmp_path / 'run').mkdir()  # a run folder given for its best.pt: it said "no such checkpoint"
    with pytest.raises(config.UserError, match=f'{tmp_path / "run"} is a folder: give the checkpoint file in it'):
        scoring.run(scoring.settings(dataset=str(tmp_path / 'a.pkl'), checkpoint=str(tmp_path / 'run')),
                    log=lambda *_: None)
    out = cli('test.py', f'--dataset={tmp_path}/a.pkl', f'--checkpoint={tmp_path}/truncated.pt')
    assert out.returncode == 2 and out.stderr.startswith(f'error: {tmp_path}/truncated.pt: not a readable')
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_table_without_its_store_is_one_line_that_says_to_merge_again(tmp_path):
    """A pickle cut short, or one an older merge_embeddings.py wrote (no store beside it), or rewritten
    after its store: the store does not match it."""
    store.save(synthetic_table(40, faces=6, video_dim=8, audio_dim=2), str(tmp_path / 'full.pkl'))
    data = (tmp_path / 'full.pkl').read_bytes()
    (tmp_path / 'full.pkl').write_bytes(data[:len(data) // 3])
    synthetic_table(10, faces=3, video_dim=4, audio_dim=2).to_pickle(tmp_path / 'old.pkl')
    for path in (tmp_path / 'full.pkl', tmp_path / 'old.pkl'):
        with pytest.raises(config.UserError, match=f'{path} has no training store .*run merge_embeddings.py again'):
            training.run(training.settings(dataset=str(path), out_dir=str(tmp_path / 'run'), **QUIET))
        out = cli('training.py', f'--dataset={path}', f'--out_dir={tmp_path}/run')
        assert out.returncode == 2 and out.stderr.startswith(f'error: {path} has no training store')
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / 'run' / 'config.json').exists()


def test_a_table_given_by_a_relative_path_opens_from_any_folder(tmp_path, monkeypatch):
    store.save(synthetic_table(10, faces=3, video_dim=4, audio_dim=2), str(tmp_path / 'm.pkl'))
    monkeypatch.chdir(tmp_path)
    with store.open_store('m.pkl') as table:
        assert len(table) == 10


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    store.save(synthetic_table(12, faces=4, video_dim=6, audio_dim=2), str(tmp_path / 'a.pkl'))
    (tmp_path / 'file').write_text('x')
    (tmp_path / 'run' / 'best.pt').mkdir(parents=True)
    for out_dir, message in ((tmp_path / 'file', 'is a file, where --out_dir needs a folder'),
                             (tmp_path / 'file' / 'sub', 'cannot write there'),
                             (tmp_path / 'run', 'best.pt is a folder, where --out_dir writes a file')):
        with pytest.raises(config.UserError, match=message):
            training.run(training.settings(dataset=str(tmp_path / 'a.pkl'), out_dir=str(out_dir), **QUIET))
    with pytest.raises(config.UserError, match='clip_lo < clip_hi'):
        training.run(training.settings(dataset=str(tmp_path / 'a.pkl'), clip_lo=0.5, clip_hi=0.5))
    ckpt = str(fast_checkpoint(tmp_path / 'c.pt'))
    (tmp_path / 'r.json').mkdir()
    (tmp_path / 'q_predictions.csv').mkdir()
    for report in ('r.json', 'q.json'):
        with pytest.raises(config.UserError, match=f'{tmp_path / report[0]}.* is a folder, where --report'):
            scoring.run(scoring.settings(dataset=str(tmp_path / 'a.pkl'), checkpoint=ckpt,
                                         report=str(tmp_path / report)))
    for lo, hi in ((0.5, -1.0), (-1.0, 0.5), (0.6, 0.4)):
        with pytest.raises(config.UserError, match='clip_lo'):
            scoring.run(scoring.settings(dataset=str(tmp_path / 'a.pkl'), checkpoint=ckpt, clip_lo=lo, clip_hi=hi))
    assert not (tmp_path / 'run' / 'config.json').exists()  # nothing was done


def test_the_predictions_csv_survives_commas_quotes_and_newlines_in_names(tmp_path):
    table = synthetic_table(8, faces=4, video_dim=6, audio_dim=2)
    names = ['a,b.mp4', 'new\nline.mp4', 'say "hi".mp4', 'plain.mp4', ' lead.mp4', 'x;y.mp4', 'é.mp4', 'z.mp4']
    table['filename'] = names
    store.save(table, str(tmp_path / 'odd.pkl'))
    scoring.run(scoring.settings(dataset=str(tmp_path / 'odd.pkl'), checkpoint=str(fast_checkpoint(tmp_path / 'c.pt')),
                                 report=str(tmp_path / 'r.json')), log=lambda *_: None)
    back = pd.read_csv(tmp_path / 'r_predictions.csv', keep_default_na=False)
    assert back.columns.tolist() == ['filename', 'folder', 'label', 'p_fake', 'logit', 'no_face']
    assert back.filename.tolist() == names and back.label.tolist() == table.label.tolist()
    assert ((back.p_fake > 0) & (back.p_fake < 1)).all()


def test_a_report_killed_before_its_predictions_leaves_no_report_of_another_run(tmp_path, monkeypatch):
    """report.json was written before report_predictions.csv: a run killed between them left the new report
    beside the earlier run's predictions, which it did not describe. The report is now written last."""
    store.save(synthetic_table(12, faces=4, video_dim=6, audio_dim=2), str(tmp_path / 'a.pkl'))
    cfg = dict(dataset=str(tmp_path / 'a.pkl'), checkpoint=str(fast_checkpoint(tmp_path / 'c.pt')),
               report=str(tmp_path / 'r.json'))
    scoring.run(scoring.settings(**cfg), log=lambda *_: None)
    assert json.loads((tmp_path / 'r.json').read_text())['prior_scored_set'] == 0.5
    before = pd.read_csv(tmp_path / 'r_predictions.csv')

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, '_write_predictions', killed)
    with pytest.raises(KeyboardInterrupt):
        scoring.run(scoring.settings(**cfg, prior=0.2), log=lambda *_: None)
    assert not (tmp_path / 'r.json').exists()  # not a report of prior 0.2 beside the predictions of 0.5
    assert pd.read_csv(tmp_path / 'r_predictions.csv').equals(before)
    monkeypatch.undo()
    report = scoring.run(scoring.settings(**cfg, prior=0.2), log=lambda *_: None)  # the rerun writes both
    after = pd.read_csv(tmp_path / 'r_predictions.csv')
    assert report['prior_scored_set'] == 0.2 and (after.p_fake < before.p_fake).all()


# ----------------------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available here')
def test_cuda_asked_for_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    out = cli('test.py', f'--dataset={tmp_path}/a.pkl', f'--checkpoint={tmp_path}/c.pt', '--device=cuda')
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert 'CUDA is not available' in out.stderr and '--device=cpu' in out.stderr


def test_training_under_torchrun_is_one_line(tmp_path, monkeypatch):
    """One process trains (all of DFDC is seconds an epoch, BENCHMARKS.md): several are refused before any
    work, not left to train copies of one model."""
    store.save(synthetic_table(12, faces=4, video_dim=6, audio_dim=2), str(tmp_path / 'a.pkl'))
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(config.UserError, match='training runs in one process .* not torchrun'):
        training.run(training.settings(dataset=str(tmp_path / 'a.pkl'), out_dir=str(tmp_path / 'run'), **QUIET))
    for value in ('abc', ''):  # a ValueError's traceback before; `export WORLD_SIZE=$N` with N unset gives ''
        monkeypatch.setenv('WORLD_SIZE', value)
        with pytest.raises(config.UserError, match=f"the environment variable WORLD_SIZE='{value}' is not an integer"):
            training.run(training.settings(dataset=str(tmp_path / 'a.pkl'), out_dir=str(tmp_path / 'run'), **QUIET))
    assert not (tmp_path / 'run').exists()
