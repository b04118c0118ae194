"""SD3 / SD3.5 adapter over diffusers' ``SD3Transformer2DModel`` (StableDiffusion3Pipeline layout)."""

from __future__ import annotations

import torch
from torch import nn

from workers.models.base import Conditioning, ModelAdapter


class SD3Adapter(ModelAdapter):
    family = "sd3"
    optional_components = ("text_encoder_3", "tokenizer_3")  # SD3 runs without its T5 encoder
    # The paper's SD3.5 LoRA targets (joint attention, both streams).
    lora_target_modules = (
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
        "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    )

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return Conditioning({"prompt_embeds": embeds, "pooled_projections": pooled})

    def velocity(
        self, latents_BCHW: torch.Tensor, t_B: torch.Tensor, cond: Conditioning, transformer: nn.Module | None = None
    ) -> torch.Tensor:
        model = transformer if transformer is not None else self.transformer
        dtype = latents_BCHW.dtype
        # SD3 embeds the timestep in [0, 1000] (the scheduler's sigma * num_train_timesteps).
        return model(
            hidden_states=latents_BCHW,
            timestep=(t_B * 1000.0).to(dtype),
            encoder_hidden_states=cond.tensors["prompt_embeds"].to(dtype),
            pooled_projections=cond.tensors["pooled_projections"].to(dtype),
            return_dict=False,
        )[0]
