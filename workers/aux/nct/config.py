"""Config of aux.nct: Noise Consistency Training of a control adapter on a frozen one-step generator.

Defaults equal the ``quick`` preset. Pydantic only (the job registry imports this without torch).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel

Variant = Literal["nct", "no_consistency", "no_boundary", "fixed_lambda", "naive_denoising"]
IMAGE_SIZE = 16  # the digits one-step generator's resolution


class GeneratorSection(StrictModel):
    """The frozen one-step generator f_theta: a user directory, or ours distilled from the digits DDPM."""

    path: str | None = Field(None, description="A one-step generator directory (generator/ in diffusers "
                             "UNet2DModel layout + one_step.json); None distils ours from the shared DDPM (cached).")
    teacher: Literal["shared", "tiny"] = Field("shared", description="Teacher DDPM: the shared digits DDPM, or a "
                                               "tiny 100-step one (smoke tests only).")
    ddim_steps: int = Field(10, ge=1, le=1000, description="DDIM (eta=0) steps of the teacher's noise->image map.")
    num_pairs: int = Field(2048, ge=16, description="(z, DDIM(z)) pairs the student regresses onto.")
    train_steps: int = Field(600, ge=1, description="Regression steps of the one-step student.")


class ControlSection(StrictModel):
    """The condition model h(x) (the paper's p(c|x))."""

    kind: Literal["layout", "edges", "class"] = Field(
        "layout", description="layout: KxK average-pooled intensities; edges: Sobel magnitude map; class: argmax of "
        "the locally trained digits classifier.")
    layout_size: int = Field(4, ge=1, le=IMAGE_SIZE, description="K of the layout control (must divide 16).")


class NctSection(StrictModel):
    """The NCT objective (Alg. 1) and its primal-dual multiplier (Eq. 12)."""

    num_levels: int = Field(8, ge=1, le=1000, description="N: coupling levels 0 = t_0 < ... < t_N = 1, uniform in sigma.")
    distance: Literal["l2", "pseudo_huber"] = Field("l2", description="d of the losses (App. A Remark 1).")
    huber_c: float = Field(0.03, gt=0, description="c of the pseudo-Huber distance.")
    xi: float = Field(2e-3, ge=0, description="Constraint level: L_bound <= xi.")
    dual_lr: float = Field(50.0, ge=0, description="eta of the dual ascent lambda <- max(0, lambda + eta (L_bound - xi)).")
    lambda_init: float = Field(1.0, ge=0, description="Initial lambda (also the constant of the fixed_lambda ablation).")
    consistency_weight: float = Field(1.0, gt=0, description="Weight of L_con in the primal loss.")


class TrainSection(StrictModel):
    """Adapter training (the same budget for every variant)."""

    steps: int = Field(150, ge=1, description="Optimizer steps per variant.")
    batch_size: int = Field(48, ge=2, description="Coupled (z, c) pairs per step, drawn from f_theta and h only.")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate of the adapter.")
    ema_decay: float = Field(0.95, ge=0, lt=1, description="EMA of the adapter weights used for evaluation (0 = off).")
    hint_width: int = Field(16, ge=1, description="Channels of the adapter's hint encoder.")
    variants: tuple[Variant, ...] = Field(
        ("nct", "no_consistency", "no_boundary", "fixed_lambda", "naive_denoising"),
        description="Trained adapters: NCT, the Table-3 ablations and the naive denoising-loss adapter.")


class EvalSection(StrictModel):
    """Evaluation on independently drawn (z, c)."""

    num_samples: int = Field(512, ge=128, description="Samples per variant (c taken from other z's samples).")


class NctConfig(AuxConfig):
    """aux.nct: train a control adapter for a frozen one-step generator without data (NCT, NeurIPS 2025)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"generator": {"teacher": "tiny", "ddim_steps": 3, "num_pairs": 64, "train_steps": 10},
                  "train": {"steps": 3, "batch_size": 8, "variants": ["nct", "no_consistency", "naive_denoising"]},
                  "eval": {"num_samples": 128}},
        "quick": {},
        "full": {"train": {"steps": 300, "batch_size": 64}, "eval": {"num_samples": 1000}},
    }

    generator: GeneratorSection = Field(default_factory=GeneratorSection, description="The frozen one-step generator.")
    control: ControlSection = Field(default_factory=ControlSection, description="The condition model.")
    nct: NctSection = Field(default_factory=NctSection, description="The NCT objective.")
    train: TrainSection = Field(default_factory=TrainSection, description="Adapter training.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Evaluation.")

    @model_validator(mode="after")
    def _check(self) -> NctConfig:
        if IMAGE_SIZE % self.control.layout_size:
            raise ValueError(f"control.layout_size must divide the image size {IMAGE_SIZE}, "
                             f"got {self.control.layout_size}; use 1, 2, 4, 8 or 16")
        if not self.train.variants:
            raise ValueError("train.variants must name at least one variant, e.g. ['nct']")
        if len(set(self.train.variants)) != len(self.train.variants):
            raise ValueError(f"train.variants must not repeat a variant, got {list(self.train.variants)}")
        if "fixed_lambda" in self.train.variants and self.nct.lambda_init == 0:
            raise ValueError("nct.lambda_init must be > 0 when train.variants has 'fixed_lambda' "
                             "(a fixed lambda of 0 is the no_boundary ablation)")
        return self
