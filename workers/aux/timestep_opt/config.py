"""Config of aux.timestep_opt: optimised sampling time steps (Xue et al., CVPR 2024).

Pydantic only (the job registry imports this without torch). Field defaults equal the quick preset.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel

GridName = Literal["unif_t", "unif", "edm", "quad"]
Weight = Literal["sigma2_over_alpha", "sigma_over_alpha"]


class OptimizerSection(StrictModel):
    """The trust-region step optimiser (scipy ``trust-constr``)."""

    init: GridName = Field("unif", description="Starting grid: unif (uniform logSNR; the paper's pixel-space "
                           "choice), unif_t, edm (rho spacing), quad.")
    weight: Weight = Field("sigma2_over_alpha", description="Data-error weight w of the objective: sigma^2/alpha "
                           "(the official code's default) or sigma/alpha (its comment's pixel-space advice).")
    trunc_num: int | None = Field(3, ge=0, description="Steps below it use the per-step root-sum-square term, "
                                  "later ones the signed per-node sum; null = 3 for NFE <= 7 else 0.")
    max_order: int = Field(3, ge=1, le=3, description="Solver order of the pattern 1, 2, 3, ..., 3, 2, 1 "
                           "(3 = DPM-Solver++(3M) / UniPC-3).")
    max_iter: int = Field(1000, ge=1, description="trust-constr iteration cap (scipy's default 1000).")
    edm_rho: float = Field(7.0, gt=0, description="rho of the EDM baseline/initial grid.")
    ablate_weight: bool = Field(True, description="Also evaluate the grid optimised with the other weight.")


class EvalSection(StrictModel):
    """Which grids, solvers and step counts are compared (same noises for all)."""

    nfes: tuple[int, ...] = Field((5, 6, 8, 10), description="Numbers of function evaluations (= steps), "
                                  "each in 3..14 (the solvers drop to lower order at the end only below 15).")
    solvers: tuple[Literal["dpmsolver++", "unipc"], ...] = Field(
        ("dpmsolver++", "unipc"), description="diffusers multistep solvers run on the VP problems.")
    baselines: tuple[GridName, ...] = Field(("unif_t", "unif", "edm"), description="Baseline grids.")
    round_timesteps: bool = Field(True, description="Round the VP grids to the model's integer timesteps "
                                  "(fails loudly if that merges steps); false passes fractional timesteps.")


class ToySection(StrictModel):
    """2-D Gaussian-mixture ring under the DDPM's VP schedule, with the exact noise prediction as the model."""

    enabled: bool = Field(True, description="Run the VP Gaussian-mixture problem.")
    num_samples: int = Field(500, ge=16, description="Trajectories (same x_T for every grid).")
    reference_steps: int = Field(300, ge=20, description="Steps of the DPM-Solver++(3M) reference solution.")
    metric_samples: int = Field(2000, ge=16, description="Held-out data samples of the sliced-Wasserstein metric.")
    modes: int = Field(8, ge=1, description="Mixture components on the ring.")
    radius: float = Field(2.0, gt=0, description="Ring radius.")
    std: float = Field(0.05, gt=0, description="Component standard deviation.")


class FlowSection(StrictModel):
    """The same mixture as a flow-matching problem (sigma = t) on the RL sampler ``workers.sampling.sample``."""

    enabled: bool = Field(True, description="Run the flow-matching Gaussian-mixture problem.")
    solvers: tuple[Literal["euler", "dpm2"], ...] = Field(("dpm2", "euler"), description="Sampler solvers.")
    clip: float = Field(1e-3, gt=0, lt=0.5, description="The optimiser sees t in [clip, 1 - clip] "
                        "(lambda is infinite at 0 and 1).")
    shift: float = Field(3.0, gt=0, description="SD3 shift of the shifted-grid baseline.")
    reference_steps: int = Field(500, ge=20, description="dpm2 steps of the reference solution.")


class DigitsSection(StrictModel):
    """The shared 16x16 digits DDPM (diffusers UNet2DModel + DDPMScheduler), or a published DDPM directory."""

    enabled: bool = Field(True, description="Run the DDPM problem.")
    num_samples: int = Field(16, ge=2, description="Sampled images (same x_T for every grid).")
    reference_steps: int = Field(60, ge=20, description="Steps of the DPM-Solver++(3M) reference solution.")
    model_path: str | None = Field(None, description="A local diffusers DDPM directory (unet/ + scheduler/ or "
                                   "config.json + scheduler_config.json); null = the cached digits DDPM.")
    frechet: bool = Field(True, description="Also report the Frechet distance to the held-out test digits "
                          "(only for the digits DDPM).")


class TimestepOptConfig(AuxConfig):
    """aux.timestep_opt: optimise the time steps, then compare grids at equal NFE from the same noises."""

    optimizer: OptimizerSection = Field(default_factory=OptimizerSection, description="Step optimiser.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Grids, solvers and NFEs.")
    toy: ToySection = Field(default_factory=ToySection, description="VP Gaussian-mixture problem.")
    flow: FlowSection = Field(default_factory=FlowSection, description="Flow-matching Gaussian-mixture problem.")
    digits: DigitsSection = Field(default_factory=DigitsSection, description="Digits DDPM problem.")

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"eval": {"nfes": [5]}, "optimizer": {"max_iter": 300},
                  "toy": {"num_samples": 64, "reference_steps": 40, "metric_samples": 128},
                  "flow": {"solvers": ["dpm2"], "reference_steps": 40}, "digits": {"enabled": False}},
        "quick": {},
        "full": {"toy": {"num_samples": 2000, "reference_steps": 1000, "metric_samples": 4000},
                 "flow": {"reference_steps": 1000},
                 "digits": {"num_samples": 64, "reference_steps": 150}},
    }

    @model_validator(mode="after")
    def _cross_field(self) -> TimestepOptConfig:
        if not self.eval.nfes:
            raise ValueError("eval.nfes must list at least one NFE")
        if len(set(self.eval.nfes)) != len(self.eval.nfes):
            raise ValueError(f"eval.nfes must not repeat a value, got {list(self.eval.nfes)}")
        bad = [n for n in self.eval.nfes if not 3 <= n <= 14]
        if bad:
            raise ValueError(f"eval.nfes must be in 3..14 (the assumed order pattern 1, 2, 3, ..., 2, 1 holds "
                             f"below 15 steps), got {bad}")
        if not (self.toy.enabled or self.flow.enabled or self.digits.enabled):
            raise ValueError("toy.enabled, flow.enabled and digits.enabled are all false: enable a problem")
        if (self.toy.enabled or self.digits.enabled) and not self.eval.solvers:
            raise ValueError("eval.solvers must list a solver when a VP problem (toy, digits) is enabled")
        if self.flow.enabled and not self.flow.solvers:
            raise ValueError("flow.solvers must list a solver when flow.enabled is true")
        for name, section in (("toy", self.toy), ("flow", self.flow), ("digits", self.digits)):
            if section.enabled and section.reference_steps <= 2 * max(self.eval.nfes):
                raise ValueError(f"{name}.reference_steps ({section.reference_steps}) must exceed twice the "
                                 f"largest NFE ({max(self.eval.nfes)}) to serve as the reference solution")
        return self
