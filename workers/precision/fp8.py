"""FP8 (E4M3) numerics: symmetric per-row scaling along the last dim.

For each row r (all leading indices) of a tensor X [..., K]::

    scale_r = amax_r(|x|) * fp32(1/448)  (rows with amax 0 get scale 1)
    q_ri    = e4m3_rne(clamp(x_ri / scale_r, -448, 448))
    x^_ri   = q_ri * scale_r

Applied per token to activations and per output channel to weights [N, K], these are the rowwise
scales ``torch._scaled_mm`` takes ((M, 1) and (1, N) float32). The clamp makes saturation explicit
instead of relying on how a float8 cast treats values above 448 (NaN in some versions). The division by 448
is a multiplication by its float32 reciprocal (what eager CUDA computes for ``amax / 448``) and x / scale
is correctly rounded, so the bits are the same on CPU and CUDA, eager or compiled (checked on an H200,
``numerics.py``).

Shape legend: ``...`` leading dims (rows), K the last dim.
"""

from __future__ import annotations

import torch

from workers.precision.numerics import div_rn, f32_reciprocal

E4M3_MAX = 448.0
INV_E4M3_MAX = f32_reciprocal(E4M3_MAX)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize each row of x [..., K] to E4M3.

    Returns (q [..., K] float8_e4m3fn, scale [..., 1] float32) with x^ = q.float() * scale.
    """
    if not x.is_floating_point():
        raise TypeError(f"FP8 quantization needs a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("FP8 row quantization needs a tensor with at least one dim, got a 0-d tensor")
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    scale = amax * INV_E4M3_MAX
    # A zero row has nothing to scale; scale 1 keeps 0 / 0 out and dequantizes to exact zeros.
    scale = torch.where(amax > 0, scale, torch.ones_like(scale))
    q = div_rn(xf, scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)  # rounds to nearest even
    return q, scale


def quantize_rows_fast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rows`` for the native GEMM path: x * fp32(1 / scale) instead of a correctly rounded x / scale.

    Under torch.compile this is one fused kernel per activation (row amax, scale, multiply, clamp, cast),
    which can also fuse into the op that produced x (a norm or modulation). The reciprocal may differ from
    exact division in the last fp32 bit, flipping a rare E4M3 rounding tie: within the 1e-2 per-layer
    relative error the native path is held to, not bit-equal to ``quantize_rows``.
    """
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax * INV_E4M3_MAX, torch.ones_like(amax))
    q = (xf * scale.reciprocal()).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def fake_quantize(x: torch.Tensor) -> torch.Tensor:
    """Per-row E4M3 quantize-then-dequantize of x [..., K]; returns float32 [..., K]."""
    q, scale = quantize_rows(x)
    return q.float() * scale
