"""apply_precision on tiny SD3 / FLUX / SANA transformers: the report, the swap, the forward, reloads."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from workers.precision import (
    FAMILY_POLICIES,
    Fp8Conv1x1,
    Fp8Linear,
    Nvfp4Conv1x1,
    Nvfp4Linear,
    QuantizedLinearBase,
    apply_precision,
    load_weights,
    quantized_modules,
    refresh_quantized,
)
from workers.precision.selection import matches_pattern

from .conftest import build_tiny_transformer, run_tiny
from .references import sqnr_db

FAMILIES = ("sd3", "flux", "sana")
# Lower bounds on output SQNR vs the unquantized tiny model (measured 33-52 dB for fp8 and 17-38 dB
# for nvfp4 over seeds 0-2; the margin is for other torch versions).
MIN_SQNR_DB = {"fp8": 25.0, "nvfp4": 12.0}
# Layers whose treatment is part of each family's policy, by name in the tiny models.
EXPECTED_SWAPPED = {
    "sd3": [
        "transformer_blocks.0.attn.to_q",
        "transformer_blocks.0.ff.net.0.proj",
        "transformer_blocks.1.ff.net.2",
    ],
    "flux": [
        "transformer_blocks.0.attn.to_q",
        "single_transformer_blocks.0.proj_out",
        "single_transformer_blocks.0.proj_mlp",
    ],
    "sana": [
        "transformer_blocks.0.attn2.to_q",
        "transformer_blocks.0.ff.conv_inverted",
        "transformer_blocks.1.ff.conv_point",
    ],
}
EXPECTED_SKIPPED = {
    "sd3": [
        "pos_embed.proj",
        "context_embedder",
        "transformer_blocks.0.norm1.linear",
        "transformer_blocks.0.norm1_context.linear",
        "transformer_blocks.0.ff_context.net.2",
        "proj_out",
        "norm_out.linear",
        "time_text_embed.timestep_embedder.linear_1",
    ],
    "flux": [
        "x_embedder",
        "context_embedder",
        "norm_out.linear",
        "proj_out",
        "time_text_embed.text_embedder.linear_2",
    ],
    "sana": [
        "patch_embed.proj",
        "time_embed.linear",
        "caption_projection.linear_1",
        "proj_out",
        "transformer_blocks.0.attn1.to_q",
        "transformer_blocks.1.attn1.to_v",
        "transformer_blocks.0.ff.conv_depth",
    ],
}


@pytest.mark.parametrize("precision", ["fp8", "nvfp4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_swap_report_and_forward(family: str, precision: str) -> None:
    model = build_tiny_transformer(family, seed=0)
    reference = run_tiny(model, family)
    quantized = copy.deepcopy(model)
    report = apply_precision(quantized, precision, family, min_dim=0)
    print(f"\n{report.to_text()}")

    swapped = {name for name, _ in report.swapped}
    skipped = {name: reason for name, _, reason in report.skipped}
    assert set(EXPECTED_SWAPPED[family]) <= swapped
    assert set(EXPECTED_SKIPPED[family]) <= set(skipped)
    all_layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert swapped | set(skipped) == all_layers and not swapped & set(skipped)
    for name in swapped:
        assert not any(matches_pattern(name, p) for p in FAMILY_POLICIES[family].skip), name
        module = quantized.get_submodule(name)
        assert isinstance(module, QuantizedLinearBase) and module.precision == precision
    for name, reason in skipped.items():
        assert not isinstance(quantized.get_submodule(name), QuantizedLinearBase), name
        if any(matches_pattern(name, p) for p in FAMILY_POLICIES[family].skip):
            assert reason.startswith("skip pattern"), (name, reason)

    output = run_tiny(quantized, family)
    snr = sqnr_db(reference, output)
    print(f"{family} {precision}: output SQNR {snr:.1f} dB vs the unquantized model")
    assert output.shape == reference.shape and torch.isfinite(output).all()
    assert not torch.equal(output, reference)
    assert snr > MIN_SQNR_DB[precision]


@pytest.mark.parametrize(("precision", "conv_cls"), [("fp8", Fp8Conv1x1), ("nvfp4", Nvfp4Conv1x1)])
def test_sana_feed_forward_convs(precision: str, conv_cls: type) -> None:
    model = build_tiny_transformer("sana", seed=0)
    report = apply_precision(model, precision, "sana", min_dim=0)
    ff = model.transformer_blocks[0].ff
    assert isinstance(ff.conv_inverted, conv_cls) and isinstance(ff.conv_point, conv_cls)
    assert type(ff.conv_depth) is nn.Conv2d
    reason = dict((n, r) for n, _, r in report.skipped)["transformer_blocks.0.ff.conv_depth"]
    assert "depthwise 3x3" in reason
    linear_cls = Fp8Linear if precision == "fp8" else Nvfp4Linear
    assert isinstance(model.transformer_blocks[0].attn2.to_k, linear_cls)


def test_family_default_min_dim_skips_every_tiny_layer() -> None:
    model = build_tiny_transformer("flux", seed=0)
    report = apply_precision(model, "nvfp4", "flux")
    assert report.min_dim == 1000 and report.swapped == []
    assert "<= min_dim 1000" in dict((n, r) for n, _, r in report.skipped)["transformer_blocks.0.attn.to_q"]
    assert not any(True for _ in quantized_modules(model))


def test_alignment_rule_and_extra_skip() -> None:
    model = build_tiny_transformer("sd3", seed=0)
    report = apply_precision(model, "fp8", "sd3", min_dim=0, extra_skip=("transformer_blocks.1",))
    skipped = dict((n, r) for n, _, r in report.skipped)
    assert skipped["transformer_blocks.1.attn.to_q"] == "skip pattern 'transformer_blocks.1'"
    assert all(not name.startswith("transformer_blocks.1.") for name, _ in report.swapped)
    odd = nn.Sequential(nn.Linear(40, 32), nn.Linear(32, 24), nn.Linear(32, 32))
    report = apply_precision(odd, "nvfp4", "flux", min_dim=0)
    assert [name for name, _ in report.swapped] == ["2"]
    assert [r.split(" is")[0] for _, _, r in report.skipped] == ["in dim 40", "out dim 24"]


def test_bf16_swaps_nothing_but_reports() -> None:
    model = build_tiny_transformer("sana", seed=0)
    before = run_tiny(model, "sana")
    report = apply_precision(model, "bf16", "sana", min_dim=0)
    assert report.swapped == [] and report.swapped_weight_fraction == 0.0
    reasons = [r for _, _, r in report.skipped]
    assert "bf16 reference" in reasons and any(r.startswith("skip pattern") for r in reasons)
    assert torch.equal(run_tiny(model, "sana"), before)


def test_unknown_precision_family_and_double_swap_raise() -> None:
    model = build_tiny_transformer("sd3", seed=0)
    with pytest.raises(ValueError, match="bf16, fp8, nvfp4"):
        apply_precision(model, "int4", "sd3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sd3, flux, sana"):
        apply_precision(model, "fp8", "sdxl")
    with pytest.raises(ValueError, match="min_dim"):
        apply_precision(model, "fp8", "sd3", min_dim=-1)
    apply_precision(model, "fp8", "sd3", min_dim=0)
    with pytest.raises(ValueError, match="already holds quantized modules"):
        apply_precision(model, "nvfp4", "sd3", min_dim=0)


@pytest.mark.parametrize(("family", "precision"), [("flux", "nvfp4"), ("sana", "fp8"), ("sd3", "nvfp4")])
def test_load_weights_reproduces_a_fresh_swap_bit_for_bit(family: str, precision: str) -> None:
    rollout = build_tiny_transformer(family, seed=0)
    apply_precision(rollout, precision, family, min_dim=0)
    policy = build_tiny_transformer(family, seed=1)  # the "updated policy": same architecture, new weights

    seconds = load_weights(rollout, policy.state_dict())
    fresh = copy.deepcopy(policy)
    apply_precision(fresh, precision, family, min_dim=0)

    assert seconds >= 0.0
    assert torch.equal(run_tiny(rollout, family), run_tiny(fresh, family))
    for (name, module), (_, expected) in zip(
        quantized_modules(rollout), quantized_modules(fresh), strict=True
    ):
        for (buffer_name, cached), (_, want) in zip(
            module.named_buffers(), expected.named_buffers(), strict=True
        ):
            assert torch.equal(cached, want), f"{name}.{buffer_name}"


def test_refresh_is_what_makes_new_weights_count() -> None:
    rollout = build_tiny_transformer("sana", seed=0)
    apply_precision(rollout, "nvfp4", "sana", min_dim=0)
    stale_output = run_tiny(rollout, "sana")
    policy = build_tiny_transformer("sana", seed=1)
    fresh = copy.deepcopy(policy)
    apply_precision(fresh, "nvfp4", "sana", min_dim=0)

    # Copying into the masters alone leaves the quantized caches stale ...
    for (_, module), (_, source) in zip(quantized_modules(rollout), quantized_modules(fresh), strict=True):
        with torch.no_grad():
            module.weight.copy_(source.weight)
    first_cached = next(quantized_modules(rollout))[1].quantized_weight()[0]
    assert not torch.equal(first_cached, next(quantized_modules(fresh))[1].quantized_weight()[0])
    # ... until refresh_quantized re-derives them (the rest of the model is loaded normally here).
    rollout.load_state_dict(policy.state_dict())
    assert refresh_quantized(rollout) == len(list(quantized_modules(rollout)))
    assert torch.equal(run_tiny(rollout, "sana"), run_tiny(fresh, "sana"))
    assert not torch.equal(run_tiny(rollout, "sana"), stale_output)


def test_report_serialises() -> None:
    model = build_tiny_transformer("flux", seed=0)
    report = apply_precision(model, "fp8", "flux", min_dim=0)
    data = report.to_dict()
    assert data["precision"] == "fp8" and data["family"] == "flux" and data["min_dim"] == 0
    assert {"name": "x_embedder", "shape": [16, 16], "reason": "skip pattern 'x_embedder'"} in data["skipped"]
    assert {"name": "single_transformer_blocks.0.proj_out", "shape": [16, 80]} in data["swapped"]
    assert 0 < data["swapped_weight_fraction"] < 1
    text = report.to_text()
    assert text.startswith("precision fp8, family flux, min_dim 0: 20 swapped, 8 skipped")
    assert "  skipped  proj_out  (16, 16)  skip pattern 'proj_out'" in text.splitlines()


def test_pattern_matching_is_by_whole_components() -> None:
    assert matches_pattern("proj_out", "proj_out")
    assert not matches_pattern("single_transformer_blocks.0.proj_out", "proj_out")  # anchored at the root
    assert matches_pattern("time_text_embed.timestep_embedder.linear_1", "time_text_embed")  # and below
    assert matches_pattern("transformer_blocks.3.norm1.linear", "*.norm1")
    assert not matches_pattern("transformer_blocks.3.norm1_context.linear", "*.norm1")
    assert matches_pattern("transformer_blocks.3.attn1.to_q", "*.attn1.to_q")
    assert not matches_pattern("transformer_blocks.3.attn2.to_q", "*.attn1.to_q")
