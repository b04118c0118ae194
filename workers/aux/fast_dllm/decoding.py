"""Which masked positions to unmask at one step (Fast-dLLM Sec. 3.3), and the Theorem 1 check.

Shape legend: B batch, W window (the current block), V vocabulary, N tokens of a toy joint.

- ``fixed``: LLaDA's low-confidence remasking: a fixed number of tokens per step, the most confident ones
  (``num_transfer_schedule`` spreads a block's masks evenly over its steps, as LLaDA's get_num_transfer_tokens).
- ``threshold``: Fast-dLLM's confidence-aware parallel decoding: every masked token of the block whose
  confidence c_i = max_v p_theta(v | x) exceeds tau, and always the top-1 so each step makes progress.
Both pick through the same top-n routine, so threshold 1.0 (nothing exceeds it) selects exactly the
baseline's single token per step.
"""

from __future__ import annotations

import torch


def num_transfer_schedule(masked_per_row: torch.Tensor, steps: int) -> torch.Tensor:
    """[B, steps] tokens to unmask per step: m // steps each, the first m % steps steps one more."""
    base = masked_per_row // steps
    rem = masked_per_row % steps
    sched = base[:, None].repeat(1, steps)
    sched += (torch.arange(steps, device=masked_per_row.device)[None, :] < rem[:, None]).long()
    return sched


def select_transfer(logits_BWV: torch.Tensor, selectable_BW: torch.Tensor, *, count_B: torch.Tensor | None = None,
                    threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy predictions x0 [B, W] and the positions [B, W] to unmask now.

    Exactly one of ``count_B`` (fixed rule) and ``threshold`` (Fast-dLLM rule: all c_i > tau, at least the
    top-1) is given. Only ``selectable`` positions (masked, inside the current block) can be chosen.
    """
    if (count_B is None) == (threshold is None):
        raise ValueError("give exactly one of count_B (fixed tokens per step) and threshold")
    probs = torch.softmax(logits_BWV.float(), dim=-1)
    conf, x0 = probs.max(dim=-1)
    conf = torch.where(selectable_BW, conf, torch.full_like(conf, -torch.inf))
    available = selectable_BW.sum(dim=1)
    if threshold is not None:
        count_B = torch.clamp((conf > threshold).sum(dim=1), min=1)
    count_B = torch.minimum(count_B, available)
    order = torch.argsort(conf, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return x0, rank < count_B[:, None]


def greedy_parallel_matches_joint(joint: torch.Tensor) -> bool:
    """Does decoding every token from its own marginal's argmax give the joint's argmax? (Theorem 1)"""
    n = joint.dim()
    marg = [joint.sum(dim=tuple(j for j in range(n) if j != i)) for i in range(n)]
    parallel = tuple(int(m.argmax()) for m in marg)
    return parallel == tuple(int(v) for v in torch.unravel_index(joint.argmax(), joint.shape))


def theorem1_condition(joint: torch.Tensor, eps: float) -> bool:
    """Theorem 1's premise: every marginal's top token has probability > 1 - eps, and (n + 1) eps <= 1."""
    n = joint.dim()
    marg = [joint.sum(dim=tuple(j for j in range(n) if j != i)) for i in range(n)]
    return all(float(m.max()) > 1 - eps for m in marg) and (n + 1) * eps <= 1


def theorem1_sweep(n_tokens: int, vocab: int, trials: int, generator: torch.Generator) -> dict[str, int]:
    """Random joints (Dirichlet with a random peak) tested against Theorem 1: with the premise (at the
    smallest eps that fits), parallel greedy must equal joint greedy; without it, it may not."""
    counts = {"premise_held": 0, "premise_held_mismatch": 0, "premise_failed": 0, "premise_failed_mismatch": 0}
    size = vocab ** n_tokens
    for _ in range(trials):
        conc = 10 ** (4 * torch.rand((), generator=generator, dtype=torch.float64) - 2)
        gamma = torch._standard_gamma(torch.full((size,), float(conc), dtype=torch.float64), generator=generator)
        joint = (gamma / gamma.sum()).reshape((vocab,) * n_tokens)
        marg_top = min(float(joint.sum(dim=tuple(j for j in range(n_tokens) if j != i)).max())
                       for i in range(n_tokens))
        eps = (1 - marg_top) + 1e-12
        held = theorem1_condition(joint, eps)
        match = greedy_parallel_matches_joint(joint)
        key = "premise_held" if held else "premise_failed"
        counts[key] += 1
        counts[key + "_mismatch"] += int(not match)
    return counts


__all__ = ["greedy_parallel_matches_joint", "num_transfer_schedule", "select_transfer", "theorem1_condition",
           "theorem1_sweep"]
