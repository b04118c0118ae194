"""Arithmetic helpers that give the same bits in eager mode on any device, and almost always compiled.

The quantizers round scaled values to a coarse grid, so a last-bit difference in the scaling can flip a
rounding decision. Two backend differences matter (both seen on an H200, torch 2.11):
- eager CUDA computes ``tensor / python_float`` as a multiplication by the float32 reciprocal, while the
  CPU divides exactly; so divisions by constants are written as multiplications by float32 reciprocals
  (``f32_reciprocal``), which is what torchao's code computes on a GPU;
- Inductor's Triton code divides float32 approximately (2.9M of 9.2M quotients differed from eager), so
  tensor-by-tensor divisions go through float64 (``div_rn``), where every backend divides exactly.
Left over under torch.compile: Inductor drops the float32 rounding between two chained ``div_rn``
(a ``.float().double()`` round trip), so NVFP4's (1/g)/s_b can be one fp32 ulp off and flip a tie:
1 of 16384 elements of a 64x256 tensor, 0 of 9.2M of a 4096x2240 one; FP8 matched eager exactly.
Fidelity studies that need bit-exact NVFP4 activations should quantize in eager mode.
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
