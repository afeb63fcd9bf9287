"""What a training run records in its folder agrees with itself and with the log: epochs numbered from 1
everywhere (log, history.json, history.csv, best.pt and last.pt, curves.png, the early-stop line),
config.json says how the run was made (a resume keeps the first record and appends its own), and fakes
whose original is absent from the table are announced."""
import csv
import json
import os
import subprocess
import time
from datetime import datetime
from importlib import metadata

import pytest
import torch
from conftest import ROOT

import training
from common import config, metrics, store
from model import load_checkpoint, synthetic_table

torch.set_num_threads(1)  # steadier on a shared 2-core machine (training.py's THREADS)
TINY = dict(crop=4, project=8, hidden=8, fc=0, batch_size=16, progress=False)
EXACT = dict(rel=1e-15, abs=0)  # a CSV cell is Python's repr of the float: the same number


def tiny_table(tmp_path, absent=0, name='tiny'):
    """60 videos of 6 faces; the first `absent` fakes (each of another original) name originals that
    are not in the table. (path of the pickle, the table)."""
    table = synthetic_table(60, faces=6, video_dim=8, audio_dim=2, seed=11)
    fakes = table[table.label == 1].drop_duplicates('original').index[:absent]
    assert len(fakes) == absent
    table.loc[fakes, 'original'] = [f'gone{i}.mp4' for i in range(absent)]
    path = tmp_path / f'{name}.pkl'
    store.save(table, str(path))
    return path, table


def read_csv(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def same_entries(rows, history):
    """The CSV's rows hold history.json's entries: the same keys, the same numbers."""
    assert len(rows) == len(history)
    for row, entry in zip(rows, history):
        assert list(row) == list(entry)
        for key, value in entry.items():
            if isinstance(value, bool):
                assert row[key] == str(value), key
            elif value is None:
                assert row[key] == '', key
            else:
                assert float(row[key]) == pytest.approx(value, **EXACT), key


def test_a_run_records_one_epoch_numbering_and_how_it_was_made(tmp_path, monkeypatch):
    path, _ = tiny_table(tmp_path)
    out = tmp_path / 'run'
    legends = []  # per figure saved, its two axes' legends

    def save_figure(fig, where):  # the real file, and what its legends say
        legends.append([[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes])
        save(fig, where)
    save = metrics.save_figure
    monkeypatch.setattr(metrics, 'save_figure', save_figure)
    # no improvement counts after the first epoch: epochs 1-3 run, epoch 1 is the best, 3 stops the run
    cfg = training.settings(dataset=str(path), out_dir=str(out), max_epochs=10, patience=2, min_delta=100.0, **TINY)
    lines = []
    history = training.run(cfg, log=lines.append)

    assert [e['epoch'] for e in history] == [1, 2, 3] and [e['best'] for e in history] == [True, False, False]
    assert json.loads((out / 'history.json').read_text()) == history
    same_entries(read_csv(out / 'history.csv'), history)
    _, best = load_checkpoint(out / 'best.pt')
    _, last = load_checkpoint(out / 'last.pt')
    assert best['epoch'] == 1 and last['epoch'] == 3 == len(history)
    assert [line for line in lines if line.startswith('best checkpoint')] == [
        f'best checkpoint: {out / "best.pt"} (epoch 1, validation loss {history[0]["val_loss"]:.4f})']
    assert [line.split(',')[0] for line in lines if line.startswith('epoch ')] == ['epoch 1/10', 'epoch 2/10',
                                                                                    'epoch 3/10']
    assert (out / 'curves.png').stat().st_size > 0
    assert len(legends) == 3 and all(['best epoch 1' in axis for axis in figure] == [True, True]
                                     for figure in legends)
    # the finished run, asked again, names the same best epoch
    lines = []
    training.run(cfg, log=lines.append)
    assert any('stopped early (best epoch 1)' in line for line in lines), lines

    record = json.loads((out / 'config.json').read_text())
    assert record['settings'] == cfg
    versions = record['versions']
    assert set(versions) == {'python', 'torch', 'facenet-pytorch', 'numpy'}
    assert versions['torch'] == metadata.version('torch') and versions['numpy'] == metadata.version('numpy')
    assert versions['python'].count('.') == 2
    datetime.fromisoformat(record['started'])
    assert record['first_epoch'] == 1 and record['device'] == 'cpu'
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: its commit, whether its tree has changes
        assert record['git']['commit'] == head.stdout.strip() and isinstance(record['git']['dirty'], bool)
        assert record['git']['why'] is None
    else:
        assert record['git']['commit'] is None and record['git']['why']


def test_the_best_epoch_agrees_everywhere_when_it_is_not_the_first(tmp_path):
    # a learning rate that makes the validation loss fall over the first epochs
    path, _ = tiny_table(tmp_path)
    out = tmp_path / 'run'
    lines = []
    history = training.run(training.settings(dataset=str(path), out_dir=str(out), max_epochs=4, patience=10,
                                             lr=1e-2, **TINY), log=lines.append)
    best = [e['epoch'] for e in history if e['best']][-1]
    assert best > 1, history
    rows = read_csv(out / 'history.csv')
    assert [int(r['epoch']) for r in rows if r['best'] == 'True'][-1] == best
    _, ckpt = load_checkpoint(out / 'best.pt')
    assert ckpt['epoch'] == best and ckpt['val_loss'] == pytest.approx(history[best - 1]['val_loss'], **EXACT)
    assert sum(f'(epoch {best}, validation loss' in line for line in lines) == 1, lines


def test_a_resumed_run_goes_on_numbering(tmp_path):
    path, _ = tiny_table(tmp_path)
    settings = dict(dataset=str(path), patience=10, **TINY)
    straight = training.run(training.settings(out_dir=str(tmp_path / 'a'), max_epochs=3, **settings),
                            log=lambda *_: None)
    training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=2, **settings), log=lambda *_: None)
    lines = []
    resumed = training.run(training.settings(out_dir=str(tmp_path / 'b'), max_epochs=3, **settings),
                           log=lines.append)
    assert any(line.startswith(f'resuming from {tmp_path / "b" / "last.pt"}: epoch 2 done') for line in lines)
    keys = ('epoch', 'train_loss', 'val_loss', 'best')
    assert [[e[k] for k in keys] for e in resumed] == [[e[k] for k in keys] for e in straight]
    assert [e['epoch'] for e in resumed] == [1, 2, 3]
    assert load_checkpoint(tmp_path / 'b' / 'last.pt')[1]['epoch'] == 3
    same_entries(read_csv(tmp_path / 'b' / 'history.csv'), resumed)
    record = json.loads((tmp_path / 'b' / 'config.json').read_text())
    assert record['first_epoch'] == 1 and [r['first_epoch'] for r in record['resumes']] == [3]


def test_a_resume_keeps_the_first_record_and_appends_its_own(tmp_path):
    path, _ = tiny_table(tmp_path)
    out = tmp_path / 'run'
    first = training.settings(dataset=str(path), out_dir=str(out), max_epochs=1, patience=10, **TINY)
    training.run(first, log=lambda *_: None)
    original = json.loads((out / 'config.json').read_text())
    assert original['first_epoch'] == 1 and original['resumes'] == []
    time.sleep(1.1)  # `started` is in seconds: the resume's start is a later one
    second = {**first, 'max_epochs': 2, 'patience': 9}  # settings a resume may change
    training.run(second, log=lambda *_: None)
    record = json.loads((out / 'config.json').read_text())
    assert {k: v for k, v in record.items() if k != 'resumes'} == {k: v for k, v in original.items()
                                                                    if k != 'resumes'}
    assert record['started'] == original['started'] and record['first_epoch'] == 1 and record['settings'] == first
    [resume] = record['resumes']
    assert resume['first_epoch'] == 2 and resume['settings'] == second and resume['device'] == 'cpu'
    assert datetime.fromisoformat(resume['started']) > datetime.fromisoformat(original['started'])
    assert resume['versions'] == original['versions'] and set(resume['git']) == {'commit', 'dirty', 'why'}
    # run again with nothing left to train: the record is left as it is
    text = (out / 'config.json').read_text()
    training.run(second, log=lambda *_: None)
    assert (out / 'config.json').read_text() == text
    # a third leg appends a second resume
    training.run({**second, 'max_epochs': 3}, log=lambda *_: None)
    record = json.loads((out / 'config.json').read_text())
    assert record['first_epoch'] == 1 and [r['first_epoch'] for r in record['resumes']] == [2, 3]
    # --resume=false starts over: a new record, no resumes
    training.run({**first, 'resume': False}, log=lambda *_: None)
    record = json.loads((out / 'config.json').read_text())
    assert record['first_epoch'] == 1 and record['resumes'] == [] and record['started'] != original['started']


def test_a_resume_over_a_record_that_is_not_one_is_one_line_that_names_it(tmp_path):
    path, _ = tiny_table(tmp_path)
    out = tmp_path / 'run'
    cfg = training.settings(dataset=str(path), out_dir=str(out), max_epochs=1, **TINY)
    training.run(cfg, log=lambda *_: None)
    for text in ('{"sett', '[1, 2]'):
        (out / 'config.json').write_text(text)
        with pytest.raises(config.UserError, match=f'{out / "config.json"} is not a run record.*--resume=false'):
            training.run({**cfg, 'max_epochs': 2}, log=lambda *_: None)
        assert (out / 'config.json').read_text() == text and load_checkpoint(out / 'last.pt')[1]['epoch'] == 1



def test_a_kill_between_last_pt_and_the_history_is_made_good_by_the_rerun(tmp_path, monkeypatch):
    # Ctrl-C (or SIGKILL) after the last epoch's last.pt, before its history: the rerun, with nothing left to
    # train, still writes the history and curves of every epoch last.pt holds
    path, _ = tiny_table(tmp_path)
    cfg = training.settings(dataset=str(path), out_dir=str(tmp_path / 'run'), max_epochs=2, patience=10, **TINY)
    write = training._write_history

    def killed_at_epoch_2(history, out_dir):
        if len(history) == 2:
            raise KeyboardInterrupt
        write(history, out_dir)
    monkeypatch.setattr(training, '_write_history', killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        training.run(cfg, log=lambda *_: None)
    assert load_checkpoint(tmp_path / 'run' / 'last.pt')[1]['epoch'] == 2
    (tmp_path / 'run' / 'curves.png').unlink()
    monkeypatch.setattr(training, '_write_history', write)
    history = training.run(cfg, log=lambda *_: None)
    assert [e['epoch'] for e in history] == [1, 2]
    assert json.loads((tmp_path / 'run' / 'history.json').read_text()) == history
    same_entries(read_csv(tmp_path / 'run' / 'history.csv'), history)
    assert (tmp_path / 'run' / 'curves.png').exists()


def test_a_new_run_killed_in_its_first_epoch_leaves_nothing_of_the_run_it_replaces(tmp_path, monkeypatch):
    # --resume=false over a finished run, killed before its first epoch ends: its config.json beside the old
    # run's best.pt would pass that model off as this run's, and the next plain rerun would resume the old run
    path, _ = tiny_table(tmp_path)
    cfg = training.settings(dataset=str(path), out_dir=str(tmp_path / 'run'), max_epochs=2, **TINY)
    training.run(cfg, log=lambda *_: None)
    for name in ('report_roc.png', 'report_predictions.csv', 'notes.txt'):  # test.py's, a user's
        (tmp_path / 'run' / name).write_text('of the earlier best.pt')
    (tmp_path / 'run' / 'report.json').write_text(json.dumps({  # it named the same path and epoch
        'checkpoint': str(tmp_path / 'run' / 'best.pt'), 'checkpoint_epoch': 2, 'scorer': 'best.pt', 'subset': 'val'}))

    def killed(fit, epoch):
        raise KeyboardInterrupt
    monkeypatch.setattr(training, '_train_epoch', killed)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        training.run({**cfg, 'resume': False}, log=lines.append)
    # and the lock a run holds on its folder (common.stage.claim), kept for the next; and the user's file
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['config.json', 'last.pt.lock', 'last.pt.lock.gate',
                                                                    'notes.txt']
    assert any('the earlier run\'s best.pt, last.pt, history.json, history.csv, curves.png, report.json, '
               'report_roc.png, report_predictions.csv removed' in line for line in lines), lines
    monkeypatch.undo()
    lines = []
    history = training.run(cfg, log=lines.append)
    assert not any(line.startswith('resuming') for line in lines) and [e['epoch'] for e in history] == [1, 2]


def test_fakes_whose_original_is_absent_are_counted_once(tmp_path):
    path, table = tiny_table(tmp_path, absent=3)
    # a fake made from the first of them: its chain of originals ends at the same missing name
    gone0 = table.filename[table.original == 'gone0.mp4'].iloc[0]
    other = table[(table.label == 1) & table.original.str.startswith('o')].index[-1]
    table.loc[other, 'original'] = gone0
    store.save(table, str(path))
    lines = []
    training.run(training.settings(dataset=str(path), out_dir=str(tmp_path / 'run'), max_epochs=1, **TINY),
                 log=lines.append)
    warnings = [line for line in lines if 'not in the table' in line]
    assert warnings == ['warning: 4 videos name an original that is not in the table, directly or through a '
                        'chain of fakes (3 missing originals, e.g. gone0.mp4); the videos of each missing '
                        'original are one group (they cannot leak through it)']
    # a complete table says nothing
    path, _ = tiny_table(tmp_path, name='full')
    lines = []
    training.run(training.settings(dataset=str(path), out_dir=str(tmp_path / 'full'), max_epochs=1, **TINY),
                 log=lines.append)
    assert not any('not in the table' in line or 'no fake names its original' in line for line in lines)
    # no fake names its original: a split by video, said (it was silent)
    path, table = tiny_table(tmp_path, name='none')
    table['original'] = None
    store.save(table, str(path))
    lines = []
    training.run(training.settings(dataset=str(path), out_dir=str(tmp_path / 'none'), max_epochs=1, **TINY),
                 log=lines.append)
    assert [line for line in lines if line.startswith('warning')] == [
        'warning: no fake names its original (metadata.json\'s "original"), so each video is its own group: a split '
        'by video, through which a person\'s faces leak to both sides; --split=folder holds out whole folders'], lines


def test_git_state_says_why_where_there_is_no_checkout_or_no_git(tmp_path, monkeypatch):
    monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path.parent))  # no checkout above tmp_path either
    state = training.git_state(str(tmp_path))
    assert state['commit'] is None and state['dirty'] is None and 'not a git repository' in state['why'].lower()
    monkeypatch.setenv('PATH', str(tmp_path))  # no git on it
    state = training.git_state(ROOT)
    assert state['commit'] is None and state['why'] and 'git' in state['why']


def test_a_folder_holds_one_run_at_a_time_and_a_killed_runs_temporaries_are_swept(tmp_path):
    # two trainings into one --out_dir (the default runs/lstm, given to both) wrote each other's best.pt and
    # history; a run killed while it wrote left its atomic_path temporary, which no rerun removed
    import sys
    path, _ = tiny_table(tmp_path)
    out = tmp_path / 'run'
    first = subprocess.Popen([sys.executable, 'training.py', f'--dataset={path}', f'--out_dir={out}',
                              '--max_epochs=1000', '--patience=1000', *(f'--{k}={v}' for k, v in TINY.items())],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / 'last.pt').exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / 'last.pt').exists(), first.stderr.read() if first.poll() is not None else 'no epoch in 120 s'
        cfg = training.settings(dataset=str(path), out_dir=str(out), max_epochs=1, resume=False, **TINY)
        with pytest.raises(config.UserError, match=r'last.pt is being written by another run \(.* pid '
                                                   rf'{first.pid}\): wait until it ends, or use another output'):
            training.run(cfg, log=lambda *_: None)
    finally:
        first.kill()
        first.wait()
    (out / '.curves.png.0badc0de.tmp').write_bytes(b'')  # what a kill while curves.png was written leaves
    assert training.run(cfg, log=lambda *_: None)[-1]['epoch'] == 1
    assert not (out / '.curves.png.0badc0de.tmp').exists() and (out / 'best.pt').exists()


def test_reports_of_a_checkpoint_an_epoch_replaces_are_removed_and_a_resume_keeps_its_clip(tmp_path):
    """test.py's reports in the run folder (the README's recipe names them celebdf.json, dfdc.json) described the
    earlier best.pt after a resume or a new run replaced it, beside it as if they were its own; and a resume took a
    changed clip range, so that best.pt and last.pt clipped differently and the history's curves mixed two."""
    import test as scoring
    path, _ = tiny_table(tmp_path)
    out = tmp_path / 'run'
    cfg = training.settings(dataset=str(path), out_dir=str(out), max_epochs=2, patience=10, **TINY)
    training.run(cfg, log=lambda *_: None)

    def report(name, checkpoint):
        scoring.run(scoring.settings(dataset=str(path), checkpoint=str(out / checkpoint), report=str(out / name)),
                    log=lambda *_: None)
        return [out / n for n in (name, name[:-5] + '_roc.png', name[:-5] + '_predictions.csv')]
    best, last = report('celebdf.json', 'best.pt'), report('last.json', 'last.pt')
    (out / 'notes.json').write_text(json.dumps({'checkpoint': str(out / 'best.pt')}))  # a user's, not a report
    best_epoch = load_checkpoint(out / 'best.pt')[1]['epoch']
    with pytest.raises(config.UserError, match=r'last.pt is a run of another table or other settings \(--clip_lo\)'):
        training.run({**cfg, 'max_epochs': 4, 'clip_lo': 0.3}, log=lambda *_: None)
    lines = []
    training.run({**cfg, 'max_epochs': 4}, log=lines.append)
    kept = load_checkpoint(out / 'best.pt')[1]['epoch'] == best_epoch  # no better epoch: its reports stand
    assert all(p.exists() for p in best) == kept and any(p.exists() for p in best) == kept, lines
    assert not any(p.exists() for p in last), lines
    said = ('celebdf.json, celebdf_roc.png, celebdf_calibration.png, celebdf_predictions.csv, ' if not kept else '') + \
        'last.json, last_roc.png, last_calibration.png, last_predictions.csv removed: test.py\'s or predict.py\'s ' \
        'of the ' + \
        ('last.pt' if kept else 'best.pt and last.pt') + ' this epoch replaces'
    assert said in lines, lines
    # a report of another run's best.pt is kept (it was removed by its name, report.json, and called this run's); one
    # named .JSON, and one whose run folder moved since (the path it records is gone: matched by size and time), not
    other = tmp_path / 'other'
    training.run({**cfg, 'out_dir': str(other), 'max_epochs': 1}, log=lambda *_: None)
    scoring.run(scoring.settings(dataset=str(path), checkpoint=str(other / 'best.pt'), report=str(out / 'report.json')),
                log=lambda *_: None)
    best = report('celebdf.json', 'best.pt') + report('upper.JSON', 'best.pt')[:1]
    os.rename(out, tmp_path / 'moved')
    out = tmp_path / 'moved'
    moved = report('dfdc.json', 'best.pt')[:1]
    os.rename(out, tmp_path / 'run')
    out = tmp_path / 'run'
    lines = []
    training.run({**cfg, 'resume': False}, log=lines.append)
    assert not any(p.exists() for p in best) and not (out / 'dfdc.json').exists(), moved
    assert (out / 'notes.json').exists() and (out / 'report.json').exists() and (out / 'report_roc.png').exists()
    assert any('celebdf.json, celebdf_roc.png, celebdf_calibration.png, celebdf_predictions.csv, dfdc.json, '
               'dfdc_roc.png, dfdc_calibration.png, dfdc_predictions.csv, upper.JSON, ' in line
               for line in lines), lines


def test_a_resume_of_a_run_that_held_out_other_videos_is_refused(tmp_path):
    # the same table and settings, another side drawn (model.py's draw changed since the run began): resumed,
    # its weights would go on validating on videos they were trained on
    path, _ = tiny_table(tmp_path)
    cfg = training.settings(dataset=str(path), out_dir=str(tmp_path / 'run'), max_epochs=1, **TINY)
    training.run(cfg, log=lambda *_: None)
    last = tmp_path / 'run' / 'last.pt'
    ckpt = torch.load(last, weights_only=True)
    ckpt['split']['val_keys'] = ckpt['split']['val_keys'][1:]
    torch.save(ckpt, last)
    with pytest.raises(config.UserError, match=rf'^{last} held out other videos than this version draws from the '
                                               rf'same table and settings: --resume=false starts over'):
        training.run({**cfg, 'max_epochs': 2}, log=lambda *_: None)
