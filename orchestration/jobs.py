"""Job kinds: one flat registry from a kind name to its config model, resources, entrypoint, artifacts.

The job service builds every Ray entrypoint from the kind and the stored, validated spec — never
from a command string a user sent. A job's spec is written to ``<job_dir>/spec.json`` and the
entrypoint runs ``python -m orchestration.entrypoint <job_dir>``, which validates it again and
dispatches on the kind.

Kinds now: ``solrl`` and its baselines (``diffusionnft``, ``naive_scaling``, ``naive_quant``,
``flow_grpo``), ``eval`` (score a checkpoint on a prompt set), ``pretrain`` (the compositional
benchmark's base model, ``orchestration/pretrain.py``; its config models live here, with the other
non-RL kinds', so the registry stays importable without torch) and ``aux.<method>``, one per
``workers.aux.registry`` entry (an entry not implemented yet is registered but refused with a clear error).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestration.config import TrainJobConfig, format_validation_error
from workers.aux.registry import AUX_METHODS

Priority = Literal["rl", "aux"]


class EvalJobConfig(BaseModel):
    """Score a training run's checkpoint (EMA weights) on the held-out prompts at fixed seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: str = Field(description="Output directory of a training job (holds config.yaml and checkpoints/).")
    num_steps: int = Field(40, ge=1, description="Sampling steps for evaluation.")
    seeds_per_prompt: int = Field(4, ge=1, description="Fixed seeds per held-out prompt.")


class _StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PretrainModelConfig(_StrictModel):
    """Architecture; see workers.compositional.model.ModelSpec."""

    image_size: int = Field(64, ge=8, description="Image side in pixels (the VAE does not downsample).")
    patch_size: int = Field(4, ge=1, description="Transformer patch size (image tokens = (side / patch)^2).")
    num_layers: int = Field(8, ge=1, description="SD3 joint-attention blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads.")
    head_dim: int = Field(64, ge=8, description="Channels per head (hidden = heads x head_dim).")
    text_hidden: int = Field(128, ge=8, description="Width of the first CLIP text encoder.")
    text_layers: int = Field(3, ge=1, description="Layers of the first CLIP text encoder.")
    text_hidden_2: int = Field(64, ge=8, description="Width of the second CLIP text encoder.")
    text_layers_2: int = Field(2, ge=1, description="Layers of the second CLIP text encoder.")
    tokenizer: Literal["word", "char"] = Field(
        "word", description="word: one token per word of the caption world (as a real BPE tokenizer gives common "
        "words); char: one per character (the text encoders then learn words from letters, much more slowly).")
    tokenizer_length: int = Field(16, ge=8, description="Tokens per caption (CLIP positions); at least the longest "
                                  "caption's tokens with BOS and EOS (9 words, 40 characters).")


class PretrainTrainConfig(_StrictModel):
    steps: int = Field(6000, ge=1, description="Optimizer steps of the transformer and text encoders.")
    max_seconds: float | None = Field(
        None, gt=0, description="Training time budget (evaluations excluded): training stops at whichever of "
        "steps and max_seconds comes first, and the learning-rate schedule follows the larger share spent. "
        "null = steps only.")
    batch_size: int = Field(128, ge=1, description="Images per step.")
    lr: float = Field(3e-4, gt=0, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(200, ge=1, description="Linear warm-up steps, then cosine decay to 10% of lr.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA decay of the saved/evaluated weights.")
    timesteps: Literal["logit_normal", "uniform"] = Field(
        "logit_normal", description="Training time distribution: sigmoid(N(0, 1)) as SD3, or uniform.")
    log_every: int = Field(50, ge=1, description="Steps per metrics.jsonl training record.")
    checkpoint_every: int = Field(
        1000, ge=0, description="Save the training state (weights, EMA, optimizer, step) every N steps and at the "
        "end of training, for `solrl pretrain --resume` (0 = only at the end).")
    compile: bool = Field(
        False, description="torch.compile the transformer for training on a GPU (a small model is bound by "
        "elementwise traffic and launches that compilation fuses); the first steps pay the compile time. "
        "Ignored on CPU.")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode of train.compile; reduce-overhead adds CUDA graphs (removes "
        "the launch cost of a small model's many kernels; static shapes, more memory).")


class PretrainEvalConfig(_StrictModel):
    every: int = Field(1000, ge=0, description="Evaluate the EMA model every N steps (0 = only at the end).")
    num_prompts: int = Field(48, ge=1, description="Held-out captions evaluated (round-robin over categories).")
    train_prompts: int = Field(48, ge=0, description="Train captions also evaluated at the end (0 = none).")
    seeds_per_prompt: int = Field(4, ge=1, description="Fixed seeds per caption.")
    num_steps: int = Field(20, ge=1, description="Sampling steps.")
    solver: Literal["euler", "dpm2"] = Field("dpm2", description="ODE solver (as the RL configs).")
    batch_size: int = Field(64, ge=1, description="Images per sampling batch.")


class PretrainConfig(_StrictModel):
    """A pretraining job: the base model of the compositional benchmark (job kind ``pretrain``)."""

    seed: int = Field(0, ge=0, description="Seed of the weights, the data stream and the evaluation noise.")
    split_seed: int = Field(0, ge=0, description="Seed of the train / held-out caption split (as builtin:compositional).")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N.")
    max_sequence_length: int = Field(8, ge=1, description="T5 slots SD3 fills with zeros; use the RL config's model.max_sequence_length.")
    supersample: int = Field(4, ge=1, description="Anti-aliasing of the rendered training images.")
    model: PretrainModelConfig = PretrainModelConfig()
    train: PretrainTrainConfig = PretrainTrainConfig()
    eval: PretrainEvalConfig = PretrainEvalConfig()

    def spec(self):
        """The architecture as ``workers.compositional.model.ModelSpec``."""
        from workers.compositional.model import ModelSpec

        return ModelSpec(**self.model.model_dump())


class AuxPlaceholderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["quick", "full"] = Field("quick", description="Size preset of the auxiliary experiment.")


@dataclass(frozen=True)
class Resources:
    """What the job's entrypoint (driver) asks of the cluster; the actors it starts ask for more."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JobKind:
    name: str
    config_model: type[BaseModel]
    priority: Priority
    artifacts: tuple[str, ...]
    resources: Callable[[BaseModel], Resources]
    runnable: bool = True
    description: str = ""

    def validate(self, config: dict) -> BaseModel:
        """The kind's config from user data; pydantic's errors name each failing field."""
        data = dict(config)
        if self.config_model is TrainJobConfig:
            data.setdefault("method", self.name)
            if data["method"] != self.name:
                raise JobSpecError([("config.method", f"must be {self.name!r} for kind {self.name!r}")])
        try:
            return self.config_model.model_validate(data)
        except ValidationError as err:
            raise JobSpecError.from_validation(err) from None

    def entrypoint(self, job_dir: Path, python: str | None = None) -> str:
        """The command Ray runs: built here from the kind, never taken from the request."""
        return f"{shlex.quote(python or sys.executable)} -m orchestration.entrypoint {shlex.quote(str(job_dir))}"


class JobSpecError(ValueError):
    """A job spec failed validation; ``errors`` holds (field path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in errors))

    @classmethod
    def from_validation(cls, err: ValidationError) -> JobSpecError:
        pairs = []
        for e in err.errors():
            msg = e["msg"].removeprefix("Value error, ")
            parts = [str(p) for p in e["loc"]]
            if not parts:
                # A cross-field rule (model validator) has no loc; its message starts with the field it
                # blames ("regen.num_selected (K=64) exceeds ..."), so name that field.
                match = _LEADING_FIELD.match(msg)
                parts = match.group(1).split(".") if match else []
            if e["type"] == "extra_forbidden":
                msg = "unknown key"
            pairs.append((".".join(["config", *parts]), msg))
        return cls(pairs)


_LEADING_FIELD = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)\b")


def _train_resources(cfg: BaseModel) -> Resources:
    assert isinstance(cfg, TrainJobConfig)  # noqa: S101 - the registry pairs the model with this function
    # The driver is light; the actors it starts request the job's GPUs through placement groups.
    return Resources(num_cpus=0.5, num_gpus=0.0)


def _eval_resources(cfg: BaseModel) -> Resources:
    return Resources(num_cpus=1.0, num_gpus=0.0)


def _pretrain_resources(cfg: BaseModel) -> Resources:
    assert isinstance(cfg, PretrainConfig)  # noqa: S101 - the registry pairs the model with this function
    # The driver trains the model itself: one GPU unless the config pins it to the CPU.
    return Resources(num_cpus=2.0, num_gpus=0.0 if cfg.device == "cpu" else 1.0)


TRAIN_ARTIFACTS = ("summary.json", "metrics.jsonl", "samples_initial.png", "samples_final.png", "reward_curve.png",
                   "precision_report.txt", "config.yaml")
PRETRAIN_ARTIFACTS = ("summary.json", "metrics.jsonl", "samples.png", "samples.txt", "dataset_samples.png",
                      "config.yaml")
AUX_ARTIFACTS = ("results.json", "report.md", "config.json")


def _aux_resources(cfg: BaseModel) -> Resources:
    # The experiment runs in the driver task: a GPU only when the config asks for CUDA explicitly
    # ("auto" inside a task without a GPU sees none and runs on the CPU).
    device = getattr(cfg, "device", "cpu")
    return Resources(num_cpus=1.0, num_gpus=1.0 if str(device).startswith("cuda") else 0.0)


def _kinds() -> dict[str, JobKind]:
    kinds: dict[str, JobKind] = {}
    for method in ("solrl", "diffusionnft", "naive_scaling", "naive_quant", "flow_grpo"):
        kinds[method] = JobKind(method, TrainJobConfig, "rl", TRAIN_ARTIFACTS, _train_resources,
                                description=f"RL training, method {method}")
    kinds["eval"] = JobKind("eval", EvalJobConfig, "rl", ("eval.json", "eval_samples.png"), _eval_resources,
                            description="Score a checkpoint on held-out prompts")
    kinds["pretrain"] = JobKind("pretrain", PretrainConfig, "aux", PRETRAIN_ARTIFACTS, _pretrain_resources,
                                description="Pretrain the compositional benchmark's base model")
    for method in AUX_METHODS.values():
        if method.implemented:
            kinds[f"aux.{method.name}"] = JobKind(f"aux.{method.name}", method.config_model(), "aux", AUX_ARTIFACTS,
                                                  _aux_resources, description=method.title)
        else:
            kinds[f"aux.{method.name}"] = JobKind(f"aux.{method.name}", AuxPlaceholderConfig, "aux", AUX_ARTIFACTS,
                                                  _aux_resources, runnable=False,
                                                  description=f"{method.title} (not implemented yet)")
    return kinds


JOB_KINDS: dict[str, JobKind] = _kinds()


def get_kind(name: str) -> JobKind:
    if name not in JOB_KINDS:
        raise JobSpecError([("kind", f"unknown kind {name!r}; valid: {', '.join(sorted(JOB_KINDS))}")])
    return JOB_KINDS[name]


def validate_job(kind: str, config: dict) -> tuple[JobKind, BaseModel]:
    """Validate a submission; raises JobSpecError naming the field (kind or config.<path>)."""
    job_kind = get_kind(kind)
    if not job_kind.runnable:
        raise JobSpecError([("kind", f"{kind} is registered but not implemented yet")])
    if not isinstance(config, dict):
        raise JobSpecError([("config", "must be an object")])
    return job_kind, job_kind.validate(config)


def job_gpus(kind: JobKind, cfg: BaseModel) -> tuple[float, str]:
    """GPUs a job takes from the cluster (its driver's plus its actors'), and the config field that sets them."""
    driver = kind.resources(cfg).num_gpus
    if isinstance(cfg, TrainJobConfig):
        return driver + cfg.resources.num_gpus, "config.resources.num_gpus"
    return driver, "config"  # the kind's resources follow from its config (e.g. pretrain's device)


def format_error(err: ValidationError) -> str:  # re-exported for the CLI
    return format_validation_error(err)
