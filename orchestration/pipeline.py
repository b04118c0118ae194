"""The two-stage iteration, written once against the ``Roles`` contract (in-process or on Ray).

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
from dataclasses import dataclass, field

import torch

from orchestration.config import TrainJobConfig
from orchestration.prompts import PromptSet, load_prompt_set
from orchestration.roles import PendingResult, Roles, SampleOutput, SampleRequest, TrainRequest
from workers.objectives import compute_advantages, select_candidates, selection_fidelity, zero_std_fraction
from workers.objectives.grpo import sde_window
from workers.sampling import candidate_seed

log = logging.getLogger(__name__)

# Seeds of the fixed held-out evaluation live in their own "iteration" so they never collide
# with training candidates.
EVAL_ITERATION = 2**31 - 1
PRECISION_LADDER = ("nvfp4", "fp8", "bf16")  # the fidelity guard moves up this ladder


@dataclass
class GuardState:
    """The fidelity guard: which stage-1 precision is in use and why."""

    precision: str | None
    history: list[float] = field(default_factory=list)
    switches: list[dict] = field(default_factory=list)


class TwoStageLoop:
    """Runs iterations of one job against ``roles``; ``run_iteration`` reads as one call per phase."""

    def __init__(self, cfg: TrainJobConfig, roles: Roles, prompt_set: PromptSet | None = None) -> None:
        self.cfg = cfg
        self.roles = roles
        self.prompt_set = prompt_set or load_prompt_set(cfg.prompts.source, cfg.prompts.heldout_count)
        self.version = 0
        self.prefetched: tuple[int, PendingResult] | None = None  # one-step-off stage 1 of the next iteration
        self.guard = GuardState(cfg.rollout.precision if cfg.method in ("solrl", "naive_quant") else None)

    # ---- phases ---------------------------------------------------------------------------
    def candidate_seeds(self, iteration: int, prompt_ids: list[int], count: int) -> list[int]:
        return [candidate_seed(self.cfg.seed, iteration, pid, k) for pid in prompt_ids for k in range(count)]

    def sample(self, stage: str, prompts: list[str], seeds: list[int], per_prompt: int,
               tick: Callable[[int], None] | None, **kwargs) -> SampleOutput:
        expanded = [p for p in prompts for _ in range(per_prompt)]
        return self.roles.sample(SampleRequest(stage, expanded, seeds, self.version, **kwargs), tick)  # type: ignore[arg-type]

    def select(self, rewards_PN: torch.Tensor, iteration: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(candidate_seed(self.cfg.seed, iteration, 0, 2**20))
        return select_candidates(rewards_PN, self.cfg.regen.num_selected, self.cfg.regen.selection, generator=gen)

    def sde_window(self, iteration: int) -> range | None:
        """Flow-GRPO-Fast: the SDE window of this iteration (None = every step is SDE)."""
        g = self.cfg.train.grpo
        if self.cfg.method != "flow_grpo" or g.sde_window_size == 0:
            return None
        gen = torch.Generator().manual_seed(candidate_seed(self.cfg.seed, iteration, 0, 2**21))
        lo, hi = g.sde_window_range or (0, self.cfg.regen.num_steps)
        return sde_window(self.cfg.regen.num_steps, g.sde_window_size, (lo, hi), gen)

    # ---- one iteration ----------------------------------------------------------------------
    def run_iteration(self, iteration: int, tick: Callable[[int], None] | None = None) -> dict[str, float]:
        cfg = self.cfg
        n, k = cfg.rollout.num_candidates, cfg.regen.num_selected
        prompt_ids = self.prompt_set.batch(cfg.seed, iteration, cfg.prompts.per_iteration)
        prompts = [self.prompt_set.prompts[i] for i in prompt_ids]
        p = len(prompts)
        metrics: dict[str, float] = {"iteration": iteration, "policy_version": self.version}
        if self.guard.precision is not None:
            metrics["stage1_precision_bits"] = {"nvfp4": 4, "fp8": 8, "bf16": 16}[self.guard.precision]

        if cfg.method in ("diffusionnft", "flow_grpo"):
            start = time.perf_counter()
            train = self.sample("regen", prompts, self.candidate_seeds(iteration, prompt_ids, k), k, tick,
                                sde_window=self.sde_window(iteration))
            metrics["stage2_seconds"] = time.perf_counter() - start
            train_rows = torch.arange(p * k)
        else:
            start = time.perf_counter()
            seeds_all = self.candidate_seeds(iteration, prompt_ids, n)
            if self.prefetched is not None and self.prefetched[0] == iteration:
                pool = self.prefetched[1].result(tick)  # sampled by the previous policy: lag 1
                metrics["policy_lag"] = 1.0
            else:
                pool = self.sample("stage1", prompts, seeds_all, n, tick)
                metrics["policy_lag"] = 0.0
            self.prefetched = None
            metrics["stage1_seconds"] = time.perf_counter() - start
            pool_PN = pool.rewards_B.view(p, n)
            selected_PK = self.select(pool_PN, iteration)
            train_rows = (torch.arange(p).unsqueeze(1) * n + selected_PK).flatten()
            metrics["proxy_reward_mean"] = float(pool_PN.mean())
            metrics["proxy_reward_selected_mean"] = float(pool_PN.gather(1, selected_PK).mean())
            if cfg.method == "solrl":
                start = time.perf_counter()
                train = self.sample("regen", prompts, [seeds_all[int(r)] for r in train_rows], k, tick)
                metrics["stage2_seconds"] = time.perf_counter() - start
                metrics.update(self.fidelity(pool_PN.gather(1, selected_PK), train.rewards_B.view(p, k)))
                every = cfg.eval.fidelity_audit_every
                if every and iteration % every == 0:
                    metrics.update(self.audit(prompts, seeds_all, pool_PN, selected_PK))
            else:  # naive_scaling / naive_quant train on the stage-1 samples themselves
                train = take_rows(pool, train_rows)

        rewards_PK = train.rewards_B.view(p, k)
        advantages_PK = compute_advantages(rewards_PK, global_std=cfg.train.global_std, clip=cfg.train.nft.adv_clip)
        metrics.update(reward_mean=float(rewards_PK.mean()), reward_std=float(rewards_PK.std()),
                       reward_max=float(rewards_PK.max()), reward_min=float(rewards_PK.min()),
                       zero_std_fraction=zero_std_fraction(rewards_PK))
        for name, comp in train.components.items():
            metrics[f"reward_{name}"] = float(comp.mean())

        if cfg.resources.one_step_off and iteration + 1 < cfg.iterations:
            # Stage 1 of the next iteration runs with the current policy while the learner updates.
            next_ids = self.prompt_set.batch(cfg.seed, iteration + 1, cfg.prompts.per_iteration)
            next_prompts = [q for pid in next_ids for q in [self.prompt_set.prompts[pid]] * n]
            request = SampleRequest("stage1", next_prompts, self.candidate_seeds(iteration + 1, next_ids, n),
                                    self.version)
            self.prefetched = (iteration + 1, self.roles.submit_sample(request))

        if cfg.train.update:
            start = time.perf_counter()
            request = TrainRequest(
                prompts=[q for q in prompts for _ in range(k)], latents_BCHW=train.latents_BCHW,
                advantages_B=advantages_PK.flatten(), sigmas=train.sigmas, iteration=iteration,
                trajectory_BSCHW=train.trajectory_BSCHW, log_probs_BT=train.log_probs_BT,
                stochastic_steps=train.stochastic_steps,
            )
            metrics.update(self.roles.train(request))
            metrics["learner_seconds"] = time.perf_counter() - start
            self.version += 1
            metrics["sync_seconds"] = self.roles.sync()
        sampled = n * p if "stage1_seconds" in metrics else k * p
        metrics["rollout_images_per_second"] = sampled / max(
            metrics.get("stage1_seconds", metrics.get("stage2_seconds", 0.0)), 1e-9)
        self.update_guard(metrics)
        return metrics

    def fidelity(self, proxy_PK: torch.Tensor, bf16_PK: torch.Tensor) -> dict[str, float]:
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

    def audit(self, prompts: list[str], seeds_all: list[int], pool_PN: torch.Tensor,
              selected_PK: torch.Tensor) -> dict[str, float]:
        """Sample the whole pool in BF16 too, and rank the proxy's choice among all N (the paper's
        selection-fidelity protocol: a perfect proxy puts the best half at rank K/4 + 0.5)."""
        p, n = pool_PN.shape
        bf16 = self.sample("regen", prompts, seeds_all, n, None)
        fid = selection_fidelity(pool_PN, bf16.rewards_B.view(p, n), selected_PK, selected_PK.shape[1] // 2)
        return {
            "audit_spearman": fid["spearman"],
            "audit_kendall": fid["kendall_tau"],
            "audit_topk_overlap": fid["topk_overlap"],
            "audit_bottomk_overlap": fid["bottomk_overlap"],
            "audit_best_half_bf16_rank": fid["best_half_mean_true_rank"],
            "audit_worst_half_bf16_rank": fid["worst_half_mean_true_rank"],
        }

    # ---- the fidelity guard ------------------------------------------------------------------
    def update_guard(self, metrics: dict[str, float]) -> None:
        """Move the stage-1 proxy up a precision when its ranking stops agreeing with BF16's."""
        g = self.cfg.guard
        spearman = metrics.get("fidelity_spearman")
        if not g.enabled or self.guard.precision is None or spearman is None or spearman != spearman:
            return
        self.guard.history.append(float(spearman))
        window = self.guard.history[-g.window:]
        if len(window) < g.window:
            return
        running = sum(window) / len(window)
        metrics["fidelity_spearman_running"] = running
        level = PRECISION_LADDER.index(self.guard.precision)
        floor_level = PRECISION_LADDER.index(self.cfg.rollout.precision)
        target = None
        if running < g.spearman_floor and level + 1 < len(PRECISION_LADDER):
            target, why = PRECISION_LADDER[level + 1], f"running Spearman {running:.3f} < floor {g.spearman_floor}"
        elif g.allow_recover and level > floor_level and running > g.spearman_floor + g.recover_margin:
            target = PRECISION_LADDER[level - 1]
            why = f"running Spearman {running:.3f} > floor + margin {g.spearman_floor + g.recover_margin}"
        if target is None:
            return
        log.warning("fidelity guard: stage-1 precision %s -> %s (%s)", self.guard.precision, target, why)
        switch = {"iteration": metrics["iteration"], "from": self.guard.precision, "to": target, "reason": why}
        self.guard.switches.append(switch)
        self.guard.precision = target
        self.guard.history.clear()  # judge the new proxy on its own iterations
        self.roles.set_stage1_precision(target)
        metrics["guard_switch"] = 1.0

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, use_ema: bool) -> tuple[dict[str, float], torch.Tensor]:
        """Mean BF16 reward of the held-out prompts at fixed seeds (EMA or sampling weights)."""
        cfg = self.cfg
        version = self.roles.load_eval_weights(use_ema)
        ids = list(self.prompt_set.heldout_ids)
        prompts = [self.prompt_set.prompts[i] for i in ids]
        per = cfg.eval.seeds_per_prompt
        seeds = [candidate_seed(cfg.seed, EVAL_ITERATION, pid, j) for pid in ids for j in range(per)]
        expanded = [q for q in prompts for _ in range(per)]
        out = self.roles.sample(SampleRequest("eval", expanded, seeds, version, return_images=True))
        result = {"eval_reward_mean": float(out.rewards_B.mean())}
        for name, comp in out.components.items():
            result[f"eval_reward_{name}"] = float(comp.mean())
        if self.prompt_set.categories is not None:  # per-category held-out scores (GenEval's table)
            category_B = [self.prompt_set.categories[pid] for pid in ids for _ in range(per)]
            for category in dict.fromkeys(category_B):
                rows = torch.tensor([c == category for c in category_B])
                for name, comp in out.components.items():
                    result[f"eval_{name}_{category}"] = float(comp.cpu()[rows].mean())
        return result, out.images_B3HW  # type: ignore[return-value]


def take_rows(out: SampleOutput, rows: torch.Tensor) -> SampleOutput:
    return SampleOutput(
        latents_BCHW=out.latents_BCHW[rows], rewards_B=out.rewards_B[rows],
        components={name: c[rows] for name, c in out.components.items()}, sigmas=out.sigmas,
        seconds=out.seconds, version=out.version,
        images_B3HW=out.images_B3HW[rows] if out.images_B3HW is not None else None,
    )
