"""Job kinds: one flat registry from a kind name to its config model, resources, entrypoint, artifacts.

The job service builds every Ray entrypoint from the kind and the stored, validated spec — never
from a command string a user sent. A job's spec is written to ``<job_dir>/spec.json`` and the
entrypoint runs ``python -m orchestration.entrypoint <job_dir>``, which validates it again and
dispatches on the kind.

Kinds now: ``solrl`` and its baselines (``diffusionnft``, ``naive_scaling``, ``naive_quant``,
``flow_grpo``), ``eval`` (score a checkpoint on a prompt set) and ``aux.<method>`` placeholders the
auxiliary issues fill in (registered, not runnable: submitting one is refused with a clear error).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestration.config import TrainJobConfig, format_validation_error

Priority = Literal["rl", "aux"]


class EvalJobConfig(BaseModel):
    """Score a training run's checkpoint (EMA weights) on the held-out prompts at fixed seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: str = Field(description="Output directory of a training job (holds config.yaml and checkpoints/).")
    num_steps: int = Field(40, ge=1, description="Sampling steps for evaluation.")
    seeds_per_prompt: int = Field(4, ge=1, description="Fixed seeds per held-out prompt.")


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
            loc = ".".join(["config", *(str(p) for p in e["loc"])])
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key"
            pairs.append((loc, msg))
        return cls(pairs)


def _train_resources(cfg: BaseModel) -> Resources:
    assert isinstance(cfg, TrainJobConfig)  # noqa: S101 - the registry pairs the model with this function
    # The driver is light; the actors it starts request the job's GPUs through placement groups.
    return Resources(num_cpus=0.5, num_gpus=0.0)


def _eval_resources(cfg: BaseModel) -> Resources:
    return Resources(num_cpus=1.0, num_gpus=0.0)


TRAIN_ARTIFACTS = ("summary.json", "metrics.jsonl", "samples_initial.png", "samples_final.png", "reward_curve.png",
                   "precision_report.txt", "config.yaml")
AUX_METHODS = ("timestep_opt", "skip_tuning", "sim_recovery", "adversarial_train", "nct", "fast_dllm", "vadd",
               "ps_vae", "graffe")


def _kinds() -> dict[str, JobKind]:
    kinds: dict[str, JobKind] = {}
    for method in ("solrl", "diffusionnft", "naive_scaling", "naive_quant", "flow_grpo"):
        kinds[method] = JobKind(method, TrainJobConfig, "rl", TRAIN_ARTIFACTS, _train_resources,
                                description=f"RL training, method {method}")
    kinds["eval"] = JobKind("eval", EvalJobConfig, "rl", ("eval.json", "eval_samples.png"), _eval_resources,
                            description="Score a checkpoint on held-out prompts")
    for method in AUX_METHODS:
        kinds[f"aux.{method}"] = JobKind(f"aux.{method}", AuxPlaceholderConfig, "aux", ("results.json",),
                                         _eval_resources, runnable=False,
                                         description=f"Auxiliary method {method} (not implemented yet)")
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


def format_error(err: ValidationError) -> str:  # re-exported for the CLI
    return format_validation_error(err)
