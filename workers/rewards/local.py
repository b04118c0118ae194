"""Loading reward models from local directories only, with errors that say which layout was expected.

Nothing here downloads: every ``from_pretrained`` call passes ``local_files_only=True``, so a missing file
fails at once with a ValueError naming the reward, the path and the expected layout (instead of a hub lookup
that would hang or fail obscurely on a machine without network).

transformers is imported inside the functions: ``workers.rewards`` is imported by config validation, which
only needs the reward names, and importing the CLIP/BLIP modelling code costs seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from workers.rewards.options import RewardOptions
from workers.rewards.preprocess import Geometry, ImagePreprocess

__all__ = [
    "WEIGHT_FILES",
    "load_head_weights",
    "load_pretrained",
    "load_tokenizer",
    "read_image_preprocess",
    "require_local_dir",
    "run_in_chunks",
]

# Any one of these holds a transformers model's weights (single file or sharded, safetensors or torch).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def require_local_dir(
    reward: str, options: RewardOptions, layout: str, files: tuple[str, ...] = (), model_type: str | None = None
) -> Path:
    """Check ``options.path`` is a local directory holding ``files`` and transformers weights; return it.

    Args:
        reward: reward name, for the error message.
        options: the reward's options; ``options.path`` is checked.
        layout: human description of the expected directory layout, quoted in every error.
        files: files that must exist directly under the directory.
        model_type: if given, ``config.json``'s ``model_type`` must equal it (catches pointing ``pickscore`` at
            a BLIP directory, say, before transformers fails with a shape error).
    """
    if options.path is None:
        raise ValueError(f"reward {reward!r} needs RewardOptions.path: a local directory with {layout}")
    root = Path(options.path).expanduser()
    if not root.is_dir():
        raise ValueError(f"reward {reward!r}: path {str(root)!r} is not a directory; expected a local directory with {layout}")
    missing = [name for name in ("config.json", *files) if not (root / name).is_file()]
    if not any((root / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ValueError(f"reward {reward!r}: {str(root)!r} lacks {missing}; expected a local directory with {layout}")
    if model_type is not None:
        found = _read_json(reward, root / "config.json", layout).get("model_type")
        if found != model_type:
            raise ValueError(
                f"reward {reward!r}: {str(root / 'config.json')!r} has model_type {found!r}, expected {model_type!r}; "
                f"expected a local directory with {layout}"
            )
    return root


def _read_json(reward: str, path: Path, layout: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"reward {reward!r}: cannot read {str(path)!r} ({err}); expected {layout}") from err
    if not isinstance(data, dict):
        raise ValueError(f"reward {reward!r}: {str(path)!r} is not a JSON object; expected {layout}")
    return data


def read_image_preprocess(reward: str, root: Path, size: int, geometry: Geometry, layout: str) -> ImagePreprocess:
    """The preprocessing for a model in ``root``: its ``image_mean``/``image_std`` from ``preprocessor_config.json``
    (CLIPImageProcessor format), the vision tower's input ``size`` and the reward's ``geometry``.

    The processor's own resize settings are not read: every supported reward resizes bicubically to the vision
    tower's input size, and taking that size from the model config keeps the two from disagreeing.
    """
    config = _read_json(reward, root / "preprocessor_config.json", layout)
    try:
        mean = tuple(float(v) for v in config["image_mean"])
        std = tuple(float(v) for v in config["image_std"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"reward {reward!r}: {str(root / 'preprocessor_config.json')!r} needs image_mean and image_std "
            f"(3 numbers each); expected {layout}"
        ) from err
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"reward {reward!r}: image_mean/image_std in {str(root)!r} must have 3 values each")
    return ImagePreprocess(size=size, mean=mean, std=std, geometry=geometry)  # type: ignore[arg-type]


def load_pretrained(reward: str, model_cls: Any, root: Path, device: str, layout: str) -> Any:
    """``model_cls.from_pretrained(root, local_files_only=True)`` in float32 and eval mode, frozen, on ``device``."""
    try:
        model = model_cls.from_pretrained(str(root), local_files_only=True)
    except Exception as err:  # any loader failure (corrupt file, shape mismatch, ...) becomes one clear error
        raise ValueError(
            f"reward {reward!r}: cannot load {model_cls.__name__} from {str(root)!r} ({err}); expected {layout}"
        ) from err
    # Scored in float32 whatever the checkpoint stores (HPS_v2.1_compressed is fp16): rewards rank candidates
    # whose scores can differ in the third decimal, below fp16/bf16 resolution at these magnitudes.
    return model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def load_tokenizer(reward: str, root: Path, layout: str) -> Any:
    """The tokenizer saved in ``root`` (``AutoTokenizer``, local files only)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except Exception as err:  # as in load_pretrained: wrap whatever the loader raised, keeping it as the cause
        raise ValueError(f"reward {reward!r}: cannot load a tokenizer from {str(root)!r} ({err}); expected {layout}") from err


def load_head_weights(reward: str, head: nn.Module, path: Path, device: str, layout: str) -> nn.Module:
    """Load a safetensors state dict into ``head`` strictly (every key present, none extra); frozen, eval, on ``device``."""
    if not path.is_file():
        raise ValueError(f"reward {reward!r}: {str(path)!r} is missing; expected {layout}")
    try:
        state = load_file(str(path))
        head.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except Exception as err:  # corrupt file (SafetensorError) or wrong keys/shapes (RuntimeError)
        raise ValueError(f"reward {reward!r}: cannot load head weights from {str(path)!r} ({err}); expected {layout}") from err
    return head.to(device).eval().requires_grad_(False)


def run_in_chunks(
    score_chunk: Callable[[Tensor, list[str]], Tensor], images_B3HW: Tensor, prompts: list[str], batch_size: int
) -> Tensor:
    """Call ``score_chunk`` on consecutive chunks of at most ``batch_size`` images; concatenate to float32 [B]."""
    chunks = [
        score_chunk(images_B3HW[start : start + batch_size], prompts[start : start + batch_size]).float()
        for start in range(0, images_B3HW.shape[0], batch_size)
    ]
    if not chunks:
        return torch.zeros(0, dtype=torch.float32, device=images_B3HW.device)
    return torch.cat(chunks).to(images_B3HW.device)
