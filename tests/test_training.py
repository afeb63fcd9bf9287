"""The split does not leak, the model learns a planted temporal signal and nothing from random labels,
a run resumes where it stopped, and test.py rebuilds the model from the checkpoint file alone."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, testdata

import model
import training
from model import LeakError, assert_no_leak, class_weights, split_indices, synthetic_table

torch.set_num_threads(1)  # steadier than two threads on a shared 2-core machine (training.py's THREADS)
QUIET = dict(progress=False)


def _load_test_script():
    # the repository's test.py, not the standard library's `test` package
    spec = importlib.util.spec_from_file_location('test_script', os.path.join(ROOT, 'test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scoring = _load_test_script()


def metadata_table():
    with open(testdata('train_sample_videos_metadata.json'), encoding='utf-8') as f:
        meta = json.load(f)
    names = sorted(meta)
    labels = np.array([int(meta[n]['label'] == 'FAKE') for n in names])
    groups = np.array([meta[n]['original'] or n for n in names], object)
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
        assert abs(share - fraction) < 0.1, (k, share)


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


def test_class_weights_balance_the_prior():
    labels = np.array([1] * 84 + [0] * 16)
    w_real, w_fake = class_weights(labels)
    assert w_real * 16 == pytest.approx(w_fake * 84) == pytest.approx(50)   # each class weighs half
    assert class_weights([1, 1]) == (1.0, 1.0)


def trained(tmp_path, table, name, **kw):
    path = tmp_path / f'{name}.pkl'
    table.to_pickle(path)
    cfg = training.settings(dataset=str(path), out_dir=str(tmp_path / name), crop=12, project=32, hidden=32,
                            fc=32, lr=1e-2, batch_size=32, max_epochs=8, patience=3, **QUIET, **kw)
    history = training.run(cfg, log=lambda *_: None)
    report = scoring.run(scoring.settings(dataset=str(path), checkpoint=str(tmp_path / name / 'best.pt'),
                                          subset='val'), log=lambda *_: None)
    return history, report


def test_learns_a_planted_temporal_signal(tmp_path):
    table = synthetic_table(700, faces=24, min_faces=6, video_dim=64, audio_dim=16, seed=1)
    history, report = trained(tmp_path, table, 'planted')
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
    assert 0.3 <= report['roc_auc'] <= 0.7, report['roc_auc']
    assert history[-1]['val_loss'] > 0.6


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    path = tmp_path / 't.pkl'
    synthetic_table(120, faces=10, video_dim=16, audio_dim=4, seed=3).to_pickle(path)
    settings = dict(dataset=str(path), crop=6, project=8, hidden=8, fc=0, patience=10, **QUIET)
    straight = training.run(training.settings(out_dir=str(tmp_path / 'a'), max_epochs=3, **settings), log=print)
    training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=2, **settings), log=print)
    lines = []
    resumed = training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=3, **settings),
                           log=lines.append)
    assert any(line.startswith('resuming') for line in lines)
    keys = ('epoch', 'train_loss', 'val_loss')
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in straight]
    with pytest.raises(training.TrainingError, match='another table or other settings'):
        training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=4, **{**settings, 'hidden': 9}))


def cli(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_scripts_train_and_rebuild_the_checkpoint_from_the_file(tmp_path):
    table = synthetic_table(60, faces=12, min_faces=2, video_dim=24, audio_dim=8, seed=4)  # short sequences
    table.to_pickle(tmp_path / 'merged.pkl')
    run = cli('training.py', f'--dataset={tmp_path}/merged.pkl', f'--out_dir={tmp_path}/run', '--max_epochs=2',
              '--crop=8', '--hidden=8', '--project=8')
    assert run.returncode == 0, run.stderr
    assert 'best checkpoint' in run.stdout
    # the checkpoint is all test.py gets about the model
    out = cli('test.py', f'--dataset={tmp_path}/merged.pkl', f'--checkpoint={tmp_path}/run/best.pt',
              f'--report={tmp_path}/report.json')
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
    table.to_pickle(tmp_path / 'four.pkl')
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
    synthetic_table(12, faces=4, video_dim=6, audio_dim=2).to_pickle(tmp_path / 'a.pkl')
    synthetic_table(12, faces=4, video_dim=7, audio_dim=2).to_pickle(tmp_path / 'b.pkl')
    training.run(training.settings(dataset=str(tmp_path / 'a.pkl'), out_dir=str(tmp_path / 'run'), max_epochs=1,
                                   **QUIET), log=lambda *_: None)
    with pytest.raises(scoring.ScoringError, match='the checkpoint was trained on 6'):
        scoring.run(scoring.settings(dataset=str(tmp_path / 'b.pkl'), checkpoint=str(tmp_path / 'run' / 'best.pt')))
