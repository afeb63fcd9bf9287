"""training.py on the CLIP encoders' features: the dimension comes from the table (1024 for GenD)."""
import subprocess
import sys

import numpy as np

from common import store
from conftest import ROOT
from model import load_checkpoint, synthetic_table


def test_training_reads_the_feature_dimension_from_the_table(tmp_path):
    """training.py on a merged table of 1024-d L2-normalised features (GenD's size): the network is built
    for 1024 from the table, trains, and its checkpoint says so."""
    table = synthetic_table(40, faces=8, min_faces=2, video_dim=1024, audio_dim=8, seed=6)
    table['video_embedding'] = [(e / np.linalg.norm(e.astype(np.float32), axis=1, keepdims=True)).astype(np.float16)
                                for e in table['video_embedding']]
    store.save(table, str(tmp_path / 'merged.pkl'))
    run = subprocess.run([sys.executable, 'training.py', f'--dataset={tmp_path}/merged.pkl', f'--out_dir={tmp_path}/run',
                          '--max_epochs=2', '--crop=8', '--hidden=8', '--project=8'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    net, ckpt = load_checkpoint(str(tmp_path / 'run' / 'best.pt'))
    assert ckpt['network']['video_dim'] == 1024 and net.project.in_features == 1024
