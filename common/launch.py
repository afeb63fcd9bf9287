"""One command, several processes on this machine: `python create_video_embeddings.py --procs=4`.

PyTorch's elastic agent (the launcher inside torchrun: rendezvous, RANK / WORLD_SIZE / LOCAL_RANK for each
worker, a failed worker reported with its exit code) starts the workers by forking this process after its
heavy imports, so they start with torch and the networks' libraries already loaded (and share their pages)
instead of each importing them again after torchrun's own start, which imports torch too: on the 2-core
dev VM that is ~1.5 s less per launch (BENCHMARKS.md). Each worker then runs what a torchrun worker runs;
common/stage.py splits the videos by rank. Across machines, use torchrun or a SLURM array (README).

Forking is safe here because nothing before it starts a thread pool or CUDA: the parent only imports,
reads the settings and lists the dataset; each worker picks its device and threads itself. (A test
watches CUDA's device count, the call that would initialise CUDA, in the parent up to the fork.)
"""
import gc
import logging
import os
import sys
import uuid

from common.stage import shard


def run_processes(work, procs=1, preload=None):
    """Run work() once here (procs=1), or in `procs` forked workers; returns work()'s result (rank 0's).

    preload(): imports what the work will import (common.weights.import_libraries), before the fork so
    that no worker imports it again. It must not start threads or touch CUDA.
    A worker that fails ends this process with its exit code (its own error message is its last line).
    """
    problem = ('must be at least 1' if procs < 1 else 'under torchrun or a SLURM array, which split the work '
               'already: use one or the other' if procs > 1 and shard()[1] > 1 else None)
    if problem:
        print(f'error: --procs={procs}: {problem}', file=sys.stderr)
        raise SystemExit(2)
    if preload:
        preload()
    # What the imports built lives as long as the process: out of the collector's sight, the workers'
    # copies stay shared, later collections are shorter, and the exit is ~0.6 s faster (torch + torchvision).
    gc.freeze()
    if procs == 1:
        return work()
    import torch
    if torch.cuda.is_initialized():  # a forked worker cannot use CUDA that its parent initialised
        raise RuntimeError('CUDA was initialised before forking the workers')
    # LaunchConfig asks whether there are GPUs (to bind the workers to NUMA nodes). Asked through CUDA's
    # runtime, that initialises CUDA here, and then no forked worker could use it; NVML answers without.
    os.environ['PYTORCH_NVML_BASED_CUDA_CHECK'] = '1'
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=procs, run_id=uuid.uuid4().hex,
                          rdzv_backend='c10d', rdzv_endpoint='localhost:0', max_restarts=0,
                          start_method='fork')
    # the agent logs a failed worker with its own traceback; the worker's message and the line below say it
    for name in list(logging.root.manager.loggerDict):
        if name.startswith('torch.distributed.elastic'):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(config, work)()
    except ChildFailedError as err:
        codes = {rank: failure.exitcode for rank, failure in err.failures.items()}
        print('error: ' + ', '.join(f'rank {r}' for r in sorted(codes)) + f' of {procs} failed (exit code '
              + ', '.join(str(codes[r]) for r in sorted(codes)) + '); the others were stopped', file=sys.stderr)
        first = codes[min(codes)]
        raise SystemExit(first if isinstance(first, int) and first > 0 else 1) from None
    return results.get(0)

