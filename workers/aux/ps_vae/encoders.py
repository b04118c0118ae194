"""Representation encoders E_rep: one wrapper over transformers ViT, DINOv2 and SigLIP2 vision towers.

The paper uses DINOv2-B/14 (and SigLIP2-so400m/14); here a small ViT trained locally on digits plays
that role. All three go through ``RepresentationEncoder``, so the experiment and a user's DINOv2 or
SigLIP2 directory share one code path: images in [-1, 1] -> patch tokens f_h (B, N, D) after the
encoder's final norm, with the CLS/register tokens dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workers.aux.common.ddpm import cache_root
from workers.aux.common.runtime import progress

SUPPORTED = ("vit", "dinov2", "siglip2_vision_model", "siglip2")
# Defaults when a directory has no preprocessor_config.json (the published processors' values).
_DEFAULT_NORM = {"vit": ([0.5], [0.5]), "dinov2": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                 "siglip2_vision_model": ([0.5], [0.5]), "siglip2": ([0.5], [0.5])}


def _call_block(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    out = block(hidden, None)  # positional mask: SigLIP2 layers require the argument, None = full attention
    return out[0] if isinstance(out, tuple) else out


class RepresentationEncoder(nn.Module):
    """A transformers vision tower as E_rep: ``forward(images) -> (B, N, D)`` patch tokens.

    ``blocks`` and ``final_norm`` expose the encoder's own transformer blocks, which the semantic
    encoder and decoder copy (paper Sec. 3.3: "3 Transformer blocks inherited from the encoder").
    """

    def __init__(self, model: nn.Module, kind: str, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__()
        if kind not in SUPPORTED:
            raise ValueError(f"unsupported encoder kind {kind!r}; supported: {', '.join(SUPPORTED)}")
        self.model = model
        self.kind = kind
        cfg = model.config
        self.hidden = int(cfg.hidden_size)
        self.patch_size = int(cfg.patch_size)
        self.in_channels = int(cfg.num_channels)
        self.register_buffer("mean", torch.tensor(image_mean, dtype=torch.float32).reshape(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(image_std, dtype=torch.float32).reshape(1, -1, 1, 1), False)

    @property
    def blocks(self) -> nn.ModuleList:
        # transformers 5 names: ViT ``layers``; DINOv2 ``encoder.layer``; SigLIP2 ``encoder.layers``.
        for name in ("layers", "encoder.layer", "encoder.layers"):
            try:
                return self.model.get_submodule(name)
            except AttributeError:
                continue
        raise AttributeError(f"cannot find the transformer blocks of this {self.kind} model")

    @property
    def final_norm(self) -> nn.Module:
        for name in ("layernorm", "post_layernorm"):
            if hasattr(self.model, name):
                return getattr(self.model, name)
        raise AttributeError(f"cannot find the final norm of this {self.kind} model")

    def grid(self, image_size: int) -> int:
        """Side of the token grid for square ``image_size`` inputs."""
        return image_size // self.patch_size

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1.0) / 2.0  # [-1, 1] -> [0, 1], the range the processors' mean/std assume
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, self.in_channels, -1, -1) if x.shape[1] == 1 else x
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self._normalise(images)
        if self.kind == "vit":
            size = self.model.config.image_size
            out = self.model(pixel_values=x, interpolate_pos_encoding=x.shape[-1] != size).last_hidden_state
            return out[:, 1:]
        if self.kind == "dinov2":
            out = self.model(pixel_values=x).last_hidden_state
            prefix = 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)
            return out[:, prefix:]
        return self._siglip2(x)

    def _siglip2(self, x: torch.Tensor) -> torch.Tensor:
        # SigLIP2 (NaFlex) takes pre-patchified pixels (B, N, p*p*C) in (row, col, channel) order.
        b, c, h, w = x.shape
        p = self.patch_size
        nh, nw = h // p, w // p
        patches = x.reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, nh * nw, p * p * c)
        mask = torch.ones(b, nh * nw, dtype=torch.long, device=x.device)
        shapes = torch.tensor([[nh, nw]] * b, dtype=torch.long, device=x.device)
        return self.model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes).last_hidden_state


def load_representation_encoder(path: str | Path, device: torch.device | str = "cpu") -> RepresentationEncoder:
    """Load E_rep from a local transformers directory: DINOv2 (e.g. a snapshot of facebook/dinov2-base),
    SigLIP2 (a full Siglip2Model or its vision tower) or a ViT such as the one this experiment trains.

    Image mean/std come from ``preprocessor_config.json`` when present.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(
            f"{path} is not a transformers model directory (no config.json). Pass the folder that holds "
            "config.json and model.safetensors, e.g. a local snapshot of facebook/dinov2-base or "
            "google/siglip2-so400m-patch14-384 (huggingface-cli download ... --local-dir DIR)")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"{config_file} has model_type {model_type!r}; PS-VAE loads {', '.join(SUPPORTED)} "
                         "encoders (DINOv2, SigLIP2 or ViT)")
    from transformers import Dinov2Model, Siglip2VisionModel, ViTModel

    if model_type == "vit":
        model = ViTModel.from_pretrained(path, add_pooling_layer=False)
    elif model_type == "dinov2":
        model = Dinov2Model.from_pretrained(path)
    else:  # the vision config is nested in a full siglip2 checkpoint; from_pretrained picks it out
        model = Siglip2VisionModel.from_pretrained(path)
    mean, std = _DEFAULT_NORM[model_type]
    proc = path / "preprocessor_config.json"
    if proc.exists():
        data = json.loads(proc.read_text())
        mean, std = data.get("image_mean", mean), data.get("image_std", std)
    return RepresentationEncoder(model, model_type, list(mean), list(std)).to(device).eval()


@dataclass(frozen=True)
class LocalVitSpec:
    """The small ViT trained here as a discriminative stand-in for DINOv2 (supervised 10-way on digits)."""

    image_size: int = 16
    patch_size: int = 4
    hidden: int = 64
    layers: int = 4
    heads: int = 4
    epochs: int = 12
    lr: float = 1e-3
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def build_vit(spec: LocalVitSpec):
    """A random-init transformers ``ViTModel`` for 1-channel images (global RNG pinned to the spec's seed)."""
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=spec.image_size, patch_size=spec.patch_size, num_channels=1,
                    hidden_size=spec.hidden, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                    intermediate_size=2 * spec.hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(spec.seed)  # nn.Module init draws from the global RNG
    return ViTModel(cfg, add_pooling_layer=False)


def train_local_vit(spec: LocalVitSpec, out: Path, show_progress: bool = True) -> Path:
    """Train the ViT with a linear head on mean-pooled patch tokens (so patch tokens carry the class),
    then save it in transformers layout (``config.json``, weights, ``preprocessor_config.json``)."""
    from workers.aux.common.data import digits

    data = digits("train", size=spec.image_size)
    encoder = RepresentationEncoder(build_vit(spec), "vit", [0.5], [0.5])
    head = nn.Linear(spec.hidden, 10)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(spec.seed)
    for _ in progress(range(spec.epochs), "ps_vae: train ViT encoder", show_progress):
        for idx in torch.randperm(len(data.labels), generator=g).split(64):
            loss = F.cross_entropy(head(encoder(data.images[idx]).mean(1)), data.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    out.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5], "image_std": [0.5]}) + "\n")
    return out


def local_vit_encoder(spec: LocalVitSpec, device: torch.device | str = "cpu",
                      show_progress: bool = True) -> RepresentationEncoder:
    """The trained local ViT, cached under ``$SOLRL_AUX_CACHE/ps_vae/vit_<key>`` and loaded through the same
    loader as a DINOv2 directory."""
    path = cache_root() / "ps_vae" / f"vit_{spec.key()}"
    if not (path / "config.json").exists():
        import shutil

        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")  # per process: concurrent runs don't collide
        train_local_vit(spec, tmp, show_progress)
        if (path / "config.json").exists():
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
    return load_representation_encoder(path, device)
