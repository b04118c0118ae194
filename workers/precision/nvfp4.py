"""NVFP4 numerics: E2M1 elements, E4M3 scales per 16 elements along the last dim, one FP32 tensor scale.

Reference algorithm: torchao 0.18 ``NVFP4Tensor.to_nvfp4`` (a re-implementation of it matched torchao
bit-exactly on an H100, see shared/research/lowprec_anchors.md section 1.4). For a tensor X whose last
dim K is the GEMM reduction dim, with blocks b of 16 consecutive elements along K::

    g    = amax(|X|) * fp32(1 / (448 * 6))                        FP32 tensor ("decode") scale
    s_b  = e4m3_rne(clamp(amax_b(|x|) * fp32(1 / 6) / g, 2**-6, 448))   E4M3 block scale
    q_i  = e2m1_rne(clamp(x_i * ((1 / g) / s_b), -6, 6))          4-bit element
    x^_i = q_i * s_b * g

Choices that are part of the numerics (other libraries differ, section 1.3 of the brief):
- the block-scale floor is ``finfo(float8_e4m3fn).tiny`` = 2**-6 as in torchao (TE has none, ModelOpt
  2**-9): blocks with amax_b < amax / 28672 quantize coarser than they would elsewhere;
- the scaling op multiplies by ``(1/g)/s_b`` (torchao, MSLK kernel), not divides by ``s_b*g``;
- the divisions by 448 * 6 and by 6 are multiplications by float32 reciprocals, as PyTorch's CUDA
  kernels compute ``tensor / constant``, and the other divisions are correctly rounded, so eager CPU
  and CUDA give the same bits (torch.compile almost always too: ``numerics.py``);
- 1x16 blocks for weights too (TE defaults to 16x16 weight blocks);
- round-to-nearest-even everywhere (no stochastic rounding: this is inference numerics).

Everything is pure PyTorch (float32 arithmetic plus a float8 cast), so it runs on any device.

Shape legend: ``...`` leading dims, K the last (reduction) dim, NB = K // 16 blocks, 16 elements a block.
"""

from __future__ import annotations

import torch

from workers.precision.numerics import div_rn, f32_reciprocal

BLOCK_SIZE = 16
E2M1_MAX = 6.0
E4M3_MAX = 448.0
# torchao's lower clamp of the block scale; the smallest normal E4M3 value, 2**-6.
E4M3_TINY = torch.finfo(torch.float8_e4m3fn).tiny
# Divisions by constants are multiplications by float32 reciprocals (see numerics.py).
INV_TENSOR_SCALE_DIVISOR = f32_reciprocal(E4M3_MAX * E2M1_MAX)
INV_E2M1_MAX = f32_reciprocal(E2M1_MAX)
# The eight non-negative E2M1 values, in code order 0..7 (codes 8..15 are their negatives).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# (midpoint between neighbouring values, whether a tie rounds down, the lower value). A tie goes to
# the neighbour with the even code: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
_E2M1_MIDPOINTS = (
    (0.25, True, 0.0),
    (0.75, False, 0.5),
    (1.25, True, 1.0),
    (1.75, False, 1.5),
    (2.5, True, 2.0),
    (3.5, False, 3.0),
    (5.0, True, 4.0),
)


def _check_blockable(x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"NVFP4 quantization needs a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[-1] % BLOCK_SIZE != 0:
        raise ValueError(
            f"NVFP4 quantizes blocks of {BLOCK_SIZE} along the last dim, but the tensor has shape "
            f"{tuple(x.shape)}; its last dim must be a positive multiple of {BLOCK_SIZE}"
        )


def e2m1_round(y: torch.Tensor) -> torch.Tensor:
    """Round to the nearest E2M1 value, ties to even code; magnitudes above 6 saturate to 6.

    y: any shape, float32. Returns float32 values in {0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6}.
    """
    a = y.abs()
    q = torch.full_like(a, E2M1_VALUES[-1])
    # From the top down, each midpoint sets the values at or below it to its lower neighbour.
    for midpoint, tie_goes_down, lower in reversed(_E2M1_MIDPOINTS):
        q = torch.where(a <= midpoint if tie_goes_down else a < midpoint, lower, q)
    return torch.copysign(q, y)


def tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """FP32 tensor scale g = amax(|x|) * fp32(1 / (448 * 6)), 0-d; an all-zero tensor gets g = 1.

    The all-zero guard keeps 0 / 0 out of the block scales (every block then has s_b = 2**-6 and q = 0,
    so the result is exactly zero); for any non-zero tensor it changes nothing.
    """
    g = x.float().abs().amax() * INV_TENSOR_SCALE_DIVISOR
    return torch.where(g > 0, g, torch.ones_like(g))


def quantize_blocks(
    x: torch.Tensor, global_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize along the last dim; return (qs, g) with x^ = qs * g.

    x: [..., K], K % 16 == 0, any float dtype. global_scale: positive FP32 g, either 0-d (a static,
    calibrated scale) or shaped [..., 1] like x with its last dim 1 (one scale per row, e.g. per
    candidate: see ``per_sample_tensor_scale``), or None for the dynamic per-tensor scale of x
    (torchao's default for activations).
    Returns qs [..., K] bfloat16 holding q * s_b, and g 0-d float32. qs is exact in bf16: |q| has at
    most 2 significant bits and s_b (E4M3, >= 2**-6) at most 4, so the product needs <= 6 of bf16's 8,
    and its range 2**-7 .. 2688 fits. That exactness is what lets a bf16 GEMM with fp32 accumulation
    reproduce the W4A4 products exactly (see ``linear.Nvfp4Linear``).
    """
    _check_blockable(x)
    xf = x.float()
    if global_scale is None:
        g = tensor_scale(xf)
    else:
        g = torch.as_tensor(global_scale, dtype=torch.float32, device=xf.device)
        if g.numel() == 1:
            g = g.reshape(())
        elif g.ndim != xf.ndim or g.shape[-1] != 1:
            raise ValueError(
                f"global_scale must be 0-d or shaped like x with last dim 1; got {tuple(g.shape)} for x "
                f"{tuple(xf.shape)}"
            )
    g_out = g
    if g.ndim:
        g = g.unsqueeze(-1)  # [..., 1, 1]: broadcasts over the [..., NB, 16] blocks
    xb = xf.reshape(*xf.shape[:-1], xf.shape[-1] // BLOCK_SIZE, BLOCK_SIZE)  # [..., NB, 16]
    block_amax = xb.abs().amax(dim=-1, keepdim=True)  # [..., NB, 1]
    s_raw = div_rn(block_amax * INV_E2M1_MAX, g).clamp(min=E4M3_TINY, max=E4M3_MAX)
    s_b = s_raw.to(torch.float8_e4m3fn).float()  # the cast rounds to nearest even
    # Elements are clamped to ±6 before rounding: when g is given (static scale) a block can need
    # s_b > 448 and saturate.
    q = e2m1_round((xb * div_rn(div_rn(torch.ones_like(g), g), s_b)).clamp(-E2M1_MAX, E2M1_MAX))
    return (q * s_b).reshape(x.shape).to(torch.bfloat16), g_out


def per_sample_tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """Dynamic tensor scale per leading index: g[b] from amax(|x[b]|), shaped [B, 1, ..., 1] like x.

    Rollouts use it for activations so a candidate's numerics depend only on its own activations,
    never on which other candidates share its batch (the per-batch scale would make a candidate a
    function of its neighbours, breaking "a candidate is a pure function of its seed").
    """
    amax = x.float().abs().amax(dim=tuple(range(1, x.ndim)), keepdim=True)
    g = amax * INV_TENSOR_SCALE_DIVISOR
    return torch.where(g > 0, g, torch.ones_like(g))


def fake_quantize(x: torch.Tensor, global_scale: torch.Tensor | None = None) -> torch.Tensor:
    """NVFP4 quantize-then-dequantize along the last dim.

    x: [..., K], K % 16 == 0, any float dtype and device. Returns float32 [..., K] holding q * s_b * g.
    An all-zero tensor returns zeros.
    """
    qs, g = quantize_blocks(x, global_scale)
    return qs.float() * g


def e2m1_codes(q: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 codes (uint8 in 0..15, sign in bit 3) of tensor ``q`` whose values are E2M1 values.

    Only for inspection and packing; the emulated GEMM works on q * s_b directly.
    """
    grid = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=q.device)
    magnitude = q.float().abs()
    code = torch.searchsorted(grid, magnitude).to(torch.uint8)
    if not torch.equal(grid[code.long()], magnitude):
        raise ValueError("e2m1_codes got values that are not E2M1 values; round them with e2m1_round first")
    return code | (torch.signbit(q).to(torch.uint8) << 3)


def pack_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """Pack codes [..., K] (K even) two per byte, element 2j in the low nibble: [..., K // 2] uint8.

    The nibble order is the one torchao's ``pack_uint4`` and ModelOpt's NVFP4 checkpoints use.
    """
    if codes.shape[-1] % 2 != 0:
        raise ValueError(f"pack_e2m1 needs an even last dim, got shape {tuple(codes.shape)}")
    return codes[..., 0::2] | (codes[..., 1::2] << 4)
