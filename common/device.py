"""Pick the device once, for every script."""
import contextlib
import os
import platform

import torch

from common.config import UserError


def pick_device(name='auto'):
    """'auto' is CUDA where present, else CPU; anything else is passed to torch.device. Under torchrun,
    'auto' and 'cuda' (without an index) are the local rank's GPU."""
    if name == 'auto':
        if not torch.cuda.is_available():
            return torch.device('cpu')
        name = 'cuda'
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device takes 'auto', 'cpu', 'cuda' or 'cuda:N', not {name!r}") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'device {name!r} asked for, but CUDA is not available here; use --device=cpu')
    if device.type == 'cuda' and device.index is None:
        return torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count())
    return device


def amp_dtype(device, enabled=True):
    """The mixed-precision type where it pays: float16 on CUDA, bfloat16 on CPUs with bf16 units
    (cpu_has_bf16); None elsewhere (and where not enabled)."""
    if enabled and device.type == 'cuda':
        return torch.float16
    if enabled and device.type == 'cpu' and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device, enabled=True):
    """Mixed precision (amp_dtype) for the block, where it pays."""
    dtype = amp_dtype(device, enabled)
    return torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)


def cpu_has_bf16():
    """Whether the CPU multiplies bfloat16 in units of its own: AVX512-BF16 or AMX on x86, BF16 on ARM. oneDNN
    also takes bfloat16 on an AVX-512 CPU without them (Skylake to Ice Lake: many cloud machines) by emulation,
    2 to 4 times slower than float32 there (BENCHMARKS.md, bfloat16 without its units)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False  # also where ONEDNN_MAX_CPU_ISA holds oneDNN below AVX-512 (.ci/avx2)
    if platform.machine().lower() in ('x86_64', 'amd64', 'i386', 'i686'):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True  # ARM: oneDNN takes bfloat16 only where the CPU has its instructions


def cpu_model():
    """The CPU's model name, family and model (Linux's first core; a VM's model name may be generic), for what
    a benchmark or a test run's floats came from; else what the platform module says."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            cpu = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines() if ':' in line)
    except OSError:
        return platform.processor() or platform.machine()
    cpu = {k.strip(): v.strip() for k, v in cpu.items()}
    name = cpu.get('model name') or platform.processor() or platform.machine()
    return f'{name} (family {cpu.get("cpu family", "?")} model {cpu.get("model", "?")})'


def share_cpu():
    """Under torchrun, give each local process its share of the cores: N processes of N threads each on
    N cores spend their time waiting for each other (PyTorch's thread pools spin)."""
    if int(os.environ.get('LOCAL_WORLD_SIZE', '1')) > 1:
        torch.set_num_threads(my_cores())


def my_cores():
    """This process's share of the cores it may run on: all of them, or under torchrun a local process's
    share."""
    return max(1, usable_cores() // int(os.environ.get('LOCAL_WORLD_SIZE', '1')))


def usable_cores():
    """The cores this process may run on (its CPU affinity: taskset, cgroups' cpusets), not the machine's."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n):
    """torch's intra-op CPU threads set to n for the block (0: left as they are), then restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)
