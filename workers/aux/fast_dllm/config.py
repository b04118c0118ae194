"""Config of aux.fast_dllm: a tiny LLaDA-recipe model on multi-digit addition, decoded with Fast-dLLM's caches
and confidence-threshold parallel decoding against LLaDA's baseline."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel


class TaskSection(StrictModel):
    kind: Literal["addition", "reverse"] = Field("reverse", description="addition: 'ab+cd=' -> the sum's "
                                                 "digits; reverse: 'abcd=' -> 'dcba' (learned in minutes on a CPU).")
    digits: int = Field(4, ge=1, le=8, description="Digits per operand.")
    shots: int = Field(2, ge=0, description="Solved examples before the query in each prompt (few-shot context).")
    prompt_len: int = Field(32, ge=8, description="Prompt tokens (left-padded); must hold the shots and query.")


class ModelSection(StrictModel):
    dim: int = Field(64, ge=16, description="Transformer width (the brief's full-size toy uses 256).")
    n_layers: int = Field(2, ge=1, description="Bidirectional blocks (RMSNorm, RoPE, SwiGLU, no causal mask).")
    n_heads: int = Field(4, ge=1, description="Attention heads; must divide dim into an even head width.")


class TrainSection(StrictModel):
    steps: int = Field(800, ge=1, description="SFT optimizer steps with LLaDA's loss.")
    batch_size: int = Field(64, ge=1, description="Problems per step (drawn fresh from the training stream).")
    lr: float = Field(3e-3, gt=0, description="AdamW peak learning rate (warm-up, cosine decay).")
    gen_length: int = Field(16, ge=4, description="Response length (answer + EOS fill) during training; "
                            "shorter than the evaluation length to save CPU time (see docs: deviations).")
    long_fraction: float = Field(0.25, ge=0, le=1, description="Fraction of steps (spread evenly) whose responses "
                                 "are EOS-filled to eval.gen_length, so every decoded position is trained.")


class EvalSection(StrictModel):
    prompts: int = Field(6, ge=1, description="Held-out prompts (a seed stream disjoint from training).")
    gen_length: int = Field(128, ge=4, description="Generated tokens per prompt (the full preset uses 256, where caching matters).")
    block_length: int = Field(32, ge=1, description="Semi-autoregressive block size (paper: 32).")
    threshold: float = Field(0.9, gt=0, le=1, description="tau of confidence-aware parallel decoding (paper: 0.9).")
    threshold_sweep: list[float] = Field([0.7, 1.0], min_length=1,
                                         description="tau values of the tokens-per-step sweep (Fig. 5 analogue).")
    fixed_k: list[int] = Field([4], min_length=1,
                               description="Fixed tokens per step compared with the threshold rule (Fig. 5c).")
    snapshot_fraction: float = Field(0.0, ge=0, lt=1, description="If > 0, also compare the threshold rule "
                                     "with fixed-k on the weights saved at this fraction of training (a less "
                                     "confident model, where the rules can differ); 0 skips it.")
    theorem1_trials: int = Field(200, ge=0, description="Random toy joints checked against Theorem 1.")


class FastDllmConfig(AuxConfig):
    """aux.fast_dllm: baseline vs prefix/dual cache vs threshold decoding vs both, on held-out prompts."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"model": {"dim": 16, "n_layers": 1},
                  "train": {"steps": 3, "batch_size": 4, "gen_length": 16},
                  "eval": {"prompts": 2, "gen_length": 16, "block_length": 8, "threshold_sweep": [0.9, 1.0],
                           "fixed_k": [2], "theorem1_trials": 20}},
        "quick": {},
        "full": {"train": {"steps": 1000, "long_fraction": 0.2},
                 "eval": {"prompts": 12, "gen_length": 256, "threshold_sweep": [0.5, 0.7, 0.9, 1.0],
                          "fixed_k": [2, 4, 8], "theorem1_trials": 1000, "snapshot_fraction": 0.4}},
    }

    task: TaskSection = Field(default_factory=TaskSection, description="The few-shot task.")
    model: ModelSection = Field(default_factory=ModelSection, description="Model sizes.")
    train: TrainSection = Field(default_factory=TrainSection, description="SFT training.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Decoding variants and metrics.")
    cpu_threads: int = Field(1, ge=0, description="torch CPU threads during the run (0: torch's default). "
                             "1 avoids thread thrash on a shared 2-core machine.")

    @model_validator(mode="after")
    def _check(self) -> FastDllmConfig:
        m, e, t = self.model, self.eval, self.task
        if m.dim % m.n_heads or (m.dim // m.n_heads) % 2:
            raise ValueError(f"model.n_heads={m.n_heads} must divide model.dim={m.dim} into an even head width "
                             "(RoPE rotates pairs)")
        if e.gen_length % e.block_length:
            raise ValueError(f"eval.gen_length={e.gen_length} must be a multiple of eval.block_length="
                             f"{e.block_length}")
        bad_k = [k for k in e.fixed_k if k < 1 or e.block_length % k]
        if bad_k:
            raise ValueError(f"eval.fixed_k {bad_k} must divide eval.block_length={e.block_length}")
        line = 3 * t.digits + 3 if t.kind == "addition" else 2 * t.digits + 2
        answer = t.digits + 1 if t.kind == "addition" else t.digits
        if (t.shots + 1) * line > t.prompt_len:
            raise ValueError(f"task.prompt_len={t.prompt_len} is too short for {t.shots} shots of {t.digits}-digit "
                             f"{t.kind} ({(t.shots + 1) * line} tokens)")
        if answer >= min(self.train.gen_length, e.gen_length):
            raise ValueError(f"train.gen_length and eval.gen_length must exceed the answer's {answer} digits")
        if any(not 0 < tau <= 1 for tau in e.threshold_sweep):
            raise ValueError(f"eval.threshold_sweep values must be in (0, 1], got {e.threshold_sweep}")
        return self
