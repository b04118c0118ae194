"""DiffusionNFT loss (arXiv 2509.16117) as Sol-RL (arXiv 2604.06916) trains with it, and the old-policy EMA.

Shape legend:
    B: samples in the micro-batch (one trained timestep per sample)
    *: latent dims, either [C, H, W] (SANA / SD3 / FLUX-unpacked) or [L, D] (packed tokens)

Flow-matching conventions: t in [0, 1] (1 = noise), x_t = (1 - t) x0 + t eps, velocity target
v = eps - x0, x0_hat = x_t - t v.

The loss (Sol-RL ``train_sana.py`` / ``train_flux1.py``, DiffusionNFT ``train_nft_sd3.py``):

    A  = clip(A, -adv_clip, adv_clip);   r = clamp(A / adv_clip / 2 + 1/2, 0, 1)   # "optimality prob."
    v+ = beta v_theta + (1 - beta) v_old;   v- = (1 + beta) v_old - beta v_theta     # implicit pos / neg
    x0+- = x_t - t v+-
    l+- = mean_* (x0+- - x0)^2 / sg(max(mean_* |x0+- - x0|, 1e-5))                  # adaptive weight
    policy = adv_clip * mean_B[(r l+ + (1 - r) l-) / beta]
    kl     = mean_B mean_* (v_theta - v_ref)^2
    loss   = policy + kl_beta * kl

Since x0_hat - x0 = -t (v - (eps - x0)), each term is a t^2-weighted velocity regression towards the
flow-matching target, normalised by its own (detached) L1 size. Positive advantages pull the positive
policy v+ towards the target; negative advantages pull the implicit negative policy v- there, which pushes
v_theta away from it (mirrored around v_old).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NftLossOutput", "ema_decay", "nft_loss", "update_old_params"]

# Floor of the adaptive weight sg(mean |x0_hat - x0|). The DiffusionNFT trainer clips the weight at
# 1e-5 from below (rather than adding an epsilon); the two differ only when the error is ~1e-5.
_WEIGHT_FLOOR = 1e-5


@dataclass(frozen=True)
class NftLossOutput:
    """Result of :func:`nft_loss`. ``loss`` carries the graph; every other field is detached.

    Attributes:
        loss: scalar to backpropagate (zero with zero gradients when it was not finite).
        policy_loss: scalar, the advantage-weighted term before the KL.
        kl: scalar, mean_B mean_* (v_theta - v_ref)^2 (unweighted by kl_beta).
        r_mean: scalar, mean optimality probability r over the batch.
        loss_pos: scalar, mean_B l+.
        loss_neg: scalar, mean_B l-.
        nonfinite: bool scalar, True when the loss was NaN/Inf and was replaced by zero.
    """

    loss: Tensor
    policy_loss: Tensor
    kl: Tensor
    r_mean: Tensor
    loss_pos: Tensor
    loss_neg: Tensor
    nonfinite: Tensor


def _check_inputs(
    v_theta: Tensor, v_old: Tensor, v_ref: Tensor, x_t: Tensor, x0: Tensor, t: Tensor, advantages: Tensor
) -> None:
    if v_theta.ndim < 2:
        raise ValueError(f"v_theta must have shape [B, ...] with latent dims, got {tuple(v_theta.shape)}")
    for name, tensor in (("v_old", v_old), ("v_ref", v_ref), ("x_t", x_t), ("x0", x0)):
        if tensor.shape != v_theta.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, expected v_theta's {tuple(v_theta.shape)}"
            )
    batch = v_theta.shape[0]
    for name, tensor in (("t", t), ("advantages", advantages)):
        if tensor.shape != (batch,):
            raise ValueError(
                f"{name} must have shape [B={batch}] (one value per sample), got {tuple(tensor.shape)}"
            )


def _adaptive_l2(x0_hat: Tensor, x0: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Per-sample mean_* (x0_hat - x0)^2 / sg(mean_* |x0_hat - x0|), shape [B]."""
    err = x0_hat - x0
    with torch.no_grad():
        weight_B = err.abs().mean(dim=dims).clamp_min(_WEIGHT_FLOOR)
    return (err * err).mean(dim=dims) / weight_B


def nft_loss(
    v_theta: Tensor,
    v_old: Tensor,
    v_ref: Tensor,
    x_t: Tensor,
    x0: Tensor,
    t: Tensor,
    advantages: Tensor,
    *,
    beta: float = 1.0,
    adv_clip: float = 5.0,
    kl_beta: float = 1e-4,
) -> NftLossOutput:
    """DiffusionNFT loss for one micro-batch at one timestep per sample.

    Args:
        v_theta: velocity of the trainable policy at (x_t, t), [B, *]; gradients flow into it.
        v_old: velocity of the old (sampling, EMA) adapter, [B, *]; detached here.
        v_ref: velocity of the reference (base model, adapter disabled), [B, *]; detached here.
        x_t: noised latents (1 - t) x0 + t eps, [B, *].
        x0: clean latents from the rollout, [B, *].
        t: flow time per sample in [0, 1], [B].
        advantages: advantage per sample, [B]; clipped to +-adv_clip here.
        beta: NFT mixing strength (config ``beta``; 1.0 in Sol-RL, 0.1 for OCR / multi-reward in DiffusionNFT).
        adv_clip: advantage clip (``adv_clip_max`` = 5); also scales the policy term, as in the reference.
        kl_beta: weight of the velocity KL to the reference (``train.beta`` = 1e-4).

    Returns:
        :class:`NftLossOutput`. The loss is computed in at least float32 (bf16 inputs are upcast).
        If it is NaN or Inf it is replaced by zero, as the reference trainers do; the zero stays attached
        to ``v_theta`` with exactly-zero gradients so that a data-parallel backward still runs on every
        rank. This check synchronises with the device once per call.
    """
    _check_inputs(v_theta, v_old, v_ref, x_t, x0, t, advantages)
    if not (math.isfinite(beta) and beta > 0.0):
        raise ValueError(f"beta must be finite and > 0 (it divides the policy loss), got {beta}")
    if not (math.isfinite(adv_clip) and adv_clip > 0.0):
        raise ValueError(f"adv_clip must be finite and > 0, got {adv_clip}")
    if not (math.isfinite(kl_beta) and kl_beta >= 0.0):
        raise ValueError(f"kl_beta must be finite and >= 0, got {kl_beta}")

    dtype = torch.promote_types(v_theta.dtype, torch.float32)
    dims = tuple(range(1, v_theta.ndim))
    expand = (-1,) + (1,) * (v_theta.ndim - 1)

    v_th = v_theta.to(dtype)
    v_o = v_old.detach().to(dtype)
    v_r = v_ref.detach().to(dtype)
    xt = x_t.detach().to(dtype)
    x0d = x0.detach().to(dtype)
    t_B = t.detach().to(dtype).reshape(expand)

    adv_B = advantages.detach().to(dtype).clamp(-adv_clip, adv_clip)
    r_B = (adv_B / adv_clip / 2.0 + 0.5).clamp(0.0, 1.0)

    v_pos = beta * v_th + (1.0 - beta) * v_o
    v_neg = (1.0 + beta) * v_o - beta * v_th
    loss_pos_B = _adaptive_l2(xt - t_B * v_pos, x0d, dims)
    loss_neg_B = _adaptive_l2(xt - t_B * v_neg, x0d, dims)

    policy_loss = adv_clip * ((r_B * loss_pos_B + (1.0 - r_B) * loss_neg_B) / beta).mean()
    kl = ((v_th - v_r) ** 2).mean(dim=dims).mean()
    loss = policy_loss + kl_beta * kl

    nonfinite = ~torch.isfinite(loss)
    if bool(nonfinite.item()):
        # Zero loss still connected to v_theta: where() gives the masked entries zero gradient, and the
        # finite entries are multiplied by 0, so the backward is exactly zero (never 0 * inf = NaN).
        loss = torch.where(torch.isfinite(v_th), v_th, torch.zeros_like(v_th)).sum() * 0.0

    return NftLossOutput(
        loss=loss,
        policy_loss=policy_loss.detach(),
        kl=kl.detach(),
        r_mean=r_B.mean(),
        loss_pos=loss_pos_B.detach().mean(),
        loss_neg=loss_neg_B.detach().mean(),
        nonfinite=nonfinite.detach(),
    )


# decay_type -> (flat_steps, rate_per_step, ceiling), from DiffusionNFT's ``return_decay``:
# decay = 0 for step < flat_steps, else min(rate * (step - flat_steps), ceiling).
_DECAY_SCHEDULES: dict[int, tuple[int, float, float]] = {
    1: (0, 0.001, 0.5),  # Sol-RL and DiffusionNFT default
    2: (75, 0.0075, 0.999),  # DiffusionNFT OCR config; the 75-step flat phase is as we read that config
}


def ema_decay(step: int, decay_type: int) -> float:
    """Decay lambda of the old-adapter update ``old <- lambda old + (1 - lambda) new`` at ``step``.

    type 1: min(0.001 * step, 0.5).
    type 2: 0 for step < 75, then min(0.0075 * (step - 75), 0.999).
    Early on lambda = 0, so the old (sampling) policy simply follows the trained one; later it lags.
    """
    if decay_type not in _DECAY_SCHEDULES:
        raise ValueError(f"unknown decay_type {decay_type!r}; valid: {sorted(_DECAY_SCHEDULES)}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    flat_steps, rate, ceiling = _DECAY_SCHEDULES[decay_type]
    if step < flat_steps:
        return 0.0
    return min(rate * (step - flat_steps), ceiling)


@torch.no_grad()
def update_old_params(old: Iterable[Tensor], new: Iterable[Tensor], decay: float) -> None:
    """In place, for each pair: ``old <- decay * old + (1 - decay) * new``.

    Args:
        old: parameters of the old (sampling) adapter, updated in place.
        new: matching parameters of the trained adapter, same order and shapes.
        decay: lambda in [0, 1] (see :func:`ema_decay`); 0 copies ``new``, 1 keeps ``old``.
    """
    if not (math.isfinite(decay) and 0.0 <= decay <= 1.0):
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    old_list = list(old)
    new_list = list(new)
    if len(old_list) != len(new_list):
        raise ValueError(
            f"old has {len(old_list)} tensors but new has {len(new_list)}; pass matching adapters"
        )
    for index, (old_tensor, new_tensor) in enumerate(zip(old_list, new_list, strict=True)):
        if old_tensor.shape != new_tensor.shape:
            raise ValueError(
                f"tensor {index}: old shape {tuple(old_tensor.shape)} != new shape {tuple(new_tensor.shape)}"
            )
    for old_tensor, new_tensor in zip(old_list, new_list, strict=True):
        old_tensor.mul_(decay).add_(new_tensor.to(old_tensor.dtype), alpha=1.0 - decay)
