"""The two-stage iteration, single process: the roles are plain classes called in order.

One iteration (Sol-RL):
  prompts -> N low-precision candidates per prompt (stage 1) -> proxy rewards -> select K
  -> BF16 regeneration of the K from the same seeds (stage 2) -> BF16 rewards -> advantages
  -> learner step -> weight refresh of every sampling copy.
The paper's baselines are settings of the same loop (``config.method``):
  diffusionnft   K BF16 samples, no stage 1 (N = K)
  naive_scaling  N BF16 samples at the full step budget, select K, train on them
  naive_quant    N low-precision samples at the full step budget, select K, train on *those*
  flow_grpo      K BF16 SDE samples with log-probs, GRPO loss (N = K)

Legend: P prompts, N candidates per prompt, K selected per prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from orchestration.config import TrainJobConfig
from orchestration.prompts import PromptSet, load_prompt_set
from workers.generation import Generation, PolicyCopy, SamplingSettings
from workers.learner import Learner, LearnerSettings, TrainBatch
from workers.models.base import Conditioning, ModelAdapter
from workers.objectives import compute_advantages, select_candidates, selection_fidelity, zero_std_fraction
from workers.objectives.grpo import sde_window
from workers.regen import RegenWorker
from workers.rewards import combine_rewards
from workers.rollout import RolloutWorker
from workers.sampling import candidate_seed

log = logging.getLogger(__name__)

# Seeds of the fixed held-out evaluation live in their own "iteration" so they never collide
# with training candidates.
EVAL_ITERATION = 2**31 - 1


@dataclass
class StageResult:
    """Candidates of one stage, flattened prompt-major: row p*M + m is candidate m of prompt p."""

    generation: Generation
    rewards_PM: torch.Tensor
    components: dict[str, torch.Tensor]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_adapter(cfg: TrainJobConfig) -> ModelAdapter:
    from workers.models.loading import load_model
    from workers.models.tiny import ensure_tiny_model

    path = cfg.model.path
    if path.startswith("tiny:"):
        path = str(ensure_tiny_model(path.split(":", 1)[1]))
    dtype = getattr(torch, cfg.model.dtype)
    return load_model(path, height=cfg.model.height, width=cfg.model.width,
                      max_sequence_length=cfg.model.max_sequence_length, dtype=dtype,
                      device=resolve_device(cfg.model.device))


def learner_settings(cfg: TrainJobConfig) -> LearnerSettings:
    t = cfg.train
    return LearnerSettings(
        objective=cfg.objective, lora=cfg.lora.enabled, lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
        lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, eps=t.eps, max_grad_norm=t.max_grad_norm,
        timestep_fraction=t.timestep_fraction, micro_batch_size=t.micro_batch_size,
        old_decay_type=t.old_decay_type, ema_decay=t.ema_decay, nft_beta=t.nft.beta, nft_kl_beta=t.nft.kl_beta,
        adv_clip=t.nft.adv_clip, grpo_clip_range=t.grpo.clip_range, grpo_kl_beta=t.grpo.kl_beta,
        grpo_noise_level=t.grpo.noise_level,
    )


class TwoStagePipeline:
    """Owns the roles of one job and runs iterations; ``run_iteration`` is one call per phase."""

    def __init__(self, cfg: TrainJobConfig, adapter: ModelAdapter | None = None) -> None:
        self.cfg = cfg
        self.adapter = adapter if adapter is not None else load_adapter(cfg)
        self.prompt_set: PromptSet = load_prompt_set(cfg.prompts.source, cfg.prompts.heldout_count)
        self.reward = combine_rewards(cfg.reward.weights)
        solver, shift = cfg.sampler.solver, cfg.sampler.shift
        full = SamplingSettings(num_steps=cfg.regen.num_steps, solver=solver, shift=shift)
        self.stage1: PolicyCopy | None = None
        if cfg.method == "solrl":
            lowp = SamplingSettings(num_steps=cfg.rollout.num_steps, solver=solver, shift=shift)
            self.stage1 = RolloutWorker(self.adapter, precision=cfg.rollout.precision, settings=lowp,
                                        batch_size=cfg.rollout.batch_size, min_dim=cfg.rollout.min_dim)
        elif cfg.method == "naive_quant":
            self.stage1 = RolloutWorker(self.adapter, precision=cfg.rollout.precision, settings=full,
                                        batch_size=cfg.rollout.batch_size, min_dim=cfg.rollout.min_dim)
        regen_settings = full
        if cfg.method == "flow_grpo":
            regen_settings = SamplingSettings(
                num_steps=cfg.regen.num_steps, solver="sde", shift=shift, noise_level=cfg.train.grpo.noise_level,
                keep_trajectory=True,
            )
        self.regen = RegenWorker(self.adapter, settings=regen_settings, batch_size=cfg.regen.batch_size)
        self.evaluator = PolicyCopy(self.adapter, "bf16", batch_size=cfg.regen.batch_size)
        self.learner = Learner(self.adapter, learner_settings(cfg), seed=cfg.seed)
        self.sync_seconds = self.sync_weights()

    # ---- phases ---------------------------------------------------------------------------
    def sync_weights(self) -> float:
        """Push the learner's sampling policy to every sampling copy (re-quantizing low precision)."""
        start = time.perf_counter()
        weights = self.learner.policy_weights()
        for worker in self._samplers():
            worker.set_policy(weights)
        return time.perf_counter() - start

    def _samplers(self) -> list[PolicyCopy]:
        return [w for w in (self.stage1, self.regen) if w is not None]

    def candidate_seeds(self, iteration: int, prompt_ids: list[int], count: int) -> list[int]:
        return [candidate_seed(self.cfg.seed, iteration, pid, k) for pid in prompt_ids for k in range(count)]

    def _score(self, generation: Generation, prompts: list[str], per_prompt: int) -> StageResult:
        expanded = [p for p in prompts for _ in range(per_prompt)]
        breakdown = self.reward(generation.images_B3HW, expanded)
        return StageResult(
            generation,
            breakdown.total.view(len(prompts), per_prompt),
            {k: v.view(len(prompts), per_prompt) for k, v in breakdown.components.items()},
        )

    def explore(self, worker: PolicyCopy, cond_P: Conditioning, prompts: list[str], seeds: list[int],
                per_prompt: int, tick: Callable[[int], None] | None) -> StageResult:
        cond = cond_P.index(torch.arange(len(prompts)).repeat_interleave(per_prompt))
        settings = worker.settings  # type: ignore[attr-defined]
        generation = worker.generate(cond, seeds, settings, version=self.learner.step, progress=tick)
        return self._score(generation, prompts, per_prompt)

    def select(self, rewards_PN: torch.Tensor, iteration: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(candidate_seed(self.cfg.seed, iteration, 0, 2**20))
        return select_candidates(rewards_PN, self.cfg.regen.num_selected, self.cfg.regen.selection, generator=gen)

    # ---- one iteration ----------------------------------------------------------------------
    def run_iteration(self, iteration: int, tick: Callable[[int], None] | None = None) -> dict[str, float]:
        cfg = self.cfg
        n, k = cfg.rollout.num_candidates, cfg.regen.num_selected
        timings: dict[str, float] = {}
        prompt_ids = self.prompt_set.batch(cfg.seed, iteration, cfg.prompts.per_iteration)
        prompts = [self.prompt_set.prompts[i] for i in prompt_ids]
        cond_P = self.adapter.encode_prompts(prompts)
        metrics: dict[str, float] = {"iteration": iteration, "policy_version": self.learner.step}

        if cfg.method == "flow_grpo":
            self.regen.settings.sde_window = grpo_window(cfg, iteration)
        start = time.perf_counter()
        if cfg.method in ("diffusionnft", "flow_grpo"):
            seeds = self.candidate_seeds(iteration, prompt_ids, k)
            train = self.explore(self.regen, cond_P, prompts, seeds, k, tick)
            timings["stage2_seconds"] = time.perf_counter() - start
        else:
            seeds_all = self.candidate_seeds(iteration, prompt_ids, n)
            stage1_worker = self.stage1 if self.stage1 is not None else self.regen
            pool = self.explore(stage1_worker, cond_P, prompts, seeds_all, n, tick)
            timings["stage1_seconds"] = time.perf_counter() - start
            selected_PK = self.select(pool.rewards_PM, iteration)
            rows = (torch.arange(len(prompts)).unsqueeze(1) * n + selected_PK).flatten()
            metrics["proxy_reward_mean"] = float(pool.rewards_PM.mean())
            metrics["proxy_reward_selected_mean"] = float(pool.rewards_PM.gather(1, selected_PK).mean())
            if cfg.method == "solrl":
                start = time.perf_counter()
                seeds = [seeds_all[int(r)] for r in rows]
                train = self.explore(self.regen, cond_P, prompts, seeds, k, tick)
                timings["stage2_seconds"] = time.perf_counter() - start
                metrics.update(self._fidelity(pool.rewards_PM.gather(1, selected_PK), train.rewards_PM))
            else:  # naive_scaling / naive_quant train on the stage-1 samples themselves
                train = self._take(pool, rows, len(prompts), k)

        rewards_PK = train.rewards_PM
        advantages_PK = compute_advantages(rewards_PK, global_std=cfg.train.global_std,
                                           clip=cfg.train.nft.adv_clip)
        metrics.update(reward_mean=float(rewards_PK.mean()), reward_std=float(rewards_PK.std()),
                       reward_max=float(rewards_PK.max()), reward_min=float(rewards_PK.min()),
                       zero_std_fraction=zero_std_fraction(rewards_PK))
        for name, comp in train.components.items():
            metrics[f"reward_{name}"] = float(comp.mean())

        if cfg.train.update:
            start = time.perf_counter()
            batch = self._train_batch(train, cond_P, len(prompts), advantages_PK)
            metrics.update(self.learner.train_step(batch, iteration))
            timings["learner_seconds"] = time.perf_counter() - start
            timings["sync_seconds"] = self.sync_weights()
        metrics.update(timings)
        metrics["rollout_images_per_second"] = (
            (n if cfg.method not in ("diffusionnft", "flow_grpo") else k) * len(prompts)
            / max(timings.get("stage1_seconds", timings.get("stage2_seconds", 0.0)), 1e-9)
        )
        return metrics

    def _take(self, pool: StageResult, rows: torch.Tensor, num_prompts: int, k: int) -> StageResult:
        g = pool.generation
        gen = Generation(
            seeds=[g.seeds[int(r)] for r in rows], version=g.version, latents_BCHW=g.latents_BCHW[rows],
            images_B3HW=g.images_B3HW[rows], sigmas=g.sigmas, seconds=g.seconds,
        )
        flat = pool.rewards_PM.flatten()
        return StageResult(gen, flat[rows].view(num_prompts, k),
                           {name: c.flatten()[rows].view(num_prompts, k) for name, c in pool.components.items()})

    def _train_batch(self, train: StageResult, cond_P: Conditioning, num_prompts: int,
                     advantages_PK: torch.Tensor) -> TrainBatch:
        per_prompt = advantages_PK.shape[1]
        g = train.generation
        cond = cond_P.index(torch.arange(num_prompts).repeat_interleave(per_prompt))
        return TrainBatch(cond=cond, latents_BCHW=g.latents_BCHW, advantages_B=advantages_PK.flatten(),
                          sigmas=g.sigmas, trajectory_BSCHW=g.trajectory_BSCHW, log_probs_BT=g.log_probs_BT,
                          stochastic_steps=g.stochastic_steps)

    def _fidelity(self, proxy_PK: torch.Tensor, bf16_PK: torch.Tensor) -> dict[str, float]:
        """Rank agreement of proxy and BF16 rewards on the regenerated candidates (same seeds).

        The regenerated K are ordered best half first (by proxy), so ``selected`` is arange(K).
        """
        num_prompts, k = proxy_PK.shape
        selected = torch.arange(k).expand(num_prompts, k)
        fid = selection_fidelity(proxy_PK, bf16_PK, selected, k // 2)
        return {
            "fidelity_spearman": fid["spearman"],
            "fidelity_kendall": fid["kendall_tau"],
            "fidelity_half_overlap": fid["topk_overlap"],
            "fidelity_best_half_bf16_rank": fid["best_half_mean_true_rank"],
            "fidelity_worst_half_bf16_rank": fid["worst_half_mean_true_rank"],
        }

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, use_ema: bool) -> tuple[dict[str, float], torch.Tensor, list[str]]:
        """Mean BF16 reward of the held-out prompts at fixed seeds (EMA or sampling weights)."""
        cfg = self.cfg
        weights = self.learner.ema_weights() if use_ema else self.learner.policy_weights()
        self.evaluator.set_policy(weights)
        ids = list(self.prompt_set.heldout_ids)
        prompts = [self.prompt_set.prompts[i] for i in ids]
        per = cfg.eval.seeds_per_prompt
        seeds = [candidate_seed(cfg.seed, EVAL_ITERATION, pid, j) for pid in ids for j in range(per)]
        cond = self.adapter.encode_prompts(prompts).index(torch.arange(len(ids)).repeat_interleave(per))
        settings = SamplingSettings(num_steps=cfg.eval.num_steps, solver=cfg.sampler.solver, shift=cfg.sampler.shift)
        generation = self.evaluator.generate(cond, seeds, settings, version=weights.version)
        result = self._score(generation, prompts, per)
        out = {"eval_reward_mean": float(result.rewards_PM.mean())}
        for name, comp in result.components.items():
            out[f"eval_reward_{name}"] = float(comp.mean())
        return out, generation.images_B3HW, [p for p in prompts for _ in range(per)]


def grpo_window(cfg: TrainJobConfig, iteration: int) -> range | None:
    """Flow-GRPO-Fast: the SDE window of this iteration (None = every step is SDE)."""
    g = cfg.train.grpo
    if g.sde_window_size == 0:
        return None
    gen = torch.Generator().manual_seed(candidate_seed(cfg.seed, iteration, 0, 2**21))
    lo, hi = g.sde_window_range or (0, cfg.regen.num_steps)
    return sde_window(cfg.regen.num_steps, g.sde_window_size, (lo, hi), gen)
