"""Save and load a pretrained Graffe encoder: a directory with ``encoder_config.json`` and ``encoder.pt``.

The config holds the ``EncoderSpec`` (kind gat/gin, widths, layers, heads), so the frozen encoder can
be rebuilt for probing without the experiment's config.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from workers.aux.graffe.encoders import EncoderSpec, GatEncoder, GinEncoder, build_encoder

CONFIG_NAME = "encoder_config.json"
WEIGHTS_NAME = "encoder.pt"


def save_encoder(encoder: GatEncoder | GinEncoder, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(json.dumps(encoder.spec.to_dict(), indent=2) + "\n")
    torch.save(encoder.state_dict(), path / WEIGHTS_NAME)
    return path


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> GatEncoder | GinEncoder:
    """The encoder saved by ``save_encoder`` at ``path``, in eval mode."""
    path = Path(path)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a Graffe encoder checkpoint: missing {', '.join(missing)}. Point it at a directory "
            f"written by workers.aux.graffe.checkpoint.save_encoder (it holds {CONFIG_NAME} and {WEIGHTS_NAME}).")
    raw = json.loads((path / CONFIG_NAME).read_text())
    try:
        spec = EncoderSpec(**raw)
    except TypeError as err:
        raise ValueError(f"{path / CONFIG_NAME} does not describe an EncoderSpec ({err}); re-save the encoder "
                         f"with save_encoder") from None
    if spec.kind not in ("gat", "gin"):
        raise ValueError(f"{path / CONFIG_NAME}: kind must be 'gat' or 'gin', got {spec.kind!r}")
    encoder = build_encoder(spec, seed=0)
    encoder.load_state_dict(torch.load(path / WEIGHTS_NAME, map_location="cpu", weights_only=True))
    return encoder.to(device).eval()
