"""The learner with gradient checkpointing (``train.gradient_checkpointing``) against without, on the CPU.

Backward recomputes each block's forward; the recomputation must see the adapter that was differentiated (the
trained one), not the old or reference state the loss also evaluates. Both objectives, float32: the updates
must match to rounding.
"""

from __future__ import annotations

import pytest
import torch

from tests.integration.learner_runs import assert_same_steps, train_three_steps
from workers.learner import Learner, LearnerSettings, TrainBatch
from workers.models.loading import load_model
from workers.models.tiny import ensure_tiny_model
from workers.sampling import flow_sigmas


def _batch(adapter, objective: str) -> TrainBatch:
    gen = torch.Generator().manual_seed(0)
    cond = adapter.encode_prompts(["a red circle", "two squares"]).index([0, 1, 0, 1])
    sigmas = flow_sigmas(6)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    if objective == "nft":
        return TrainBatch(cond, torch.randn(4, 4, 8, 8, generator=gen), advantages, sigmas)
    trajectory = torch.randn(4, len(sigmas), 4, 8, 8, generator=gen)
    return TrainBatch(cond, trajectory[:, -1], advantages, sigmas, trajectory_BSCHW=trajectory,
                      log_probs_BT=torch.randn(4, 2, generator=gen), stochastic_steps=[1, 2])


@pytest.mark.parametrize("objective", ["nft", "grpo"])
def test_checkpointed_learner_takes_the_same_steps(tiny_root, objective):
    adapter = load_model(ensure_tiny_model("sd3", tiny_root), height=32, width=32, max_sequence_length=8,
                         dtype=torch.float32)
    batch = _batch(adapter, objective)
    runs = {}
    for checkpointing in (False, True):
        settings = LearnerSettings(objective=objective, micro_batch_size=2, lora_rank=4, lora_alpha=8,
                                   gradient_checkpointing=checkpointing)
        learner = Learner(adapter, settings, seed=0)
        assert learner.transformer.gradient_checkpointing is checkpointing
        runs[checkpointing] = train_three_steps(learner, batch)
    assert_same_steps(runs[False], runs[True], loss_rel=1e-5, grad_rel=1e-5)


def test_gradient_checkpointing_on_a_model_without_it_names_the_field(tiny_root):
    adapter = load_model(ensure_tiny_model("sd3", tiny_root), height=32, width=32, max_sequence_length=8,
                         dtype=torch.float32)
    adapter.transformer._supports_gradient_checkpointing = False  # as a model class without the support says
    try:
        with pytest.raises(ValueError, match="train.gradient_checkpointing"):
            Learner(adapter, LearnerSettings(lora_rank=4, lora_alpha=8, gradient_checkpointing=True), seed=0)
    finally:
        adapter.transformer._supports_gradient_checkpointing = True
