"""Every method of the loop runs end to end for a few iterations (the baselines are settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.config import load_config
from orchestration.pipeline import TwoStagePipeline

CONFIGS = Path(__file__).parents[2] / "configs"
SMALL = ["prompts.per_iteration=2", "train.micro_batch_size=16"]


@pytest.mark.parametrize("method", ["diffusionnft", "naive_scaling", "naive_quant", "flow_grpo"])
def test_baseline_iterations(tiny_root, method):
    cfg = load_config(CONFIGS / "baselines" / f"{method}.yaml", SMALL)
    pipeline = TwoStagePipeline(cfg)
    for it in range(2):
        metrics = pipeline.run_iteration(it)
        assert metrics["policy_version"] == it
    assert pipeline.learner.step == 2
    assert all(w.version == 2 for w in pipeline._samplers())
    if method == "flow_grpo":
        assert metrics["train_timesteps"] == cfg.train.grpo.sde_window_size
        assert 0.0 <= metrics["clip_fraction"] <= 1.0
    if method in ("naive_scaling", "naive_quant"):
        assert "proxy_reward_mean" in metrics and "fidelity_spearman" not in metrics


def test_solrl_trains_only_on_bf16_regenerations(tiny_root):
    cfg = load_config(CONFIGS / "quickstart.yaml", SMALL)
    pipeline = TwoStagePipeline(cfg)
    metrics = pipeline.run_iteration(0)
    assert pipeline.stage1 is not None and pipeline.stage1.precision == "nvfp4"
    assert pipeline.regen.precision == "bf16" and not pipeline.regen.report.swapped
    # Stage 2 ran (BF16 regeneration) and its rewards, not the proxy's, are the training rewards.
    assert metrics["stage2_seconds"] > 0
    assert metrics["reward_mean"] != metrics["proxy_reward_selected_mean"]


def test_full_finetuning_option(tiny_root):
    cfg = load_config(CONFIGS / "quickstart.yaml", [*SMALL, "lora.enabled=false", "rollout.num_candidates=8",
                                                   "regen.num_selected=4"])
    pipeline = TwoStagePipeline(cfg)
    before = {k: v.clone() for k, v in pipeline.learner.transformer.state_dict().items()}
    metrics = pipeline.run_iteration(0)
    after = pipeline.learner.transformer.state_dict()
    changed = [k for k in before if not __import__("torch").equal(before[k], after[k])]
    assert metrics["grad_norm"] > 0 and len(changed) > 10  # all weights train, not only attention
    assert pipeline.regen.version == 1 and pipeline.stage1.version == 1
