"""Several processes (torchrun, and --procs: PyTorch's elastic agent forking the workers; gloo on the CPU):
shares of every extraction stage give the single process's output, and so does the merged table made from
them; two training processes train the single process's model, and a resumed two-process run is the run it
continues."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, testdata

import training
from common.device import usable_cores
from common.lazytable import open_table
from model import load_checkpoint, predict_logits, synthetic_table, train_batches

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
# the single process on as many torch threads as each of the two gets (common.device.share_cpu), so that
# both run the same kernels; the embeddings then differ by rounding only (RTOL below)
THREADS = str(max(1, usable_cores() // 2))


def script(*args, processes=1):
    """processes: 1, 2 (torchrun), or 'procs' (the script's own --procs=2)."""
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    if processes == 'procs':
        args = (*args, '--procs=2')
    env = dict(os.environ, OMP_NUM_THREADS=THREADS) if processes == 1 else None
    r = subprocess.run([*launcher, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[:3000], r.stderr[-2000:])
    return r


# ----------------------------------------------------------------------------- extraction
@pytest.fixture(scope='module')
def heads(tmp_path_factory):
    """The five talking heads as a DFDC part (links), and every stage run on it by one process, by two of
    torchrun and by --procs=2: {'one' | 'two' | 'procs': {'video' | 'audio' | 'merged': path}}, with the
    audio folders under 'audio_dir'."""
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
    for how, n in (('one', 1), ('two', 2), ('procs', 'procs')):
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
# embeddings), and a float16 face embedding can then round to the neighbouring value (one float16 step is
# 2**-11 relative; seen: 3e-5 on values ~0.05). So float arrays agree within two float16 steps, relative,
# and 1e-6 absolute near zero; integer arrays (frames) and everything else exactly.
RTOL = {np.dtype(np.float16): 2 ** -10, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-5}


def assert_same_table(a, b):
    """Same rows, columns and attrs; every value equal, float arrays within RTOL (see above)."""
    assert a.columns.tolist() == b.columns.tolist() and len(a) == len(b) and a.attrs == b.attrs
    for column in a.columns:
        for x, y in zip(a[column], b[column]):
            if isinstance(x, np.ndarray) and x.dtype in RTOL:
                assert x.dtype == y.dtype and x.shape == y.shape, column
                np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=RTOL[x.dtype],
                                           atol=1e-6, err_msg=column)
            elif isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, y, err_msg=column)
            else:
                assert x == y or (pd.isna(x) and pd.isna(y)), (column, x, y)


@pytest.mark.parametrize('how', ['two', 'procs'])
def test_two_processes_embed_the_videos_of_one_process(heads, how):
    assert all('rank 0/2' in out and 'rank 1/2' in out for out in heads[how]['stdout'])  # every stage split
    a, b = pd.read_pickle(heads['one']['video']), pd.read_pickle(heads[how]['video'])
    assert a.filename.tolist() == heads['names']
    assert_same_table(a, b)
    assert not os.path.exists(heads[how]['video'] + '.parts')


@pytest.mark.parametrize('how', ['two', 'procs'])
def test_two_processes_give_the_audio_index_embeddings_and_merged_table_of_one(heads, how):
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
    assert_same_table(pd.read_pickle(heads['one']['audio']), pd.read_pickle(heads[how]['audio']))
    one, two = pd.read_pickle(heads['one']['merged']), pd.read_pickle(heads[how]['merged'])
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


def test_procs_reports_a_failed_worker_in_one_line_and_its_exit_code(heads, tmp_path):
    r = subprocess.run([sys.executable, 'create_video_embeddings.py', f'--data_dir={heads["data"]}',
                        f'--face_weights={tmp_path / "missing.pt"}', f'--output={tmp_path / "v.pkl"}',
                        '--procs=2'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert re.fullmatch(r'error: rank \d(, rank \d)? of 2 failed \(exit code 2(, 2)?\); the others were stopped',
                        lines[-1]), lines[-3:]
    assert any('missing.pt' in line and line.startswith('error: ') for line in lines)
    assert 'Traceback' not in r.stderr


def test_procs_killed_outright_takes_its_workers_along_and_the_rerun_completes_the_table(heads, tmp_path):
    """SIGKILL to the command (what an out-of-memory kill or `kill -9` does) after a video is saved: its
    workers end too (torch.multiprocessing has the kernel send them SIGINT when their parent dies), instead
    of writing on beside the rerun; the rerun gives the one-process table."""
    out = tmp_path / 'killed.pkl'
    args = [sys.executable, 'create_video_embeddings.py', f'--data_dir={heads["data"]}', '--face_weights=none',
            '--device=cpu', f'--output={out}', '--procs=2']
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / 'killed.pkl.parts'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and any(n.endswith('.pkl') for n in os.listdir(parts)):
            break
        time.sleep(0.02)
    workers = [int(p) for p in subprocess.run(['pgrep', '-P', str(proc.pid)], capture_output=True,
                                               text=True).stdout.split()]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), 'the run finished before it could be killed'
    assert len(workers) == 2
    deadline = time.time() + 30
    while time.time() < deadline and any(os.path.exists(f'/proc/{w}') for w in workers):
        time.sleep(0.05)
    assert not any(os.path.exists(f'/proc/{w}') for w in workers), 'a worker outlived its command'
    done = sorted(n for n in os.listdir(parts) if n.endswith('.pkl'))
    assert 1 <= len(done) < 5
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sum(int(n) for n in re.findall(r'rank \d/2: (\d+) videos to embed', r.stdout)) == 5 - len(done)
    assert_same_table(pd.read_pickle(heads['one']['video']), pd.read_pickle(out))


FORK_WATCH = """
import os, sys
import torch
calls = []
count = torch._C._cuda_getDeviceCount
torch._C._cuda_getDeviceCount = lambda: calls.append(1) or count()  # what initialises CUDA (and poisons fork)
torch.cuda._device_count_nvml = lambda: 0  # NVML answering, as on a machine with its driver
sys.path.insert(0, os.getcwd())
from common.launch import run_processes
print('calls before the fork:', run_processes(lambda: len(calls), 2))
"""


def test_procs_does_not_initialise_cuda_before_forking():
    """On a GPU machine a worker forked after CUDA's runtime was asked anything cannot use CUDA; the
    elastic agent's LaunchConfig asks whether there are GPUs, so the launch must ask NVML instead."""
    r = subprocess.run([sys.executable, '-c', FORK_WATCH], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'calls before the fork: 0' in r.stdout, r.stdout


def test_procs_refuses_to_run_inside_torchrun(monkeypatch, capsys):
    from common.launch import run_processes
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(SystemExit) as exit_:
        run_processes(lambda: None, 2)
    assert exit_.value.code == 2 and 'use one or the other' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        run_processes(lambda: None, 0)
    assert exit_.value.code == 2 and capsys.readouterr().err == 'error: --procs=0: must be at least 1\n'
    assert run_processes(lambda: 'ran', 1) == 'ran'  # torchrun's own workers run their share as they are


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


def test_one_process_merges_and_a_merge_killed_under_a_fixed_run_id_is_reported(tmp_path, monkeypatch, capsys):
    """The markers elect one merger; a rerun under the same run id (a requeued SLURM job, a static
    rendezvous id) after the merger was killed finds the merge taken, and says what to do."""
    from common.stage import Journal, StageRun
    journal = Journal(tmp_path / 'out.pkl')
    assert journal.share_done('job7', 1, 2) == 'wait'
    assert journal.share_done('job7', 0, 2) == 'merge'
    assert journal.share_done('job7', 1, 2) == 'taken'  # ... killed while merging; rank 1 reruns
    assert journal.share_done('other', 0, 1) == 'merge'
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('TORCHELASTIC_RUN_ID', 'job7')
    assert StageRun(tmp_path / 'out.pkl').merging('out.pkl') is False
    assert 'run the same command as one process' in capsys.readouterr().out


def test_a_late_process_takes_the_same_share():
    from common.stage import share
    items = list(range(11))
    shares = [share(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and all(len(s) >= 3 for s in shares)


# ----------------------------------------------------------------------------- training
# 80 videos (table seed 7), split 61 training / 19 validation (split seed 0): four batches of 15 (8 rows
# on one process, 7 on the other) and a last one of a single video, for which the second process takes
# the step with a stand-in of weight zero (model.train_batches)
SMALL = dict(crop=6, project=8, hidden=8, fc=8, lr=1e-2, batch_size=15, eval_batch_size=7, patience=10, threads=1,
             device='cpu')  # compared with one CPU process; on a one-GPU machine NCCL refuses 2 processes
# Tolerance of one process against two: the same computation but for the order of floating-point sums
# (each process sums the gradient over its part of a batch, gloo adds the parts; validation windows are
# batched with other videos), so float32 rounding (~6e-8 relative) and what 15 Adam steps make of it.
# Measured on this machine after 3 epochs: 3e-8 on the validation logits and losses, 2e-7 on the weights.
# The usual DDP loss instead (each process's own batch mean, so 8 rows weigh as much as 7): 2e-2 on the
# logits, 8e-2 on the weights. 1e-5 is 50 times the noise and 2,000 times below that mistake.
TOL = 1e-5


@pytest.fixture(scope='module')
def table_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('ddp') / 'merged.pkl'
    synthetic_table(80, faces=10, min_faces=3, video_dim=16, audio_dim=4, seed=7).to_pickle(path)
    return path


def torchrun_training(path, out_dir, **settings):
    args = [f'--{k}={v}' for k, v in {**SMALL, **settings}.items()]
    return script('training.py', f'--dataset={path}', f'--out_dir={out_dir}', '--progress=false', *args,
                  processes=2)


def val_logits(path, checkpoint):
    net, ckpt = load_checkpoint(checkpoint)
    with open_table(str(path)) as table:
        val = np.flatnonzero(np.isin(table.filenames, ckpt['split']['val_filenames']))
        return predict_logits(net, table, val, torch.device('cpu'), ckpt['evaluation']['crop'],
                              ckpt['evaluation']['stride'], amp=False), ckpt


def test_two_processes_read_exactly_the_batches_of_one(table_path):
    with open_table(str(table_path)) as table:
        indices = np.arange(61)  # 4 batches of 15, and one of a single video
        one = list(train_batches(table, indices, 6, 15, np.random.default_rng(1)))
        shares = [list(train_batches(table, indices, 6, 15, np.random.default_rng(1), rank, 2)) for rank in (0, 1)]
    assert len(one) == len(shares[0]) == len(shares[1]) == 5  # every process takes every step
    for b, whole in enumerate(one):
        rows = [share[b] for share in shares]
        assert all(r.of == len(whole.owner) for r in rows) and whole.of == len(whole.owner)
        owners = np.concatenate([r.owner for r in rows if not r.stand_in])
        assert sorted(owners) == whole.owner.tolist()  # disjoint, and together the whole batch
        for r in rows:
            at = np.searchsorted(whole.owner, r.owner)
            for k, pos in enumerate(at):
                n = r.lengths[k]
                assert n == whole.lengths[pos] and r.labels[k] == whole.labels[pos]
                np.testing.assert_array_equal(r.faces[k, :n], whole.faces[pos, :n])  # the same window
                np.testing.assert_array_equal(r.audio[k], whole.audio[pos])
    assert [r.stand_in for r in (shares[0][-1], shares[1][-1])] == [False, True]


def test_two_training_processes_train_the_one_process_model(table_path, tmp_path):
    torch.set_num_threads(1)
    one = training.run(training.settings(dataset=str(table_path), out_dir=str(tmp_path / 'one'), max_epochs=3,
                                         dropout=0.0, progress=False, **SMALL), log=lambda *_: None)
    r = torchrun_training(table_path, tmp_path / 'two', max_epochs=3, dropout=0.0)
    assert '2 processes (gloo)' in r.stdout and r.stdout.count('epoch 3/3') == 1  # rank 0 alone logs
    # one writer: the files of one run, no other
    assert sorted(os.listdir(tmp_path / 'two')) == ['best.pt', 'config.json', 'curves.png', 'history.csv', 'history.json', 'last.pt']
    two = json.loads((tmp_path / 'two' / 'history.json').read_text())
    assert [h['epoch'] for h in two] == [h['epoch'] for h in one] == [1, 2, 3]
    assert [h['best'] for h in two] == [h['best'] for h in one]
    for key in ('train_loss', 'val_loss', 'val_log_loss', 'val_balanced_log_loss', 'val_roc_auc', 'val_accuracy'):
        np.testing.assert_allclose([h[key] for h in two], [h[key] for h in one], rtol=0, atol=TOL, err_msg=key)
    a, ckpt_a = val_logits(table_path, tmp_path / 'one' / 'best.pt')
    b, ckpt_b = val_logits(table_path, tmp_path / 'two' / 'best.pt')
    assert ckpt_a['split'] == ckpt_b['split'] and ckpt_a['epoch'] == ckpt_b['epoch']
    assert ckpt_b['split']['n_train'] % SMALL['batch_size'] == 1  # the stand-in step was taken
    assert ckpt_a['audio_only'] == ckpt_b['audio_only']
    np.testing.assert_allclose(b, a, rtol=0, atol=TOL)
    for k, v in ckpt_a['state_dict'].items():
        np.testing.assert_allclose(ckpt_b['state_dict'][k].numpy(), v.numpy(), rtol=0, atol=TOL, err_msg=k)


def test_a_resumed_two_process_run_is_the_run_it_continues(table_path, tmp_path):
    """With dropout: each process's random state is in last.pt, so the resumed run draws the same masks."""
    torchrun_training(table_path, tmp_path / 'straight', max_epochs=3, dropout=0.3)
    torchrun_training(table_path, tmp_path / 'resumed', max_epochs=2, dropout=0.3)
    r = torchrun_training(table_path, tmp_path / 'resumed', max_epochs=3, dropout=0.3)
    assert 'resuming from' in r.stdout and 'dropout draws other masks' not in r.stdout
    straight, resumed = (json.loads((tmp_path / d / 'history.json').read_text()) for d in ('straight', 'resumed'))
    keys = ('epoch', 'train_loss', 'val_loss', 'val_roc_auc')
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in straight]
    _, a = load_checkpoint(tmp_path / 'straight' / 'last.pt')
    _, b = load_checkpoint(tmp_path / 'resumed' / 'last.pt')
    assert len(a['rank_rngs']) == 2 and not torch.equal(a['rank_rngs'][0]['torch_rng'], a['rank_rngs'][1]['torch_rng'])
    for k, v in a['state_dict'].items():
        assert torch.equal(v, b['state_dict'][k]), k
    # one process goes on from the two processes' checkpoint, and says that its dropout masks differ
    lines = []
    history = training.run(training.settings(dataset=str(table_path), out_dir=str(tmp_path / 'resumed'), max_epochs=4,
                                             dropout=0.3, progress=False, **SMALL), log=lines.append)
    assert [h['epoch'] for h in history] == [1, 2, 3, 4] and history[:3] == resumed
    assert any('written by 2 process(es), this run has 1' in line for line in lines)
