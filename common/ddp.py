"""Training on several processes: the process group torchrun's variables describe, and the few collective
steps training.py needs. Extraction needs none of this: its processes never talk (common/stage.py).

    torchrun --nproc_per_node=2 training.py --dataset=MERGED.pkl --out_dir=runs/lstm

Ranks.start() joins the group where torchrun started this process as one of several (WORLD_SIZE > 1):
gloo on the CPU, NCCL on CUDA (each process its local rank's GPU, common/device.py). A plain run, or
WORLD_SIZE=1, creates no process group, and every method below is then the identity: one process stays
exactly what it was.
"""
import gc
import os

import numpy as np
import torch
import torch.distributed as dist

from common.config import UserError


def launched():
    """True where a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def rank_prefix():
    """'rank r/w: ' before a process's own lines where torchrun started several, else ''."""
    return f'rank {os.environ["RANK"]}/{os.environ["WORLD_SIZE"]}: ' if launched() else ''


def check_gpus(device):
    """Raise UserError unless every local process has a GPU of its own: NCCL takes one GPU per process,
    and two on one GPU die in init_process_group ('Duplicate GPU detected'), a traceback per process.
    Called before joining the group; common/device.py gives local rank r GPU r."""
    local, gpus = int(os.environ.get('LOCAL_WORLD_SIZE', '1')), torch.cuda.device_count()
    if local > gpus:
        raise UserError(f'{local} processes on this machine but {gpus} GPU(s): give torchrun --nproc_per_node '
                        f'<= {gpus}, or --device=cpu to train on the CPU (gloo)')
    if device.index != int(os.environ.get('LOCAL_RANK', '0')):
        raise UserError(f'--device={device}: under torchrun each process trains on its own GPU; '
                        f'give --device=cuda (or auto)')


class Ranks:
    """This process's place among the training processes, and their collective operations."""

    def __init__(self, rank=0, world=1, device=None):
        self.rank, self.world = rank, world
        self.device = device or torch.device('cpu')  # where collective tensors live: the GPU for NCCL
        self.main = rank == 0         # the one process that writes files and logs

    @classmethod
    def start(cls, device):
        """Join torchrun's process group (gloo on the CPU, NCCL on CUDA), or a Ranks of one process."""
        if not launched():
            return cls()
        if device.type == 'cuda':
            check_gpus(device)
            torch.cuda.set_device(device)  # NCCL's collectives and all_gather_object use the current device
            dist.init_process_group('nccl', device_id=device)
        else:
            dist.init_process_group('gloo')
        return cls(dist.get_rank(), dist.get_world_size(), device if device.type == 'cuda' else torch.device('cpu'))

    @property
    def distributed(self):
        return self.world > 1

    def stop(self, finished=True):
        """Leave the group. After a finished run: once every process is done (rank 0 may still be writing
        its files) and the DDP wrapper, which holds the group, is gone; a process that leaves earlier, or
        tears the group down under a live wrapper, can abort in gloo's threads at exit (seen here, 1 run
        in 10). After an error, at once: the others may never reach a barrier."""
        if not (self.distributed and dist.is_initialized()):
            return
        if finished:
            gc.collect()  # the DDP wrapper sits in reference cycles
            dist.barrier()
        dist.destroy_process_group()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.stop(finished=kind is None)

    def all_sum(self, values):
        """The element-wise sum over the processes of `values` (an array of numbers), as float64."""
        values = np.asarray(values, np.float64)
        if not self.distributed:
            return values
        tensor = torch.from_numpy(values.copy()).to(self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def broadcast(self, obj):
        """Rank 0's `obj` (any picklable value), in every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] in every process."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

