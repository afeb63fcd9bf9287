"""The CPU's mixed precision: bfloat16 only where the CPU multiplies it in units of its own; the CPU's name for what
a run's floats came from (common.device)."""
import io
import platform

import pytest
import torch

import common.device
from common.device import amp_dtype, cpu_has_bf16, cpu_model

CPU = torch.device('cpu')


@pytest.mark.parametrize('machine', ['x86_64', 'aarch64'])
def test_bfloat16_only_where_the_cpu_has_bfloat16_units(monkeypatch, machine):
    """oneDNN takes bfloat16 on any AVX-512 CPU (AVX512BW, VL and DQ: Skylake to Ice Lake, many cloud machines)
    and emulates it where AVX512-BF16 and AMX are absent: the stages' default AMP ran 2 to 4 times slower than
    float32 there (BENCHMARKS.md). Their flags are cpuinfo's, switched here as such a CPU has them."""
    monkeypatch.setattr(platform, 'machine', lambda: machine)
    flags = {'mkldnn': True, 'avx512_bf16': False, 'amx': False}
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: flags['mkldnn'])
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: flags['avx512_bf16'])
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: flags['amx'])
    arm = machine == 'aarch64'
    assert amp_dtype(CPU) == (torch.bfloat16 if arm else None)  # Skylake-SP, Cascade Lake, Ice Lake: float32
    for unit in ('avx512_bf16', 'amx'):  # Cooper Lake and AMD's Zen 4; Sapphire Rapids and after
        flags.update({'avx512_bf16': False, 'amx': False, unit: True})
        assert amp_dtype(CPU) is torch.bfloat16 and amp_dtype(CPU, enabled=False) is None
    flags['mkldnn'] = False  # an AVX2 CPU, or oneDNN held to AVX2 (.ci/avx2)
    assert not cpu_has_bf16() and amp_dtype(CPU) is None
    assert amp_dtype(torch.device('cuda')) is torch.float16  # the GPU's: unchanged


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu avx2 avx512f

processor\t: 1
cpu family\t: 6
model\t\t: 207
model name\t: another core's
"""


def test_the_cpu_is_named_by_the_first_cores_model_name_family_and_model(monkeypatch):
    """What the benchmarks and the suite's summary print; a file that cannot be read falls back to platform's."""
    monkeypatch.setattr(common.device, 'open', lambda path, **kw: io.StringIO(CPUINFO), raising=False)
    assert cpu_model() == 'AMD EPYC 9R14 96-Core Processor (family 25 model 17)'
    monkeypatch.setattr(common.device, 'open', lambda path, **kw: io.StringIO('processor\t: 0\n'), raising=False)
    monkeypatch.setattr(platform, 'processor', lambda: '')
    assert cpu_model() == f'{platform.machine()} (family ? model ?)'  # a generic VM's or an ARM's cpuinfo

    def unreadable(path, **kw):
        raise PermissionError(13, 'Permission denied', path)
    monkeypatch.setattr(common.device, 'open', unreadable, raising=False)
    assert cpu_model() == platform.machine()
