"""CLIP-family text-image similarity rewards: CLIPScore, PickScore and (via ``hpsv2.py``) HPSv2.

Shape legend:
    B: images (and prompts) in the batch
    D: joint embedding width (``projection_dim``)

All three are a CLIP dual encoder scoring cos(text_emb, image_emb) of each image with its own prompt; they
differ in weights, image geometry and scale:

* ``clipscore``: ``openai/clip-vit-large-patch14``. Score = cosine, in [-1, 1] (typically 0.2-0.35). This is
  the unit of Sol-RL's tables (base FLUX.1 0.2630), and equals Sol-RL's ``logits_per_image / 100`` because
  that model's ``logit_scale.exp()`` is exactly 100. flow_grpo instead reports ``logits_per_image / 30``,
  i.e. 100/30 x cosine: use weight 3.333 to reproduce flow_grpo's scale.
* ``pickscore``: ``yuvalkirstain/PickScore_v1`` (CLIP ViT-H/14 fine-tuned on Pick-a-Pic). Score =
  ``logit_scale.exp() * cosine`` as in the PickScore paper and code (typically 18-23). flow_grpo and Sol-RL
  divide this by 26 (Sol-RL's base FLUX.1 0.8096 is 21.05 / 26): use weight 1/26 to reproduce that scale.
* ``hpsv2``: see ``hpsv2.py`` (cosine, longest-side resize + pad).

Text is tokenized by the directory's own tokenizer, truncated to the text tower's context
(``max_position_embeddings``, 77 for real CLIP), and padded to the longest prompt of the chunk; CLIP's causal
text attention makes the padding irrelevant to the pooled embedding, so scores do not depend on batching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from workers.rewards.local import (
    load_pretrained,
    load_tokenizer,
    read_image_preprocess,
    require_local_dir,
    run_in_chunks,
)
from workers.rewards.options import RewardOptions
from workers.rewards.preprocess import Geometry, ImagePreprocess, preprocess_images
from workers.rewards.validation import check_images

__all__ = [
    "CLIP_LAYOUT",
    "ClipEncoder",
    "ClipSimilarityReward",
    "build_clipscore",
    "build_pickscore",
    "load_clip_encoder",
]

CLIP_LAYOUT = (
    "a transformers CLIPModel saved with save_pretrained (config.json with model_type 'clip' and "
    "model.safetensors or pytorch_model.bin), its tokenizer (tokenizer_config.json plus tokenizer.json or "
    "vocab.json/merges.txt) and preprocessor_config.json (CLIPImageProcessor, for image_mean/image_std)"
)


class ClipEncoder:
    """A frozen CLIPModel with its tokenizer and tensor preprocessing; embeds images and texts.

    Args:
        model: a ``transformers.CLIPModel`` in eval mode on its device.
        tokenizer: the model's tokenizer; ``None`` for image-only use (the aesthetic predictor).
        preprocess: image geometry and normalisation for the vision tower.
    """

    def __init__(self, model: Any, tokenizer: Any | None, preprocess: ImagePreprocess) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = next(model.parameters()).device
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def embed_images(self, images_B3HW: Tensor) -> Tensor:
        """L2-normalised image embeddings [B, D], float32 on the model's device."""
        pixels = preprocess_images(images_B3HW.to(self.device), self.preprocess)
        # Projection applied by hand: CLIPModel.get_image_features returns a tensor in transformers 4.x but a
        # ModelOutput in 5.x; vision_model + visual_projection is the same computation in both.
        pooled_BD = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled_BD).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, prompts: list[str]) -> Tensor:
        """L2-normalised text embeddings [B, D], float32 on the model's device."""
        if self.tokenizer is None:
            raise ValueError("this ClipEncoder was loaded without a tokenizer (image-only); it cannot embed texts")
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        pooled_BD = self.model.text_model(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        ).pooler_output
        return F.normalize(self.model.text_projection(pooled_BD).float(), dim=-1)


def load_clip_encoder(
    reward: str,
    options: RewardOptions,
    geometry: Geometry,
    layout: str = CLIP_LAYOUT,
    with_tokenizer: bool = True,
    extra_files: tuple[str, ...] = (),
) -> ClipEncoder:
    """Load a CLIPModel (+ tokenizer) + preprocessing from ``options.path`` (local files only) onto ``options.device``.

    ``extra_files`` (e.g. a head checkpoint) are checked to exist before the model is loaded, so a missing
    file fails in milliseconds rather than after a multi-GB load.
    """
    from transformers import CLIPModel

    files = ("preprocessor_config.json", *(("tokenizer_config.json",) if with_tokenizer else ()), *extra_files)
    root: Path = require_local_dir(reward, options, layout, files=files, model_type="clip")
    model = load_pretrained(reward, CLIPModel, root, options.device, layout)
    tokenizer = load_tokenizer(reward, root, layout) if with_tokenizer else None
    size = int(model.config.vision_config.image_size)
    return ClipEncoder(model, tokenizer, read_image_preprocess(reward, root, size, geometry, layout))


class ClipSimilarityReward:
    """Reward = scale x cos(text_emb(prompt_i), image_emb(image_i)), float32 [B].

    Args:
        name: reward name, for ``repr`` and errors.
        encoder: the CLIP dual encoder.
        use_logit_scale: multiply the cosine by the model's ``logit_scale.exp()`` (PickScore) or not (CLIPScore,
            HPSv2).
        batch_size: images per forward pass.
    """

    def __init__(self, name: str, encoder: ClipEncoder, use_logit_scale: bool, batch_size: int) -> None:
        self.name = name
        self.encoder = encoder
        self.batch_size = batch_size
        self.scale = float(encoder.model.logit_scale.exp()) if use_logit_scale else 1.0

    def _score_chunk(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        image_BD = self.encoder.embed_images(images_B3HW)
        text_BD = self.encoder.embed_texts(prompts)
        return self.scale * (image_BD * text_BD).sum(dim=-1)

    def __call__(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        check_images(images_B3HW, prompts)
        return run_in_chunks(self._score_chunk, images_B3HW, prompts, self.batch_size)

    def __repr__(self) -> str:
        return f"ClipSimilarityReward({self.name!r}, scale={self.scale:.4g}, device={self.encoder.device})"


def build_clipscore(options: RewardOptions) -> ClipSimilarityReward:
    """CLIPScore = cosine(text, image) with ``openai/clip-vit-large-patch14`` (or any CLIPModel).

    ``options.path`` layout: ``CLIP_LAYOUT``. Images: shorter side to the vision tower's size (bicubic), centre crop.
    """
    options.check_extra("clipscore")
    encoder = load_clip_encoder("clipscore", options, geometry="crop")
    return ClipSimilarityReward("clipscore", encoder, use_logit_scale=False, batch_size=options.batch_size)


def build_pickscore(options: RewardOptions) -> ClipSimilarityReward:
    """PickScore = logit_scale.exp() x cosine(text, image) with ``yuvalkirstain/PickScore_v1``.

    ``options.path`` layout: ``CLIP_LAYOUT``. PickScore_v1 ships the model only: copy the tokenizer files and
    preprocessor_config.json of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (its processor) into the same
    directory. Images: shorter side to 224 (bicubic), centre crop.
    """
    options.check_extra("pickscore")
    encoder = load_clip_encoder("pickscore", options, geometry="crop")
    return ClipSimilarityReward("pickscore", encoder, use_logit_scale=True, batch_size=options.batch_size)

