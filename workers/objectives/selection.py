"""Choosing which rolled-out candidates to train on, and measuring how well a proxy ranks them.

Shape legend:
    P: prompts
    N: candidates rolled out per prompt (Sol-RL stage 1: 96 FP4 drafts)
    K: candidates kept per prompt (Sol-RL: 24, regenerated in BF16)

Sol-RL (arXiv 2604.06916, ``select_indices_by_mode``) keeps the best K/2 and worst K/2 candidates of the
N drafts by proxy (FP4) reward; the other modes are its ablations. Selection fidelity (the rebuttal's
"ranking preservation" table) compares the proxy ranking with the ranking by the true (BF16) reward of
the same candidates.

Ranking convention used throughout: candidates are put in a strict total order, higher reward first and,
among equal rewards, lower index first (a stable sort). Every mode is therefore deterministic given its
inputs and the generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SELECTION_MODES", "select_candidates", "selection_fidelity"]

SELECTION_MODES: tuple[str, ...] = ("best_worst", "random", "extremes_random", "mean_deviation")
_RANDOM_MODES = frozenset({"random", "extremes_random"})


def _check_rewards_PN(rewards_PN: Tensor, name: str) -> None:
    if rewards_PN.ndim != 2 or rewards_PN.shape[0] == 0 or rewards_PN.shape[1] == 0:
        raise ValueError(f"{name} must have shape [P, N] with P, N >= 1, got shape {tuple(rewards_PN.shape)}")
    if not torch.isfinite(rewards_PN).all():
        raise ValueError(f"{name} contains NaN or Inf; ranking needs finite rewards")


def _rank_order(rewards_PN: Tensor) -> Tensor:
    """Indices [P, N] from best to worst; ties keep index order (stable sort)."""
    return torch.sort(rewards_PN, dim=1, descending=True, stable=True).indices


def _topk_membership(values_PN: Tensor, k: int) -> Tensor:
    """Probability [P, N] that each candidate is in the top k when ties are broken uniformly at random:
    1 above the k-th value, 0 below it, and (free slots) / (tied candidates) for those equal to it."""
    kth_P1 = torch.sort(values_PN, dim=1, descending=True).values[:, k - 1 : k]
    above = values_PN > kth_P1
    tied = values_PN == kth_P1
    free_P1 = k - above.sum(dim=1, keepdim=True)
    share_P1 = free_P1.to(torch.float64) / tied.sum(dim=1, keepdim=True)
    return above.to(torch.float64) + tied.to(torch.float64) * share_P1


def _random_keys(shape: tuple[int, int], generator: torch.Generator, device: torch.device) -> Tensor:
    # Draw on the generator's device (torch requires it) and move the keys to the rewards' device.
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def select_candidates(
    rewards_PN: Tensor,
    k: int,
    mode: str,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices of the K candidates per prompt to keep.

    Modes (the exact rule of each):
        ``best_worst``: the ``k // 2`` best followed by the ``k - k // 2`` worst; the best block is listed
            best first and the worst block worst first. ``k`` must be even (Sol-RL: 12 + 12 of 96).
        ``random``: ``k`` distinct candidates drawn uniformly without replacement, in draw order.
        ``extremes_random``: with ``m = k // 4``: the ``m`` best (best first), then the ``m`` worst (worst
            first), then ``k - 2m`` drawn uniformly without replacement from the ``N - 2m`` candidates that
            are in neither extreme block, in draw order. (Sol-RL names this mode; its exact split was not
            verified, so this is our definition.)
        ``mean_deviation``: the ``k`` candidates with the largest ``|r - mean_p r|``, largest first; ties
            keep index order.

    Args:
        rewards_PN: proxy rewards, shape [P, N].
        k: candidates to keep per prompt, 1 <= k <= N.
        mode: one of ``SELECTION_MODES``.
        generator: required by ``random`` and ``extremes_random`` (no global RNG), ignored otherwise.

    Returns:
        selected_PK: long tensor [P, k] of candidate indices into dim 1 of ``rewards_PN``; within a row
        the indices are distinct.
    """
    if mode not in SELECTION_MODES:
        raise ValueError(f"unknown selection mode {mode!r}; valid modes: {', '.join(SELECTION_MODES)}")
    _check_rewards_PN(rewards_PN, "rewards_PN")
    num_prompts, n = rewards_PN.shape
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > n:
        raise ValueError(f"k must be an int with 1 <= k <= N; got k={k!r} with N={n} candidates per prompt")
    if mode == "best_worst" and k % 2 != 0:
        raise ValueError(f"best_worst needs an even k (k//2 best + k//2 worst), got k={k}")
    if mode in _RANDOM_MODES and generator is None:
        raise ValueError(f"mode {mode!r} draws random candidates: pass a seeded torch.Generator")

    if mode == "best_worst":
        order_PN = _rank_order(rewards_PN)
        n_best = k // 2
        n_worst = k - n_best
        # Both blocks come from one total order, so they never overlap even when rewards tie.
        return torch.cat([order_PN[:, :n_best], order_PN[:, n - n_worst :].flip(1)], dim=1)

    if mode == "random":
        keys_PN = _random_keys((num_prompts, n), generator, rewards_PN.device)
        return keys_PN.argsort(dim=1, stable=True)[:, :k]

    if mode == "extremes_random":
        order_PN = _rank_order(rewards_PN)
        m = k // 4
        best_Pm = order_PN[:, :m]
        worst_Pm = order_PN[:, n - m :].flip(1)
        middle_PM = order_PN[:, m : n - m]
        keys_PM = _random_keys((num_prompts, middle_PM.shape[1]), generator, rewards_PN.device)
        pick_PR = keys_PM.argsort(dim=1, stable=True)[:, : k - 2 * m]
        return torch.cat([best_Pm, worst_Pm, middle_PM.gather(1, pick_PR)], dim=1)

    # mean_deviation
    deviation_PN = (rewards_PN - rewards_PN.mean(dim=1, keepdim=True)).abs()
    return torch.sort(deviation_PN, dim=1, descending=True, stable=True).indices[:, :k]


def _average_ranks(values_PN: Tensor) -> Tensor:
    """Rank 1 = largest value; tied values share the mean of their ranks (scipy's ``rankdata`` 'average').

    O(N^2) per prompt, which is fine for N in the hundreds.
    """
    greater_PN = (values_PN[:, None, :] > values_PN[:, :, None]).sum(dim=2)
    equal_PN = (values_PN[:, None, :] == values_PN[:, :, None]).sum(dim=2)
    return 1.0 + greater_PN.to(values_PN.dtype) + (equal_PN.to(values_PN.dtype) - 1.0) / 2.0


def _spearman_P(x_PN: Tensor, y_PN: Tensor) -> Tensor:
    """Spearman rho per prompt: Pearson correlation of average ranks; NaN where either row is constant."""
    rx = _average_ranks(x_PN)
    ry = _average_ranks(y_PN)
    rx = rx - rx.mean(dim=1, keepdim=True)
    ry = ry - ry.mean(dim=1, keepdim=True)
    denom = torch.sqrt((rx * rx).sum(dim=1) * (ry * ry).sum(dim=1))
    return torch.where(denom > 0, (rx * ry).sum(dim=1) / denom.clamp_min(1e-300), torch.nan)


def _kendall_tau_b_P(x_PN: Tensor, y_PN: Tensor) -> Tensor:
    """Kendall tau-b per prompt (ties corrected); NaN where either row is constant.

    tau_b = (n_c - n_d) / sqrt((n_0 - n_x)(n_0 - n_y)) over pairs i < j, where n_x / n_y count pairs tied
    in x / y. Summing sign products over all ordered pairs counts each unordered pair twice, which
    cancels in the ratio.
    """
    sx = torch.sign(x_PN[:, :, None] - x_PN[:, None, :])
    sy = torch.sign(y_PN[:, :, None] - y_PN[:, None, :])
    concordance_P = (sx * sy).sum(dim=(1, 2))
    untied_x_P = (sx != 0).sum(dim=(1, 2)).to(x_PN.dtype)
    untied_y_P = (sy != 0).sum(dim=(1, 2)).to(x_PN.dtype)
    denom = torch.sqrt(untied_x_P * untied_y_P)
    return torch.where(denom > 0, concordance_P / denom.clamp_min(1e-300), torch.nan)


def _nanmean(values_P: Tensor) -> float:
    finite = values_P[~torch.isnan(values_P)]
    return float(finite.mean().item()) if finite.numel() > 0 else math.nan


def selection_fidelity(
    proxy_rewards_PN: Tensor,
    true_rewards_PN: Tensor,
    selected_PK: Tensor,
    k: int,
) -> dict[str, float]:
    """How well a proxy reward (e.g. FP4 drafts) ranks candidates compared with the true reward (BF16).

    Both reward tensors score the SAME N candidates of each prompt (same seeds). Statistics are computed
    per prompt in float64 and averaged over prompts.

    Args:
        proxy_rewards_PN: proxy rewards, shape [P, N].
        true_rewards_PN: true rewards of the same candidates, shape [P, N].
        selected_PK: indices chosen from the proxy (``select_candidates(..., "best_worst")``), shape
            [P, K], K even: the first K/2 columns are the "best half", the rest the "worst half".
        k: size of the top-k / bottom-k sets compared, 1 <= k <= N.

    Returns:
        dict with
        ``spearman``, ``kendall_tau``: mean over prompts of Spearman rho and Kendall tau-b (ties use
            average ranks / tau-b, like scipy); prompts where either reward row is constant have no
            defined correlation and are left out of the mean (NaN if none is defined);
        ``num_undefined_prompts``: how many prompts were left out above;
        ``topk_overlap`` / ``bottomk_overlap``: mean of |proxy top-k ∩ true top-k| / k (likewise bottom),
            in expectation over random tie-breaking on each side (with no ties, the plain overlap);
        ``best_half_mean_true_rank`` / ``worst_half_mean_true_rank``: mean true rank (1 = best, average
            ranks for ties) of the selected best / worst halves. A perfect proxy with K of N gives
            K/4 + 0.5 and N - K/4 + 0.5 (6.5 / 90.5 for 24 of 96); a random one gives (N+1)/2 for both.
    """
    _check_rewards_PN(proxy_rewards_PN, "proxy_rewards_PN")
    _check_rewards_PN(true_rewards_PN, "true_rewards_PN")
    if proxy_rewards_PN.shape != true_rewards_PN.shape:
        raise ValueError(
            f"proxy and true rewards must score the same candidates: shapes {tuple(proxy_rewards_PN.shape)} "
            f"and {tuple(true_rewards_PN.shape)} differ"
        )
    num_prompts, n = proxy_rewards_PN.shape
    if selected_PK.ndim != 2 or selected_PK.shape[0] != num_prompts:
        raise ValueError(f"selected_PK must have shape [P={num_prompts}, K], got {tuple(selected_PK.shape)}")
    num_selected = selected_PK.shape[1]
    if num_selected < 2 or num_selected % 2 != 0:
        raise ValueError(f"selected_PK needs an even K >= 2 (best half + worst half), got K={num_selected}")
    if selected_PK.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"selected_PK must hold integer indices, got dtype {selected_PK.dtype}")
    if (selected_PK < 0).any() or (selected_PK >= n).any():
        raise ValueError(f"selected_PK has indices outside [0, N={n})")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > n:
        raise ValueError(f"k must be an int with 1 <= k <= N; got k={k!r} with N={n}")

    proxy = proxy_rewards_PN.detach().to(torch.float64)
    true = true_rewards_PN.detach().to(device=proxy.device, dtype=torch.float64)
    selected = selected_PK.to(device=proxy.device, dtype=torch.int64)

    spearman_P = _spearman_P(proxy, true)
    kendall_P = _kendall_tau_b_P(proxy, true)
    undefined = int((torch.isnan(spearman_P) | torch.isnan(kendall_P)).sum().item())

    # Expected overlaps when each side's ties are broken at random (independently): index order would
    # count tied rewards (e.g. many zeros) as agreement.
    top_overlap_P = (_topk_membership(proxy, k) * _topk_membership(true, k)).sum(dim=1) / k
    bottom_overlap_P = (_topk_membership(-proxy, k) * _topk_membership(-true, k)).sum(dim=1) / k

    true_ranks_PN = _average_ranks(true)
    selected_ranks_PK = true_ranks_PN.gather(1, selected)
    half = num_selected // 2
    return {
        "spearman": _nanmean(spearman_P),
        "kendall_tau": _nanmean(kendall_P),
        "num_undefined_prompts": float(undefined),
        "topk_overlap": float(top_overlap_P.double().mean().item()),
        "bottomk_overlap": float(bottom_overlap_P.double().mean().item()),
        "best_half_mean_true_rank": float(selected_ranks_PK[:, :half].mean().item()),
        "worst_half_mean_true_rank": float(selected_ranks_PK[:, half:].mean().item()),
    }
