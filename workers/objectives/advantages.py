"""Group-relative advantages (Flow-GRPO / DiffusionNFT / Sol-RL).

Shape legend:
    P: prompts (groups) in the gathered batch
    K: candidates per prompt that are trained on (Sol-RL: the K selected of N rolled out)

Advantage of candidate k of prompt p (Flow-GRPO, arXiv 2505.05470; used unchanged by DiffusionNFT,
arXiv 2509.16117, and Sol-RL, arXiv 2604.06916):

    A[p, k] = clip( (R[p, k] - mean_k R[p, :]) / (std + eps), -clip, clip )

The mean is always per prompt. ``std`` is taken over the whole batch when ``global_std`` (the flow_grpo
and Sol-RL default) and over the prompt's own group otherwise. It is the *population* standard
deviation (divide by n, ``unbiased=False``), because flow_grpo's per-prompt stat tracker uses ``np.std``,
whose default is the population estimator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["compute_advantages", "zero_std_fraction"]


def _check_rewards(rewards_PK: Tensor) -> None:
    if rewards_PK.ndim != 2:
        raise ValueError(
            f"rewards_PK must have shape [P, K] (prompts x candidates), got shape {tuple(rewards_PK.shape)}; "
            "reshape the gathered rewards to one row per prompt"
        )
    if rewards_PK.shape[0] == 0 or rewards_PK.shape[1] == 0:
        raise ValueError(
            f"rewards_PK is empty (shape {tuple(rewards_PK.shape)}); need at least one prompt and one candidate"
        )


def compute_advantages(
    rewards_PK: Tensor,
    *,
    global_std: bool = True,
    eps: float = 1e-4,
    clip: float = 5.0,
) -> Tensor:
    """Per-prompt-centred, std-normalised, clipped advantages.

    Args:
        rewards_PK: rewards, shape [P, K]; row p holds the K candidates of prompt p.
        global_std: divide by the std of all P*K rewards (True, flow_grpo default) or by each
            prompt's own std (False).
        eps: added to the std so that groups with equal rewards give 0 rather than 0/0 (1e-4 in flow_grpo).
        clip: advantages are clipped to [-clip, clip] (``adv_clip_max`` = 5 in Flow-GRPO / Sol-RL).

    Returns:
        advantages, shape [P, K], same dtype as ``rewards_PK`` (float32 if it was not floating point).
    """
    _check_rewards(rewards_PK)
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    if not (math.isfinite(clip) and clip > 0.0):
        raise ValueError(f"clip must be finite and > 0, got {clip}")
    rewards = rewards_PK if rewards_PK.is_floating_point() else rewards_PK.float()
    if not torch.isfinite(rewards).all():
        raise ValueError(
            "rewards_PK contains NaN or Inf; fix the reward function before computing advantages"
        )

    mean_P1 = rewards.mean(dim=1, keepdim=True)
    if global_std:
        # Population std over the whole batch, as np.std in flow_grpo's tracker.
        std = rewards.std(unbiased=False)
    else:
        std = rewards.std(dim=1, keepdim=True, unbiased=False)
    advantages_PK = (rewards - mean_P1) / (std + eps)
    return advantages_PK.clamp(-clip, clip)


def zero_std_fraction(rewards_PK: Tensor) -> float:
    """Fraction of prompts whose K rewards are all exactly equal (their advantages are all 0).

    Logged as ``zero_std_ratio`` by Sol-RL / flow_grpo: such prompts contribute no policy gradient.

    Args:
        rewards_PK: rewards, shape [P, K].

    Returns:
        a Python float in [0, 1].
    """
    _check_rewards(rewards_PK)
    # Exact equality (max == min) rather than std < tol: a tolerance would be arbitrary in reward units.
    flat_P = rewards_PK.amax(dim=1) == rewards_PK.amin(dim=1)
    return float(flat_P.float().mean().item())
