"""ImageReward reward (Xu et al., NeurIPS 2023; THUDM/ImageReward): BLIP image-text fusion + a linear MLP head.

Shape legend:
    B: images (and prompts) in the batch
    N: image tokens (patches + 1)
    Dv: vision width (1024 for BLIP ViT-L/16), Dt: text width (768, BERT-base)
    T: text tokens (35)

What ImageReward computes, reproduced here with transformers' BLIP classes:
  1. image -> BLIP ViT-L/16 at 224 px -> all token states [B, N, Dv] (after the final LayerNorm);
  2. prompt -> BERT tokenizer, padded/truncated to 35 tokens, [CLS] kept as the first token;
  3. BLIP's text encoder (BERT-base with cross-attention to the image tokens, bidirectional self-attention)
     -> the first token's state [B, Dt];
  4. MLP head (``heads.LinearMLPHead``, 768 -> 1024 -> 128 -> 64 -> 16 -> 1, no activations) -> raw score;
  5. score = (raw - 0.16717362830052426) / 1.0333394966054072, ImageReward's published normalisation (Sol-RL's
     base FLUX.1 value is 0.455).
Images: shorter side to 224 (bicubic), centre crop, OpenAI CLIP mean/std (ImageReward's ``_transform``).

Expected ``RewardOptions.path`` layout (``IMAGEREWARD_LAYOUT``)::

    <path>/config.json                   BlipConfig (model_type "blip") for BlipForImageTextRetrieval
    <path>/model.safetensors             its weights (only vision_model.* and text_encoder.* are used)
    <path>/tokenizer_config.json (+ vocab.txt or tokenizer.json)  bert-base-uncased with "[DEC]" as bos and
                                         "[ENC]" as an additional special token (vocab 30524)
    <path>/preprocessor_config.json      image_mean / image_std (OpenAI CLIP values)
    <path>/imagereward_head.safetensors  the MLP: layers.{0,2,4,6,7}.{weight,bias}

Conversion note (the official ``ImageReward.pt`` is an ``ImageReward`` module state dict; not automated here
because the official BLIP code cannot run in this environment to check a converter numerically):

* ``mlp.layers.*`` -> ``imagereward_head.safetensors`` as ``layers.*`` (drop the ``mlp.`` prefix).
* ``blip.text_encoder.*`` -> ``text_encoder.*``: BLIP's ``med.py`` BERT and transformers' ``BlipTextModel``
  share parameter names (``embeddings.{word_embeddings,position_embeddings,LayerNorm}``,
  ``encoder.layer.{i}.{attention,crossattention}.{self.{query,key,value},output.{dense,LayerNorm}}``,
  ``intermediate.dense``, ``output.{dense,LayerNorm}``); the checkpoint has no pooler.
* ``blip.visual_encoder.*`` -> ``vision_model.*``: ``cls_token`` -> ``embeddings.class_embedding``,
  ``pos_embed`` -> ``embeddings.position_embedding``, ``patch_embed.proj`` -> ``embeddings.patch_embedding``,
  ``blocks.{i}.norm1/norm2`` -> ``encoder.layers.{i}.layer_norm1/layer_norm2``, ``blocks.{i}.attn.qkv`` ->
  ``encoder.layers.{i}.self_attn.qkv`` (same q/k/v packing), ``blocks.{i}.attn.proj`` ->
  ``encoder.layers.{i}.self_attn.projection``, ``blocks.{i}.mlp.fc1/fc2`` -> ``encoder.layers.{i}.mlp.fc1/fc2``,
  ``norm`` -> ``post_layernorm``.
* Config: vision hidden 1024, 24 layers, 16 heads, intermediate 4096, patch 16, image_size 224,
  layer_norm_eps 1e-6 (BLIP's ViT); text = BERT-base (hidden 768, 12 layers, 12 heads, intermediate 3072,
  vocab 30524, max_position_embeddings 512, layer_norm_eps 1e-12) with ``encoder_hidden_size`` 1024 and
  ``is_decoder`` true so the cross-attention layers exist (they are run with bidirectional self-attention).
  ``vision_proj``, ``text_proj`` and ``itm_head`` are unused here and may stay randomly initialised.
After converting, check one known (prompt, image) pair against ``ImageReward.load("ImageReward-v1.0").score``
on a machine where the official package runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workers.rewards.heads import LinearMLPHead
from workers.rewards.local import (
    load_head_weights,
    load_pretrained,
    load_tokenizer,
    read_image_preprocess,
    require_local_dir,
    run_in_chunks,
)
from workers.rewards.options import RewardOptions
from workers.rewards.preprocess import ImagePreprocess, preprocess_images
from workers.rewards.validation import check_images

__all__ = [
    "IMAGEREWARD_HEAD_FILE",
    "IMAGEREWARD_LAYOUT",
    "IMAGEREWARD_MEAN",
    "IMAGEREWARD_STD",
    "IMAGEREWARD_TEXT_TOKENS",
    "ImageRewardReward",
    "build_imagereward",
]

IMAGEREWARD_HEAD_FILE = "imagereward_head.safetensors"
IMAGEREWARD_MEAN = 0.16717362830052426  # raw-score normalisation published with ImageReward-v1.0
IMAGEREWARD_STD = 1.0333394966054072
IMAGEREWARD_TEXT_TOKENS = 35  # ImageReward pads and truncates prompts to 35 BERT tokens
IMAGEREWARD_LAYOUT = (
    "a transformers BlipForImageTextRetrieval saved with save_pretrained (config.json with model_type 'blip', "
    "model.safetensors or pytorch_model.bin) converted from ImageReward.pt (see the conversion note in "
    "workers/rewards/imagereward.py), its BERT tokenizer (tokenizer_config.json plus vocab.txt or "
    f"tokenizer.json), preprocessor_config.json (image_mean/image_std) and {IMAGEREWARD_HEAD_FILE} (the MLP head, "
    "keys layers.{0,2,4,6,7}.{weight,bias})"
)


class ImageRewardReward:
    """Reward = normalised ImageReward score, float32 [B]; see the module docstring for the computation.

    Args:
        model: a ``transformers.BlipForImageTextRetrieval`` in eval mode.
        tokenizer: its BERT tokenizer.
        head: the MLP head on the fused [CLS] state.
        preprocess: image geometry and normalisation.
        batch_size: images per forward pass.
    """

    def __init__(self, model: Any, tokenizer: Any, head: LinearMLPHead, preprocess: ImagePreprocess, batch_size: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.head = head
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.max_text_tokens = min(IMAGEREWARD_TEXT_TOKENS, int(model.config.text_config.max_position_embeddings))

    @torch.no_grad()
    def _score_chunk(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        pixels = preprocess_images(images_B3HW.to(self.device), self.preprocess)
        image_tokens_BND = self.model.vision_model(pixel_values=pixels).last_hidden_state
        image_mask_BN = torch.ones(image_tokens_BND.shape[:-1], dtype=torch.long, device=self.device)
        # Padding to a fixed 35 tokens as ImageReward does; the attention mask hides the padding anyway.
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        fused_BTD = self.model.text_encoder(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
            encoder_hidden_states=image_tokens_BND,
            encoder_attention_mask=image_mask_BN,
        ).last_hidden_state
        raw_B = self.head(fused_BTD[:, 0, :].float()).squeeze(-1)
        return (raw_B - IMAGEREWARD_MEAN) / IMAGEREWARD_STD

    def __call__(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        check_images(images_B3HW, prompts)
        return run_in_chunks(self._score_chunk, images_B3HW, prompts, self.batch_size)

    def __repr__(self) -> str:
        return f"ImageRewardReward(device={self.device})"


def build_imagereward(options: RewardOptions) -> ImageRewardReward:
    """ImageReward from ``options.path`` (layout: ``IMAGEREWARD_LAYOUT``)."""
    from transformers import BlipForImageTextRetrieval

    name, layout = "imagereward", IMAGEREWARD_LAYOUT
    options.check_extra(name)
    root: Path = require_local_dir(
        name, options, layout, files=("preprocessor_config.json", "tokenizer_config.json", IMAGEREWARD_HEAD_FILE), model_type="blip"
    )
    model = load_pretrained(name, BlipForImageTextRetrieval, root, options.device, layout)
    tokenizer = load_tokenizer(name, root, layout)
    head = LinearMLPHead(int(model.config.text_config.hidden_size))
    head = load_head_weights(name, head, root / IMAGEREWARD_HEAD_FILE, options.device, layout)
    preprocess = read_image_preprocess(name, root, int(model.config.vision_config.image_size), "crop", layout)
    return ImageRewardReward(model, tokenizer, head, preprocess, options.batch_size)
