"""Native and emulated low-precision paths on a GPU against the CPU reference numerics."""

from __future__ import annotations

import pytest
import torch

from workers.precision import Fp8Linear, Nvfp4Linear, fp8, nvfp4

SHAPES = [(4096, 2048, 2048), (1024, 3072, 12288), (2048, 2240, 6720)]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_fp8_native_matches_emulation(m, k, n, gpu_record):
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need sm_89+")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=gen)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=gen) / k**0.5
    native = Fp8Linear(w.clone(), use_native=True)
    emulated = Fp8Linear(w.clone(), use_native=False)
    err = _rel_err(native(x), emulated(x))
    gpu_record({"check": "fp8 native vs emulated", "shape": [m, k, n], "rel_err": err})
    assert err < 1e-2


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_nvfp4_gpu_emulation_equals_cpu_reference(m, k, n, gpu_record):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(m, k, generator=gen, dtype=torch.float32).to(torch.bfloat16)
    w = (torch.randn(n, k, generator=gen) / k**0.5).to(torch.bfloat16)
    q_cpu = nvfp4.fake_quantize(x)
    q_gpu = nvfp4.fake_quantize(x.cuda()).cpu()
    same_q = bool(torch.equal(q_cpu, q_gpu))
    f_cpu = fp8.fake_quantize(x)
    same_fp8 = bool(torch.equal(f_cpu, fp8.fake_quantize(x.cuda()).cpu()))
    lin_cpu = Nvfp4Linear(w.clone(), use_native=False)(x[:256])
    lin_gpu = Nvfp4Linear(w.clone().cuda(), use_native=False)(x[:256].cuda()).cpu()
    gpu_record({"check": "nvfp4 fake_quantize GPU == CPU", "shape": [m, k], "bit_equal": same_q,
                "fp8_bit_equal": same_fp8, "linear_max_abs_diff": float((lin_cpu.float() - lin_gpu.float()).abs().max())})
    assert same_q and same_fp8
    # GEMM accumulation order differs between CPU and GPU; the quantized inputs are identical.
    assert _rel_err(lin_gpu, lin_cpu) < 1e-2
