"""SANA adapter over diffusers' ``SanaTransformer2DModel`` (SanaPipeline layout, AutoencoderDC)."""

from __future__ import annotations

import torch
from torch import nn

from workers.models.base import Conditioning, ModelAdapter


class SanaAdapter(ModelAdapter):
    family = "sana"
    # Sol-RL's SANA targets (attn.qkv, attn.proj, cross_attn.{q_linear,kv_linear,proj}) in
    # diffusers naming: self-attention attn1 and cross-attention attn2.
    lora_target_modules = (
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
        "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    )

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, mask, _, _ = self.pipeline.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
            complex_human_instruction=None,
        )
        return Conditioning({"prompt_embeds": embeds, "prompt_attention_mask": mask})

    def velocity(
        self, latents_BCHW: torch.Tensor, t_B: torch.Tensor, cond: Conditioning, transformer: nn.Module | None = None
    ) -> torch.Tensor:
        model = transformer if transformer is not None else self.transformer
        dtype = latents_BCHW.dtype
        scale = float(getattr(model.config, "timestep_scale", 1.0))
        return model(
            latents_BCHW,
            encoder_hidden_states=cond.tensors["prompt_embeds"].to(dtype),
            encoder_attention_mask=cond.tensors["prompt_attention_mask"],
            timestep=(t_B * 1000.0 * scale).to(dtype),  # SANA's flow scheduler runs t in [0, 1000]
            return_dict=False,
        )[0]
