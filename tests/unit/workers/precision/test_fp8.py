"""FP8 (E4M3, per-row) numerics: hand-computed rows, then random tensors against the float64 reference."""

from __future__ import annotations

import pytest
import torch

from workers.precision import fp8

from .references import E4M3_GRID, fp8_reference


def test_the_grid_has_the_known_e4m3_landmarks() -> None:
    # Guards the reference itself: 127 finite non-negative values, max 448, min subnormal 2**-9,
    # min normal 2**-6, and the float8 cast agrees on every one of them.
    assert len(E4M3_GRID) == 127 and E4M3_GRID.max().item() == 448.0
    assert E4M3_GRID[1].item() == 2.0**-9 and E4M3_GRID[8].item() == 2.0**-6
    assert torch.equal(E4M3_GRID.float().to(torch.float8_e4m3fn).double(), E4M3_GRID)


def test_representable_values_stay_exact() -> None:
    # amax 448 gives scale 448 * fp32(1/448) = 1 exactly, so every E4M3 value passes through unchanged.
    row = torch.tensor([448.0, 1.0, 0.5, -3.25, 16.0, 18.0, 240.0, 2.0**-9, -(2.0**-6), 0.0, 9.0, 416.0])
    q, scale = fp8.quantize_rows(row)
    assert scale.item() == 1.0
    assert torch.equal(fp8.fake_quantize(row), row)


def test_midpoints_round_to_even_mantissa() -> None:
    # Scale 1 (amax 448). Spacing is 2 in [16, 32): 17 -> 16 (mantissa 0), 19 -> 20 (mantissa 2);
    # spacing 1 in [8, 16): 8.5 -> 8, 9.5 -> 10; subnormals step 2**-9: 3 * 2**-10 -> 2**-8 (m=2),
    # 5 * 2**-10 -> 2**-8; spacing 32 in [256, 448]: 432 -> 448 (m=6), 400 -> 384 (m=4).
    row = torch.tensor([448.0, 17.0, 19.0, 8.5, 9.5, 3 * 2.0**-10, 5 * 2.0**-10, 432.0, 400.0, -17.0])
    expected = torch.tensor([448.0, 16.0, 20.0, 8.0, 10.0, 2.0**-8, 2.0**-8, 448.0, 384.0, -16.0])
    assert torch.equal(fp8.fake_quantize(row), expected)


def test_row_amax_maps_to_448() -> None:
    # scale = 1000 * fp32(1/448) = 2.2321429; 1000 / scale rounds to 448 and 448 * scale = 1000 again;
    # 500 / scale = 224 exactly representable.
    row = torch.tensor([1000.0, 500.0, -1000.0])
    q, scale = fp8.quantize_rows(row)
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == (1,)
    assert q.float().tolist() == [448.0, 224.0, -448.0]
    torch.testing.assert_close(fp8.fake_quantize(row), row, rtol=1.2e-7, atol=0)


def test_row_amax_saturates_at_448() -> None:
    # Every row's amax element maps to the code 448 (never past it to NaN), for amaxes over decades;
    # 448 * scale gives the amax back to within an fp32 ulp or two.
    gen = torch.Generator().manual_seed(3)
    amax = torch.rand(4096, generator=gen) * 10.0 ** torch.randint(-6, 6, (4096,), generator=gen)
    rows = torch.stack([amax, -amax / 3, amax / 7], dim=-1)  # [4096, 3]
    q, scale = fp8.quantize_rows(rows)
    assert torch.equal(q[:, 0].float(), torch.full((4096,), 448.0))
    torch.testing.assert_close(fp8.fake_quantize(rows)[:, 0], amax, rtol=2.5e-7, atol=0)


def test_zero_row_gives_zeros_and_unit_scale() -> None:
    x = torch.stack([torch.zeros(16), torch.linspace(-1, 1, 16)])
    q, scale = fp8.quantize_rows(x)
    assert scale[0].item() == 1.0 and scale.shape == (2, 1)
    out = fp8.fake_quantize(x)
    assert torch.equal(out[0], torch.zeros(16)) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("shape", "scale", "dtype"),
    [
        ((8, 64), 1.0, torch.float32),
        ((3, 5, 48), 1e-3, torch.float32),
        ((16, 100), 30.0, torch.bfloat16),
        ((7,), 1.0, torch.float16),
    ],
)
def test_random_tensors_match_the_float64_reference_exactly(
    shape: tuple[int, ...], scale: float, dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(hash((shape, scale)) % 2**31)
    x = (torch.randn(shape, generator=gen) ** 3 * scale).to(dtype)  # heavy tails reach the subnormals
    out = fp8.fake_quantize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out.double(), fp8_reference(x))


def test_rejects_integer_and_0d_tensors() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        fp8.quantize_rows(torch.ones(2, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="0-d"):
        fp8.quantize_rows(torch.tensor(1.0))
