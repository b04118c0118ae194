"""Two learners' runs compared step by step (compiled or checkpointed against eager): shared by their tests."""

from __future__ import annotations

import pytest
import torch

from workers.learner import Learner, TrainBatch


def train_three_steps(learner: Learner, batch: TrainBatch) -> tuple[list[dict[str, float]], list[torch.Tensor]]:
    """Metrics of three steps and the trained parameters after them."""
    metrics = [learner.train_step(batch, iteration) for iteration in range(3)]
    return metrics, [p.detach().clone() for p in learner.trainable]


def assert_same_steps(reference: tuple, other: tuple, *, loss_rel: float, grad_rel: float) -> None:
    for ref, got in zip(reference[0], other[0], strict=True):
        assert got["loss"] == pytest.approx(ref["loss"], rel=loss_rel)
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=grad_rel)
    assert max(float((a - b).abs().max()) for a, b in zip(reference[1], other[1], strict=True)) < 1e-6
    assert any(float(p.abs().max()) > 0 for p in other[1])  # the LoRA moved: the check is not vacuous
