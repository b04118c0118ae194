"""NVFP4 numerics: hand-computed blocks, then random tensors against the float64 reference."""

from __future__ import annotations

import pytest
import torch

from workers.precision import nvfp4

from .references import nvfp4_reference, nvfp4_reference_parts

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def test_every_e2m1_value_round_trips_with_the_dynamic_scale() -> None:
    # amax 6: g = 6 * fp32(1/2688) = fp32 0.0022321429569274187 (~1/448); amax_b * fp32(1/6) / g and
    # 1/g are 447.99997 in fp32, which the E4M3 cast rounds to s_b = 448 (neighbours 416 and 448).
    # So qs = q * 448 and the output is q * 448 * g = q * (1 + 4.5e-8), the input to within an fp32 ulp.
    x = torch.tensor(E2M1 + [-v for v in E2M1])
    qs, g = nvfp4.quantize_blocks(x)
    assert g.dtype == torch.float32 and g.item() == pytest.approx(1 / 448, rel=1e-7)
    assert qs.dtype == torch.bfloat16
    assert torch.equal(qs.float(), x * 448)
    out = nvfp4.fake_quantize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, (x * 448) * g)
    torch.testing.assert_close(out, x, rtol=1.2e-7, atol=0)


def test_ties_round_to_even_code() -> None:
    # Static g = 2**-8: s_b = e4m3(6 / 6 / 2**-8) = 256 exactly and (1/g) / s_b = 1, so the values reach
    # the E2M1 rounding unchanged and the output is q * 256 * 2**-8 = q exactly.
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    expected = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    x = torch.tensor([6.0] + ties + [-t for t in ties] + [0.0])
    out = nvfp4.fake_quantize(x, global_scale=torch.tensor(2.0**-8))
    assert torch.equal(out, torch.tensor([6.0] + expected + [-e for e in expected] + [0.0]))


def test_values_beside_the_ties_round_to_nearest() -> None:
    near = [0.26, 0.74, 1.24, 1.76, 2.49, 2.51, 3.49, 3.51, 4.99, 5.01, 0.24, 5.9, 1.5, 3.0, 0.1]
    expected = [0.5, 0.5, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 6.0, 0.0, 6.0, 1.5, 3.0, 0.0]
    x = torch.tensor([6.0] + near)
    out = nvfp4.fake_quantize(x, global_scale=torch.tensor(2.0**-8))
    assert torch.equal(out, torch.tensor([6.0] + expected))


def test_e2m1_round_saturates_and_keeps_sign() -> None:
    y = torch.tensor([7.0, 100.0, -9.0, -0.3, 0.0])
    assert torch.equal(nvfp4.e2m1_round(y), torch.tensor([6.0, 6.0, -6.0, -0.5, 0.0]))


def test_tiny_block_hits_the_e4m3_floor() -> None:
    # Block 0 holds the tensor amax 2688, so g = 2688 * fp32(1/2688) = 1 and block 0 has s_b = 448.
    # Block 1 has amax_b = 0.02: amax_b / 6 / g = 0.0033 is below the floor 2**-6 = 0.015625, so
    # s_b = 2**-6 and x * 64 is rounded: 0.01 -> 0.64 -> 0.5, 0.02 -> 1.28 -> 1.5, 0.005 -> 0.32 -> 0.5,
    # 0.003 -> 0.19 -> 0. (Without torchao's floor, e.g. Transformer Engine, 0.02 would map to ~6.)
    x = torch.zeros(32)
    x[0] = 2688.0
    x[16:21] = torch.tensor([0.01, 0.02, 0.005, 0.003, -0.01])
    out = nvfp4.fake_quantize(x)
    assert out[0].item() == 2688.0
    expected_block1 = torch.tensor([0.5, 1.5, 0.5, 0.0, -0.5]) * 2.0**-6
    assert torch.equal(out[16:21], expected_block1)
    assert torch.equal(out[21:], torch.zeros(11))


def test_block_scale_saturates_at_448_with_a_static_scale() -> None:
    # A static g = 2**-8 smaller than this tensor's amax / 2688 needs s_b = 12 / 6 / 2**-8 = 512,
    # clamped to 448; (1/g) / s_b = 256/448 and 12 * 0.571 = 6.86 clamps to 6: 6 * 448 * 2**-8 = 10.5.
    # 6 -> 3.43 -> 3 -> 5.25, 3 -> 1.71 -> 1.5 -> 2.625, 1 -> 0.57 -> 0.5 -> 0.875.
    x = torch.tensor([12.0, 6.0, 3.0, 1.0] + [0.0] * 12)
    qs, _ = nvfp4.quantize_blocks(x, global_scale=torch.tensor(2.0**-8))
    assert qs[0].item() == 6 * 448
    out = nvfp4.fake_quantize(x, global_scale=torch.tensor(2.0**-8))
    assert torch.equal(out[:4], torch.tensor([10.5, 5.25, 2.625, 0.875]))


def test_block_with_one_outlier() -> None:
    # amax 100: s_b = e4m3(100 / 6 / g = 448.00003) = 448 and (1/g) / s_b = 0.06, so the small
    # values go to 0 or the smallest codes: 5 -> 0.3 -> 0.5, 10 -> 0.6 -> 0.5, 13 -> 0.78 -> 1,
    # -20 -> -1.2 -> -1, 50 -> 3; each code dequantizes to q * 448 * g = q * 100 / 6.
    x = torch.tensor([100.0, 1.0, 5.0, 10.0, 13.0, -4.0, -20.0, 0.3, 50.0, 2.0] + [0.0] * 6)
    q = torch.tensor([6.0, 0.0, 0.5, 0.5, 1.0, 0.0, -1.0, 0.0, 3.0, 0.0] + [0.0] * 6)
    out = nvfp4.fake_quantize(x)
    torch.testing.assert_close(out, q * 100 / 6, rtol=2e-7, atol=0)
    assert (out == 0).sum().item() == 10  # 1, -4, 0.3, 2 and the six padding zeros


def test_all_zero_tensor_gives_zeros_without_nan() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.zeros(3, 32, dtype=dtype)
        out = nvfp4.fake_quantize(x)
        assert torch.equal(out, torch.zeros(3, 32))
        qs, g = nvfp4.quantize_blocks(x)
        assert torch.isfinite(g) and torch.equal(qs.float(), torch.zeros(3, 32))


def test_zero_block_inside_a_nonzero_tensor() -> None:
    x = torch.cat([torch.randn(16, generator=torch.Generator().manual_seed(0)), torch.zeros(16)])
    out = nvfp4.fake_quantize(x)
    assert torch.equal(out[16:], torch.zeros(16)) and torch.isfinite(out).all()


def test_negation_is_symmetric() -> None:
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(nvfp4.fake_quantize(-x), -nvfp4.fake_quantize(x))


@pytest.mark.parametrize(
    ("shape", "scale", "dtype"),
    [
        ((4, 64), 1.0, torch.float32),
        ((2, 3, 128), 1e-3, torch.float32),
        ((16, 256), 50.0, torch.bfloat16),
        ((256,), 1.0, torch.float16),
    ],
)
def test_random_tensors_match_the_float64_reference_exactly(
    shape: tuple[int, ...], scale: float, dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(hash((shape, scale)) % 2**31)
    # Heavy tails (cubed normals) spread the block amaxes over decades: normal, subnormal-floor and
    # saturating blocks all occur.
    x = (torch.randn(shape, generator=gen) ** 3 * scale).to(dtype)
    out = nvfp4.fake_quantize(x)
    assert torch.equal(out.double(), nvfp4_reference(x))
    qs, g = nvfp4.quantize_blocks(x)
    ref_qs, ref_g = nvfp4_reference_parts(x)
    assert torch.equal(qs.double(), ref_qs), "q * s_b must be exact in bf16"
    assert g.item() == ref_g


def test_random_tensor_with_a_static_scale_matches_the_reference() -> None:
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2)) * 4
    g = 1.0 / 2688  # as if calibrated on amax 1: most blocks saturate at s_b = 448
    out = nvfp4.fake_quantize(x, global_scale=torch.tensor(g))
    assert torch.equal(out.double(), nvfp4_reference(x, global_scale=g))


def test_last_dim_must_be_a_multiple_of_16() -> None:
    with pytest.raises(ValueError, match=r"\(4, 20\)"):
        nvfp4.fake_quantize(torch.ones(4, 20))
    with pytest.raises(TypeError, match="floating-point"):
        nvfp4.fake_quantize(torch.ones(4, 16, dtype=torch.int32))


def test_codes_and_packing() -> None:
    q = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
    codes = nvfp4.e2m1_codes(q)
    assert codes.tolist() == list(range(16))
    packed = nvfp4.pack_e2m1(codes)
    assert packed.tolist() == [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]  # element 2j in the low nibble
    with pytest.raises(ValueError, match="not E2M1 values"):
        nvfp4.e2m1_codes(torch.tensor([0.7]))
