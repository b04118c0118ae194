"""The adapter interface every model family implements.

An adapter hides how one diffusers flow-matching transformer family wants its inputs (latent
packing, timestep scale, text conditioning) behind three calls the rest of the system uses:

- ``encode_prompts(prompts) -> Conditioning``
- ``velocity(latents, t_B, cond) -> v`` with v = eps - x0 (the flow-matching velocity)
- ``decode(latents) -> images_B3HW`` in [0, 1]

Latents are always handled in the family's *unpacked* layout ``[B, C, H, W]``; adapters that
pack tokens (FLUX) do it inside ``velocity``. Time ``t`` is sigma in [0, 1] (1 = noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn


@dataclass
class Conditioning:
    """Per-prompt text conditioning: named tensors whose first dim is the batch."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def index(self, idx: torch.Tensor | list[int]) -> Conditioning:
        """Rows ``idx`` of every tensor (used to expand prompts to candidates)."""
        index_t = torch.as_tensor(idx, dtype=torch.long)
        return Conditioning({k: v[index_t.to(v.device)] for k, v in self.tensors.items()})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        out = {}
        for k, v in self.tensors.items():
            cast = dtype if (dtype is not None and v.is_floating_point()) else None
            out[k] = v.to(device=device, dtype=cast)
        return Conditioning(out)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        keys = items[0].tensors.keys()
        return Conditioning({k: torch.cat([c.tensors[k] for c in items]) for k in keys})


class ModelAdapter:
    """Base class of the family adapters (sd3, flux, sana).

    Subclasses set ``family``, ``lora_target_modules`` (the paper's LoRA targets) and implement
    ``_encode``, ``velocity`` and ``decode``. ``transformer`` is the module that gets LoRA,
    precision swaps and weight sync; text encoders and the VAE stay frozen.
    """

    family: ClassVar[str]
    lora_target_modules: ClassVar[tuple[str, ...]]
    optional_components: ClassVar[tuple[str, ...]] = ()

    def __init__(self, pipeline, *, height: int, width: int, max_sequence_length: int) -> None:
        self.pipeline = pipeline
        self.transformer: nn.Module = pipeline.transformer
        self.vae: nn.Module = pipeline.vae
        self.height = height
        self.width = width
        self.max_sequence_length = max_sequence_length
        self._check_resolution()

    # ---- geometry -------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipeline.vae_scale_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one candidate's latent, ``(C, H, W)``."""
        f = self.vae_scale_factor
        return (self.latent_channels, self.height // f, self.width // f)

    def _required_multiple(self) -> int:
        return self.vae_scale_factor * int(getattr(self.transformer.config, "patch_size", 1) or 1)

    def _check_resolution(self) -> None:
        m = self._required_multiple()
        for name, value in (("height", self.height), ("width", self.width)):
            if value <= 0 or value % m:
                nearest = max(m, round(value / m) * m)
                raise ValueError(
                    f"model.{name} = {value} is not a positive multiple of {m} for this {self.family} model "
                    f"(VAE factor x patch size); use {nearest}."
                )

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    # ---- the three calls --------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        if not prompts or any(not isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        return self._encode(list(prompts))

    def _encode(self, prompts: list[str]) -> Conditioning:
        raise NotImplementedError

    def velocity(
        self, latents_BCHW: torch.Tensor, t_B: torch.Tensor, cond: Conditioning, transformer: nn.Module | None = None
    ) -> torch.Tensor:
        """Flow velocity v = eps - x0 predicted by ``transformer`` (default: this adapter's)."""
        raise NotImplementedError

    @torch.no_grad()
    def decode(self, latents_BCHW: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], float32 ``[B, 3, H, W]``."""
        vae = self.vae
        cfg = vae.config
        scaled = latents_BCHW.to(vae.dtype) / cfg.scaling_factor
        shift = getattr(cfg, "shift_factor", None)
        if shift is not None:
            scaled = scaled + shift
        images = vae.decode(scaled, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)
