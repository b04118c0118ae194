"""A compact, committable archive of a pretrained base model: 8-bit weights that unpack to a diffusers directory.

The compositional benchmark's base (~77 MB in float32) cannot travel to the GPU machine beside the code (the
device tool carries 64 MiB in all), and a GPU machine starts bare each session, so without an archive every
session would pretrain again. ``pack`` stores each large weight matrix of the transformer and text encoders as
int8 with one float32 scale per output row (symmetric, absmax / 127), and every other tensor (biases, norms,
embeddings smaller than ``MIN_ELEMENTS``, the whole VAE, whose identity weights must stay exact) as float32.
``unpack`` writes the float32 diffusers directory back, deterministically: **the unpacked model is the
benchmark's base**, and every run that is to be compared starts from it (the packing error, ~0.2% of a row's
largest weight, is then part of the base, not a difference between runs).

    solrl base pack   --model runs/pretrain/model --out assets/compositional_base
    solrl base unpack --archive assets/compositional_base --out runs/base
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "solrl-int8-rows-v1"
MANIFEST = "archive.json"
MIN_ELEMENTS = 4096  # smaller tensors stay float32: they cost little and include embeddings and norms
QUANTIZED_FOLDERS = ("transformer", "text_encoder", "text_encoder_2")  # never the VAE
_Q, _SCALE = ".__q", ".__scale"


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and float32 per-row scales of ``weight`` (rows = dim 0), symmetric absmax."""
    rows = weight.float().reshape(weight.shape[0], -1)
    scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    codes = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return codes.reshape(weight.shape), scale


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (codes.float().reshape(codes.shape[0], -1) * scale[:, None]).reshape(codes.shape)


def _packable(folder: str, tensor: torch.Tensor) -> bool:
    return folder in QUANTIZED_FOLDERS and tensor.is_floating_point() and tensor.ndim >= 2 \
        and tensor.numel() >= MIN_ELEMENTS


def _mirror(src_dir: Path, dst_dir: Path, skip: str | None = None) -> Iterator[tuple[Path, Path, Path]]:
    """Copy every file of ``src_dir`` into ``dst_dir`` except safetensors files, which it yields as (source,
    relative path, destination) for the caller to convert."""
    for src in sorted(p for p in src_dir.rglob("*") if p.is_file() and p.name != skip):
        rel = src.relative_to(src_dir)
        dst = dst_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".safetensors":
            yield src, rel, dst
        else:
            shutil.copy2(src, dst)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack(model_dir: Path, out_dir: Path) -> dict:
    """Write the archive of ``model_dir`` (a diffusers directory) into ``out_dir``; returns the manifest."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a diffusers model directory (no model_index.json)")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it or choose another --out")
    files, quantized, kept = {}, 0, 0
    for src, rel, dst in _mirror(model_dir, out_dir):
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        packed: dict[str, torch.Tensor] = {}
        for name, tensor in load_file(src).items():
            if _packable(folder, tensor):
                packed[name + _Q], packed[name + _SCALE] = quantize_rows(tensor)
                quantized += tensor.numel()
            else:
                packed[name] = tensor.float() if tensor.is_floating_point() else tensor
                kept += tensor.numel()
        save_file(packed, dst)
        files[str(rel)] = _sha256(dst)
    manifest = {"format": FORMAT, "source": str(model_dir), "quantized_elements": quantized,
                "float32_elements": kept, "safetensors_sha256": files}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def unpack(archive_dir: Path, out_dir: Path) -> Path:
    """Write the float32 diffusers directory of ``archive_dir`` into ``out_dir`` (checked against the manifest)."""
    archive_dir, out_dir = Path(archive_dir), Path(out_dir)
    manifest_file = archive_dir / MANIFEST
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{archive_dir} has no {MANIFEST}: not a base archive (make one with solrl base pack)")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_file}: format {manifest.get('format')!r}, this version reads {FORMAT!r}")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it or choose another --out")
    for src, rel, dst in _mirror(archive_dir, out_dir, skip=MANIFEST):
        expected = manifest["safetensors_sha256"].get(str(rel))
        if expected != _sha256(src):
            raise ValueError(f"{src} does not match the archive's checksum: the archive is damaged or edited")
        tensors = load_file(src)
        weights = {}
        for name, tensor in tensors.items():
            if name.endswith(_SCALE):
                continue
            if name.endswith(_Q):
                base = name[: -len(_Q)]
                weights[base] = dequantize_rows(tensor, tensors[base + _SCALE])
            else:
                weights[name] = tensor
        save_file(weights, dst)
    return out_dir
