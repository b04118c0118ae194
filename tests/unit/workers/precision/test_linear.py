"""Quantized Linear / 1x1-conv modules: emulated forward vs float64 references, refresh, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.precision import Fp8Conv1x1, Fp8Linear, Nvfp4Conv1x1, Nvfp4Linear

from .references import fp8_reference, nvfp4_reference

REFERENCES = {Fp8Linear: fp8_reference, Nvfp4Linear: nvfp4_reference}


def _linear(in_features: int, out_features: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features)


def _relative_error(approx: torch.Tensor, reference: torch.Tensor) -> float:
    return ((approx.double() - reference.double()).norm() / reference.double().norm()).item()


@pytest.mark.parametrize("cls", [Fp8Linear, Nvfp4Linear])
def test_emulated_forward_equals_the_float64_reference(cls: type) -> None:
    layer = _linear(64, 48, seed=0)
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(1)) * 2
    y = cls.from_linear(layer)(x)
    assert y.shape == (3, 7, 48) and y.dtype == torch.float32
    # F.linear(fake_quantize(x), fake_quantize(W)) + b, all in float64 from the independent references.
    fq = REFERENCES[cls]
    w_ref = fq(layer.weight.detach())
    if cls is Nvfp4Linear:  # one activation tensor scale per sample (leading index)
        x_ref = torch.stack([fq(sample) for sample in x])
    else:  # fp8 scales are per row anyway
        x_ref = fq(x)
    ref = x_ref @ w_ref.T + layer.bias.detach().double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize("cls", [Fp8Linear, Nvfp4Linear])
def test_a_sample_does_not_depend_on_its_batch(cls: type) -> None:
    layer = cls.from_linear(_linear(64, 48, seed=0))
    x = torch.randn(4, 7, 64, generator=torch.Generator().manual_seed(1))
    loud = x.clone()
    loud[3] *= 50  # a loud neighbour must not change the others' scales (same GEMM shape)
    assert torch.equal(layer(x)[:3], layer(loud)[:3])


@pytest.mark.parametrize("cls", [Fp8Linear, Nvfp4Linear])
def test_bf16_input_gives_bf16_output_of_the_same_numerics(cls: type) -> None:
    layer = _linear(32, 16, seed=2).to(torch.bfloat16)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    q = cls.from_linear(layer)
    y = q(x)
    assert y.dtype == torch.bfloat16 and q.weight.dtype == torch.bfloat16
    # Same computation in float32 (the master weight is bf16 either way), then one rounding to bf16.
    assert torch.equal(y, q(x.float()).to(torch.bfloat16))


@pytest.mark.parametrize("cls", [Fp8Linear, Nvfp4Linear])
def test_set_weight_refreshes_the_quantized_cache(cls: type) -> None:
    old, new = _linear(64, 32, seed=4), _linear(64, 32, seed=5)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(6))
    layer = cls.from_linear(old)
    y_old = layer(x)
    layer.set_weight(new.weight, new.bias)
    y_new = layer(x)
    assert not torch.allclose(y_new, y_old)
    assert torch.equal(layer.weight, new.weight) and torch.equal(layer.bias, new.bias)
    fresh = cls.from_linear(new)
    assert torch.equal(y_new, fresh(x))
    for (name, cached), (_, expected) in zip(layer.named_buffers(), fresh.named_buffers(), strict=True):
        assert torch.equal(cached, expected), name
    # Weights are copied, not shared: the source module is untouched by set_weight.
    assert not torch.equal(old.weight, layer.weight)


def test_relative_error_against_the_unquantized_linear() -> None:
    layer = _linear(256, 256, seed=7)
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        reference = layer(x)
        err_fp8 = _relative_error(Fp8Linear.from_linear(layer)(x), reference)
        err_nvfp4 = _relative_error(Nvfp4Linear.from_linear(layer)(x), reference)
    # Gaussian data: FP8 rowwise ~28 dB SQNR (~4% error), NVFP4 ~17-20 dB (~10-14%).
    assert err_fp8 < 5e-2
    assert err_fp8 < err_nvfp4 < 0.25


@pytest.mark.parametrize(("conv_cls", "linear_cls"), [(Fp8Conv1x1, Fp8Linear), (Nvfp4Conv1x1, Nvfp4Linear)])
def test_conv1x1_is_the_linear_over_channels(conv_cls: type, linear_cls: type) -> None:
    torch.manual_seed(9)
    conv = nn.Conv2d(32, 48, kernel_size=1)
    x = torch.randn(2, 32, 5, 3, generator=torch.Generator().manual_seed(10))
    q_conv = conv_cls.from_conv(conv)
    y = q_conv(x)
    assert y.shape == (2, 48, 5, 3) and q_conv.in_channels == 32 and q_conv.out_channels == 48
    as_linear = linear_cls(conv.weight.reshape(48, 32), conv.bias)
    expected = as_linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.equal(y, expected)
    with torch.no_grad():
        assert _relative_error(y, conv(x)) < 0.25
    assert tuple(q_conv.state_dict()["weight"].shape) == (48, 32, 1, 1)  # keys and shapes unchanged


def test_conv_constructor_rejects_non_1x1_convs() -> None:
    depthwise = nn.Conv2d(32, 32, kernel_size=3, padding=1, groups=32)
    with pytest.raises(ValueError, match="depthwise 3x3"):
        Nvfp4Conv1x1.from_conv(depthwise)
    with pytest.raises(ValueError, match="stride"):
        Fp8Conv1x1.from_conv(nn.Conv2d(16, 16, kernel_size=1, stride=2))
    with pytest.raises(ValueError, match="1, 1"):
        Fp8Linear(torch.randn(16, 16, 1, 1))


def test_state_dict_and_dtype_casts_keep_the_cache() -> None:
    layer = Nvfp4Linear.from_linear(_linear(32, 16, seed=11))
    assert list(layer.state_dict()) == ["weight", "bias"]
    qs, g = layer.quantized_weight()
    fp8_layer = Fp8Linear.from_linear(_linear(32, 16, seed=11))
    codes, scale = fp8_layer.quantized_weight()
    # model.to(dtype) casts floating buffers; the cache is stored as integer bits, so it survives.
    layer.to(torch.float16)
    fp8_layer.to(torch.bfloat16)
    assert torch.equal(layer.quantized_weight()[0], qs) and layer.quantized_weight()[1].item() == g.item()
    assert torch.equal(fp8_layer.quantized_weight()[1], scale)
    assert fp8_layer.quantized_weight()[0].dtype == torch.float8_e4m3fn


def test_input_and_shape_errors() -> None:
    with pytest.raises(ValueError, match="in_features=40"):
        Nvfp4Linear.from_linear(nn.Linear(40, 16))
    with pytest.raises(ValueError, match=r"\[\.\.\., 32\]"):
        Fp8Linear.from_linear(nn.Linear(32, 16))(torch.randn(2, 16))
    with pytest.raises(ValueError, match="shape"):
        Fp8Linear.from_linear(nn.Linear(32, 16)).set_weight(torch.randn(16, 16))
    with pytest.raises(TypeError, match="nn.Linear"):
        Fp8Linear.from_linear(nn.Conv2d(16, 16, 1))


@pytest.mark.parametrize(("cls", "needs"), [(Fp8Linear, "8.9"), (Nvfp4Linear, "10.0")])
def test_native_path_requested_on_cpu_raises(cls: type, needs: str) -> None:
    layer = cls.from_linear(nn.Linear(32, 16), use_native=True)
    with pytest.raises(RuntimeError, match=needs):
        layer(torch.randn(2, 32))
    auto = cls.from_linear(nn.Linear(32, 16))  # use_native=None: emulated on a CPU
    assert not auto.uses_native(torch.randn(2, 32))
