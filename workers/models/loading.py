"""Load a model adapter from a local diffusers-layout directory (never from a hub)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from workers.models.base import ModelAdapter
from workers.models.flux import FluxAdapter
from workers.models.sana import SanaAdapter
from workers.models.sd3 import SD3Adapter

# Pipeline class (as written in model_index.json) -> adapter. One flat table, explicit imports.
ADAPTERS_BY_PIPELINE: dict[str, type[ModelAdapter]] = {
    "StableDiffusion3Pipeline": SD3Adapter,
    "FluxPipeline": FluxAdapter,
    "SanaPipeline": SanaAdapter,
}
ADAPTERS_BY_FAMILY: dict[str, type[ModelAdapter]] = {a.family: a for a in ADAPTERS_BY_PIPELINE.values()}


class ModelLoadError(ValueError):
    """A model directory is missing or not what the adapter expects."""


def read_model_index(path: Path) -> dict:
    if not path.exists():
        raise ModelLoadError(
            f"model.path {str(path)!r} does not exist; point it at a local diffusers-layout directory "
            "(the folder holding model_index.json) or use model.path: tiny:<family> for the built-in tiny model"
        )
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(
            f"model.path {str(path)!r} has no model_index.json; point it at a diffusers-layout directory "
            "(e.g. one written by DiffusionPipeline.save_pretrained)"
        )
    return json.loads(index_file.read_text())


def adapter_class_for(path: Path) -> type[ModelAdapter]:
    pipeline_name = read_model_index(path).get("_class_name", "")
    if pipeline_name not in ADAPTERS_BY_PIPELINE:
        raise ModelLoadError(
            f"model.path {str(path)!r} holds a {pipeline_name or 'unknown'} pipeline; supported: "
            f"{', '.join(sorted(ADAPTERS_BY_PIPELINE))}"
        )
    return ADAPTERS_BY_PIPELINE[pipeline_name]


def load_model(
    path: str | Path,
    *,
    height: int,
    width: int,
    max_sequence_length: int,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> ModelAdapter:
    """Load the pipeline at ``path`` with ``local_files_only`` and wrap it in its family adapter."""
    from diffusers import DiffusionPipeline

    path = Path(path).expanduser()
    adapter_cls = adapter_class_for(path)
    index = read_model_index(path)
    # Optional components (e.g. SD3 without T5) are null or absent in model_index.json: pass None.
    missing = {n: None for n in adapter_cls.optional_components if index.get(n, [None])[0] is None}
    pipeline = DiffusionPipeline.from_pretrained(path, dtype=dtype, local_files_only=True, **missing)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    for module in (pipeline.transformer, pipeline.vae):
        module.requires_grad_(False)
        module.eval()
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        encoder = getattr(pipeline, name, None)
        if encoder is not None:
            encoder.requires_grad_(False)
            encoder.eval()
    return adapter_cls(pipeline, height=height, width=width, max_sequence_length=max_sequence_length)
