"""HPSv2: the open_clip -> CLIPModel conversion against an independent float64 open_clip forward.

The reference below re-implements open_clip's ViT ``CLIP`` forward (pre-LN residual blocks with packed
in-projection, exact GELU, class-token pooling, causal text attention pooled at the EOT token, projections
as right-multiplications) directly from the open_clip state dict, sharing no code with the converter or with
transformers. (A one-off check against open_clip 3.3.0 itself agreed to 1.5e-7; open_clip cannot be installed
in the project venv because of torchvision, see hpsv2.py.)
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.unit.workers.rewards.conftest import PROMPTS
from workers.rewards import RewardOptions, get_reward
from workers.rewards.hpsv2 import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    convert_hpsv2_checkpoint,
    convert_open_clip_state_dict,
)
from workers.rewards.tiny import TINY_HEADS, TINY_PATCH, tiny_open_clip_state_dict


def _block(x: Tensor, sd: dict[str, Tensor], prefix: str, heads: int, causal: bool) -> Tensor:
    batch, tokens, width = x.shape
    h = F.layer_norm(x, (width,), sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"], eps=1e-5)
    q, k, v = (h @ sd[prefix + "attn.in_proj_weight"].T + sd[prefix + "attn.in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if causal:
        logits = logits + torch.full((tokens, tokens), float("-inf"), dtype=x.dtype).triu(1)
    attended = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, width)
    x = x + attended @ sd[prefix + "attn.out_proj.weight"].T + sd[prefix + "attn.out_proj.bias"]
    h = F.layer_norm(x, (width,), sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"], eps=1e-5)
    h = F.gelu(h @ sd[prefix + "mlp.c_fc.weight"].T + sd[prefix + "mlp.c_fc.bias"])
    return x + h @ sd[prefix + "mlp.c_proj.weight"].T + sd[prefix + "mlp.c_proj.bias"]


def _layers(sd: dict[str, Tensor], prefix: str) -> int:
    return len({k.split(".")[len(prefix.split(".")) + 1] for k in sd if k.startswith(prefix + "transformer.resblocks.")})


def open_clip_image_features(sd: dict[str, Tensor], pixels: Tensor, heads: int) -> Tensor:
    patches = F.conv2d(pixels, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = patches.flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], eps=1e-5)
    for i in range(_layers(sd, "visual.")):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}.", heads, causal=False)
    pooled = F.layer_norm(x[:, 0], x.shape[-1:], sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps=1e-5)
    return F.normalize(pooled @ sd["visual.proj"], dim=-1)


def open_clip_text_features(sd: dict[str, Tensor], ids: Tensor, eot_positions: Tensor, heads: int) -> Tensor:
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    for i in range(_layers(sd, "")):
        x = _block(x, sd, f"transformer.resblocks.{i}.", heads, causal=True)
    x = F.layer_norm(x, x.shape[-1:], sd["ln_final.weight"], sd["ln_final.bias"], eps=1e-5)
    return F.normalize(x[torch.arange(ids.shape[0]), eot_positions] @ sd["text_projection"], dim=-1)


def test_reward_matches_float64_open_clip_reference(tiny_reward_dirs: dict[str, Path], images: torch.Tensor) -> None:
    """The tiny hpsv2 directory was converted from tiny_open_clip_state_dict(seed=0)."""
    from transformers import AutoTokenizer

    path = tiny_reward_dirs["hpsv2"]
    got = get_reward("hpsv2", RewardOptions(path=str(path)))(images, PROMPTS)

    sd = {k: v.double() for k, v in tiny_open_clip_state_dict(seed=0).items()}
    mean = torch.tensor(OPENAI_CLIP_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, dtype=torch.float64).view(1, 3, 1, 1)
    pixels = (images.double() - mean) / std  # 32 px images: the pad geometry is the identity here
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    eot = (tokens["input_ids"] == tokenizer.eos_token_id).int().argmax(dim=1)
    image_features = open_clip_image_features(sd, pixels, TINY_HEADS)
    text_features = open_clip_text_features(sd, tokens["input_ids"], eot, TINY_HEADS)
    expected = (image_features * text_features).sum(-1)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


def test_converted_weights_layout() -> None:
    sd = tiny_open_clip_state_dict(seed=1)
    out = convert_open_clip_state_dict(sd)
    width = sd["visual.conv1.weight"].shape[0]
    q = out["vision_model.encoder.layers.1.self_attn.q_proj.weight"]
    v = out["vision_model.encoder.layers.1.self_attn.v_proj.weight"]
    torch.testing.assert_close(q, sd["visual.transformer.resblocks.1.attn.in_proj_weight"][:width])
    torch.testing.assert_close(v, sd["visual.transformer.resblocks.1.attn.in_proj_weight"][2 * width :])
    torch.testing.assert_close(out["text_projection.weight"], sd["text_projection"].T)
    assert out["logit_scale"].shape == ()
    assert "attn_mask" not in str(list(out))


def test_unknown_open_clip_key_is_rejected() -> None:
    sd = tiny_open_clip_state_dict(seed=0)
    sd["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(4)  # layer scale: not a CLIP ViT
    sd["visual.attn_pool.query"] = torch.ones(4)
    with pytest.raises(ValueError, match=r"no CLIPModel counterpart.*attn_pool.*ls_1"):
        convert_open_clip_state_dict(sd)


def test_converter_rejects_non_open_clip_checkpoint(tmp_path: Path) -> None:
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="no open_clip ViT state dict"):
        convert_hpsv2_checkpoint(tmp_path / "x.pt", tmp_path, tmp_path / "out")


def test_fp16_checkpoint_converts_to_float32(tmp_path: Path) -> None:
    """HPS_v2.1_compressed.pt stores fp16 weights; the converted model must score in float32."""
    from workers.models.tokenizer import build_char_tokenizer
    from workers.rewards.tiny import TINY_TEXT_TOKENS

    sd = {k: v.half() for k, v in tiny_open_clip_state_dict(seed=2).items()}
    torch.save({"state_dict": sd, "epoch": 1}, str(tmp_path / "HPS_fp16.pt"))
    build_char_tokenizer(TINY_TEXT_TOKENS).save_pretrained(str(tmp_path / "tok"))
    out = convert_hpsv2_checkpoint(tmp_path / "HPS_fp16.pt", tmp_path / "tok", tmp_path / "hps", TINY_HEADS, TINY_HEADS)
    reward = get_reward("hpsv2", RewardOptions(path=str(out)))
    assert next(reward.encoder.model.parameters()).dtype == torch.float32
    images = torch.rand(2, 3, 4 * TINY_PATCH, 4 * TINY_PATCH, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(reward(images, ["a", "b"])).all()
