"""The CPU's mixed precision: bfloat16 only where the CPU multiplies it in units of its own (common.device)."""
import platform

import pytest
import torch

from common.device import amp_dtype, cpu_has_bf16

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
