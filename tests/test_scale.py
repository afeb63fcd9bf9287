"""Several processes: torchrun shares of a stage give the single process's output."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import ROOT, testdata

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=0']


def test_two_torchrun_processes_equal_one_process(tmp_path):
    data = testdata('talking_heads')
    meta = {f'{i}.mp4': {'label': 'REAL' if i % 2 else 'FAKE', 'original': None if i % 2 else '1.mp4'}
            for i in range(1, 6)}
    part = tmp_path / 'part'
    part.mkdir()
    for name in meta:
        os.symlink(os.path.join(data, name), part / name)
    import json
    (part / 'metadata.json').write_text(json.dumps(meta))
    args = [f'--data_dir={tmp_path}', '--face_weights=none']
    one = subprocess.run([sys.executable, 'create_video_embeddings.py', *args,
                          f'--output={tmp_path / "one.pkl"}'], cwd=ROOT, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*TORCHRUN, 'create_video_embeddings.py', *args, f'--output={tmp_path / "two.pkl"}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert 'rank 0/2' in two.stdout and 'rank 1/2' in two.stdout
    a, b = pd.read_pickle(tmp_path / 'one.pkl'), pd.read_pickle(tmp_path / 'two.pkl')
    assert a.filename.tolist() == b.filename.tolist() == sorted(meta)
    assert a.label.tolist() == b.label.tolist()
    for x, y in zip(a.video_embedding, b.video_embedding):
        # threads per process differ (2 vs 1): the same faces, equal up to float16 rounding
        np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), rtol=2e-2, atol=2e-2)
    for x, y in zip(a.frames, b.frames):
        np.testing.assert_array_equal(x, y)
    assert not os.path.exists(tmp_path / 'two.pkl.parts')


def test_a_late_process_takes_the_same_share():
    from common.stage import share
    items = list(range(11))
    shares = [share(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and all(len(s) >= 3 for s in shares)
