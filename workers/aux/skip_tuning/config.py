"""Config of aux.skip_tuning: Skip-Tuning of a UNet's decoder skips (Ma et al., ICML 2024, arXiv 2402.15170).

Pydantic only (no torch): the job registry imports this on machines without torch. The field defaults
equal the ``quick`` preset.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel

SamplerName = Literal["ddim", "dpmsolver++"]
Rho = Annotated[float, Field(gt=0.0, le=2.0)]
Nfe = Annotated[int, Field(ge=1, le=100)]


class ModelSection(StrictModel):
    path: str | None = Field(None, description="A diffusers DDPM directory (unet/ with a UNet2DModel and "
                             "scheduler/) to tune instead of the shared digits DDPM; null = the shared one.")
    train_steps: int = Field(2000, ge=1, description="Training steps of the shared 16x16 digits DDPM "
                             "(common/ddpm.py; cached per spec). Ignored when model.path is set.")


class SamplingSection(StrictModel):
    samplers: list[SamplerName] = Field(["ddim", "dpmsolver++"], min_length=1, description="Deterministic "
                                        "samplers (diffusers DDIMScheduler eta=0, DPMSolverMultistepScheduler "
                                        "2M); each (sampler, NFE) pair is one arm with its own rho search.")
    nfe: list[Nfe] = Field([5], min_length=1, description="Numbers of network evaluations per sample "
                           "(the paper's regime is few steps; the brief asks for 5-10).")
    batch_size: int = Field(256, ge=1, description="Samples per UNet call (the same chunking in every arm).")


class SearchSection(StrictModel):
    rho_grid: list[Rho] = Field([0.8, 0.9, 1.0], min_length=1, description="Values tried for both rho_top "
                                "and rho_bottom (the full grid of pairs); must contain 1.0 (the baseline).")
    num_samples: int = Field(128, ge=8, description="Samples of seed set A, on which the grid is scored "
                             "(Frechet distance to the test split).")


class EvalSection(StrictModel):
    num_samples: int = Field(256, ge=8, description="Samples of the disjoint seed set B on which the chosen "
                             "rho and the baseline are reported.")
    bootstrap: int = Field(200, ge=10, description="Bootstrap resamples of set B for the confidence intervals.")
    ci: float = Field(0.95, gt=0.0, lt=1.0, description="Confidence level of the bootstrap intervals.")


class LossSection(StrictModel):
    num_images: int = Field(64, ge=2, description="Test-split images used for the denoising loss vs rho.")
    timesteps: list[Annotated[int, Field(ge=0)]] = Field([100, 400, 700], min_length=1,
                                                         description="Training timesteps t at which the "
                                                         "loss is measured (must be < the model's T).")
    rho_values: list[Rho] = Field([0.7, 0.8, 0.9, 1.0], min_length=1, description="Uniform rho "
                                  "(rho_top = rho_bottom) values of the loss sweep; must contain 1.0. The "
                                  "tuned pairs of every arm are added.")


class SkipTuningConfig(AuxConfig):
    """aux.skip_tuning: search (rho_top, rho_bottom) on seed set A, report FD on seed set B vs rho = (1, 1)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"model": {"train_steps": 60},
                  "sampling": {"samplers": ["ddim"], "nfe": [3], "batch_size": 64},
                  "search": {"rho_grid": [0.8, 1.0], "num_samples": 32},
                  "eval": {"num_samples": 48, "bootstrap": 20},
                  "loss": {"num_images": 16, "timesteps": [300], "rho_values": [0.8, 1.0]}},
        "quick": {},
        "full": {"sampling": {"nfe": [5, 10]},
                 "search": {"rho_grid": [0.7, 0.8, 0.9, 1.0, 1.05], "num_samples": 128},
                 "eval": {"num_samples": 512, "bootstrap": 500},
                 "loss": {"num_images": 256, "timesteps": [50, 200, 400, 600, 800],
                          "rho_values": [0.6, 0.7, 0.8, 0.9, 1.0, 1.05]}},
    }

    model: ModelSection = Field(default_factory=ModelSection, description="The pretrained DDPM to tune.")
    sampling: SamplingSection = Field(default_factory=SamplingSection, description="Samplers and NFE (arms).")
    search: SearchSection = Field(default_factory=SearchSection, description="The rho grid search on set A.")
    eval: EvalSection = Field(default_factory=EvalSection, description="The report on set B.")
    loss: LossSection = Field(default_factory=LossSection, description="Denoising loss vs rho (pixel, feature).")

    @model_validator(mode="after")
    def _check(self) -> SkipTuningConfig:
        if 1.0 not in self.search.rho_grid:
            raise ValueError(f"search.rho_grid must contain 1.0 (the baseline rho = (1, 1)), got {self.search.rho_grid}")
        if 1.0 not in self.loss.rho_values:
            raise ValueError(f"loss.rho_values must contain 1.0 (the baseline), got {self.loss.rho_values}")
        for name, values in (("search.rho_grid", self.search.rho_grid), ("sampling.nfe", self.sampling.nfe),
                             ("sampling.samplers", self.sampling.samplers), ("loss.timesteps", self.loss.timesteps)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat values, got {values}")
        return self
