"""LAION aesthetic predictor v2 reward (as used by DDPO, flow_grpo and DiffusionNFT).

Shape legend:
    B: images in the batch
    D: CLIP image embedding width (768 for ViT-L/14)

Score = MLP(image_emb / ||image_emb||) with the CLIP ViT-L/14 (``openai/clip-vit-large-patch14``) image
embedding and the ``sac+logos+ava1-l14-linearMSE`` head (see ``heads.py``); roughly a 1-10 rating. The prompt
is ignored. Images: shorter side to 224 (bicubic), centre crop, CLIP mean/std, as CLIPProcessor does in the
DDPO scorer.

Expected ``RewardOptions.path`` layout (``AESTHETIC_LAYOUT``)::

    <path>/config.json               CLIPModel config (model_type "clip")
    <path>/model.safetensors         CLIPModel weights (or pytorch_model.bin)
    <path>/preprocessor_config.json  CLIPImageProcessor config (image_mean, image_std)
    <path>/aesthetic_mlp.safetensors the head: layers.{0,2,4,6,7}.{weight,bias}

The upstream head is a torch pickle (``sac+logos+ava1-l14-linearMSE.pth``); write the safetensors file once
with :func:`convert_aesthetic_checkpoint`, which loads it with ``weights_only=True`` and checks its keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from workers.rewards.clip import ClipEncoder, load_clip_encoder
from workers.rewards.heads import LinearMLPHead
from workers.rewards.local import load_head_weights, run_in_chunks
from workers.rewards.options import RewardOptions
from workers.rewards.validation import check_images

__all__ = ["AESTHETIC_HEAD_FILE", "AESTHETIC_LAYOUT", "AestheticReward", "build_aesthetic", "convert_aesthetic_checkpoint"]

AESTHETIC_HEAD_FILE = "aesthetic_mlp.safetensors"
AESTHETIC_LAYOUT = (
    "a transformers CLIPModel saved with save_pretrained (config.json with model_type 'clip', model.safetensors "
    "or pytorch_model.bin; openai/clip-vit-large-patch14 for the published head), preprocessor_config.json "
    f"(image_mean/image_std) and {AESTHETIC_HEAD_FILE} (the LAION aesthetic v2 MLP, keys "
    "layers.{0,2,4,6,7}.{weight,bias}; see convert_aesthetic_checkpoint)"
)


class AestheticReward:
    """Reward = aesthetic MLP of the L2-normalised CLIP image embedding, float32 [B]."""

    def __init__(self, encoder: ClipEncoder, head: LinearMLPHead, batch_size: int) -> None:
        self.encoder = encoder
        self.head = head
        self.batch_size = batch_size

    @torch.no_grad()
    def _score_chunk(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        return self.head(self.encoder.embed_images(images_B3HW)).squeeze(-1)

    def __call__(self, images_B3HW: Tensor, prompts: list[str]) -> Tensor:
        check_images(images_B3HW, prompts)
        return run_in_chunks(self._score_chunk, images_B3HW, prompts, self.batch_size)

    def __repr__(self) -> str:
        return f"AestheticReward(device={self.encoder.device})"


def build_aesthetic(options: RewardOptions) -> AestheticReward:
    """The aesthetic reward from ``options.path`` (layout: ``AESTHETIC_LAYOUT``)."""
    options.check_extra("aesthetic")
    encoder = load_clip_encoder(
        "aesthetic", options, geometry="crop", layout=AESTHETIC_LAYOUT, with_tokenizer=False,
        extra_files=(AESTHETIC_HEAD_FILE,),
    )
    head = LinearMLPHead(int(encoder.model.config.projection_dim))
    head = load_head_weights("aesthetic", head, Path(options.path or "") / AESTHETIC_HEAD_FILE, options.device, AESTHETIC_LAYOUT)
    return AestheticReward(encoder, head, options.batch_size)


def convert_aesthetic_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/aesthetic_mlp.safetensors`` from the published ``.pth`` head; returns the file path.

    The ``.pth`` is loaded with ``weights_only=True`` (tensors only, no code) and must hold exactly the head's
    keys; the input width is read from ``layers.0.weight``.
    """
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "layers.0.weight" not in state:
        raise ValueError(f"{str(checkpoint)!r} is not an aesthetic MLP state dict (no 'layers.0.weight')")
    head = LinearMLPHead(int(state["layers.0.weight"].shape[1]))
    head.load_state_dict(state, strict=True)  # raises naming missing/unexpected keys
    out = Path(out_dir) / AESTHETIC_HEAD_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in head.state_dict().items()}, str(out))
    return out
