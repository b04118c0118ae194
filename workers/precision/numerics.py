"""Arithmetic helpers that give the same bits in eager mode on any device and under torch.compile.

The quantizers round scaled values to a coarse grid, so a last-bit difference in the scaling can flip a
rounding decision. Two backend differences matter (both seen on an H200, torch 2.11):
- eager CUDA computes ``tensor / python_float`` as a multiplication by the float32 reciprocal, while the
  CPU divides exactly; so divisions by constants are written as multiplications by float32 reciprocals
  (``f32_reciprocal``), which is what torchao's code computes on a GPU;
- Inductor's Triton code divides float32 approximately (2.9M of 9.2M quotients differed from eager), so
  tensor-by-tensor divisions go through float64 (``div_rn``), where every backend divides exactly.
"""

from __future__ import annotations

import torch


def f32_reciprocal(c: float) -> float:
    """1 / c rounded to float32, as a Python float (exact, so tensor * it is one fp32 rounding)."""
    return torch.tensor(1.0 / c, dtype=torch.float32).item()


def div_rn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b for float32 tensors, correctly rounded to float32 on every backend.

    The float64 quotient rounded to float32 equals the correctly rounded float32 quotient (53 >= 2*24+2
    bits, so the double rounding is harmless), and float64 division is exact-rounded everywhere,
    Triton included.
    """
    return (a.double() / b.double()).float()


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Cast float32 x (already within ±448) to float8_e4m3fn, rounding to nearest even, also when compiled.

    Inductor keeps fused intermediates in float32 and may drop a cast-and-back round trip
    (``torch._inductor.config.emulate_precision_casts`` is off by default); a bitcast through uint8
    cannot be dropped, so the rounding happens.
    """
    return x.to(torch.float8_e4m3fn).view(torch.uint8).view(torch.float8_e4m3fn)
