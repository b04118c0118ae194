"""Training loops of VADD (annealed DELBO) and the MDLM baseline on the same data stream and budget."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from workers.aux.common.runtime import progress
from workers.aux.vadd.model import Denoiser, Recognition
from workers.aux.vadd.objective import delbo_loss, mdlm_loss

DataFn = Callable[[int, torch.Generator], torch.Tensor]  # (batch size, generator) -> x0 [B, L]


def kl_weight(step: int, total: int, anneal_fraction: float) -> float:
    """lambda: linear from 0 to 1 over the first ``anneal_fraction`` of training, then 1 (KL annealing)."""
    if anneal_fraction <= 0:
        return 1.0
    return min(1.0, step / (anneal_fraction * total))


def train(den: Denoiser, rec: Recognition | None, data: DataFn, *, steps: int, batch_size: int, lr: float,
          anneal_fraction: float, generator: torch.Generator, desc: str, show_progress: bool = True
          ) -> list[dict[str, float]]:
    """AdamW with warm-up and cosine decay; MDLM when ``rec`` is None. Returns per-step logs."""
    params = list(den.parameters()) + (list(rec.parameters()) if rec is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(i, steps) / steps))))
    logs = []
    den.train()
    for step in progress(range(steps), desc, show_progress):
        x0 = data(batch_size, generator)
        if rec is None:
            parts = mdlm_loss(den, x0, generator)
            lam = 0.0
        else:
            lam = kl_weight(step, steps, anneal_fraction)
            parts = delbo_loss(den, rec, x0, generator, lam)
        opt.zero_grad(set_to_none=True)
        parts.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        logs.append({"loss": float(parts.loss.detach()), "nelbo": float(parts.nelbo.detach().mean()),
                     "kl": float(parts.kl.detach().mean()), "kl_weight": lam})
    den.eval()
    if rec is not None:
        rec.eval()
    return logs
