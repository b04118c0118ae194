"""Pydantic models of every RL job spec: the one source of truth for validation.

YAML presets in configs/, the CLI and (later) the REST API all validate against ``TrainJobConfig``.
Unknown keys are errors (``extra="forbid"``); cross-field rules live in model validators and name
the field and the fix. The baselines of the paper are *settings* of the same loop (``method``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Method = Literal["solrl", "diffusionnft", "naive_scaling", "naive_quant", "flow_grpo"]
Precision = Literal["bf16", "fp8", "nvfp4"]
Solver = Literal["euler", "dpm2"]
SelectionMode = Literal["best_worst", "random", "extremes_random", "mean_deviation"]
DType = Literal["bfloat16", "float16", "float32"]

PositiveInt = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    path: str = Field(
        "tiny:sd3",
        description="Local diffusers-layout directory, or tiny:sd3, tiny:flux, tiny:sana (built-in tiny family).",
    )
    height: PositiveInt = Field(32, description="Image height in pixels.")
    width: PositiveInt = Field(32, description="Image width in pixels.")
    dtype: DType = Field("bfloat16", description="Weights dtype of the policy and its BF16 copies.")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N.")
    max_sequence_length: PositiveInt = Field(8, description="Text tokens for the T5/Gemma encoders.")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str) -> str:
        if value.startswith("tiny:"):
            family = value.split(":", 1)[1]
            if family not in ("sd3", "flux", "sana"):
                raise ValueError(f"unknown tiny family {family!r}; use tiny:sd3, tiny:flux or tiny:sana")
            return value
        path = Path(value).expanduser()
        if not (path / "model_index.json").is_file():
            what = "does not exist" if not path.exists() else "has no model_index.json"
            raise ValueError(
                f"{value!r} {what}; point model.path at a local diffusers-layout directory "
                "(the folder with model_index.json) or use tiny:sd3"
            )
        return value


class LoraSettings(_Strict):
    enabled: bool = Field(True, description="LoRA adapters (true) or full fine-tuning (false).")
    rank: PositiveInt = Field(32, description="LoRA rank r.")
    alpha: float = Field(64.0, gt=0, description="LoRA alpha (scaling = alpha / r).")


class PromptsConfig(_Strict):
    source: str = Field(
        "builtin:shapes",
        description="builtin:shapes (procedural captions), builtin:compositional (the GenEval-style benchmark "
        "with its held-out split, docs/compositional.md) or a text file, one prompt per line.",
    )
    per_iteration: PositiveInt = Field(4, description="Prompts P per iteration.")
    heldout_count: PositiveInt = Field(8, description="Held-out prompts used for evaluation (never trained on).")

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        if value.startswith("builtin:"):
            from orchestration.prompts import BUILTIN_SOURCES

            if value not in BUILTIN_SOURCES:
                raise ValueError(f"unknown builtin prompt set {value!r}; use one of {list(BUILTIN_SOURCES)} or a file path")
        elif not Path(value).expanduser().is_file():
            raise ValueError(f"prompt file {value!r} does not exist; give a text file with one prompt per line")
        return value


class RolloutConfig(_Strict):
    """Stage 1: the large candidate pool, sampled cheaply."""

    num_candidates: PositiveInt = Field(96, description="Candidates N per prompt.")
    precision: Precision = Field("nvfp4", description="Precision of the stage-1 proxy policy.")
    num_steps: PositiveInt = Field(6, description="ODE steps of stage 1.")
    batch_size: PositiveInt = Field(96, description="Candidates per forward batch.")
    min_dim: int | None = Field(
        None, ge=0, description="Skip linears with max(in, out) <= min_dim; null = the family's default."
    )


class RegenConfig(_Strict):
    """Stage 2: the selected candidates regenerated in BF16 from the same seeds."""

    num_selected: PositiveInt = Field(24, description="Candidates K per prompt that train.")
    selection: SelectionMode = Field("best_worst", description="How K are chosen from N by proxy reward.")
    num_steps: PositiveInt = Field(10, description="ODE steps of the BF16 regeneration.")
    batch_size: PositiveInt = Field(24, description="Candidates per forward batch.")


class SamplerConfig(_Strict):
    solver: Solver = Field("dpm2", description="ODE solver of both stages (euler or dpm2).")
    shift: float = Field(1.0, gt=0, description="SD3-style time shift of the sigma grid.")
    grid: Literal["shift", "optimized"] = Field(
        "shift", description="Sigma grid: shift (uniform in t, then the SD3 shift) or optimized (the time steps "
        "of aux.timestep_opt, optimized for the solver's order pattern; needs shift 1.0 and an ODE solver).")
    compile: bool = Field(
        False, description="torch.compile the sampling copies (stage 1, regeneration, evaluation) where they run on "
        "a GPU: fuses the elementwise work and launches that dominate small models; the first batches pay the "
        "compile time. Ignored on CPU.")


class RewardModelSettings(_Strict):
    """Where and how a model-based reward (clipscore, pickscore, hpsv2, imagereward, aesthetic, vlm_judge) loads."""

    path: str | None = Field(None, description="Local directory of the reward model (not needed by vlm_judge).")
    device: str = Field("auto", description="auto (cuda if available where the reward runs), cpu, cuda, cuda:N.")
    batch_size: PositiveInt = Field(16, description="Images per reward-model forward pass.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Reward-specific keys (vlm_judge: base_url, model).")


class RewardConfig(_Strict):
    weights: dict[str, float] = Field(
        default_factory=lambda: {"jpeg_compressibility": 1.0}, description="Reward name -> weight (summed)."
    )
    models: dict[str, RewardModelSettings] = Field(
        default_factory=dict, description="Reward name -> model location, for each model-based reward in weights."
    )

    @field_validator("weights")
    @classmethod
    def _known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        from workers.rewards import known_rewards

        if not value:
            raise ValueError("give at least one reward, e.g. {jpeg_compressibility: 1.0}")
        unknown = sorted(set(value) - known_rewards())
        if unknown:
            raise ValueError(f"unknown reward(s) {unknown}; valid: {sorted(known_rewards())}")
        if sum(value.values()) <= 0:
            raise ValueError("reward weights must sum to a positive number")
        return value

    @model_validator(mode="after")
    def _models_match_weights(self) -> RewardConfig:
        from workers.rewards import REWARD_BUILDERS

        for name in self.weights:
            if name in REWARD_BUILDERS and name not in self.models:
                raise ValueError(f"reward.models.{name} is missing: {name} loads a model; give its local path")
        for name, settings in self.models.items():
            if name not in self.weights:
                raise ValueError(f"reward.models.{name} has no weight in reward.weights; add one or remove it")
            if name not in REWARD_BUILDERS:
                raise ValueError(f"reward.models.{name}: {name} is not model-based and takes no model settings")
            if name != "vlm_judge":
                if settings.path is None:
                    raise ValueError(f"reward.models.{name}.path is required (a local model directory)")
                if not Path(settings.path).expanduser().is_dir():
                    raise ValueError(f"reward.models.{name}.path {settings.path!r} is not a directory")
        return self


class NftSettings(_Strict):
    beta: float = Field(1.0, gt=0, description="NFT guidance strength beta.")
    kl_beta: float = Field(1e-4, ge=0, description="Weight of the velocity KL to the base model.")
    adv_clip: float = Field(5.0, gt=0, description="Advantage clip (also scales r).")


class GrpoSettings(_Strict):
    clip_range: float = Field(1e-4, gt=0, description="PPO clip epsilon on the per-step ratio.")
    kl_beta: float = Field(0.04, ge=0, description="Weight of the KL to the reference policy.")
    noise_level: float = Field(0.7, gt=0, description="SDE noise level a (sigma_t = a sqrt(t/(1-t))).")
    sde_window_size: int = Field(0, ge=0, description="0 = all steps SDE; >0 = Flow-GRPO-Fast window.")
    sde_window_range: tuple[int, int] | None = Field(None, description="[lo, hi): steps the window must lie in (null = all).")


class TrainSettings(_Strict):
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (for a control run use train.update: false).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip before each optimizer step.")
    timestep_fraction: float = Field(0.6, gt=0, le=1, description="Share of the regen steps trained per sample.")
    micro_batch_size: PositiveInt = Field(8, description="Samples per forward/backward.")
    global_std: bool = Field(True, description="Advantage std over the whole batch (else per prompt).")
    old_decay_type: Literal[1, 2] = Field(1, description="Old-adapter EMA schedule (1: min(0.001 k, 0.5)).")
    ema_decay: float = Field(0.9, ge=0, lt=1, description="EMA of trained params used for evaluation.")
    nft: NftSettings = NftSettings()
    grpo: GrpoSettings = GrpoSettings()
    update: bool = Field(True, description="false = run the loop without optimizer steps (a control run).")
    compile: bool = Field(
        False, description="torch.compile the learner's transformer (one graph per adapter state: trained, old, "
        "reference); for GPUs: ignored on CPU.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute each transformer block's activations in backward (one more forward of the "
        "trained policy per backward, far less activation memory): for large micro-batches of 12B models.")
    attention_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = Field(
        "auto", description="The learner's attention kernel. auto: torch's choice among flash, efficient and math "
        "(cuDNN's backward failed in FLUX's learner on an H200); the others pin one kernel.")


class EvalConfig(_Strict):
    every: int = Field(5, ge=0, description="Evaluate held-out prompts every N iterations (0 = first/last only).")
    num_steps: PositiveInt = Field(10, description="ODE steps of evaluation sampling.")
    seeds_per_prompt: PositiveInt = Field(2, description="Fixed seeds per held-out prompt.")
    use_ema: bool = Field(True, description="Evaluate with the EMA weights (the paper's protocol).")
    fidelity_audit_every: int = Field(
        0, ge=0, description="solrl: every N iterations also sample all N candidates in BF16 to measure top-K "
        "overlap and the BF16 rank of the selected halves out of N (0 = never; costs a naive_scaling stage)."
    )


class GuardConfig(_Strict):
    """Moves the stage-1 proxy up a precision (nvfp4 -> fp8 -> bf16) when its ranking degrades."""

    enabled: bool = Field(False, description="Watch the selection Spearman and switch precision.")
    spearman_floor: float = Field(0.5, ge=-1, le=1, description="Move up when the running Spearman falls below.")
    recover_margin: float = Field(0.2, ge=0, description="Move back down above floor + margin.")
    window: PositiveInt = Field(3, description="Iterations in the running mean.")
    allow_recover: bool = Field(True, description="Allow moving back down towards rollout.precision.")


class CheckpointConfig(_Strict):
    every: int = Field(5, ge=0, description="Checkpoint every N iterations (0 = only at the end and on SIGTERM).")
    keep: PositiveInt = Field(2, description="How many checkpoints to keep.")


class ResourcesConfig(_Strict):
    """How the roles are placed on the Ray cluster (ignored in-process)."""

    placement: Literal["colocate", "split"] = Field(
        "colocate",
        description="colocate: every role shares each GPU (fractions); split: the low-precision rollout "
        "fleet gets its own GPUs, BF16 regeneration and the learner share the rest.",
    )
    num_gpus: int = Field(0, ge=0, description="GPUs the job uses (0 = CPU only).")
    rollout_workers: PositiveInt = Field(1, description="Stage-1 (low-precision) sampling actors.")
    regen_workers: PositiveInt = Field(1, description="BF16 regeneration actors.")
    learners: PositiveInt = Field(1, description="Data-parallel learner ranks (gloo on CPU, NCCL on GPU).")
    reward_replicas: PositiveInt = Field(1, description="Replicas of the reward server.")
    cpus_per_actor: float = Field(0.25, ge=0, description="Logical CPUs each actor reserves.")
    role_resources: bool = Field(
        False, description="Actors also request their KubeRay worker group's custom resource "
        "(solrl_rollout_lowp, solrl_regen, solrl_learner, solrl_reward); set true on the deploy/ cluster.",
    )
    max_restarts: int = Field(3, ge=-1, description="Restarts of a dead sampling actor (-1 = unlimited).")
    weight_sync: Literal["auto", "object_store", "collective"] = Field(
        "auto", description="auto: LoRA deltas via the object store, full weights via a collective group "
        "(NCCL on GPU, gloo on CPU); object_store: always the object store.",
    )
    one_step_off: bool = Field(
        False, description="Overlap stage 1 of iteration t+1 with the learner update of t (policy lag 1)."
    )


class TrainJobConfig(_Strict):
    """A complete RL job: ``method`` picks Sol-RL or one of the paper's baselines."""

    method: Method = Field("solrl", description="solrl, diffusionnft, naive_scaling, naive_quant or flow_grpo.")
    name: str | None = Field(
        None, description="Label of the run in reports (`solrl report convergence`); default: the method, with the "
        "stage-1 precision for solrl (solrl_fp8). Name variants that would otherwise share a label.")
    seed: int = Field(42, ge=0, description="Run seed: every candidate's noise derives from it.")
    iterations: int = Field(10, ge=0, description="Training iterations.")
    budget_seconds: float | None = Field(
        None, gt=0, description="Wall-clock budget of the training iterations (evaluations not counted): the run "
        "stops after the iteration that reaches it, or at `iterations`, whichever comes first (null = no budget)."
    )
    budget_after_first_iteration: bool = Field(
        False, description="Start the budget clock after the first iteration, whose seconds include one-time "
        "torch.compile of the samplers and learner (tens of seconds for the quantized copies, ~1 s for BF16): "
        "every method then gets the same budget of steady-state training. The first iteration still trains "
        "and its seconds are still logged in train_seconds.")
    model: ModelConfig = ModelConfig()
    lora: LoraSettings = LoraSettings()
    prompts: PromptsConfig = PromptsConfig()
    sampler: SamplerConfig = SamplerConfig()
    rollout: RolloutConfig = RolloutConfig()
    regen: RegenConfig = RegenConfig()
    reward: RewardConfig = RewardConfig()
    train: TrainSettings = TrainSettings()
    eval: EvalConfig = EvalConfig()
    guard: GuardConfig = GuardConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @model_validator(mode="after")
    def _cross_field(self) -> TrainJobConfig:
        n, k = self.rollout.num_candidates, self.regen.num_selected
        if k > n:
            raise ValueError(
                f"regen.num_selected (K={k}) exceeds rollout.num_candidates (N={n}); set N >= K"
            )
        if self.method in ("solrl", "naive_scaling", "naive_quant") and self.regen.selection == "best_worst" and k % 2:
            raise ValueError(f"regen.num_selected (K={k}) must be even for selection best_worst (K/2 best + K/2 worst)")
        if self.method in ("diffusionnft", "flow_grpo") and n != k:
            raise ValueError(
                f"method {self.method} trains on every candidate: set rollout.num_candidates = regen.num_selected "
                f"(now N={n}, K={k})"
            )
        if self.method in ("solrl", "naive_quant") and self.rollout.precision == "bf16":
            raise ValueError(
                f"method {self.method} needs a low-precision stage 1: set rollout.precision to fp8 or nvfp4 "
                "(or use method naive_scaling for BF16 exploration)"
            )
        if self.sampler.grid == "optimized" and (self.sampler.shift != 1.0 or self.method == "flow_grpo"):
            raise ValueError("sampler.grid optimized is computed for the unshifted flow grid and the ODE solvers: "
                             "set sampler.shift 1.0, and use grid shift with method flow_grpo (SDE sampling)")
        if self.guard.enabled and self.method != "solrl":
            raise ValueError(f"guard.enabled needs method solrl (the guard watches stage-1 selection); got {self.method}")
        r = self.resources
        if r.placement == "split" and r.num_gpus == 1:
            raise ValueError(
                "resources.placement split puts the rollout fleet and the BF16 roles on different GPUs: "
                "resources.num_gpus must be >= 2 (or 0 on CPU); use placement colocate on one GPU"
            )
        if r.weight_sync == "collective" and self.lora.enabled:
            raise ValueError("resources.weight_sync collective is for full weights: set lora.enabled false, "
                             "or use auto (LoRA deltas travel through the object store)")
        if r.one_step_off and self.method != "solrl":
            raise ValueError("resources.one_step_off overlaps stage 1 with the update: it needs method solrl")
        g = self.train.grpo
        if self.method == "flow_grpo" and g.sde_window_size > self.regen.num_steps:
            raise ValueError(
                f"train.grpo.sde_window_size ({g.sde_window_size}) exceeds regen.num_steps ({self.regen.num_steps})"
            )
        if self.method == "flow_grpo" and g.sde_window_range is not None:
            lo, hi = g.sde_window_range
            if not 0 <= lo < hi <= self.regen.num_steps:
                raise ValueError(
                    f"train.grpo.sde_window_range ({lo}, {hi}) must satisfy 0 <= lo < hi <= regen.num_steps "
                    f"({self.regen.num_steps}): shrink the range or raise regen.num_steps"
                )
        return self

    @property
    def objective(self) -> Literal["nft", "grpo"]:
        return "grpo" if self.method == "flow_grpo" else "nft"


class ConfigError(ValueError):
    """A job spec failed validation; the message names each failing field."""


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the config reference in README.md)"
        lines.append(f"{loc}: {msg}")
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_config(data: dict, overrides: list[str] | None = None) -> TrainJobConfig:
    """Validate a dict (e.g. loaded YAML) plus ``key.path=value`` overrides into a config."""
    data = dict(data)
    for item in overrides or []:
        apply_override(data, item)
    try:
        return TrainJobConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def read_config_file(path: str | Path) -> dict:
    """A YAML config file's top-level mapping; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainJobConfig:
    return parse_config(read_config_file(path), overrides)


def apply_override(data: dict, item: str) -> None:
    """Set ``key.path=value`` (value parsed as YAML) in a nested dict, creating sections as needed."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value (e.g. iterations=3)")
    key, raw = item.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = yaml.safe_load(raw)
