"""sampler.grid: the RL sampler's optimized-time-steps option (aux.timestep_opt's grid)."""

from __future__ import annotations

import pytest
import torch

from orchestration.config import ConfigError, parse_config
from orchestration.roles import stage_settings
from workers.aux.timestep_opt.flow import optimized_flow_sigmas
from workers.generation import SamplingSettings, sampling_sigmas
from workers.sampling import flow_sigmas


def test_default_grid_is_the_shifted_uniform_one():
    settings = SamplingSettings(num_steps=6, solver="dpm2", shift=3.0)
    assert torch.equal(sampling_sigmas(settings), flow_sigmas(6, 3.0))


def test_optimized_grid_reaches_every_stage_and_is_the_optimizer_s():
    cfg = parse_config({"sampler": {"grid": "optimized", "solver": "dpm2"}, "rollout": {"num_steps": 5}})
    for stage in ("stage1", "regen", "eval"):
        settings = stage_settings(cfg, stage)
        assert settings.grid == "optimized"
        sigmas = sampling_sigmas(settings)
        assert torch.equal(sigmas, optimized_flow_sigmas(settings.num_steps, "dpm2"))
        assert not torch.equal(sigmas, flow_sigmas(settings.num_steps))  # the optimizer moved the grid
        assert sigmas[0] == 1 and sigmas[-1] == 0 and bool(torch.all(sigmas[1:] < sigmas[:-1]))


@pytest.mark.parametrize("changes", [{"sampler": {"grid": "optimized", "shift": 3.0}},
                                     {"method": "flow_grpo", "sampler": {"grid": "optimized"},
                                      "rollout": {"num_candidates": 8}, "regen": {"num_selected": 8}}])
def test_optimized_grid_refuses_what_it_was_not_computed_for(changes):
    with pytest.raises(ConfigError, match="sampler.grid"):
        parse_config(changes)
