"""Flow-GRPO clipped objective (arXiv 2505.05470), its Gaussian KL, and the Flow-GRPO-Fast SDE window.

Shape legend:
    B: trajectories (samples) in the micro-batch
    T: trained SDE steps per trajectory
    *: latent dims of the step means, [C, H, W] or [L, D]

Per trained step k of trajectory i (flow_grpo ``scripts/train_sd3.py``):

    rho[i, k] = exp(log pi_theta(x_{k+1} | x_k) - log pi_old(x_{k+1} | x_k))
    L_clip    = mean_{i,k} max(-A_i rho[i, k], -A_i clip(rho[i, k], 1 - eps, 1 + eps))
    L         = L_clip + kl_beta * mean_{i,k} KL[i, k]

The log-probs are the per-step Gaussian log densities averaged over latent dims (see the SDE sampler),
so per-dimension log-ratios are tiny and the clip range is ~1e-4 (1e-5 for Flow-GRPO-Fast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GrpoLossOutput", "gaussian_mean_kl", "grpo_loss", "sde_window"]


@dataclass(frozen=True)
class GrpoLossOutput:
    """Result of :func:`grpo_loss`. ``loss`` carries the graph; every other field is detached.

    Attributes:
        loss: scalar to backpropagate, policy_loss + kl_beta * kl.
        policy_loss: scalar clipped surrogate L_clip.
        kl: scalar mean KL (0 when no KL was given).
        clip_fraction: scalar, fraction of (i, k) with |rho - 1| > clip_range.
        approx_kl: scalar, 0.5 * mean (log_prob_new - log_prob_old)^2 (as logged by flow_grpo / DDPO).
        ratio_mean: scalar, mean rho; ~1 on the first inner epoch when rollout and training agree.
    """

    loss: Tensor
    policy_loss: Tensor
    kl: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor


def grpo_loss(
    log_prob_new_BT: Tensor,
    log_prob_old_BT: Tensor,
    advantages_B: Tensor,
    *,
    clip_range: float = 1e-4,
    kl_BT: Tensor | None = None,
    kl_beta: float = 0.0,
) -> GrpoLossOutput:
    """Clipped GRPO surrogate over the trained steps of B trajectories.

    Args:
        log_prob_new_BT: log pi_theta of the stored transitions, [B, T]; gradients flow into it.
        log_prob_old_BT: log-probs stored at rollout time, [B, T]; detached here.
        advantages_B: one advantage per trajectory, broadcast over its T steps, [B]. Not clipped here:
            :func:`workers.objectives.advantages.compute_advantages` already clips to +-adv_clip.
        clip_range: PPO epsilon (1e-4 in Flow-GRPO, 1e-5 in Flow-GRPO-Fast).
        kl_BT: per-step KL to the reference, [B, T], e.g. from :func:`gaussian_mean_kl`; needed when
            ``kl_beta > 0``, otherwise only logged if given.
        kl_beta: KL weight (0.01-0.04 in the Flow-GRPO configs).

    Returns:
        :class:`GrpoLossOutput`.
    """
    if log_prob_new_BT.ndim != 2:
        raise ValueError(f"log_prob_new_BT must have shape [B, T], got {tuple(log_prob_new_BT.shape)}")
    if log_prob_old_BT.shape != log_prob_new_BT.shape:
        raise ValueError(
            f"log_prob_old_BT has shape {tuple(log_prob_old_BT.shape)}, expected {tuple(log_prob_new_BT.shape)}"
        )
    batch = log_prob_new_BT.shape[0]
    if advantages_B.shape != (batch,):
        raise ValueError(f"advantages_B must have shape [B={batch}], got {tuple(advantages_B.shape)}")
    if not (math.isfinite(clip_range) and clip_range > 0.0):
        raise ValueError(f"clip_range must be finite and > 0, got {clip_range}")
    if not (math.isfinite(kl_beta) and kl_beta >= 0.0):
        raise ValueError(f"kl_beta must be finite and >= 0, got {kl_beta}")
    if kl_BT is not None and kl_BT.shape != log_prob_new_BT.shape:
        raise ValueError(f"kl_BT has shape {tuple(kl_BT.shape)}, expected {tuple(log_prob_new_BT.shape)}")
    if kl_beta > 0.0 and kl_BT is None:
        raise ValueError(f"kl_beta={kl_beta} > 0 but kl_BT is None: pass the per-step KL or set kl_beta=0")

    log_ratio_BT = log_prob_new_BT - log_prob_old_BT.detach()
    ratio_BT = torch.exp(log_ratio_BT)
    adv_B1 = advantages_B.detach().to(ratio_BT.dtype)[:, None]
    unclipped_BT = -adv_B1 * ratio_BT
    clipped_BT = -adv_B1 * torch.clamp(ratio_BT, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = torch.maximum(unclipped_BT, clipped_BT).mean()

    if kl_BT is None:
        kl = torch.zeros((), dtype=policy_loss.dtype, device=policy_loss.device)
    else:
        kl = kl_BT.mean()
    loss = policy_loss + kl_beta * kl if kl_beta > 0.0 else policy_loss

    with torch.no_grad():
        clip_fraction = ((ratio_BT - 1.0).abs() > clip_range).to(ratio_BT.dtype).mean()
        approx_kl = 0.5 * (log_ratio_BT**2).mean()
        ratio_mean = ratio_BT.mean()
    return GrpoLossOutput(
        loss=loss,
        policy_loss=policy_loss.detach(),
        kl=kl.detach(),
        clip_fraction=clip_fraction,
        approx_kl=approx_kl,
        ratio_mean=ratio_mean,
    )


def gaussian_mean_kl(mean_theta: Tensor, mean_ref: Tensor, std: Tensor | float) -> Tensor:
    """KL between two Gaussians with the same isotropic std, averaged over latent dims, per sample.

        KL_B = mean_* (mu_theta - mu_ref)^2 / (2 std^2)

    Args:
        mean_theta: step mean mu_theta(x_t) of the policy, [B, *]; gradients flow into it.
        mean_ref: step mean of the reference policy (adapter disabled), [B, *]; detached here.
        std: the std to normalise by, a float, a 0-dim tensor, or one value per sample [B]; must be > 0.
            flow_grpo passes sigma_t (the SDE noise scale of the step *without* the sqrt(-dt) factor), so
            its "KL" is the true per-step KL (std sigma_t sqrt(-dt)) scaled by -dt. Pass
            sigma_t * sqrt(-dt) for the exact KL; either way kl_beta is tuned to the choice.

    Returns:
        KL per sample, [B].
    """
    if mean_theta.ndim < 2:
        raise ValueError(f"mean_theta must have shape [B, ...], got {tuple(mean_theta.shape)}")
    if mean_ref.shape != mean_theta.shape:
        raise ValueError(f"mean_ref has shape {tuple(mean_ref.shape)}, expected {tuple(mean_theta.shape)}")
    batch = mean_theta.shape[0]
    std_t = torch.as_tensor(std, dtype=mean_theta.dtype, device=mean_theta.device).detach()
    if std_t.ndim == 0:
        std_t = std_t.expand(batch)
    if std_t.shape != (batch,):
        raise ValueError(f"std must be a scalar or have shape [B={batch}], got {tuple(std_t.shape)}")
    if not (torch.isfinite(std_t).all() and (std_t > 0).all()):
        raise ValueError("std must be finite and > 0 for every sample (an ODE step has no Gaussian KL)")
    dims = tuple(range(1, mean_theta.ndim))
    diff = mean_theta - mean_ref.detach()
    return (diff * diff).mean(dim=dims) / (2.0 * std_t**2)


def sde_window(
    num_steps: int,
    window_size: int,
    window_range: tuple[int, int],
    generator: torch.Generator,
) -> range:
    """Flow-GRPO-Fast: the consecutive sampling steps that use the SDE (and are trained); others are ODE.

    The window start is drawn uniformly from the integers lo..hi - window_size (both inclusive), so the
    window always lies inside [lo, hi). flow_grpo defaults: window_size 2, window_range (0, num_steps);
    its ``*_fast_nocfg`` configs use 3 and (0, num_steps // 2) (the high-noise half).

    Args:
        num_steps: sampling steps of the trajectory, >= 1.
        window_size: SDE steps in the window, 1 <= window_size <= hi - lo.
        window_range: (lo, hi) with 0 <= lo < hi <= num_steps; step indices, step 0 is the noisiest.
        generator: seeded torch generator (no global RNG).

    Returns:
        ``range(start, start + window_size)`` of step indices.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if len(window_range) != 2:
        raise ValueError(f"window_range must be (lo, hi), got {window_range!r}")
    lo, hi = (int(v) for v in window_range)
    if not 0 <= lo < hi <= num_steps:
        raise ValueError(
            f"window_range (lo, hi) must satisfy 0 <= lo < hi <= num_steps={num_steps}, got ({lo}, {hi})"
        )
    if isinstance(window_size, bool) or not isinstance(window_size, int) or not 1 <= window_size <= hi - lo:
        raise ValueError(
            f"window_size must be an int in [1, hi - lo = {hi - lo}] for window_range ({lo}, {hi}), got {window_size!r}"
        )
    start = int(
        torch.randint(lo, hi - window_size + 1, (1,), generator=generator, device=generator.device).item()
    )
    return range(start, start + window_size)
