"""Tiny diffusers transformers of the three families, with fixed inputs, built on the CPU in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

BATCH, TEXT_TOKENS = 2, 5


def build_tiny_transformer(family: str, seed: int) -> nn.Module:
    """A randomly initialised tiny transformer of ``family`` (all dims multiples of 16, some layers not)."""
    from diffusers import FluxTransformer2DModel, SanaTransformer2DModel, SD3Transformer2DModel

    torch.manual_seed(seed)
    if family == "sd3":
        model = SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            caption_projection_dim=16,
            pooled_projection_dim=32,
            out_channels=4,
        )
    elif family == "flux":
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=(2, 2, 4),
        )
    elif family == "sana":
        # hidden 32 and mlp_ratio 2.5 make GLUMBConv's 1x1 convs 32 -> 160 and 80 -> 32 (multiples of 16).
        model = SanaTransformer2DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=2,
            num_cross_attention_heads=2,
            cross_attention_head_dim=16,
            cross_attention_dim=32,
            caption_channels=32,
            mlp_ratio=2.5,
            sample_size=8,
            patch_size=1,
        )
    else:
        raise ValueError(f"no tiny transformer for family {family!r}")
    return model.eval()


def tiny_inputs(family: str) -> dict[str, Any]:
    """Fixed forward kwargs for the tiny transformer of ``family``."""
    gen = torch.Generator().manual_seed(123)
    text = torch.randn(BATCH, TEXT_TOKENS, 32, generator=gen)
    timestep = torch.tensor([100.0, 700.0])
    if family == "sd3":
        return {
            "hidden_states": torch.randn(BATCH, 4, 16, 16, generator=gen),
            "encoder_hidden_states": text,
            "pooled_projections": torch.randn(BATCH, 32, generator=gen),
            "timestep": timestep,
        }
    if family == "flux":
        side = 4
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
        return {
            "hidden_states": torch.randn(BATCH, side * side, 16, generator=gen),
            "encoder_hidden_states": text,
            "pooled_projections": torch.randn(BATCH, 32, generator=gen),
            "timestep": timestep / 1000,
            "img_ids": img_ids,
            "txt_ids": torch.zeros(TEXT_TOKENS, 3),
        }
    return {
        "hidden_states": torch.randn(BATCH, 4, 8, 8, generator=gen),
        "encoder_hidden_states": text,
        "timestep": timestep,
    }


def run_tiny(model: nn.Module, family: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tiny_inputs(family), return_dict=False)[0]


@pytest.fixture
def tiny_transformer() -> Callable[[str, int], nn.Module]:
    return build_tiny_transformer
