"""The benchmark's base model: a small SD3-class text-to-image model, built from the real classes.

Legend: B images, C latent channels, H/W pixels (the VAE does not downsample: latents are H x W).

- **Transformer**: diffusers ``SD3Transformer2DModel`` (MMDiT, joint attention, RMS q/k norm as SD3.5),
  trained from scratch with the flow-matching loss.
- **Text encoders**: two transformers ``CLIPTextModelWithProjection`` over a word-level tokenizer of the
  world's vocabulary (one token per word, as CLIP's BPE gives common words; ``tokenizer: char`` takes the
  project's character tokenizer instead, which learns the text binding far more slowly), the two CLIP towers of SD3 (no T5: SD3 runs without it and fills its tokens with zeros).
  They are **trained jointly** with the transformer: random frozen encoders over characters would leave
  the transformer to learn words from random character features; training them costs little (they are a
  few percent of the parameters). The RL loop freezes them, as it does for every model.
- **VAE**: pixel space. ``StableDiffusion3Pipeline`` needs a VAE, so it gets a diffusers
  ``AutoencoderKL`` (one block: no downsampling, ``vae_scale_factor`` 1) whose weights make it the
  identity (:func:`build_identity_vae`, exact to ~1e-6 in float32, to bf16 rounding in bf16): latents are
  the image's 3 channels in [-1, 1], shifted and scaled to zero mean and unit std over the dataset
  (``shift_factor`` / ``scaling_factor``, as SD3's VAE). 64 x 64 with patch size 4 gives 256 image tokens.
  Nothing is fitted, and diffusers saves and loads it like any AutoencoderKL.

Everything is saved with ``StableDiffusion3Pipeline.save_pretrained``, so
``workers.models.loading.load_model`` loads it like any SD3 checkpoint and the RL loop trains it with
``model.path: DIR``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from workers.compositional.captions import captions_by_category
from workers.models.base import Conditioning, ModelAdapter
from workers.models.tokenizer import build_char_tokenizer, build_word_tokenizer
from workers.sampling import flow_sigmas, initial_noise, sample

# Ids of the character tokenizer's special tokens (workers/models/tokenizer.py).
_PAD_ID, _BOS_ID, _EOS_ID = 0, 2, 3


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of the base model (see the module docstring)."""

    image_size: int = 64
    patch_size: int = 4
    num_layers: int = 8
    num_heads: int = 4
    head_dim: int = 64
    text_hidden: int = 128
    text_layers: int = 3
    text_hidden_2: int = 64
    text_layers_2: int = 2
    tokenizer: str = "word"  # word | char
    tokenizer_length: int = 16


def world_captions() -> list[str]:
    return [c.text() for cs in captions_by_category().values() for c in cs]


def build_tokenizer(kind: str, model_max_length: int):
    """The base model's tokenizer: ``word`` (the world's vocabulary) or ``char``."""
    if kind == "word":
        return build_word_tokenizer((w for text in world_captions() for w in text.split()), model_max_length)
    if kind == "char":
        return build_char_tokenizer(model_max_length)
    raise ValueError(f"unknown tokenizer {kind!r}; valid: word, char")


def longest_caption_tokens(kind: str = "word") -> int:
    """Tokens of the longest caption of the world (words or characters, + BOS + EOS)."""
    return 2 + max(len(text.split()) if kind == "word" else len(text) for text in world_captions())


def _text_encoder(spec: ModelSpec, hidden: int, layers: int, vocab: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32), max_position_embeddings=spec.tokenizer_length,
        projection_dim=hidden, bos_token_id=_BOS_ID, eos_token_id=_EOS_ID, pad_token_id=_PAD_ID, hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(config)


def build_pipeline(spec: ModelSpec, seed: int):
    """A randomly initialised ``StableDiffusion3Pipeline`` of ``spec`` with the identity VAE (latent scaling still
    at 1 / 0: see :func:`set_latent_scaling`)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    if spec.image_size % spec.patch_size:
        raise ValueError(f"image_size {spec.image_size} is not a multiple of patch_size {spec.patch_size}")
    longest = longest_caption_tokens(spec.tokenizer)
    if longest > spec.tokenizer_length:
        raise ValueError(f"tokenizer_length {spec.tokenizer_length} < {longest} tokens of the longest caption "
                         f"({spec.tokenizer} tokenizer); raise it")
    tokenizer = build_tokenizer(spec.tokenizer, spec.tokenizer_length)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=spec.image_size, patch_size=spec.patch_size, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, num_layers=spec.num_layers, attention_head_dim=spec.head_dim,
        num_attention_heads=spec.num_heads, joint_attention_dim=spec.text_hidden + spec.text_hidden_2,
        caption_projection_dim=spec.num_heads * spec.head_dim,
        pooled_projection_dim=spec.text_hidden + spec.text_hidden_2,
        pos_embed_max_size=spec.image_size // spec.patch_size, qk_norm="rms_norm",
    )
    torch.manual_seed(seed + 1)
    text_encoder = _text_encoder(spec, spec.text_hidden, spec.text_layers, len(tokenizer))
    torch.manual_seed(seed + 2)
    text_encoder_2 = _text_encoder(spec, spec.text_hidden_2, spec.text_layers_2, len(tokenizer))
    vae = build_identity_vae(spec.image_size)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None,
    )


# ---- the pixel-space VAE ------------------------------------------------------------------------------
IDENTITY_VAE_OFFSET = 1000.0
LATENT_CHANNELS = 3  # pixel space: the latents are the RGB channels


def build_identity_vae(image_size: int):
    """An ``AutoencoderKL`` that encodes and decodes as the identity (latent = image in [-1, 1]).

    AutoencoderKL puts GroupNorm and SiLU on every path, so its weights route around them instead: the input
    conv turns each channel x into four, (x, -x, K, -K) with K = ``IDENTITY_VAE_OFFSET`` (the bias), and each
    group of the GroupNorm holds one such four: the group mean is exactly 0 and its std is sqrt((E[x^2] + K^2)
    / 2), which is K / sqrt(2) to a relative 5e-7 for |x| <= 1; scaling by that std (the norm's weight) gives
    x back. Then SiLU(x) - SiLU(-x) = x exactly, which the output conv takes. Every resnet's last conv is
    zero, so the residual blocks pass their input through. The posterior's log-variance is -30 (std 3e-7).
    """
    from diffusers import AutoencoderKL

    channels = 4 * LATENT_CHANNELS
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(channels,), layers_per_block=1, norm_num_groups=LATENT_CHANNELS,
        sample_size=image_size, mid_block_add_attention=False, scaling_factor=1.0, shift_factor=0.0,
    )
    k = IDENTITY_VAE_OFFSET
    with torch.no_grad():
        for param in vae.parameters():
            param.zero_()
        for coder in (vae.encoder, vae.decoder):
            centre = coder.conv_in.kernel_size[0] // 2
            for c in range(LATENT_CHANNELS):
                coder.conv_in.weight[4 * c, c, centre, centre] = 1.0
                coder.conv_in.weight[4 * c + 1, c, centre, centre] = -1.0
                coder.conv_in.bias[4 * c + 2] = k
                coder.conv_in.bias[4 * c + 3] = -k
                coder.conv_norm_out.weight[4 * c: 4 * c + 2] = k / math.sqrt(2.0)
                coder.conv_out.weight[c, 4 * c, centre, centre] = 1.0
                coder.conv_out.weight[c, 4 * c + 1, centre, centre] = -1.0
        vae.encoder.conv_out.bias[LATENT_CHANNELS:] = -30.0  # log-variance of the posterior
        for c in range(2 * LATENT_CHANNELS):
            vae.quant_conv.weight[c, c, 0, 0] = 1.0
        for c in range(LATENT_CHANNELS):
            vae.post_quant_conv.weight[c, c, 0, 0] = 1.0
    return vae.requires_grad_(False).eval()


def set_latent_scaling(vae: nn.Module, images_B3HW: torch.Tensor) -> None:
    """Set ``shift_factor`` / ``scaling_factor`` so the latents of ``images`` have zero mean and unit std."""
    with torch.no_grad():
        latents = vae.encode(images_B3HW.to(vae.device, vae.dtype) * 2 - 1).latent_dist.mode().float()
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()), shift_factor=float(latents.mean()))


@torch.no_grad()
def encode_images(vae: nn.Module, images_B3HW: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> scaled latents (the inverse of ``ModelAdapter.decode``), float32 [B, C, H, W]."""
    cfg = vae.config
    latents = vae.encode(images_B3HW.to(vae.dtype) * 2 - 1).latent_dist.mode()
    return ((latents - cfg.shift_factor) * cfg.scaling_factor).float()


# ---- training -----------------------------------------------------------------------------------------
def encode_prompts_for_training(pipeline, prompts: list[str], max_sequence_length: int) -> Conditioning:
    """``SD3Adapter``'s conditioning, with gradients into the text encoders (the adapter's runs under no_grad).

    Same call as ``workers.models.sd3.SD3Adapter._encode``; a test checks both give the same tensors.
    """
    embeds, _, pooled, _ = pipeline.encode_prompt(
        prompt=prompts, prompt_2=None, prompt_3=None, device=pipeline.transformer.device,
        do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
    )
    return Conditioning({"prompt_embeds": embeds, "pooled_projections": pooled})


def sample_timesteps(batch: int, *, logit_normal: bool, generator: torch.Generator, device: torch.device
                     ) -> torch.Tensor:
    """t in (0, 1) per sample: sigmoid of N(0, 1) (SD3's logit-normal) or uniform."""
    if logit_normal:
        return torch.sigmoid(torch.randn(batch, generator=generator, device=device))
    return torch.rand(batch, generator=generator, device=device)


def flow_matching_loss(adapter: ModelAdapter, latents_BCHW: torch.Tensor, cond: Conditioning, t_B: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
    """Rectified-flow loss: x_t = (1 - t) x0 + t eps, target v = eps - x0, mean squared error of the velocity."""
    noise = torch.randn(latents_BCHW.shape, generator=generator, device=latents_BCHW.device)
    t = t_B.view(-1, 1, 1, 1)
    x_t = (1 - t) * latents_BCHW + t * noise
    velocity = adapter.velocity(x_t, t_B, cond)
    return nn.functional.mse_loss(velocity.float(), noise - latents_BCHW)


class ParameterEma:
    """Exponential moving average of ``source``'s trainable modules, kept in a copy of the pipeline.

    The decay warms up as min(decay, (1 + k) / (10 + k)) at update k, so early averages are not dominated
    by the random initialisation.
    """

    MODULES = ("transformer", "text_encoder", "text_encoder_2")

    def __init__(self, pipeline, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.pipeline = copy.deepcopy(pipeline)
        self.pipeline.set_progress_bar_config(disable=True)
        self._pairs = [(e, p) for name in self.MODULES
                       for e, p in zip(getattr(self.pipeline, name).parameters(),
                                       getattr(pipeline, name).parameters(), strict=True)]
        for name in self.MODULES:
            getattr(self.pipeline, name).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # One fused kernel over all tensors: a per-tensor loop is ~700 launches a step on a GPU.
        torch._foreach_lerp_([e for e, _ in self._pairs], [p.detach() for _, p in self._pairs], 1 - decay)
        self.updates += 1


# ---- sampling -----------------------------------------------------------------------------------------
@torch.no_grad()
def generate_images(adapter: ModelAdapter, prompts: Sequence[str], seeds: Sequence[int], *, num_steps: int,
                    solver: str = "dpm2", shift: float = 1.0, batch_size: int = 64,
                    transformer: nn.Module | None = None) -> torch.Tensor:
    """Images in [0, 1] (float32 [B, 3, H, W], CPU) for ``prompts[i]`` from the noise of ``seeds[i]``.

    The project's sampler (``workers.sampling.sample`` over ``flow_sigmas``), deterministic (``euler`` or
    ``dpm2``), with ``transformer`` (default: the adapter's own) predicting the velocity.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts for {len(seeds)} seeds")
    sigmas = flow_sigmas(num_steps, shift).to(adapter.device)
    images = []
    for lo in range(0, len(prompts), batch_size):
        chunk_prompts = list(prompts[lo:lo + batch_size])
        cond = adapter.encode_prompts(chunk_prompts)
        x_init = initial_noise(list(seeds[lo:lo + batch_size]), adapter.latent_shape(), device=adapter.device)

        def velocity(x: torch.Tensor, t_B: torch.Tensor, cond: Conditioning = cond) -> torch.Tensor:
            return adapter.velocity(x.to(adapter.dtype), t_B, cond, transformer=transformer).float()

        result = sample(velocity, x_init, sigmas, solver=solver)  # type: ignore[arg-type]
        images.append(adapter.decode(result.x0).cpu())
    return torch.cat(images)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lr_multiplier(step: int, progress: float, *, warmup: int, floor: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``floor`` as
    ``progress`` (the share of the training budget spent, in steps or in time) goes from 0 to 1."""
    if step < warmup:
        return (step + 1) / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
