"""The built-in tiny model family: real diffusers/transformers classes, small configs, random init.

The transformers and text encoders are random; the VAE gets a few seconds of fitting on procedural
shapes (see ``tiny_autoencoder``) so that decoded images depend on the generated latents.

Each builder assembles a real pipeline (the same classes as SD3.5, FLUX.1 and SANA, only smaller)
and saves it in diffusers layout, so tests and the quickstart load it through exactly the code
path real checkpoints use (``workers.models.loading.load_model``). Weights are random but fixed by
``seed``; the whole family is a few MB and builds in seconds on a CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from workers.cached_dir import ensure_built_dir
from workers.models.tiny_autoencoder import fit_tiny_autoencoder
from workers.models.tokenizer import build_char_tokenizer

log = logging.getLogger(__name__)

TINY_FAMILIES = ("sd3", "flux", "sana")
TINY_IMAGE_SIZE = 32  # pixels; every tiny VAE downsamples by 4
TOKENIZER_MAX_LENGTH = 48  # characters: every builtin caption fits
_VOCAB = len(build_char_tokenizer(TOKENIZER_MAX_LENGTH))
_BUILD_VERSION = 2  # bump when a builder changes so cached copies are rebuilt


def default_tiny_root() -> Path:
    return Path(os.environ.get("SOLRL_TINY_ROOT", Path.home() / ".cache" / "solrl" / "tiny"))


def _clip_text(hidden: int, projection: int | None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=_VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TOKENIZER_MAX_LENGTH, projection_dim=projection or hidden,
        bos_token_id=2, eos_token_id=3, pad_token_id=0, hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _vae_kl(latent_channels: int):
    from diffusers import AutoencoderKL

    # 3 blocks -> downsampling factor 4; scale 1 / shift 0 keep latents ~ N(0, 1) at decode.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=TINY_IMAGE_SIZE,
        scaling_factor=1.0, shift_factor=0.0,
    )


def build_tiny_sd3(seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=TINY_IMAGE_SIZE // 4, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32,
        pooled_projection_dim=32, pos_embed_max_size=16,
    )
    torch.manual_seed(seed + 1)
    text_encoder = _clip_text(16, projection=16)
    torch.manual_seed(seed + 2)
    text_encoder_2 = _clip_text(16, projection=16)
    torch.manual_seed(seed + 3)
    vae = _vae_kl(4)
    fit_tiny_autoencoder(vae, size=TINY_IMAGE_SIZE, seed=seed)
    tok = build_char_tokenizer(TOKENIZER_MAX_LENGTH)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tok, text_encoder_2=text_encoder_2, tokenizer_2=tok,
        text_encoder_3=None, tokenizer_3=None,
    )


def build_tiny_flux(seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=False,
        axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(seed + 1)
    text_encoder = _clip_text(16, projection=None)
    torch.manual_seed(seed + 2)
    t5 = T5EncoderModel(T5Config(vocab_size=_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 pad_token_id=0, eos_token_id=3, decoder_start_token_id=0))
    torch.manual_seed(seed + 3)
    vae = _vae_kl(4)
    fit_tiny_autoencoder(vae, size=TINY_IMAGE_SIZE, seed=seed)
    tok = build_char_tokenizer(TOKENIZER_MAX_LENGTH)
    # FLUX packs 2x2 latent patches; the pipeline derives its VAE factor as 2**(blocks-1) = 4.
    return FluxPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok,
    )


def build_tiny_sana(seed: int = 0):
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=32,
        mlp_ratio=2.5, sample_size=TINY_IMAGE_SIZE // 4, patch_size=1,
    )
    torch.manual_seed(seed + 1)
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
        eos_token_id=3,
    ))
    torch.manual_seed(seed + 2)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=8,
        encoder_block_types=("ResBlock",) * 3, decoder_block_types=("ResBlock",) * 3,
        encoder_block_out_channels=(8, 16, 16), decoder_block_out_channels=(8, 16, 16),
        encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), ()), decoder_qkv_multiscales=((), (), ()),
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=1.0,
    )
    fit_tiny_autoencoder(vae, size=TINY_IMAGE_SIZE, seed=seed)
    tok = build_char_tokenizer(TOKENIZER_MAX_LENGTH)
    return SanaPipeline(
        tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
    )


TINY_BUILDERS: dict[str, Callable[[int], object]] = {
    "sd3": build_tiny_sd3,
    "flux": build_tiny_flux,
    "sana": build_tiny_sana,
}


def ensure_tiny_model(family: str, root: Path | None = None, seed: int = 0) -> Path:
    """Build (once) and return the diffusers-layout directory of the tiny ``family`` model.

    Safe under concurrent callers: the pipeline is written to a temporary directory and renamed.
    """
    if family not in TINY_BUILDERS:
        raise ValueError(f"unknown tiny model family {family!r}; valid: {', '.join(TINY_FAMILIES)}")
    root = Path(root) if root is not None else default_tiny_root()
    target = root / f"{family}-seed{seed}-v{_BUILD_VERSION}"
    return ensure_built_dir(target, lambda tmp: TINY_BUILDERS[family](seed).save_pretrained(tmp),
                            {"family": family, "seed": seed, "version": _BUILD_VERSION})
