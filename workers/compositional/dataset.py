"""Training batches of the compositional dataset: (caption, rendered image) pairs, a pure function of (seed, step).

Captions are drawn category first (uniform over the six categories), then uniformly within the category,
from the captions given (the train split for pretraining), so small categories (5 single-object captions)
weigh as much as large ones (600 colour-attribution captions). Each image is a fresh scene for its caption,
so the data never repeats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workers.compositional.captions import parse_caption
from workers.compositional.scenes import render_scenes, sample_scene
from workers.compositional.vocabulary import CATEGORIES


class SceneStream:
    """Batches of captions and their rendered scenes (see the module docstring)."""

    def __init__(self, captions: Sequence[str], *, image_size: int, seed: int, supersample: int = 4,
                 device: torch.device | str = "cpu") -> None:
        if not captions:
            raise ValueError("SceneStream needs at least one caption")
        self.groups: list[list[str]] = [[] for _ in CATEGORIES]
        for text in captions:
            self.groups[CATEGORIES.index(parse_caption(text).category)].append(text)
        self.groups = [g for g in self.groups if g]
        self.image_size = image_size
        self.seed = seed
        self.supersample = supersample
        self.device = device

    def captions(self, step: int, size: int) -> tuple[list[str], np.random.Generator]:
        rng = np.random.default_rng([self.seed, step])
        groups = rng.integers(len(self.groups), size=size)
        return [self.groups[g][int(rng.integers(len(self.groups[g])))] for g in groups], rng

    def batch(self, step: int, size: int) -> tuple[list[str], torch.Tensor]:
        """``size`` captions and their images in [0, 1] ``[size, 3, H, W]`` on the stream's device."""
        captions, rng = self.captions(step, size)
        scenes = [sample_scene(c, rng) for c in captions]
        return captions, render_scenes(scenes, self.image_size, supersample=self.supersample, device=self.device)

    def images(self, step: int, size: int) -> torch.Tensor:
        """Only the images of :meth:`batch` (an ``ImageSource`` for the VAE fit)."""
        return self.batch(step, size)[1]
