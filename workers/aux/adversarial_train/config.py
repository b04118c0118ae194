"""Config of aux.adversarial_train: adversarial fine-tuning of an epsilon-prediction DPM and a
consistency-distilled model against the training/sampling distribution mismatch (ICLR 2025,
arXiv 2502.17099). Pydantic only: the job registry imports this without torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel

Arm = Literal["standard", "at", "ip", "replay"]
Sampler = Literal["ddim", "dpmsolver++"]


class BaseSection(StrictModel):
    """The pretrained DPM every arm starts from."""

    path: str | None = Field(None, description="A local diffusers DDPM directory (unet/ and scheduler/, "
                             "epsilon prediction, 1 channel, 16x16). None: the shared digits DDPM of "
                             "workers.aux.common.ddpm, trained and cached on first use.")
    channels: tuple[int, ...] = Field((16, 32, 64), min_length=1, description="Block widths of the shared "
                                      "digits DDPM (ignored when path is set).")
    train_steps: int = Field(2000, ge=1, description="Pre-training steps of the shared digits DDPM "
                             "(ignored when path is set).")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA decay of the shared digits DDPM's "
                             "pre-training; 0.995 rather than common's 0.999, whose EMA keeps "
                             "0.999^2000 = 13% of the random init (ignored when path is set).")


class TrainSection(StrictModel):
    """Fine-tuning of the DPM arms; every arm makes exactly ``updates`` optimizer updates."""

    updates: int = Field(60, ge=1, description="Optimizer updates per arm (matched across arms; AT and "
                         "replay use updates / adv.steps batches, K updates each).")
    batch_size: int = Field(32, ge=2, description="Images per batch.")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (the paper fine-tunes ADM at 1e-4).")
    ema_decay: float = Field(0.9, ge=0, lt=1, description="EMA of the weights, updated after every update; "
                             "the EMA weights are evaluated (0 = the raw weights).")


class AdvSection(StrictModel):
    """The efficient (Free-AT style) adversarial training of the official code."""

    steps: int = Field(3, ge=1, description="K: forward/backward passes per batch, each followed by an "
                       "update of theta; delta ascends between them (official adv_steps=3).")
    lr: float = Field(0.1, ge=0, description="Ascent step on delta along grad/||grad||_2 per sample "
                      "(official adv_lr=0.1).")
    max_norm: float = Field(0.1, ge=0, description="eta: delta is projected on the L2 ball of radius "
                            "sqrt(d)*eta (official adv_max_norm=0.1); 0 keeps delta at 0 (= replay).")


class IpSection(StrictModel):
    """Input perturbation baseline (DDPM-IP): x_t from eps + gamma*xi, target eps."""

    gamma: float = Field(0.1, ge=0, description="gamma of the extra noise xi (DDPM-IP uses 0.1).")


class EvalSection(StrictModel):
    """Sample quality (digits Frechet distance vs the held-out test split) and the mismatch statistic."""

    num_samples: int = Field(200, ge=8, description="Samples per (arm, sampler, NFE), same noise per arm.")
    nfe: tuple[int, ...] = Field((5, 10, 20), min_length=1, description="Sampler step counts (NFE).")
    samplers: tuple[Sampler, ...] = Field(("ddim", "dpmsolver++"), min_length=1,
                                          description="diffusers DDIMScheduler (eta 0) and/or "
                                          "DPMSolverMultistepScheduler (dpmsolver++, order 2).")
    mismatch_nfe: int = Field(10, ge=1, description="NFE whose sampler trajectory is compared with q(x_t).")


class CmSection(StrictModel):
    """The consistency-model variant: consistency distillation (CD) from the DPM, with and without AT."""

    enabled: bool = Field(True, description="Run the CD arms (standard CD and AT-CD).")
    updates: int = Field(30, ge=1, description="Optimizer updates per CD arm (matched, as for the DPM).")
    batch_size: int = Field(32, ge=2, description="Images per CD batch.")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the student.")
    skip: int = Field(20, ge=1, description="k: the teacher's DDIM step spans t -> t-k (LCM skipping step).")
    target_ema: float = Field(0.95, ge=0, lt=1, description="EMA rate mu of the target network theta^-.")
    eval_steps: tuple[int, ...] = Field((1, 2), min_length=1, description="Consistency sampling steps.")


class AdversarialTrainConfig(AuxConfig):
    """aux.adversarial_train: arms standard / AT / IP (/ replay = AT with eta 0) on one pretrained DPM."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"base": {"channels": (8, 16), "train_steps": 30, "ema_decay": 0.0},
                  "arms": ("standard", "at", "ip"),
                  "train": {"updates": 3, "batch_size": 8},
                  "eval": {"num_samples": 16, "nfe": (2, 3), "mismatch_nfe": 3},
                  "cm": {"updates": 3, "batch_size": 8, "skip": 100}},
        "quick": {},
        "full": {"arms": ("standard", "at", "ip", "replay"),
                 "train": {"updates": 240, "batch_size": 48, "ema_decay": 0.99},
                 "eval": {"num_samples": 256, "nfe": (5, 10, 20, 50)},
                 "cm": {"updates": 120, "batch_size": 48}},
    }

    base: BaseSection = Field(default_factory=BaseSection, description="The pretrained DPM.")
    arms: tuple[Arm, ...] = Field(("standard", "at", "ip"), min_length=1, description="standard, at "
                                  "(adversarial), ip (input perturbation), replay (AT code with eta 0).")
    train: TrainSection = Field(default_factory=TrainSection, description="DPM fine-tuning.")
    adv: AdvSection = Field(default_factory=AdvSection, description="Adversarial perturbation (DPM and CD).")
    ip: IpSection = Field(default_factory=IpSection, description="Input-perturbation baseline.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Sampling and metrics.")
    cm: CmSection = Field(default_factory=CmSection, description="Consistency-distillation variant.")

    @model_validator(mode="after")
    def _check(self) -> AdversarialTrainConfig:
        if len(set(self.arms)) != len(self.arms) or "standard" not in self.arms:
            raise ValueError(f"arms must be distinct and include 'standard' (the baseline), got {list(self.arms)}")
        uses_delta = "at" in self.arms or self.cm.enabled
        if uses_delta and self.adv.steps < 2:
            raise ValueError("adv.steps must be >= 2 for AT: with K=1 delta is never used and AT is silently "
                             "standard training; set adv.steps to 2 or more (the paper uses 3)")
        reuses = any(a in self.arms for a in ("at", "replay"))
        if reuses and self.train.updates % self.adv.steps:
            raise ValueError(f"train.updates ({self.train.updates}) must be a multiple of adv.steps "
                             f"({self.adv.steps}): AT makes K updates per batch and arms are matched in updates")
        if self.cm.enabled and self.cm.updates % self.adv.steps:
            raise ValueError(f"cm.updates ({self.cm.updates}) must be a multiple of adv.steps ({self.adv.steps})")
        if self.eval.mismatch_nfe not in self.eval.nfe:
            raise ValueError(f"eval.mismatch_nfe ({self.eval.mismatch_nfe}) must be one of eval.nfe "
                             f"{list(self.eval.nfe)}")
        if len(set(self.eval.nfe)) != len(self.eval.nfe) or min(self.eval.nfe) < 1:
            raise ValueError(f"eval.nfe must be distinct positive step counts, got {list(self.eval.nfe)}")
        if self.cm.skip >= 1000 or min(self.cm.eval_steps) < 1:
            raise ValueError(f"cm.skip ({self.cm.skip}) must be < 1000 and cm.eval_steps >= 1")
        return self
