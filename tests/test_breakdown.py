"""test.py's breakdown (per folder, per manipulation method, per split) and its shortcut check: the figures
against scikit-learn's on known groups, the methods of FaceForensics++ and Celeb-DF-v2 paths (as
make_metadata.py lays them out), and the warning where one cue alone separates the classes."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import script_module
from sklearn.metrics import roc_auc_score

import make_metadata as mm
import training
from common import breakdown, shortcuts, store
from model import fit_audio_only, synthetic_table

torch.set_num_threads(1)  # steadier on a shared 2-core machine (training.py's THREADS)

FF = {'original': 'original_sequences/youtube/c23/videos', 'Deepfakes': 'manipulated_sequences/Deepfakes/c23/videos',
      'Face2Face': 'manipulated_sequences/Face2Face/c23/videos',
      'FaceSwap': 'manipulated_sequences/FaceSwap/c23/videos',
      'NeuralTextures': 'manipulated_sequences/NeuralTextures/c23/videos'}


@pytest.mark.parametrize('folder, method', [
    ('manipulated_sequences/Deepfakes/c23/videos', 'Deepfakes'),
    ('FaceForensics++/manipulated_sequences/NeuralTextures/c40/videos', 'NeuralTextures'),
    ('manipulated_sequences/DeepFakeDetection/raw/videos', 'DeepFakeDetection'),
    ('original_sequences/youtube/c23/videos', 'original'),
    ('data/original_sequences/actors/c23/videos', 'original'),
    ('Celeb-DF-v2/Celeb-synthesis', 'Celeb-synthesis'),
    ('Celeb-real', 'Celeb-real'),
    ('YouTube-real', 'YouTube-real'),
    ('Youtube-real', 'Youtube-real'),  # as some copies spell it: the folder's own name
    ('dfdc_train_part_7', None),
    ('', None),
])
def test_the_method_comes_from_the_folder_path(folder, method):
    assert breakdown.method_of(folder) == method


def test_the_methods_of_the_folders_make_metadata_finds(tmp_path):
    """The folders make_metadata.py labels (relative to the data folder, as the stages key videos) name the
    method of their videos."""
    for folder in FF.values():
        (tmp_path / 'ff' / folder).mkdir(parents=True)
        (tmp_path / 'ff' / folder / '000_003.mp4').write_bytes(b'')
    parts, _ = mm.ff_parts(str(tmp_path / 'ff'), 'c23')
    found = {breakdown.method_of(str(p.folder)[len(str(tmp_path / 'ff')) + 1:]) for p in parts}
    assert found == set(FF)
    for name in ('Celeb-real', 'Celeb-synthesis', 'YouTube-real'):
        (tmp_path / 'celeb' / name).mkdir(parents=True)
        (tmp_path / 'celeb' / name / 'id0_0000.mp4').write_bytes(b'')
    parts, _ = mm.celebdf_parts(str(tmp_path / 'celeb'))
    assert {breakdown.method_of(str(p.folder)[len(str(tmp_path / 'celeb')) + 1:]) for p in parts} == {
        'Celeb-real', 'Celeb-synthesis', 'YouTube-real'}


def ff_scores(seed=0, n=40):
    """An FF++-like scored set: n real videos and n fakes of each method, each method's p shifted by its own
    amount (so each gets its own AUC), and a DFDC part that holds both classes."""
    rng = np.random.default_rng(seed)
    y, p, folders = [], [], []
    for k, (method, folder) in enumerate(FF.items()):
        y += [int(method != 'original')] * n
        p += list(rng.normal(0.2 * k, 1.0, n))
        folders += [folder] * n
    y += [0, 1] * n
    p += list(rng.normal(0, 1, 2 * n) + 0.7 * np.tile([0, 1], n))
    folders += ['dfdc_train_part_0'] * 2 * n
    return np.array(y), 1 / (1 + np.exp(-np.array(p))), np.array(folders, object)


def test_the_breakdown_gives_each_group_the_auc_sklearn_gives_it():
    y, p, folders = ff_scores()
    splits = np.where(np.arange(len(y)) % 3 == 0, 'test', 'train')
    got = breakdown.breakdown(y, p, folders, splits)
    real = folders == FF['original']
    for method, folder in FF.items():
        mine = folders == folder
        # a method's fakes against the real videos; the reals against every fake: the field's per-method AUC
        against = mine | (y == 0) if method != 'original' else mine | (y == 1)
        want = roc_auc_score(y[against], p[against])
        for figures in (got['by_method'][method], got['by_folder'][folder]):
            assert list(figures)[0] == 'roc_auc' and figures['roc_auc'] == want
            assert figures['n_videos'] == mine.sum() and figures['n_fake'] == (y[mine] == 1).sum()
            assert figures['mean_p_fake'] == pytest.approx(p[mine].mean(), rel=1e-12)
            assert figures['accuracy'] == pytest.approx(((p[mine] > 0.5) == y[mine]).mean(), rel=1e-12)
        assert got['by_method'][method]['roc_auc_of'] == breakdown.AGAINST[0 if method == 'original' else 1]
    # the fakes of one method against the reals of the FF++ folder and of the DFDC part: every real scored
    assert (y == 0).sum() > real.sum()
    mixed = folders == 'dfdc_train_part_0'
    assert got['by_folder']['dfdc_train_part_0']['roc_auc'] == roc_auc_score(y[mixed], p[mixed])
    assert got['by_folder']['dfdc_train_part_0']['roc_auc_of'] == breakdown.OWN
    assert set(got['by_method']) == set(FF)  # the DFDC part names no method
    for split in ('test', 'train'):
        mine = splits == split
        assert got['by_split'][split]['roc_auc'] == roc_auc_score(y[mine], p[mine])
    assert 'by_split' not in breakdown.breakdown(y, p, folders)  # an older table: no splits
    line, by_split = breakdown.summary(got).split('\n')
    assert line.startswith('roc_auc by method (videos): Deepfakes ') and f'{got["by_method"]["Face2Face"]["roc_auc"]:.4f}' in line
    # the figure the field reports for Celeb-DF-v2, its test list's, printed too (it was in the report only)
    test = got['by_split']['test']
    assert by_split.startswith('roc_auc by split (videos): test ') and f'test {test["roc_auc"]:.4f} ' \
        f'({test["n_videos"]})' in by_split
    assert '\n' not in breakdown.summary({**got, 'by_split': {'train': got['by_split']['train']}})  # one split


def test_a_group_whose_other_class_is_absent_has_no_auc_and_says_why():
    y = np.array([1, 1, 1, 1])
    got = breakdown.by(y, np.array([0.9, 0.2, 0.6, 0.4]), ['manipulated_sequences/Deepfakes/c23/videos'] * 4)
    figures = got['manipulated_sequences/Deepfakes/c23/videos']
    assert figures['roc_auc'] is None and figures['roc_auc_note'] == 'undefined: the set has only fake videos'
    assert figures['accuracy'] == 0.5


def table_with(n=120, seed=3, face_by_label=False, audio_by_label=False, lead_rms=None):
    """synthetic_table with its boxes (and audio) shaped as asked."""
    table = synthetic_table(n, faces=10, video_dim=16, audio_dim=4, seed=seed)
    rng = np.random.default_rng(seed)
    side = rng.uniform(100, 400, n) + (400 * table['label'].to_numpy() if face_by_label else 0)
    table['boxes'] = [np.tile(np.float32([800, 300, 800 + s, 300 + s]), (10, 1)) for s in side]
    if audio_by_label:
        table['audio_embedding'] = [np.float32([label, 1 - label, 0, 0]) + rng.normal(0, 0.1, 4).astype(np.float32)
                                    for label in table['label']]
        table['has_audio'] = True
    if lead_rms is not None:
        table['lead_rms'] = lead_rms
    return table


def stored(table, path):
    store.save(table, str(path))
    return store.open_store(str(path))


def model_p(y, seed=0):
    """A model's p that separates the classes well but not perfectly (ROC AUC ~0.9)."""
    return 1 / (1 + np.exp(-(np.random.default_rng(seed).normal(0, 1, len(y)) + 2.5 * (y - 0.5))))


def test_the_shortcut_warning_fires_where_face_size_alone_separates_the_classes(tmp_path):
    made = table_with(face_by_label=True)
    sides = np.array([b[0, 2] - b[0, 0] for b in made['boxes']])  # square boxes: the size is the side
    with stored(made, tmp_path / 'big.pkl') as table:
        indices = np.arange(len(table))
        y = table.labels
        rep = shortcuts.check(y, model_p(y), shortcuts.cues(table, indices, None))
        assert table.face_size == pytest.approx(sides, rel=1e-6)  # float32
    assert rep['face_size']['roc_auc'] == roc_auc_score(y, sides) == 1.0  # the fakes' faces are all larger
    assert rep['face_size']['separation'] > rep['face_size']['model_roc_auc'] - shortcuts.MARGIN
    assert rep['warning'].startswith('warning: shortcut check: a cue alone separates real from fake within 0.02 ')
    assert 'or better: face_size 1.0000 (the model ' in rep['warning']
    assert rep['warning'].count('(the model') == 1  # face size only
    # what the table and checkpoint lack is unavailable, with the reason, never a score of 0
    assert rep['lead_silence']['roc_auc'] is None and rep['lead_silence']['note'].startswith('unavailable: ')
    assert rep['audio']['note'] == 'unavailable: no audio-only model (no checkpoint, or one without it)'


def test_the_shortcut_check_is_silent_where_no_cue_separates_the_classes(tmp_path):
    n = 120
    rms = np.random.default_rng(9).uniform(0, 0.1, n)
    rms[::7] = np.nan  # videos without a track: left out of that cue, not scored as silence
    with stored(table_with(n, lead_rms=rms), tmp_path / 'plain.pkl') as table:
        indices = np.arange(len(table))
        y = table.labels
        audio_only = fit_audio_only(table, indices)
        rep = shortcuts.check(y, model_p(y), shortcuts.cues(table, indices, audio_only))
    assert rep['warning'] is None
    has = np.isfinite(rms)
    assert rep['lead_silence']['n_videos'] == has.sum() < n
    assert rep['lead_silence']['roc_auc'] == pytest.approx(roc_auc_score(y[has], rms[has]), abs=1e-6)  # float32
    assert rep['lead_silence']['model_roc_auc'] == roc_auc_score(y[has], model_p(y)[has])
    for cue in ('audio', 'lead_silence', 'face_size'):
        assert rep[cue]['separation'] < rep[cue]['model_roc_auc'] - shortcuts.MARGIN, (cue, rep[cue])
    # the same audio made to follow the label: the audio-only model alone now matches the model
    with stored(table_with(n, audio_by_label=True), tmp_path / 'voice.pkl') as table:
        audio_only = fit_audio_only(table, indices)
        rep = shortcuts.check(y, model_p(y), shortcuts.cues(table, indices, audio_only))
    assert rep['audio']['roc_auc'] > 0.99 and 'or better: audio ' in rep['warning']


def test_a_cue_at_chance_is_no_shortcut_however_poor_the_model(tmp_path):
    # a model at chance (one p for every video: ROC AUC 0.5, as an untrained or collapsed one) and every face of
    # one size (AUC 0.5): the face size separates nothing, and was warned about as within 0.02 of the model
    n = 120
    same = table_with(n)
    same['boxes'] = [np.tile(np.float32([800, 300, 1000, 500]), (10, 1))] * n
    with stored(same, tmp_path / 'same.pkl') as table:
        rep = shortcuts.check(table.labels, np.full(n, 0.5), shortcuts.cues(table, np.arange(n), None))
    assert rep['face_size']['separation'] == rep['face_size']['model_roc_auc'] == 0.5
    assert rep['warning'] is None
    # the same model where the face size does follow the label: warned about
    with stored(table_with(n, face_by_label=True), tmp_path / 'big.pkl') as table:
        rep = shortcuts.check(table.labels, np.full(n, 0.5), shortcuts.cues(table, np.arange(n), None))
    assert 'or better: face_size 1.0000 (the model 0.5000 ' in rep['warning']


def test_test_py_reports_the_breakdown_and_warns_of_a_shortcut(tmp_path):
    """End to end: a checkpoint scored on an FF++-shaped table whose fakes have larger faces: the report
    holds the breakdown per method and per split and the shortcut fields, and the log the warning line."""
    store.save(synthetic_table(120, faces=10, video_dim=16, audio_dim=4, seed=3), str(tmp_path / 'train.pkl'))
    training.run(training.settings(dataset=str(tmp_path / 'train.pkl'), out_dir=str(tmp_path / 'run'), crop=6,
                                   project=8, hidden=8, fc=0, max_epochs=1, progress=False), log=lambda *_: None)
    table = table_with(60, seed=4, face_by_label=True)
    methods = [m for m in FF if m != 'original']
    table['folder'] = [FF['original'] if label == 0 else FF[methods[i % 4]] for i, label in enumerate(table['label'])]
    table['split'] = ['test' if i % 2 else 'train' for i in range(len(table))]
    store.save(table, str(tmp_path / 'ff.pkl'))
    lines = []
    scoring = script_module('test')
    rep = scoring.run(scoring.settings(dataset=str(tmp_path / 'ff.pkl'), checkpoint=str(tmp_path / 'run' / 'best.pt'),
                                       report=str(tmp_path / 'r.json')), log=lines.append)
    assert set(rep['breakdown']['by_method']) == set(FF) and set(rep['breakdown']['by_split']) == {'test', 'train'}
    back = pd.read_csv(tmp_path / 'r_predictions.csv', keep_default_na=False)
    y, p = back['label'].to_numpy(), back['p_fake'].to_numpy()
    test = (np.arange(len(table)) % 2 == 1)  # the CSV keeps the table's order
    assert rep['breakdown']['by_split']['test']['roc_auc'] == pytest.approx(roc_auc_score(y[test], p[test]),
                                                                            abs=1e-3)  # p rounded to 6 digits
    warning = rep['shortcuts']['warning']
    assert rep['shortcuts']['face_size']['separation'] == 1.0 and warning.startswith('warning: shortcut check: ')
    assert sum(warning in line.split('\n') for line in lines) == 1
    assert json.loads((tmp_path / 'r.json').read_text())['shortcuts']['warning'] == warning
    assert 'roc_auc by method (videos): ' in lines[-2]


def test_a_celeb_df_tree_gives_its_methods_and_test_list_to_the_video_table(tmp_path):
    """make_metadata.py and create_video_embeddings.py on a Celeb-DF-v2-shaped tree of real clips (linked, not
    copied): each row's folder names its method and its split says whether the test list holds it."""
    from audio_clips import run_script
    from conftest import testdata
    root = tmp_path / 'Celeb-DF-v2'
    links = {'Celeb-real/id0_0000.mp4': testdata('talking_heads', '1.mp4'),
             'Celeb-synthesis/id1_id0_0000.mp4': testdata('talking_heads', '2.mp4')}
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    (root / mm.CELEB_TEST_LIST).write_text('0 Celeb-synthesis/id1_id0_0000.mp4\n')
    r = run_script('make_metadata.py', f'--data_dir={root}')
    assert r.returncode == 0, r.stderr
    r = run_script('create_video_embeddings.py', f'--data_dir={root}', f'--output={tmp_path / "video.pkl"}',
                   '--face_weights=none')
    assert r.returncode == 0, r.stderr
    table = pd.read_pickle(tmp_path / 'video.pkl').drop_duplicates(['folder', 'filename']).set_index('filename')
    assert table.loc['id1_id0_0000.mp4', 'split'] == 'test' and table.loc['id0_0000.mp4', 'split'] == 'train'
    assert [breakdown.method_of(f) for f in table.loc[['id0_0000.mp4', 'id1_id0_0000.mp4'], 'folder']] == [
        'Celeb-real', 'Celeb-synthesis']
    # the test list corrected (a video added, one taken out) and the metadata written again: the stage's rerun
    # redoes those two videos, whose rows kept their old split ('train' for a test video: by_split missed it)
    (root / mm.CELEB_TEST_LIST).write_text('1 Celeb-real/id0_0000.mp4\n')
    assert run_script('make_metadata.py', f'--data_dir={root}', '--overwrite=true').returncode == 0
    r = run_script('create_video_embeddings.py', f'--data_dir={root}', f'--output={tmp_path / "video.pkl"}',
                   '--face_weights=none')
    assert r.returncode == 0 and '2 videos changed since they were done' in r.stdout, r.stdout + r.stderr
    table = pd.read_pickle(tmp_path / 'video.pkl').drop_duplicates(['folder', 'filename']).set_index('filename')
    assert table.loc['id1_id0_0000.mp4', 'split'] == 'train' and table.loc['id0_0000.mp4', 'split'] == 'test'


def test_chance_sd_is_the_spread_of_a_chance_roc_auc():
    """chance_sd against the ROC AUCs of 4,000 draws of scores independent of the labels (seeded): the sample
    standard deviation of 4,000 draws is within ~1.1% of the true one (1/sqrt(2 * 4000)); 5% is 4.5 of those."""
    rng = np.random.default_rng(0)
    for n_real, n_fake in ((30, 30), (10, 50)):
        y = np.r_[np.zeros(n_real), np.ones(n_fake)]
        aucs = [roc_auc_score(y, rng.random(len(y))) for _ in range(4000)]
        assert np.std(aucs, ddof=1) == pytest.approx(shortcuts.chance_sd(n_real, n_fake), rel=0.05)


def test_a_cue_on_a_few_videos_is_no_shortcut_however_well_it_separates_them(tmp_path):
    """main.sh's sample scores one real and one fake video: any cue separates them (ROC AUC 1 or 0), which is
    chance (chance_sd 0.5), not a shortcut. Twenty videos whose face size follows the label are one."""
    made = table_with(20, face_by_label=True)
    with stored(made, tmp_path / 'big.pkl') as table:
        for picked in ([np.flatnonzero(table.labels == c)[0] for c in (0, 1)], np.arange(20)):
            picked = np.asarray(picked)
            y = table.labels[picked]
            rep = shortcuts.check(y, model_p(y), shortcuts.cues(table, picked, None))
            assert rep['face_size']['separation'] == 1.0
            assert (rep['warning'] is None) == (len(picked) == 2), rep
    assert shortcuts.chance_sd(1, 1) == 0.5
