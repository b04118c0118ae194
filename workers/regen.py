"""Stage 2: the BF16 regeneration worker.

It re-samples the selected candidates from the same seeds with the full step budget in BF16;
these samples (and their rewards) are the only ones the learner trains on. For GRPO it also
keeps the SDE trajectory and per-step log-probs the loss needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from workers.generation import Generation, PolicyCopy, SamplingSettings
from workers.models.base import Conditioning, ModelAdapter


class RegenWorker(PolicyCopy):
    def __init__(self, adapter: ModelAdapter, *, settings: SamplingSettings, batch_size: int) -> None:
        super().__init__(adapter, "bf16", batch_size=batch_size)
        self.settings = settings

    def regenerate(
        self,
        cond: Conditioning,
        seeds: Sequence[int],
        *,
        version: int,
        progress: Callable[[int], None] | None = None,
    ) -> Generation:
        return self.generate(cond, seeds, self.settings, version=version, progress=progress)
