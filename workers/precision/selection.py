"""Choosing the layers of a diffusers transformer that run in low precision, swapping them, and the report.

Per-family policy is data (below): skip patterns for embedders, the final layer, AdaLN modulation and
the like, and a min-dim rule (skip a layer whose max(in, out) <= min_dim, where quantizing costs more in
overhead than its GEMM saves). Sources: Sol-RL's configs and torchao/ModelOpt exclusions, see
shared/research/lowprec_anchors.md section 3.4.

Skip patterns are dotted module paths matched against whole name components; a pattern covers the
module it names and everything below it. A plain pattern is anchored at the model root ("proj_out" is
the final layer only, not FLUX's single_transformer_blocks.N.proj_out); a "*." prefix matches at any
depth ("*.norm1" is every block's norm1).

Eligible modules: nn.Linear, and nn.Conv2d when it is a plain 1x1 conv (SANA's GLUMBConv
``conv_inverted`` / ``conv_point``), computed as a matmul over channels. Other convs (SANA's depthwise
3x3 ``conv_depth``, patch embeddings) stay in high precision and are reported as skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from workers.precision.linear import (
    GEMM_ALIGNMENT,
    Fp8Conv1x1,
    Fp8Linear,
    Nvfp4Conv1x1,
    Nvfp4Linear,
    QuantizedLinearBase,
    check_conv1x1,
)

PrecisionName = Literal["bf16", "fp8", "nvfp4"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)


@dataclass(frozen=True)
class FamilyPolicy:
    """Which layers of a model family stay in high precision."""

    skip: tuple[str, ...]
    min_dim: int


FAMILY_POLICIES: dict[str, FamilyPolicy] = {
    # Sol-RL's SD3.5-L list. Its "norm1" was a substring match that also caught norm1_context (the
    # context stream's AdaLN modulation), so both are listed; "proj_out" keeps the final layer in bf16.
    "sd3": FamilyPolicy(
        skip=(
            "pos_embed",
            "context_embedder",
            "time_text_embed",
            "norm_out",
            "*.norm1",
            "*.norm1_context",
            "*.ff_context",
            "proj_out",
        ),
        min_dim=2432,
    ),
    # Sol-RL's FLUX.1 list plus the final proj_out. single_transformer_blocks.N.proj_out (the fused
    # attention-out + MLP-down GEMM, 15360 -> 3072) is not matched and is quantized.
    "flux": FamilyPolicy(
        skip=("x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out"),
        min_dim=1000,
    ),
    # Sol-RL's SANA list mapped from the original Sana code to diffusers' SanaTransformer2DModel:
    # x_embedder -> patch_embed, t_embedder/t_block/cfg_embedder -> time_embed, y_embedder ->
    # caption_projection (+ caption_norm), final_layer -> norm_out/proj_out, the self-attention's fused
    # attn.qkv -> attn1.to_q/to_k/to_v.
    "sana": FamilyPolicy(
        skip=(
            "patch_embed",
            "time_embed",
            "caption_projection",
            "caption_norm",
            "norm_out",
            "proj_out",
            "*.attn1.to_q",
            "*.attn1.to_k",
            "*.attn1.to_v",
        ),
        min_dim=2240,
    ),
}

# precision -> (module replacing nn.Linear, module replacing a 1x1 nn.Conv2d); bf16 swaps nothing.
BACKENDS: dict[str, tuple[type[QuantizedLinearBase], type[QuantizedLinearBase]]] = {
    "fp8": (Fp8Linear, Fp8Conv1x1),
    "nvfp4": (Nvfp4Linear, Nvfp4Conv1x1),
}

Shape = tuple[int, ...]


@dataclass
class PrecisionReport:
    """What apply_precision swapped and what it left in high precision, with the reason."""

    precision: str
    family: str
    min_dim: int
    swapped: list[tuple[str, Shape]] = field(default_factory=list)
    skipped: list[tuple[str, Shape, str]] = field(default_factory=list)

    @property
    def swapped_weight_fraction(self) -> float:
        """Share of the linear/conv weight elements that run in low precision."""
        n_swapped = sum(math.prod(shape) for _, shape in self.swapped)
        n_total = n_swapped + sum(math.prod(shape) for _, shape, _ in self.skipped)
        return n_swapped / n_total if n_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "family": self.family,
            "min_dim": self.min_dim,
            "swapped_weight_fraction": self.swapped_weight_fraction,
            "swapped": [{"name": name, "shape": list(shape)} for name, shape in self.swapped],
            "skipped": [
                {"name": name, "shape": list(shape), "reason": why} for name, shape, why in self.skipped
            ],
        }

    def to_text(self) -> str:
        lines = [
            f"precision {self.precision}, family {self.family}, min_dim {self.min_dim}: "
            f"{len(self.swapped)} swapped, {len(self.skipped)} skipped "
            f"({100 * self.swapped_weight_fraction:.1f}% of linear/conv weights in low precision)"
        ]
        lines += [f"  swapped  {name}  {shape}" for name, shape in self.swapped]
        lines += [f"  skipped  {name}  {shape}  {why}" for name, shape, why in self.skipped]
        return "\n".join(lines)


def matches_pattern(name: str, pattern: str) -> bool:
    """Whether module ``name`` is (or is inside) the module named by ``pattern`` (see module docstring)."""
    parts = name.split(".")
    if pattern.startswith("*."):
        target = pattern[2:].split(".")
        return any(parts[i : i + len(target)] == target for i in range(len(parts) - len(target) + 1))
    target = pattern.split(".")
    return parts[: len(target)] == target


def skip_reason(name: str, module: nn.Module, patterns: Sequence[str], min_dim: int) -> str | None:
    """Why ``module`` (an nn.Linear or nn.Conv2d) stays in high precision, or None if it is eligible."""
    for pattern in patterns:
        if matches_pattern(name, pattern):
            return f"skip pattern {pattern!r}"
    if isinstance(module, nn.Conv2d):
        not_matmul = check_conv1x1(module)
        if not_matmul is not None:
            return not_matmul
        in_dim, out_dim = module.in_channels, module.out_channels
    else:
        in_dim, out_dim = module.in_features, module.out_features
    if max(in_dim, out_dim) <= min_dim:
        return f"max(in, out) = {max(in_dim, out_dim)} <= min_dim {min_dim}"
    for label, dim in (("in", in_dim), ("out", out_dim)):
        if dim % GEMM_ALIGNMENT != 0:
            return (
                f"{label} dim {dim} is not a multiple of {GEMM_ALIGNMENT} "
                "(NVFP4 blocks along K; FP8/FP4 GEMM alignment)"
            )
    return None


def _validate(precision: str, family: str, min_dim: int | None) -> int:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if family not in FAMILY_POLICIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILY_POLICIES)}")
    resolved = FAMILY_POLICIES[family].min_dim if min_dim is None else min_dim
    if resolved < 0:
        raise ValueError(f"min_dim must be >= 0 (or None for the family default), got {min_dim}")
    return resolved


def apply_precision(
    model: nn.Module,
    precision: PrecisionName,
    family: str,
    min_dim: int | None = None,
    extra_skip: Sequence[str] = (),
    use_native: bool | None = None,
) -> PrecisionReport:
    """Swap the eligible nn.Linear / 1x1 nn.Conv2d modules of ``model`` in place; return the report.

    min_dim: None = the family's default; tests and the tiny family pass 0. extra_skip: more skip
    patterns (same syntax). use_native: passed to every swapped module (None = native where it can
    run). bf16 swaps nothing; its report lists the layers the low-precision backends would swap as
    skipped with reason "bf16 reference".
    """
    resolved_min_dim = _validate(precision, family, min_dim)
    if any(True for _ in quantized_modules(model)):
        raise ValueError(
            "model already holds quantized modules; apply_precision to a fresh high-precision model"
        )
    patterns = (*FAMILY_POLICIES[family].skip, *extra_skip)
    report = PrecisionReport(precision=precision, family=family, min_dim=resolved_min_dim)
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for name, module in candidates:
        shape = tuple(module.weight.shape)
        reason = skip_reason(name, module, patterns, resolved_min_dim)
        if reason is None and precision == "bf16":
            reason = "bf16 reference"
        if reason is not None:
            report.skipped.append((name, shape, reason))
            continue
        linear_cls, conv_cls = BACKENDS[precision]
        if isinstance(module, nn.Conv2d):
            new = conv_cls.from_conv(module, use_native=use_native)
        else:
            new = linear_cls.from_linear(module, use_native=use_native)
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, new)
        report.swapped.append((name, shape))
    return report


def quantized_modules(model: nn.Module) -> Iterator[tuple[str, QuantizedLinearBase]]:
    """(name, module) for every quantized module of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinearBase):
            yield name, module


def refresh_quantized(model: nn.Module) -> int:
    """Re-derive every quantized module's cache from its master weight; returns how many were refreshed."""
    count = 0
    with torch.no_grad():
        for _, module in quantized_modules(model):
            module.refresh()
            count += 1
    return count


def load_weights(model_lowp: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> float:
    """Copy a plain transformer state dict (same architecture) into a swapped model; returns seconds.

    The quantized modules keep their master weights under the original names and shapes, so the state
    dict loads strictly into the masters; then every quantized cache is re-derived. On CUDA the time
    includes a synchronize, so it is the real refresh cost.
    """
    start = time.perf_counter()
    with torch.no_grad():
        model_lowp.load_state_dict(state_dict, strict=True)
    refresh_quantized(model_lowp)
    devices = {p.device for p in model_lowp.parameters() if p.is_cuda}
    for device in devices:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
