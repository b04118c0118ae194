"""What the loop asks of the compute roles, and the in-process implementation of it.

The loop (``orchestration/pipeline.py``) talks to a ``Roles`` object: sample candidates for a stage
(already scored by the reward), train on a batch, push the new policy to every sampling copy. Two
implementations share this contract: ``LocalRoles`` (every role in this process) and
``orchestration.cluster.RayRoles`` (Ray actors and the reward server). Keeping the loop's logic on
this side of the contract is what makes both runs produce the same rewards for the same seeds.

Legend: B candidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from orchestration.config import TrainJobConfig
from workers.generation import Generation, PolicyCopy, PolicyWeights, SamplingSettings
from workers.learner import Learner, LearnerSettings, TrainBatch
from workers.models.base import Conditioning, ModelAdapter
from workers.regen import RegenWorker
from workers.rewards import MultiReward, RewardOptions, combine_rewards
from workers.rollout import RolloutWorker

Stage = Literal["stage1", "regen", "eval"]


@dataclass
class SampleRequest:
    stage: Stage
    prompts: list[str]  # one per candidate
    seeds: list[int]
    version: int
    return_images: bool = False
    sde_window: range | None = None


@dataclass
class SampleOutput:
    """Scored candidates, in request order, on CPU."""

    latents_BCHW: torch.Tensor
    rewards_B: torch.Tensor
    components: dict[str, torch.Tensor]
    sigmas: torch.Tensor
    seconds: float
    version: int
    images_B3HW: torch.Tensor | None = None
    trajectory_BSCHW: torch.Tensor | None = None
    log_probs_BT: torch.Tensor | None = None
    stochastic_steps: list[int] = field(default_factory=list)

    @staticmethod
    def cat(parts: list[SampleOutput]) -> SampleOutput:
        def cat_opt(key: str) -> torch.Tensor | None:
            values = [getattr(p, key) for p in parts]
            return None if values[0] is None else torch.cat(values)

        return SampleOutput(
            latents_BCHW=torch.cat([p.latents_BCHW for p in parts]),
            rewards_B=torch.cat([p.rewards_B for p in parts]),
            components={k: torch.cat([p.components[k] for p in parts]) for k in parts[0].components},
            sigmas=parts[0].sigmas,
            seconds=max(p.seconds for p in parts),
            version=parts[0].version,
            images_B3HW=cat_opt("images_B3HW"),
            trajectory_BSCHW=cat_opt("trajectory_BSCHW"),
            log_probs_BT=cat_opt("log_probs_BT"),
            stochastic_steps=parts[0].stochastic_steps,
        )


@dataclass
class TrainRequest:
    prompts: list[str]  # one per sample
    latents_BCHW: torch.Tensor
    advantages_B: torch.Tensor
    sigmas: torch.Tensor
    iteration: int
    trajectory_BSCHW: torch.Tensor | None = None
    log_probs_BT: torch.Tensor | None = None
    stochastic_steps: list[int] = field(default_factory=list)


class PendingResult(Protocol):
    def result(self, tick: Callable[[int], None] | None = None) -> SampleOutput: ...


class Roles(Protocol):
    def sample(self, request: SampleRequest, tick: Callable[[int], None] | None = None) -> SampleOutput: ...
    def submit_sample(self, request: SampleRequest) -> PendingResult: ...
    def train(self, request: TrainRequest) -> dict[str, float]: ...
    def sync(self) -> float: ...
    def load_eval_weights(self, use_ema: bool) -> int: ...
    def set_stage1_precision(self, precision: str) -> None: ...
    def learner_state(self) -> dict: ...
    def load_learner_state(self, state: dict) -> None: ...
    def describe(self) -> dict: ...
    def close(self) -> None: ...


# ---- helpers shared by both implementations ------------------------------------------------------
def stage_settings(cfg: TrainJobConfig, stage: Stage) -> SamplingSettings:
    """How each stage samples for a method (see the method table in README.md)."""
    solver, shift, grid = cfg.sampler.solver, cfg.sampler.shift, cfg.sampler.grid
    if stage == "eval":
        return SamplingSettings(num_steps=cfg.eval.num_steps, solver=solver, shift=shift, grid=grid)
    if stage == "stage1" and cfg.method == "solrl":
        return SamplingSettings(num_steps=cfg.rollout.num_steps, solver=solver, shift=shift, grid=grid)
    if stage == "regen" and cfg.method == "flow_grpo":
        return SamplingSettings(num_steps=cfg.regen.num_steps, solver="sde", shift=shift,
                                noise_level=cfg.train.grpo.noise_level, keep_trajectory=True)
    return SamplingSettings(num_steps=cfg.regen.num_steps, solver=solver, shift=shift, grid=grid)


def stage1_precision(cfg: TrainJobConfig) -> str | None:
    """Precision of the stage-1 copy, or None where stage 1 is the BF16 regeneration copy itself."""
    return cfg.rollout.precision if cfg.method in ("solrl", "naive_quant") else None


def encode_for_candidates(adapter: ModelAdapter, prompts: list[str]) -> Conditioning:
    """Encode each distinct prompt once and index it out per candidate.

    Prompts are encoded one at a time: a text encoder's bits depend on its batch size, and which
    prompts share a batch differs between a single process and sharded actors.
    """
    unique = list(dict.fromkeys(prompts))
    position = {p: i for i, p in enumerate(unique)}
    encoded = Conditioning.cat([adapter.encode_prompts([p]) for p in unique])
    return encoded.index([position[p] for p in prompts])


def build_sampler(adapter: ModelAdapter, cfg: TrainJobConfig, stage: Stage, precision: str | None = None
                  ) -> PolicyCopy:
    settings = stage_settings(cfg, stage)
    worker: PolicyCopy
    if stage == "stage1":
        worker = RolloutWorker(adapter, precision=precision or cfg.rollout.precision, settings=settings,
                               batch_size=cfg.rollout.batch_size, min_dim=cfg.rollout.min_dim)
    else:
        worker = RegenWorker(adapter, settings=settings, batch_size=cfg.regen.batch_size)
    if cfg.sampler.compile and adapter.device.type == "cuda":
        worker.transformer.compile()  # in place: weight refreshes copy into the same tensors, no recompile
    return worker


def run_sample(worker: PolicyCopy, adapter: ModelAdapter, request: SampleRequest,
               score: Callable[[torch.Tensor, list[str]], tuple[torch.Tensor, dict[str, torch.Tensor]]],
               tick: Callable[[int], None] | None = None) -> SampleOutput:
    """Sample a request on one copy and score it; images are dropped unless asked for."""
    settings: SamplingSettings = worker.settings  # type: ignore[attr-defined]
    if request.sde_window is not None:
        settings = SamplingSettings(**{**settings.__dict__, "sde_window": request.sde_window})
    cond = encode_for_candidates(adapter, request.prompts)
    generation: Generation = worker.generate(cond, request.seeds, settings, version=request.version,
                                             progress=tick)
    total, components = score(generation.images_B3HW, request.prompts)
    return SampleOutput(
        latents_BCHW=generation.latents_BCHW, rewards_B=total, components=components, sigmas=generation.sigmas,
        seconds=generation.seconds, version=generation.version,
        images_B3HW=generation.images_B3HW if request.return_images else None,
        trajectory_BSCHW=generation.trajectory_BSCHW, log_probs_BT=generation.log_probs_BT,
        stochastic_steps=generation.stochastic_steps,
    )


def train_batch(adapter: ModelAdapter, request: TrainRequest) -> TrainBatch:
    return TrainBatch(
        cond=encode_for_candidates(adapter, request.prompts), latents_BCHW=request.latents_BCHW,
        advantages_B=request.advantages_B, sigmas=request.sigmas, trajectory_BSCHW=request.trajectory_BSCHW,
        log_probs_BT=request.log_probs_BT, stochastic_steps=request.stochastic_steps,
    )


def learner_settings(cfg: TrainJobConfig) -> LearnerSettings:
    t = cfg.train
    return LearnerSettings(
        objective=cfg.objective, lora=cfg.lora.enabled, lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
        lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, eps=t.eps, max_grad_norm=t.max_grad_norm,
        timestep_fraction=t.timestep_fraction, micro_batch_size=t.micro_batch_size,
        old_decay_type=t.old_decay_type, ema_decay=t.ema_decay, nft_beta=t.nft.beta, nft_kl_beta=t.nft.kl_beta,
        adv_clip=t.nft.adv_clip, grpo_clip_range=t.grpo.clip_range, grpo_kl_beta=t.grpo.kl_beta,
        grpo_noise_level=t.grpo.noise_level, compile=t.compile,
        gradient_checkpointing=t.gradient_checkpointing, attention_backend=t.attention_backend,
    )


def reward_options(cfg: TrainJobConfig) -> dict[str, RewardOptions] | None:
    """RewardOptions for each model-based reward, with device "auto" resolved in this process."""
    if not cfg.reward.models:
        return None
    out = {}
    for name, m in cfg.reward.models.items():
        device = ("cuda" if torch.cuda.is_available() else "cpu") if m.device == "auto" else m.device
        out[name] = RewardOptions(path=m.path, device=device, batch_size=m.batch_size, extra=dict(m.extra))
    return out


def build_reward(cfg: TrainJobConfig) -> MultiReward:
    return combine_rewards(cfg.reward.weights, reward_options(cfg))


def local_scorer(reward: MultiReward) -> Callable[[torch.Tensor, list[str]], tuple[torch.Tensor, dict]]:
    def score(images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        breakdown = reward(images, prompts)
        return breakdown.total, breakdown.components

    return score


class LocalRoles:
    """Every role in this process, sharing one loaded pipeline (text encoders, VAE)."""

    def __init__(self, cfg: TrainJobConfig, adapter: ModelAdapter) -> None:
        self.cfg = cfg
        self.adapter = adapter
        self.score = local_scorer(build_reward(cfg))
        precision = stage1_precision(cfg)
        self.stage1: PolicyCopy | None = build_sampler(adapter, cfg, "stage1") if precision else None
        self.regen = build_sampler(adapter, cfg, "regen")
        self.evaluator = build_sampler(adapter, cfg, "eval")
        self.learner = Learner(adapter, learner_settings(cfg), seed=cfg.seed)
        self.sync()

    def _worker(self, stage: Stage) -> PolicyCopy:
        if stage == "stage1":
            return self.stage1 if self.stage1 is not None else self.regen
        return self.evaluator if stage == "eval" else self.regen

    def sample(self, request: SampleRequest, tick: Callable[[int], None] | None = None) -> SampleOutput:
        return run_sample(self._worker(request.stage), self.adapter, request, self.score, tick)

    def submit_sample(self, request: SampleRequest) -> PendingResult:
        """In one process there is nothing to overlap: sample now, hand the result back later."""
        done = self.sample(request)

        class Done:
            def result(self, tick: Callable[[int], None] | None = None) -> SampleOutput:
                if tick is not None:
                    tick(len(request.seeds))
                return done

        return Done()

    def train(self, request: TrainRequest) -> dict[str, float]:
        return self.learner.train_step(train_batch(self.adapter, request), request.iteration)

    def sync(self) -> float:
        start = time.perf_counter()
        weights = self.learner.policy_weights()
        for worker in (self.stage1, self.regen):
            if worker is not None:
                worker.set_policy(weights)
        return time.perf_counter() - start

    def load_eval_weights(self, use_ema: bool) -> int:
        weights: PolicyWeights = self.learner.ema_weights() if use_ema else self.learner.policy_weights()
        self.evaluator.set_policy(weights)
        return weights.version

    def set_stage1_precision(self, precision: str) -> None:
        if self.stage1 is None or self.stage1.precision == precision:
            return
        self.stage1 = build_sampler(self.adapter, self.cfg, "stage1", precision)
        self.stage1.set_policy(self.learner.policy_weights())

    def learner_state(self) -> dict:
        return self.learner.state_dict()

    def load_learner_state(self, state: dict) -> None:
        self.learner.load_state_dict(state)
        self.sync()

    def describe(self) -> dict:
        report = self.stage1.report.to_text() if self.stage1 is not None else ""
        return {"mode": "in-process", "device": str(self.adapter.device), "precision_report": report}

    def close(self) -> None:
        pass
