"""FLUX.1 adapter over diffusers' ``FluxTransformer2DModel`` (FluxPipeline layout).

FLUX works on 2x2-packed latent tokens; this adapter keeps the unpacked ``[B, C, H, W]`` layout at
its boundary and packs inside ``velocity`` so samplers and losses are family-agnostic.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.models.base import Conditioning, ModelAdapter


class FluxAdapter(ModelAdapter):
    family = "flux"
    lora_target_modules = ("to_k", "to_q", "to_v", "to_out.0")
    # FLUX.1-dev is guidance-distilled; RL rollouts feed guidance 1.0 (CFG-free), as Sol-RL does.
    guidance_scale = 1.0

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels) // 4

    def _required_multiple(self) -> int:
        return self.vae_scale_factor * 2

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, pooled, _text_ids = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return Conditioning({"prompt_embeds": embeds, "pooled_projections": pooled})

    def velocity(
        self, latents_BCHW: torch.Tensor, t_B: torch.Tensor, cond: Conditioning, transformer: nn.Module | None = None
    ) -> torch.Tensor:
        model = transformer if transformer is not None else self.transformer
        b, c, h, w = latents_BCHW.shape
        dtype = latents_BCHW.dtype
        packed = self.pipeline._pack_latents(latents_BCHW, b, c, h, w)
        img_ids = self.pipeline._prepare_latent_image_ids(b, h // 2, w // 2, latents_BCHW.device, dtype)
        embeds = cond.tensors["prompt_embeds"].to(dtype)
        txt_ids = torch.zeros(embeds.shape[1], 3, device=embeds.device, dtype=dtype)
        guidance = None
        if getattr(model.config, "guidance_embeds", False):
            guidance = torch.full((b,), self.guidance_scale, device=latents_BCHW.device, dtype=torch.float32)
        out = model(
            hidden_states=packed,
            timestep=t_B.to(dtype),  # FLUX embeds sigma in [0, 1] (the pipeline divides by 1000)
            guidance=guidance,
            pooled_projections=cond.tensors["pooled_projections"].to(dtype),
            encoder_hidden_states=embeds,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return self.pipeline._unpack_latents(out, h * self.vae_scale_factor, w * self.vae_scale_factor,
                                             self.vae_scale_factor)
