"""LoRA on the policy transformer through peft: a trainable ``default`` adapter and a frozen
``old`` adapter (DiffusionNFT's sampling policy, an EMA of ``default``), plus the export of the
``old`` adapter's weight deltas that rollout and regeneration copies merge into their weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

TRAIN_ADAPTER = "default"
OLD_ADAPTER = "old"


def add_policy_lora(
    transformer: nn.Module, target_modules: tuple[str, ...], rank: int, alpha: float, seed: int = 0
) -> None:
    """Inject the ``default`` (trainable) and ``old`` (frozen copy) LoRA adapters in place.

    Gaussian init (A ~ N(0, 1/r), B = 0) as the paper's code uses, so both adapters start as the
    identity update and the policy starts equal to the base model. A is drawn from a generator
    seeded by ``seed`` (not the global RNG), so every process builds the same adapters.
    """
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(target_modules))
    transformer.add_adapter(config, adapter_name=TRAIN_ADAPTER)
    transformer.add_adapter(config, adapter_name=OLD_ADAPTER)
    old, new = adapter_parameters(transformer, OLD_ADAPTER), adapter_parameters(transformer, TRAIN_ADAPTER)
    # Adapter weights train in float32 even over a bf16 base (peft casts inputs to their dtype).
    for p in (*old.values(), *new.values()):
        p.data = p.data.float()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in sorted(new):
            if ".lora_A." in name:
                new[name].copy_(torch.randn(new[name].shape, generator=gen) / rank)
        for name, p in old.items():
            p.copy_(new[name.replace(f".{OLD_ADAPTER}.", f".{TRAIN_ADAPTER}.")])
    _activate(transformer, TRAIN_ADAPTER)


def adapter_parameters(transformer: nn.Module, adapter: str) -> dict[str, nn.Parameter]:
    """Parameters of one adapter, by full name (``...lora_A.<adapter>.weight``)."""
    tag = f".{adapter}."
    return {n: p for n, p in transformer.named_parameters() if tag in n and ("lora_A" in n or "lora_B" in n)}


def _activate(transformer: nn.Module, adapter: str) -> None:
    transformer.set_adapter(adapter)
    # peft's set_adapter toggles requires_grad; only the train adapter may ever be trainable.
    for name, p in transformer.named_parameters():
        p.requires_grad_(f".{TRAIN_ADAPTER}." in name and ("lora_A" in name or "lora_B" in name))


@contextmanager
def active_adapter(transformer: nn.Module, adapter: str | None) -> Iterator[None]:
    """Run with ``adapter`` active (``None``: all adapters disabled, i.e. the base model)."""
    try:
        if adapter is None:
            transformer.disable_adapters()
        else:
            _activate(transformer, adapter)
        yield
    finally:
        if adapter is None:
            transformer.enable_adapters()
        _activate(transformer, TRAIN_ADAPTER)


def lora_layer_deltas(transformer: nn.Module, adapter: str) -> dict[str, dict[str, torch.Tensor | float]]:
    """Per LoRA-wrapped linear (named as in the plain transformer): ``{"A", "B", "scaling"}``.

    This is the compact form that travels to workers (r x (in + out) numbers per layer).
    """
    from peft.tuners.lora import LoraLayer

    out: dict[str, dict[str, torch.Tensor | float]] = {}
    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            out[name] = {
                "A": module.lora_A[adapter].weight.detach().float().cpu().clone(),
                "B": module.lora_B[adapter].weight.detach().float().cpu().clone(),
                "scaling": float(module.scaling[adapter]),
            }
    return out


def merged_weights(
    base_weights: dict[str, torch.Tensor], deltas: dict[str, dict[str, torch.Tensor | float]]
) -> dict[str, torch.Tensor]:
    """``W = W_base + scaling * B @ A`` for every layer in ``deltas`` (float32 math, base dtype out).

    ``base_weights`` maps a linear's module name to its base weight ``[out, in]``.
    """
    merged: dict[str, torch.Tensor] = {}
    for name, d in deltas.items():
        if name not in base_weights:
            raise KeyError(f"LoRA layer {name!r} has no base weight in this model copy")
        base = base_weights[name]
        delta = float(d["scaling"]) * (d["B"].to(base.device) @ d["A"].to(base.device))  # type: ignore[union-attr]
        merged[name] = (base.float() + delta).to(base.dtype)
    return merged
