"""Stage 1: the low-precision rollout worker that explores a large candidate pool cheaply.

Its samples only *select* (their rewards rank candidates); they never become training labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from workers.generation import Generation, PolicyCopy, SamplingSettings
from workers.models.base import Conditioning, ModelAdapter


class RolloutWorker(PolicyCopy):
    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        precision: str,
        settings: SamplingSettings,
        batch_size: int,
        min_dim: int | None = None,
    ) -> None:
        super().__init__(adapter, precision, batch_size=batch_size, min_dim=min_dim)
        self.settings = settings

    def explore(
        self,
        cond: Conditioning,
        seeds: Sequence[int],
        *,
        version: int,
        progress: Callable[[int], None] | None = None,
    ) -> Generation:
        return self.generate(cond, seeds, self.settings, version=version, progress=progress)
