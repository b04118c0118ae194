"""Where a stage-1 proxy's ranking error comes from: precision or step count.

Sol-RL ranks N candidates with a low-precision, few-step proxy and trains on the ones it picks. The fidelity audit of
a training run measures the whole gap at once (FP8 or NVFP4 *and* stage 1's fewer steps against BF16 at stage 2's
steps). This benchmark takes it apart on one model: it samples the same N seeds per prompt at a reference setting
(BF16 at stage 2's steps) and at each proxy setting (a precision and a step count), scores every candidate with the
run's own reward, and compares each proxy's ranking with the reference's (``selection_fidelity``: Spearman,
Kendall, top and bottom K/2 overlap, BF16 rank of the proxy's best and worst halves).

A proxy row "bf16 at stage 1's steps" isolates what the step count costs; "fp8 at stage 2's steps" what the
precision costs. The reference sampled again at another forward batch size is the ceiling: rankings that differ
only by GEMM blocking (bits that depend on the batch's row count).

Legend: P prompts, N candidates per prompt.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from orchestration.config import TrainJobConfig
from orchestration.models import load_adapter
from orchestration.prompts import load_prompt_set
from orchestration.roles import SampleRequest, build_reward, local_scorer, run_sample
from workers.generation import SamplingSettings
from workers.objectives import select_candidates, selection_fidelity
from workers.rollout import RolloutWorker
from workers.sampling import candidate_seed

log = logging.getLogger(__name__)

PRECISIONS = ("bf16", "fp8", "nvfp4")


@dataclass(frozen=True)
class Setting:
    """How a copy samples: a precision, a step count and (for the ceiling row) a forward batch size."""

    precision: str
    steps: int
    batch_size: int | None = None  # None: the config's rollout.batch_size

    @property
    def label(self) -> str:
        return f"{self.precision}, {self.steps} steps" + (f", batch {self.batch_size}" if self.batch_size else "")


def parse_setting(text: str, option: str = "--proxies") -> Setting:
    """``precision:steps`` (e.g. ``fp8:8``), optionally ``:batch`` (``bf16:16:64``)."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or parts[0] not in PRECISIONS or not all(p.isdigit() and int(p) > 0
                                                                          for p in parts[1:]):
        raise ValueError(f"{option}: {text!r} is not precision:steps[:batch] with precision one of "
                         f"{', '.join(PRECISIONS)} and positive integers, e.g. fp8:8 or bf16:16:64")
    return Setting(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None)


def default_settings(cfg: TrainJobConfig) -> tuple[Setting, list[Setting]]:
    """The reference (BF16 at stage 2's steps) and the decomposition of the configured proxy."""
    lo, hi, precision = cfg.rollout.num_steps, cfg.regen.num_steps, cfg.rollout.precision
    reference = Setting("bf16", hi)
    # the ceiling row samples at a different batch size: the reference's own batch size would give its own bits
    ceiling = Setting("bf16", hi, max(1, cfg.rollout.batch_size // 2))
    proxies = [Setting(precision, lo), Setting("bf16", lo), Setting(precision, hi), ceiling]
    return reference, list(dict.fromkeys(proxies))


@dataclass
class FidelityRow:
    setting: Setting
    stats: dict[str, float]
    reward_mean: float
    seconds: float

    def as_dict(self) -> dict:
        return {"setting": self.setting.label, "precision": self.setting.precision, "steps": self.setting.steps,
                "batch_size": self.setting.batch_size, "reward_mean": self.reward_mean, "seconds": self.seconds,
                **self.stats}


def bench_fidelity(cfg: TrainJobConfig, reference: Setting, proxies: list[Setting], *, num_prompts: int,
                   iteration: int = 0, on_row: Callable[[list[FidelityRow]], None] | None = None
                   ) -> list[FidelityRow]:
    """Rank agreement of each proxy setting with the reference on the same N seeds of ``num_prompts`` training
    prompts (those of ``iteration`` in a run with ``cfg.seed``), on the base model ``cfg.model.path``."""
    adapter = load_adapter(cfg)
    score = local_scorer(build_reward(cfg))
    prompt_set = load_prompt_set(cfg.prompts.source, cfg.prompts.heldout_count)
    ids = prompt_set.batch(cfg.seed, iteration, num_prompts)
    n, k = cfg.rollout.num_candidates, cfg.regen.num_selected
    prompts = [prompt_set.prompts[pid] for pid in ids for _ in range(n)]
    seeds = [candidate_seed(cfg.seed, iteration, pid, j) for pid in ids for j in range(n)]

    def rewards_of(setting: Setting) -> tuple[torch.Tensor, float]:
        settings = SamplingSettings(num_steps=setting.steps, solver=cfg.sampler.solver, shift=cfg.sampler.shift,
                                    grid=cfg.sampler.grid)
        copy_ = RolloutWorker(adapter, precision=setting.precision, settings=settings,
                              batch_size=setting.batch_size or cfg.rollout.batch_size, min_dim=cfg.rollout.min_dim)
        if cfg.sampler.compile and adapter.device.type == "cuda":
            copy_.transformer.compile()
        start = time.perf_counter()
        out = run_sample(copy_, adapter, SampleRequest("stage1", prompts, seeds, version=0), score)
        seconds = time.perf_counter() - start
        del copy_
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("%s: mean reward %.4f in %.1f s", setting.label, float(out.rewards_B.mean()), seconds)
        return out.rewards_B.view(len(ids), n).double(), seconds

    reference_PN, _ = rewards_of(reference)
    rows: list[FidelityRow] = []
    for setting in proxies:
        proxy_PN, seconds = rewards_of(setting)
        selected_PK = select_candidates(proxy_PN, k, "best_worst")
        stats = selection_fidelity(proxy_PN, reference_PN, selected_PK, k // 2)
        rows.append(FidelityRow(setting, stats, float(proxy_PN.mean()), seconds))
        if on_row is not None:
            on_row(rows)
    return rows


def rows_to_markdown(rows: list[FidelityRow], reference: Setting, n: int, k: int) -> str:
    perfect_best, perfect_worst = k / 4 + 0.5, n - k / 4 + 0.5
    lines = [f"Reference: {reference.label}; N = {n} candidates a prompt, K = {k}. Perfect best / worst-half BF16 rank "
             f"{perfect_best:g} / {perfect_worst:g}, random {(n + 1) / 2:g}.", "",
             "| proxy | Spearman ρ | Kendall τ | top-K/2 overlap | bottom-K/2 overlap | best-half BF16 rank | "
             "worst-half BF16 rank | proxy mean reward | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.stats
        lines.append(f"| {r.setting.label} | {s['spearman']:.3f} | {s['kendall_tau']:.3f} | {s['topk_overlap']:.3f} | "
                     f"{s['bottomk_overlap']:.3f} | {s['best_half_mean_true_rank']:.2f} | "
                     f"{s['worst_half_mean_true_rank']:.2f} | {r.reward_mean:.4f} | {r.seconds:.1f} |")
    return "\n".join(lines)
