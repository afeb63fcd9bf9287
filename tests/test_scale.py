"""Several processes (torchrun, a SLURM array's tasks, machines sharing a file system):
shares of every extraction stage give the single process's output, and so does the merged table made from
them."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, testdata

from common.device import usable_cores

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
# the single process on as many torch threads as each of the two gets (common.device.share_cpu), so that
# both run the same kernels; the embeddings then differ by rounding only (RTOL below)
THREADS = str(max(1, usable_cores() // 2))


def script(*args, processes=1):
    """processes: 1, or 2 (torchrun)."""
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS=THREADS) if processes == 1 else None
    r = subprocess.run([*launcher, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[:3000], r.stderr[-2000:])
    return r


# ----------------------------------------------------------------------------- extraction
@pytest.fixture(scope='module')
def heads(tmp_path_factory):
    """The five talking heads as a DFDC part (links), and every stage run on it by one process and by two
    of torchrun: {'one' | 'two': {'video' | 'audio' | 'merged': path}}, with the audio folders under
    'audio_dir'."""
    data = testdata('talking_heads')
    root = tmp_path_factory.mktemp('heads')
    meta = {f'{i}.mp4': {'label': 'REAL' if i % 2 else 'FAKE', 'original': None if i % 2 else '1.mp4'}
            for i in range(1, 6)}
    part = root / 'data' / 'part'
    part.mkdir(parents=True)
    for name in meta:
        os.symlink(os.path.join(data, name), part / name)
    (part / 'metadata.json').write_text(json.dumps(meta))
    out = {}
    for how, n in (('one', 1), ('two', 2)):
        d = {k: str(root / f'{how}_{k}.pkl') for k in ('video', 'audio', 'merged')}
        d['audio_dir'] = str(root / f'{how}_audio')
        d['stdout'] = [
            # on the CPU: on a GPU the decoding workers mix videos in the networks' batches, whose float
            # rounding then depends on which videos met (README: reproducibility)
            script('create_video_embeddings.py', f'--data_dir={root / "data"}', '--face_weights=none',
                   '--device=cpu', f'--output={d["video"]}', processes=n).stdout,
            script('extract_audio.py', f'--data_dir={root / "data"}', f'--audio_dir={d["audio_dir"]}',
                   processes=n).stdout,
            script('create_audio_embedding.py', f'--audio_dir={d["audio_dir"]}', f'--output={d["audio"]}',
                   processes=n).stdout]
        script('merge_embeddings.py', f'--video_table={d["video"]}', f'--audio_table={d["audio"]}',
               f'--output={d["merged"]}')
        out[how] = d
    out['names'] = sorted(meta)
    out['data'] = str(root / 'data')
    return out


# Processes of one run compute the same numbers, but not bit for bit: each runs the networks on its own
# torch threads, whose float32 sums can come in another order (~1e-7 relative, seen on the audio
# embeddings), and a face embedding can then round to the neighbouring value of the dtype its last layer
# ran in under autocast: a float16 step (2**-11 relative, GPU; seen: 3e-5 on values ~0.05) or a bfloat16
# step (2**-8, CPUs with AMX or AVX-512 bf16). So float16 arrays agree within two bfloat16 steps relative
# to each value, other float arrays (float32 all through) within 1e-5, and 1e-6 absolute near zero; integer
# arrays (frames) and everything else exactly. Two videos' untrained embeddings differ by ~4% of a value
# (6.6e-4 on ~0.015): a row of another video fails. (The untrained embedder, not tests/face_checks.py's:
# these tables hold no boxes, and its embeddings move with a box edge that rounding moved by a pixel.)
RTOL = {np.dtype(np.float16): 2 ** -7, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-5}


def assert_same_table(a, b):
    """Same rows, columns and attrs; every value equal, float arrays within RTOL (see above)."""
    assert a.columns.tolist() == b.columns.tolist() and len(a) == len(b) and a.attrs == b.attrs
    for column in a.columns:
        for x, y in zip(a[column], b[column]):
            assert_same_value(x, y, column)


def assert_same_value(x, y, column):
    if isinstance(x, np.ndarray) and x.dtype in RTOL:
        assert x.dtype == y.dtype and x.shape == y.shape, column
        np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=RTOL[x.dtype],
                                   atol=1e-6, err_msg=column)
    elif isinstance(x, np.ndarray):
        np.testing.assert_array_equal(x, y, err_msg=column)
    else:
        assert x == y or (pd.isna(x) and pd.isna(y)), (column, x, y)


def without_wav_times(table):
    """The table with its sources' WAV part (create_audio_embedding.made_from: its folder's WAV's size and time,
    which differ between two folders of the same bytes) reduced to the WAV's size."""
    if 'source' in table:
        table['source'] = table['source'].str.replace(r'( wav \d+):\d+$', r'\1', regex=True)
    return table


def test_two_processes_embed_the_videos_of_one_process(heads, how='two'):
    assert all('rank 0/2' in out and 'rank 1/2' in out for out in heads[how]['stdout'])  # every stage split
    a, b = pd.read_pickle(heads['one']['video']), pd.read_pickle(heads[how]['video'])
    assert a.filename.tolist() == heads['names']
    assert_same_table(a, b)
    assert not os.path.exists(heads[how]['video'] + '.parts')
    n = min(len(b.video_embedding[0]), len(b.video_embedding[1]))
    with pytest.raises(AssertionError):  # a row of another video fails the same check
        assert_same_value(b.video_embedding[0][:n], b.video_embedding[1][:n], 'video_embedding')


def test_two_processes_give_the_audio_index_embeddings_and_merged_table_of_one(heads, how='two'):
    import create_audio_embedding as cae
    (a, a_failed), (b, b_failed) = (cae.read_index(heads[h]['audio_dir']) for h in ('one', how))
    assert_same_table(a, b)
    assert a_failed == b_failed == {} and a.filename.tolist() == heads['names']
    files = sorted(os.listdir(os.path.join(heads['one']['audio_dir'], 'part')))  # the WAVs, in the part's folder
    assert files == sorted(os.listdir(os.path.join(heads[how]['audio_dir'], 'part'))) == [f'{n}.wav' for n in heads['names']]
    for name in files:  # decoding is exact: the same bytes
        with open(os.path.join(heads['one']['audio_dir'], 'part', name), 'rb') as x, \
                open(os.path.join(heads[how]['audio_dir'], 'part', name), 'rb') as y:
            assert x.read() == y.read(), name
    assert_same_table(*(without_wav_times(pd.read_pickle(heads[h]['audio'])) for h in ('one', how)))
    one, two = (without_wav_times(pd.read_pickle(heads[h]['merged'])) for h in ('one', how))
    assert one.filename.tolist() == heads['names'] and one.has_audio.all()
    assert_same_table(one, two)


def test_two_machines_by_torchruns_static_rendezvous_give_the_index_of_one_process(heads, tmp_path):
    """The README's command for several machines on a shared file system, as two 'machines' here: two
    torchrun launchers, --nnodes=2 and --node_rank 0 and 1, meeting at one --rdzv_endpoint."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    audio_dir = tmp_path / 'audio'
    nodes = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', f'--node_rank={rank}',
                               '--nproc_per_node=1', '--rdzv_backend=static', f'--rdzv_endpoint=127.0.0.1:{port}',
                               '--rdzv_id=test-nodes', 'extract_audio.py', f'--data_dir={heads["data"]}',
                               f'--audio_dir={audio_dir}'], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outs]
    assert 'rank 0/2' in outs[0][0] and 'rank 1/2' in outs[1][0]
    import create_audio_embedding as cae
    assert_same_table(cae.read_index(str(audio_dir))[0], cae.read_index(heads['one']['audio_dir'])[0])


def test_a_slurm_array_task_is_a_rank(monkeypatch):
    """sbatch --array=3-6: the README's SLURM script; tasks 3..6 are ranks 0..3 of 4, one run per job."""
    from common.stage import shard
    for name in ('WORLD_SIZE', 'RANK'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('SLURM_ARRAY_JOB_ID', '77')
    monkeypatch.setenv('SLURM_ARRAY_TASK_COUNT', '4')
    monkeypatch.setenv('SLURM_ARRAY_TASK_MIN', '3')
    monkeypatch.setenv('SLURM_ARRAY_TASK_ID', '5')
    assert shard() == (2, 4, '77')


def test_one_process_merges_once_every_video_has_its_part(tmp_path, monkeypatch, capsys):
    """The process that finds a part for every video the run had left merges, elected by an flock. Markers
    of 'share done' did this before: a rerun under the same run id (torchrun's default 'none', a static
    rendezvous id) found a killed run's markers and merged while the other process was still at work."""
    from common.stage import Journal, StageRun
    journal = Journal(tmp_path / 'out.pkl')
    left = {'p/a.mp4', 'p/b.mp4'}
    journal.add({'filename': 'a.mp4', 'folder': 'p', 'rows': []})
    assert journal.share_done(left) == 'wait'  # b's process is at work, or was killed
    journal.fail('b.mp4', 'p', 'no face found')
    assert journal.share_done(left) == 'merge'
    assert Journal(tmp_path / 'out.pkl').share_done(left) == 'taken'  # another process: one merges
    journal._merge_lock.close()  # the merger killed: the kernel lets its lock go
    again, late = Journal(tmp_path / 'out.pkl'), Journal(tmp_path / 'out.pkl')
    assert again.share_done(left) == 'merge'
    again.finish(lambda rec: rec['rows'])
    assert late.share_done(set()) == 'taken'  # its parts' folder merged and removed since it started
    for name, value in (('WORLD_SIZE', '2'), ('RANK', '0'), ('TORCHELASTIC_RUN_ID', 'none')):
        monkeypatch.setenv(name, value)
    run = StageRun(tmp_path / 'other.pkl')
    assert run.todo([('p', 'a.mp4'), ('p', 'b.mp4')], where=lambda item: item) == [('p', 'a.mp4')]
    assert run.merging('other.pkl') is False
    assert 'the last process to finish writes other.pkl' in capsys.readouterr().out


def test_two_torchrun_jobs_have_two_run_ids(monkeypatch):
    """torchrun's rendezvous id is 'none' unless given: two jobs writing one output at the same time were
    one run to claim(). The address and port their processes meet at tell them apart."""
    from common.stage import shard
    for name, value in (('WORLD_SIZE', '2'), ('RANK', '1'), ('TORCHELASTIC_RUN_ID', 'none'),
                        ('MASTER_ADDR', '127.0.0.1'), ('MASTER_PORT', '29500')):
        monkeypatch.setenv(name, value)
    first = shard()
    monkeypatch.setenv('MASTER_PORT', '29501')
    assert first == (1, 2, 'none@127.0.0.1:29500') and shard()[2] != first[2]


def test_a_late_process_takes_the_same_share():
    from common.stage import share
    items = list(range(11))
    shares = [share(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and all(len(s) >= 3 for s in shares)
