"""Options for building a model-based reward (``REWARD_BUILDERS`` in ``registry.py``).

Pure rewards (``REWARDS``) are plain functions and take no options. A model-based reward is built once from a
:class:`RewardOptions` (which local directory, which device, how many images per forward pass, plus
reward-specific keys in ``extra``) and then called like a pure one: (images [B, 3, H, W], prompts) -> [B].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["RewardOptions"]


@dataclass(frozen=True)
class RewardOptions:
    """How to build one model-based reward.

    Attributes:
        path: local directory holding the reward model (layout per reward: see each builder's docstring).
            Nothing is downloaded: weights load with ``local_files_only=True``. ``None`` for rewards that need
            no files (``vlm_judge``).
        device: torch device string the model is moved to once, e.g. ``"cpu"`` or ``"cuda:0"``. Scores come back
            on the images' device.
        batch_size: images per forward pass; a larger reward batch is split into chunks of this size so peak
            memory is bounded (ViT-H at 224 px is about 1 GB of activations per 64 images in fp32).
        extra: reward-specific keys (``vlm_judge``: ``base_url``, ``model``, ...). A reward rejects keys it does
            not know, naming the valid ones, so a misspelled key fails instead of being ignored.
    """

    path: str | None = None
    device: str = "cpu"
    batch_size: int = 16
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path is not None and not isinstance(self.path, str):
            # Accept pathlib.Path by value but store a str so the dataclass stays hashable and printable.
            object.__setattr__(self, "path", str(self.path))
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"RewardOptions.device must be a device string like 'cpu' or 'cuda:0', got {self.device!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"RewardOptions.batch_size must be an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.extra, Mapping):
            raise ValueError(f"RewardOptions.extra must be a mapping, got {type(self.extra).__name__}")
        # Read-only copy: options are shared between the builder and whoever logs them.
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def check_extra(self, reward: str, allowed: tuple[str, ...] = ()) -> None:
        """Raise ValueError if ``extra`` holds a key that reward ``reward`` does not take."""
        unknown = sorted(set(self.extra) - set(allowed))
        if unknown:
            valid = ", ".join(allowed) if allowed else "none (this reward takes no extra options)"
            raise ValueError(f"reward {reward!r}: unknown RewardOptions.extra key(s) {unknown}; valid keys: {valid}")
