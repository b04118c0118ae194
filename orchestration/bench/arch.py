"""Real architectures with random weights, for timing: their numerics are meaningless, their cost is real.

Configs are the published transformer configs, stored in configs/models/ with their source. Only the
transformer is built (text encoders and the VAE are outside every timed region, for every row), and
the conditioning is random tensors of the real shapes (e.g. SD3's 333 text tokens of width 4096).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from torch import nn

from workers.models.base import Conditioning, ModelAdapter
from workers.models.loading import ADAPTERS_BY_FAMILY

CONFIG_DIR = Path(__file__).parents[2] / "configs" / "models"


@dataclass(frozen=True)
class ArchSpec:
    name: str
    family: str
    vae_scale_factor: int  # pixels per latent cell of the family's real VAE
    text_tokens: int  # conditioning sequence length the real pipeline produces
    text_dim: int
    pooled_dim: int | None


ARCHS: dict[str, ArchSpec] = {
    "sd35_medium": ArchSpec("sd35_medium", "sd3", 8, 77 + 256, 4096, 2048),
    "sd35_large": ArchSpec("sd35_large", "sd3", 8, 77 + 256, 4096, 2048),
    "flux1_dev": ArchSpec("flux1_dev", "flux", 8, 512, 4096, 768),
    "sana_1600m": ArchSpec("sana_1600m", "sana", 32, 300, 2304, None),
}


class TransformerOnlyPipeline:
    """The attributes a family adapter reads from a pipeline, without text encoders or a VAE."""

    def __init__(self, transformer: nn.Module, spec: ArchSpec) -> None:
        self.transformer = transformer
        self.vae = None
        # FLUX's pipeline counts its VAE factor as 2**(blocks-1) = 8 and packs 2x2 on top.
        self.vae_scale_factor = spec.vae_scale_factor
        if spec.family == "flux":
            self._pack_latents = diffusers.FluxPipeline._pack_latents
            self._unpack_latents = diffusers.FluxPipeline._unpack_latents
            self._prepare_latent_image_ids = diffusers.FluxPipeline._prepare_latent_image_ids


def load_arch_config(name: str, **overrides) -> dict:
    if name not in ARCHS and not (CONFIG_DIR / f"{name}.json").is_file():
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHS))}")
    cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    return {**cfg, **overrides}


def build_transformer(name: str, *, device: str | torch.device, dtype: torch.dtype, seed: int = 0,
                      overrides: dict | None = None) -> nn.Module:
    """The architecture's transformer with random weights (materialized directly on ``device``)."""
    cfg = load_arch_config(name, **(overrides or {}))
    cls = getattr(diffusers, cfg["_class_name"])
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    return model.to(dtype=dtype).eval().requires_grad_(False)


def build_adapter(name: str, transformer: nn.Module, resolution: int) -> ModelAdapter:
    spec = ARCHS[name]
    adapter_cls = ADAPTERS_BY_FAMILY[spec.family]
    return adapter_cls(TransformerOnlyPipeline(transformer, spec), height=resolution, width=resolution,
                       max_sequence_length=spec.text_tokens)


def random_conditioning(name: str, batch: int, *, device, dtype, seed: int = 0) -> Conditioning:
    spec = ARCHS[name]
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, spec.text_tokens, spec.text_dim, generator=gen).to(device, dtype)
    tensors = {"prompt_embeds": embeds}
    if spec.pooled_dim is not None:
        tensors["pooled_projections"] = torch.randn(batch, spec.pooled_dim, generator=gen).to(device, dtype)
    if spec.family == "sana":
        tensors["prompt_attention_mask"] = torch.ones(batch, spec.text_tokens, dtype=torch.long, device=device)
    return Conditioning(tensors)
