"""HPSv2 / HPSv2.1 reward: an open_clip ViT-H-14 fine-tuned on human preferences, run as a transformers CLIPModel.

Shape legend:
    B: images in the batch
    W: transformer width (vision 1280, text 1024 for ViT-H-14)
    E: joint embedding width (1024)
    N: tokens (image patches + 1, or text context)

Score = cos(text_emb, image_emb), the diagonal of ``image_features @ text_features.T`` with normalised
features as HPSv2's own scorer (and Sol-RL's ``HPSv2Scorer``) computes it; Sol-RL's base FLUX.1 value is
0.2566. Images: the longer side is resized to 224 (bicubic) and the shorter side padded with black to
224 (open_clip's ``ResizeMaxSize`` used by HPSv2), then OpenAI CLIP mean/std.

Why not open_clip: ``open_clip_torch`` itself installs from PyPI, but it imports torchvision at import time,
and no torchvision wheel matches this project's CPU torch (the PyPI 0.28 wheel is a CUDA build that fails at
import with "operator torchvision::nms does not exist"). open_clip's ViT-H-14 is architecturally a CLIP ViT
(pre-LN blocks, exact GELU, class-token pooling, EOT pooling for text), so its weights map one to one onto
transformers' CLIPModel; :func:`convert_hpsv2_checkpoint` does that once, offline.

Expected ``RewardOptions.path`` layout (``HPSV2_LAYOUT``), as written by :func:`convert_hpsv2_checkpoint`::

    <path>/config.json               CLIPModel config (model_type "clip")
    <path>/model.safetensors         the converted HPS_v2.1_compressed.pt weights
    <path>/tokenizer_config.json     + tokenizer.json or vocab.json/merges.txt: the CLIP BPE tokenizer
                                     (copied from a local laion/CLIP-ViT-H-14-laion2B-s32B-b79K directory; it is
                                     the same BPE and 77-token context as open_clip's tokenizer)
    <path>/preprocessor_config.json  image_mean / image_std (OpenAI CLIP values)

Conversion: ``convert_hpsv2_checkpoint("HPS_v2.1_compressed.pt", "<laion CLIP-ViT-H-14 dir>", "<path>")``.
The checkpoint is loaded with ``weights_only=True``; its ``state_dict`` holds open_clip ``CLIP`` keys
(``visual.*``, ``transformer.*``, ``token_embedding``, ``positional_embedding``, ``ln_final``,
``text_projection``, ``logit_scale``); fp16 weights are stored as float32.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workers.rewards.clip import ClipSimilarityReward, load_clip_encoder
from workers.rewards.options import RewardOptions

__all__ = [
    "HPSV2_LAYOUT",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "build_hpsv2",
    "convert_hpsv2_checkpoint",
    "convert_open_clip_state_dict",
    "open_clip_to_hf_config",
]

HPSV2_LAYOUT = (
    "a transformers CLIPModel converted from HPS_v2.1_compressed.pt by workers.rewards.hpsv2."
    "convert_hpsv2_checkpoint (config.json with model_type 'clip', model.safetensors), the CLIP tokenizer "
    "(tokenizer_config.json plus tokenizer.json or vocab.json/merges.txt) and preprocessor_config.json "
    "(image_mean/image_std)"
)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# open_clip registers the causal mask as a buffer; older checkpoints saved it. It is rebuilt by the model.
_IGNORED_KEYS = ("attn_mask",)
# Per residual block: open_clip suffix -> transformers suffix (in_proj is split into q/k/v separately).
_BLOCK_RENAMES = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_BLOCK_KEY = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def convert_open_clip_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map an open_clip ViT ``CLIP`` state dict onto transformers ``CLIPModel`` keys (float32).

    ``attn.in_proj_{weight,bias}`` [3W, W] is split in order q, k, v (``nn.MultiheadAttention``'s packing);
    ``visual.proj`` [W, E] and ``text_projection`` [W, E] are transposed into ``nn.Linear`` weights [E, W].
    Raises ValueError listing any key it does not know (e.g. layer-scale ``ls_1`` or attention-pool weights
    of other open_clip variants), rather than silently dropping it.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    singles = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    for key, value in state.items():
        value = value.detach().float()
        if key in _IGNORED_KEYS:
            continue
        if key in singles:
            out[singles[key]] = value.reshape(()) if key == "logit_scale" else value
        elif key in ("visual.proj", "text_projection"):
            target = "visual_projection.weight" if key == "visual.proj" else "text_projection.weight"
            out[target] = value.t().contiguous()
        elif (match := _BLOCK_KEY.match(key)) is not None:
            tower = "vision_model" if match.group(1) else "text_model"
            prefix = f"{tower}.encoder.layers.{match.group(2)}."
            suffix = match.group(3)
            if suffix in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if suffix.endswith("weight") else "bias"
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{name}.{kind}"] = part.contiguous()
            elif suffix in _BLOCK_RENAMES:
                out[prefix + _BLOCK_RENAMES[suffix]] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"open_clip state dict has keys with no CLIPModel counterpart: {sorted(unknown)[:20]}")
    return out


def _count_blocks(state: dict[str, Tensor], prefix: str) -> int:
    indices = {int(m.group(2)) for k in state if (m := _BLOCK_KEY.match(k)) and bool(m.group(1)) == (prefix == "visual.")}
    return max(indices) + 1 if indices else 0


def open_clip_to_hf_config(
    state: dict[str, Tensor],
    vision_heads: int = 16,
    text_heads: int = 16,
    hidden_act: str = "gelu",
    bos_token_id: int = 49406,
    eos_token_id: int = 49407,
    pad_token_id: int = 0,
) -> Any:
    """The ``CLIPConfig`` matching an open_clip ViT state dict; widths, depths and sizes are read from shapes.

    Head counts cannot be read from weights: ViT-H-14 has 16 and 16 (vision head width 80, text 64).
    ``hidden_act`` is ``"gelu"`` for laion ViT-H-14 (HPSv2) and ``"quick_gelu"`` for OpenAI-trained models.
    Token ids are the CLIP BPE's; open_clip pools text at argmax(ids), which is the EOT token 49407 (the largest
    id), the same position transformers picks with ``eos_token_id`` 49407.
    """
    from transformers import CLIPConfig

    conv = state["visual.conv1.weight"]  # [W, 3, P, P]
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = math.isqrt(int(state["visual.positional_embedding"].shape[0]) - 1)
    text_width = int(state["token_embedding.weight"].shape[1])
    return CLIPConfig(
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": _count_blocks(state, "visual."),
            "num_attention_heads": vision_heads,
            "image_size": grid * patch,
            "patch_size": patch,
            "hidden_act": hidden_act,
            "layer_norm_eps": 1e-5,  # torch nn.LayerNorm default, used by open_clip
        },
        text_config={
            "vocab_size": int(state["token_embedding.weight"].shape[0]),
            "hidden_size": text_width,
            "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": _count_blocks(state, ""),
            "num_attention_heads": text_heads,
            "max_position_embeddings": int(state["positional_embedding"].shape[0]),
            "hidden_act": hidden_act,
            "layer_norm_eps": 1e-5,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
        },
        projection_dim=int(state["text_projection"].shape[1]),
    )


def convert_hpsv2_checkpoint(
    checkpoint: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    vision_heads: int = 16,
    text_heads: int = 16,
    hidden_act: str = "gelu",
) -> Path:
    """Write an ``HPSV2_LAYOUT`` directory at ``out_dir`` from an open_clip checkpoint; returns ``out_dir``.

    Args:
        checkpoint: ``HPS_v2.1_compressed.pt`` (a dict with ``state_dict``) or a bare open_clip state dict file.
        tokenizer_dir: a local directory with the CLIP tokenizer (e.g. laion/CLIP-ViT-H-14-laion2B-s32B-b79K);
            its special-token ids go into the text config.
        out_dir: output directory (created).
        vision_heads, text_heads, hidden_act: see :func:`open_clip_to_hf_config`.
    """
    from transformers import AutoTokenizer, CLIPModel

    loaded = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or "visual.conv1.weight" not in state:
        raise ValueError(f"{str(checkpoint)!r} holds no open_clip ViT state dict (no 'visual.conv1.weight')")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    config = open_clip_to_hf_config(
        state,
        vision_heads=vision_heads,
        text_heads=text_heads,
        hidden_act=hidden_act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )
    model = CLIPModel(config)
    result = model.load_state_dict(convert_open_clip_state_dict(state), strict=False)
    # Only non-persistent buffers (position ids) may be absent from the checkpoint.
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ValueError(f"converted state dict does not fit CLIPModel: missing {missing}, unexpected {result.unexpected_keys}")
    out = Path(out_dir)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    write_clip_preprocessor_config(out, int(config.vision_config.image_size))
    return out


def build_hpsv2(options: RewardOptions) -> ClipSimilarityReward:
    """HPSv2 = cosine(text, image) of the converted HPS model at ``options.path`` (layout: ``HPSV2_LAYOUT``)."""
    options.check_extra("hpsv2")
    encoder = load_clip_encoder("hpsv2", options, geometry="pad", layout=HPSV2_LAYOUT)
    return ClipSimilarityReward("hpsv2", encoder, use_logit_scale=False, batch_size=options.batch_size)


def write_clip_preprocessor_config(out: Path, size: int) -> None:
    """A CLIPImageProcessor-format preprocessor_config.json with OpenAI CLIP mean/std."""
    config = {
        "image_processor_type": "CLIPImageProcessor",
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
        "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size},
        "resample": 3,
        "do_resize": True,
        "do_center_crop": True,
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
    }
    (Path(out) / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
