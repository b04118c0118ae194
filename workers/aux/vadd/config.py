"""Config of aux.vadd: VADD (latent-variable masked diffusion) against MDLM on the same backbone and budget."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel


class ModelSection(StrictModel):
    dim: int = Field(64, ge=8, description="Transformer width of the denoiser (and the recognition model).")
    n_layers: int = Field(2, ge=1, description="Denoiser blocks (bidirectional, RoPE, SwiGLU, AdaLN).")
    n_heads: int = Field(4, ge=1, description="Attention heads; must divide dim.")
    latent_dim: int = Field(8, ge=1, description="Dimension d of VADD's latent z (the paper's toy uses 8).")
    enc_layers: int = Field(1, ge=1, description="Blocks of the recognition model r(z | x0, M_t).")


class TrainSection(StrictModel):
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate (warm-up, then cosine to 10%).")
    kl_anneal_fraction: float = Field(0.5, ge=0, le=1, description="Fraction of training over which the "
                                      "KL weight lambda rises linearly from 0 to 1 (0: lambda = 1 throughout).")


class CheckerboardSection(StrictModel):
    enabled: bool = Field(True, description="Run the tokenised 2-D checkerboard experiment.")
    bins: int = Field(64, ge=4, description="Bins per coordinate: 2 tokens with a vocabulary of `bins`.")
    cells: int = Field(4, ge=2, description="Checkerboard cells per side (even); bins must be a multiple.")
    train_steps: int = Field(500, ge=1, description="Optimizer steps of each model (MDLM and VADD alike).")
    batch_size: int = Field(256, ge=2, description="Fresh samples per step.")
    eval_samples: int = Field(10000, ge=100, description="Samples per model and step count for the JS histograms.")
    steps: list[int] = Field([1, 2, 5, 10], min_length=1, description="Sampling steps K evaluated.")


class DigitsSection(StrictModel):
    enabled: bool = Field(True, description="Run the scikit-learn digits experiment (64 pixels, 17 grey levels).")
    train_steps: int = Field(150, ge=1, description="Optimizer steps of each model.")
    batch_size: int = Field(32, ge=2, description="Training images per step (drawn from the train split).")
    eval_samples: int = Field(100, ge=20, description="Generated digits per model and step count.")
    steps: list[int] = Field([1, 4, 16], min_length=1, description="Sampling steps K evaluated.")
    bpd_times: int = Field(2, ge=1, description="Draws of (t, x_t) per test image for the likelihood bounds.")
    iw_samples: int = Field(4, ge=1, description="Importance samples of z for VADD's IW-DELBO "
                            "(the paper uses 1000).")
    bpd_images: int = Field(50, ge=10, description="Test images for the likelihood bounds.")


class VaddConfig(AuxConfig):
    """aux.vadd: MDLM vs VADD on the tokenised checkerboard (JS vs steps) and digits (Frechet distance, BPD)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"model": {"dim": 16, "n_layers": 1, "latent_dim": 2},
                  "checkerboard": {"train_steps": 4, "batch_size": 16, "eval_samples": 200, "steps": [1, 2],
                                   "bins": 8},
                  "digits": {"train_steps": 3, "batch_size": 8, "eval_samples": 20, "steps": [1, 2],
                             "bpd_times": 1, "iw_samples": 2, "bpd_images": 10}},
        "quick": {},
        "full": {"checkerboard": {"train_steps": 1500, "eval_samples": 50000},
                 "digits": {"train_steps": 600, "eval_samples": 300, "steps": [1, 2, 4, 8, 16, 64],
                            "bpd_times": 4, "iw_samples": 16, "bpd_images": 200}},
    }

    model: ModelSection = Field(default_factory=ModelSection, description="Shared backbone sizes.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimiser and KL annealing.")
    checkerboard: CheckerboardSection = Field(default_factory=CheckerboardSection,
                                              description="The 2-D checkerboard experiment.")
    digits: DigitsSection = Field(default_factory=DigitsSection, description="The digits experiment.")
    cpu_threads: int = Field(1, ge=0, description="torch CPU threads during the run (0: torch's default). "
                             "1 avoids thread thrash on a shared 2-core machine.")

    @model_validator(mode="after")
    def _check(self) -> VaddConfig:
        if self.model.dim % self.model.n_heads or (self.model.dim // self.model.n_heads) % 2:
            raise ValueError(f"model.n_heads={self.model.n_heads} must divide model.dim={self.model.dim} "
                             "into an even head width (RoPE rotates pairs)")
        cb = self.checkerboard
        if cb.cells % 2 or cb.bins % cb.cells:
            raise ValueError(f"checkerboard.bins={cb.bins} must be a multiple of checkerboard.cells={cb.cells}, "
                             "which must be even")
        for name, steps in (("checkerboard.steps", cb.steps), ("digits.steps", self.digits.steps)):
            if min(steps) < 1:
                raise ValueError(f"{name} must be >= 1, got {steps}")
        if not (cb.enabled or self.digits.enabled):
            raise ValueError("checkerboard.enabled and digits.enabled are both false: nothing to run")
        return self
