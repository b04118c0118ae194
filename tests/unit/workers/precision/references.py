"""Float64 references for the NVFP4 and FP8 numerics, written independently of workers.precision.

Rounding to E2M1 / E4M3 is a nearest-value search over the enumerated grid of representable values,
ties to the even code (the code's lowest bit is the mantissa's lowest bit). The FP32 arithmetic of the
scale computations is emulated by rounding each float64 result to float32: for one +, -, *, / of
float32 operands that gives the correctly rounded float32 result (53 >= 2 * 24 + 2), so the references
reproduce the float32 implementation bit for bit without sharing its code. Divisions by the constants
448 * 6, 6 and 448 are multiplications by their float32 reciprocals (as on CUDA).
"""

from __future__ import annotations

import torch

F64 = torch.float64


def f32_reciprocal(c: float) -> float:
    return float(torch.tensor(1.0 / c, dtype=torch.float32))


def to_f32(t: torch.Tensor) -> torch.Tensor:
    """Round float64 values to float32 and back: one emulated fp32 operation."""
    return t.to(torch.float32).to(F64)


def e4m3_grid() -> torch.Tensor:
    """The 127 finite non-negative float8_e4m3fn values, in code order 0x00..0x7E (0x7F is NaN)."""
    values = []
    for code in range(0x7F):
        exponent, mantissa = code >> 3, code & 0x7
        if exponent == 0:  # subnormal: m/8 * 2**(1 - bias), bias 7
            values.append(mantissa / 8 * 2.0**-6)
        else:
            values.append((1 + mantissa / 8) * 2.0 ** (exponent - 7))
    return torch.tensor(values, dtype=F64)


E4M3_GRID = e4m3_grid()
E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=F64)


def round_to_grid(magnitude: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest grid value to each magnitude (>= 0, <= grid max), ties to the even code index."""
    distance = (magnitude.unsqueeze(-1) - grid).abs()  # [..., G]
    nearest = distance == distance.min(dim=-1, keepdim=True).values
    parity_bonus = 2 - (torch.arange(len(grid)) % 2)  # even code 2, odd code 1: a tie goes to even
    return grid[(nearest * parity_bonus).argmax(dim=-1)]


def signed_round(y: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.sign(y) * round_to_grid(y.abs(), grid)


def nvfp4_reference_parts(x: torch.Tensor, global_scale: float | None = None) -> tuple[torch.Tensor, float]:
    """(q * s_b float64 [..., K], g) of the NVFP4 reference algorithm (torchao 0.18 numerics)."""
    xf = x.to(torch.float32).to(F64)
    if global_scale is None:
        g = to_f32(xf.abs().max() * f32_reciprocal(2688.0)).item()
        g = g if g > 0 else 1.0
    else:
        g = to_f32(torch.tensor(global_scale, dtype=F64)).item()
    xb = xf.reshape(*xf.shape[:-1], -1, 16)
    block_amax = xb.abs().amax(dim=-1, keepdim=True)
    s_raw = to_f32(to_f32(block_amax * f32_reciprocal(6.0)) / g)
    s = round_to_grid(s_raw.clamp(2.0**-6, 448.0), E4M3_GRID)
    factor = to_f32(to_f32(torch.tensor(1.0 / g, dtype=F64)) / s)
    q = signed_round(to_f32(xb * factor).clamp(-6.0, 6.0), E2M1_GRID)
    return (q * s).reshape(x.shape), g


def nvfp4_reference(x: torch.Tensor, global_scale: float | None = None) -> torch.Tensor:
    """NVFP4 quantize-dequantize of x along its last dim: float64 holding float32 values q * s_b * g."""
    qs, g = nvfp4_reference_parts(x, global_scale)
    return to_f32(qs * g)


def fp8_reference(x: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric E4M3 quantize-dequantize along the last dim, float64 holding float32 values."""
    xf = x.to(torch.float32).to(F64)
    amax = xf.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, to_f32(amax * f32_reciprocal(448.0)), torch.ones_like(amax))
    q = signed_round(to_f32(xf / scale).clamp(-448.0, 448.0), E4M3_GRID)
    return to_f32(q * scale)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of approx against reference, in dB."""
    reference, approx = reference.double(), approx.double()
    return (10 * torch.log10(reference.pow(2).mean() / (reference - approx).pow(2).mean())).item()
