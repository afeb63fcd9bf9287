"""test.py's report.json is what its run() returns: the figures' paths were added after the file was written,
so the file lacked roc_png and calibration_png. A real checkpoint trained on a small synthetic table."""
import json
import os

import torch
from conftest import script_module

import training
from common import store
from model import synthetic_table

torch.set_num_threads(1)  # steadier than two threads on a shared 2-core machine (training.py's THREADS)
scoring = script_module('test')


def test_report_json_on_disk_equals_what_run_returns(tmp_path):
    store.save(synthetic_table(60, faces=10, video_dim=16, audio_dim=4, seed=5), str(tmp_path / 'merged.pkl'))
    training.run(training.settings(dataset=str(tmp_path / 'merged.pkl'), out_dir=str(tmp_path / 'run'), crop=6,
                                   project=8, hidden=8, fc=0, max_epochs=1, progress=False), log=lambda *_: None)
    report = tmp_path / 'out' / 'report.json'
    rep = scoring.run(scoring.settings(dataset=str(tmp_path / 'merged.pkl'), checkpoint=str(tmp_path / 'run' / 'best.pt'),
                                       report=str(report), subset='all'), log=lambda *_: None)
    assert rep['roc_png'] == str(tmp_path / 'out' / 'report_roc.png') and os.path.exists(rep['roc_png'])
    assert rep['calibration_png'] == str(tmp_path / 'out' / 'report_calibration.png')
    assert json.loads(report.read_text()) == json.loads(json.dumps(rep))  # as JSON holds it: tuples are lists


def test_a_report_without_a_roc_curve_leaves_no_earlier_reports_curve_beside_it(tmp_path):
    # scored again into the same --report, on videos of one class: the ROC curve is undefined, and the
    # earlier report's report_roc.png, another set's curve, must not stay beside the new report
    store.save(synthetic_table(60, faces=10, video_dim=16, audio_dim=4, seed=5), str(tmp_path / 'merged.pkl'))
    reals = synthetic_table(60, faces=10, video_dim=16, audio_dim=4, seed=6)
    store.save(reals[reals.label == 0].reset_index(drop=True), str(tmp_path / 'reals.pkl'))
    training.run(training.settings(dataset=str(tmp_path / 'merged.pkl'), out_dir=str(tmp_path / 'run'), crop=6,
                                   project=8, hidden=8, fc=0, max_epochs=1, progress=False), log=lambda *_: None)
    report = tmp_path / 'report.json'
    for table in ('merged', 'reals'):
        rep = scoring.run(scoring.settings(dataset=str(tmp_path / f'{table}.pkl'), report=str(report),
                                           checkpoint=str(tmp_path / 'run' / 'best.pt'), subset='all'),
                          log=lambda *_: None)
    assert rep['n_fake'] == 0 and 'roc_png' not in rep and 'calibration_png' in rep
    assert not (tmp_path / 'report_roc.png').exists() and (tmp_path / 'report_calibration.png').exists()
