"""The learner under torch.compile (what ``train.compile`` does on a GPU) against eager, on the CPU.

The compiled transformer switches between three adapter states (trained, old, reference) inside each
micro-step; dynamo must keep one graph per state and give the eager updates. Float32 on the CPU, so the
comparison is tight. Needs a C compiler (inductor's CPU backend).
"""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.integration.learner_runs import assert_same_steps, train_three_steps
from workers.learner import Learner, LearnerSettings, TrainBatch
from workers.models.loading import load_model
from workers.models.tiny import ensure_tiny_model
from workers.sampling import flow_sigmas

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="torch.compile on the CPU needs a C compiler (cc/gcc): none on PATH")


def test_compiled_learner_takes_the_eager_steps(tiny_root):
    adapter = load_model(ensure_tiny_model("sd3", tiny_root), height=32, width=32, max_sequence_length=8,
                         dtype=torch.float32)
    cond = adapter.encode_prompts(["a red circle", "two squares"]).index([0, 1, 0, 1])
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = TrainBatch(cond, latents, torch.tensor([1.0, -1.0, 0.5, -0.5]), flow_sigmas(6))
    runs = {}
    for compiled in (False, True):
        learner = Learner(adapter, LearnerSettings(micro_batch_size=4, lora_rank=4, lora_alpha=8), seed=0)
        if compiled:
            learner.transformer.compile()  # what LearnerSettings(compile=True) does on a GPU
        runs[compiled] = train_three_steps(learner, batch)
    assert_same_steps(runs[False], runs[True], loss_rel=1e-5, grad_rel=1e-4)
