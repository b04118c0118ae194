"""Tiny random-init reward models, saved in exactly the local layouts the real reward models use.

Each builder writes a directory that the reward's builder loads through the same code path as a real
checkpoint (``local_files_only``, same transformers classes, same head files), only with tiny configs:
CLIP/BLIP width 32, 2 layers, 2 heads, 32 px images in 8 px patches, and the project's character-level
tokenizer (``workers.models.tokenizer``), since no tokenizer can be downloaded. HPSv2's directory is produced
by running the real converter on a tiny open_clip-layout checkpoint, and the aesthetic head goes through
its ``.pth`` converter, so those paths are exercised too.

Scores of these models are meaningless but deterministic; tests (and later the reward server's) use them to
check shapes, batching, prompt dependence and error handling. Weights are fixed by ``seed``; the global RNG
is left as it was (``torch.random.fork_rng``).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from workers.cached_dir import ensure_built_dir
from workers.models.tokenizer import build_char_tokenizer
from workers.rewards.aesthetic import convert_aesthetic_checkpoint
from workers.rewards.heads import LinearMLPHead
from workers.rewards.hpsv2 import convert_hpsv2_checkpoint, write_clip_preprocessor_config
from workers.rewards.imagereward import IMAGEREWARD_HEAD_FILE, IMAGEREWARD_TEXT_TOKENS

__all__ = [
    "TINY_IMAGE_SIZE",
    "TINY_REWARD_MODELS",
    "TINY_TEXT_TOKENS",
    "build_tiny_aesthetic",
    "build_tiny_clip",
    "build_tiny_hpsv2",
    "build_tiny_imagereward",
    "default_tiny_reward_root",
    "ensure_tiny_reward_model",
    "tiny_open_clip_state_dict",
]

log = logging.getLogger(__name__)

TINY_IMAGE_SIZE = 32  # pixels; 8 px patches -> 16 image tokens + class token
TINY_PATCH = 8
TINY_WIDTH = 32
TINY_LAYERS = 2
TINY_HEADS = 2
TINY_EMBED = 16  # joint embedding / projection width
TINY_TEXT_TOKENS = 40  # characters + bos/eos; longer prompts are truncated like real CLIP's 77 tokens
_BUILD_VERSION = 1  # bump when a builder changes so cached copies are rebuilt


def default_tiny_reward_root() -> Path:
    """``$SOLRL_TINY_ROOT/rewards`` (the tiny diffusion models' cache root), else ~/.cache/solrl/tiny/rewards."""
    return Path(os.environ.get("SOLRL_TINY_ROOT", Path.home() / ".cache" / "solrl" / "tiny")) / "rewards"


def _write_preprocessor_config(out: Path, size: int) -> None:
    """The CLIP preprocessor config all five rewards read (OpenAI CLIP mean/std)."""
    write_clip_preprocessor_config(out, size)


def build_tiny_clip(out: Path, seed: int = 0) -> Path:
    """A tiny transformers CLIPModel directory (``CLIP_LAYOUT``): clipscore / pickscore use it as is."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = build_char_tokenizer(TINY_TEXT_TOKENS)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": TINY_WIDTH, "intermediate_size": 2 * TINY_WIDTH,
            "num_hidden_layers": TINY_LAYERS, "num_attention_heads": TINY_HEADS,
            "max_position_embeddings": TINY_TEXT_TOKENS, "hidden_act": "gelu",
            # The char tokenizer's ids; eos must not be 2 (CLIP's legacy argmax pooling), see tokenizer.py.
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": TINY_WIDTH, "intermediate_size": 2 * TINY_WIDTH, "num_hidden_layers": TINY_LAYERS,
            "num_attention_heads": TINY_HEADS, "image_size": TINY_IMAGE_SIZE, "patch_size": TINY_PATCH,
            "hidden_act": "gelu",
        },
        projection_dim=TINY_EMBED,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    _write_preprocessor_config(out, TINY_IMAGE_SIZE)
    return out


def tiny_open_clip_state_dict(seed: int = 0, vocab_size: int | None = None) -> dict[str, Tensor]:
    """A random open_clip ``CLIP`` (ViT) state dict with tiny shapes, keyed as HPS_v2.1_compressed.pt is.

    Widths 32, 2 layers per tower, 32 px images in 8 px patches, a ``TINY_TEXT_TOKENS`` context, joint width
    16. Scales resemble a trained model's (LayerNorm gains near 1, linear weights ~ 1/sqrt(fan_in)) so the
    activations stay O(1). ``attn_mask`` is included because older open_clip checkpoints saved it.
    """
    vocab = vocab_size if vocab_size is not None else len(build_char_tokenizer(TINY_TEXT_TOKENS))
    gen = torch.Generator().manual_seed(seed)
    width, mlp = TINY_WIDTH, 4 * TINY_WIDTH

    def randn(*shape: int, std: float) -> Tensor:
        return torch.randn(*shape, generator=gen) * std

    def blocks(prefix: str) -> dict[str, Tensor]:
        state: dict[str, Tensor] = {}
        for i in range(TINY_LAYERS):
            p = f"{prefix}transformer.resblocks.{i}."
            state.update({
                p + "ln_1.weight": 1 + randn(width, std=0.1), p + "ln_1.bias": randn(width, std=0.1),
                p + "attn.in_proj_weight": randn(3 * width, width, std=width**-0.5),
                p + "attn.in_proj_bias": randn(3 * width, std=0.02),
                p + "attn.out_proj.weight": randn(width, width, std=width**-0.5),
                p + "attn.out_proj.bias": randn(width, std=0.02),
                p + "ln_2.weight": 1 + randn(width, std=0.1), p + "ln_2.bias": randn(width, std=0.1),
                p + "mlp.c_fc.weight": randn(mlp, width, std=width**-0.5), p + "mlp.c_fc.bias": randn(mlp, std=0.02),
                p + "mlp.c_proj.weight": randn(width, mlp, std=mlp**-0.5), p + "mlp.c_proj.bias": randn(width, std=0.02),
            })
        return state

    grid = TINY_IMAGE_SIZE // TINY_PATCH
    state = {
        "visual.class_embedding": randn(width, std=width**-0.5),
        "visual.positional_embedding": randn(grid * grid + 1, width, std=width**-0.5),
        "visual.conv1.weight": randn(width, 3, TINY_PATCH, TINY_PATCH, std=(3 * TINY_PATCH**2) ** -0.5),
        "visual.ln_pre.weight": 1 + randn(width, std=0.1), "visual.ln_pre.bias": randn(width, std=0.1),
        **blocks("visual."),
        "visual.ln_post.weight": 1 + randn(width, std=0.1), "visual.ln_post.bias": randn(width, std=0.1),
        "visual.proj": randn(width, TINY_EMBED, std=width**-0.5),
        "token_embedding.weight": randn(vocab, width, std=0.5),
        "positional_embedding": randn(TINY_TEXT_TOKENS, width, std=0.1),
        **blocks(""),
        "ln_final.weight": 1 + randn(width, std=0.1), "ln_final.bias": randn(width, std=0.1),
        "text_projection": randn(width, TINY_EMBED, std=width**-0.5),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
        "attn_mask": torch.full((TINY_TEXT_TOKENS, TINY_TEXT_TOKENS), float("-inf")).triu_(1),
    }
    return state


def build_tiny_hpsv2(out: Path, seed: int = 0) -> Path:
    """A tiny ``HPSV2_LAYOUT`` directory, made by converting a tiny open_clip checkpoint with the real converter."""
    with tempfile.TemporaryDirectory(prefix="tiny-hps-src-") as tmp:
        src = Path(tmp)
        torch.save({"state_dict": tiny_open_clip_state_dict(seed)}, str(src / "HPS_tiny.pt"))
        build_char_tokenizer(TINY_TEXT_TOKENS).save_pretrained(str(src / "tokenizer"))
        return convert_hpsv2_checkpoint(
            src / "HPS_tiny.pt", src / "tokenizer", out, vision_heads=TINY_HEADS, text_heads=TINY_HEADS
        )


def build_tiny_aesthetic(out: Path, seed: int = 0) -> Path:
    """A tiny ``AESTHETIC_LAYOUT`` directory: tiny CLIP + a random head written through the ``.pth`` converter."""
    build_tiny_clip(out, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        head = LinearMLPHead(TINY_EMBED)
    with tempfile.TemporaryDirectory(prefix="tiny-aesthetic-") as tmp:
        pth = Path(tmp) / "sac+logos+ava1-l14-linearMSE.pth"
        torch.save(head.state_dict(), str(pth))
        convert_aesthetic_checkpoint(pth, out)  # writes out / AESTHETIC_HEAD_FILE
    return out


def build_tiny_imagereward(out: Path, seed: int = 0) -> Path:
    """A tiny ``IMAGEREWARD_LAYOUT`` directory: BlipForImageTextRetrieval + char tokenizer + random head."""
    from transformers import BlipConfig, BlipForImageTextRetrieval

    tokenizer = build_char_tokenizer(IMAGEREWARD_TEXT_TOKENS)
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": TINY_WIDTH, "intermediate_size": 2 * TINY_WIDTH,
            "num_hidden_layers": TINY_LAYERS, "num_attention_heads": TINY_HEADS,
            "max_position_embeddings": IMAGEREWARD_TEXT_TOKENS, "encoder_hidden_size": TINY_WIDTH,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.eos_token_id,
            "is_decoder": True,  # builds the cross-attention layers; forward runs them bidirectionally
        },
        vision_config={
            "hidden_size": TINY_WIDTH, "intermediate_size": 2 * TINY_WIDTH, "num_hidden_layers": TINY_LAYERS,
            "num_attention_heads": TINY_HEADS, "image_size": TINY_IMAGE_SIZE, "patch_size": TINY_PATCH,
            "layer_norm_eps": 1e-6, "initializer_range": 0.02,
        },
        image_text_hidden_size=TINY_EMBED,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForImageTextRetrieval(config).eval()
        head = LinearMLPHead(TINY_WIDTH)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    _write_preprocessor_config(out, TINY_IMAGE_SIZE)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / IMAGEREWARD_HEAD_FILE))
    return out


_BUILDERS: dict[str, Callable[[Path, int], Path]] = {
    "aesthetic": build_tiny_aesthetic,
    "clipscore": build_tiny_clip,
    "hpsv2": build_tiny_hpsv2,
    "imagereward": build_tiny_imagereward,
    "pickscore": build_tiny_clip,
}
TINY_REWARD_MODELS = tuple(sorted(_BUILDERS))


def ensure_tiny_reward_model(name: str, root: Path | None = None, seed: int = 0) -> Path:
    """Build (once) and return the local directory of the tiny model for reward ``name``.

    Cached under ``root`` (default :func:`default_tiny_reward_root`) by name, seed and builder version. Safe
    under concurrent callers: the directory is written to a temporary sibling and renamed.
    """
    if name not in _BUILDERS:
        raise ValueError(f"no tiny model for reward {name!r}; valid: {', '.join(TINY_REWARD_MODELS)}")
    root = Path(root) if root is not None else default_tiny_reward_root()
    target = root / f"{name}-seed{seed}-v{_BUILD_VERSION}"
    return ensure_built_dir(target, lambda tmp: _BUILDERS[name](tmp, seed),
                            {"reward": name, "seed": seed, "version": _BUILD_VERSION})
