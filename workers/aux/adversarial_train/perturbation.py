"""The math of adversarial training for DPMs (arXiv 2502.17099), as pure tensor functions.

Shapes: B batch, C channels, H, W image; ``x_BCHW`` noisy inputs, ``sigma_B`` = sqrt(1 - alpha_bar_t).

The objective (the paper's AT objective, implemented in the official code as
``adv_gaussian_diffusion.training_losses`` with ``adv_target_type='delta_detach'``):

    L_AT(theta) = E_{x0, eps, t} max_{||delta||_2 <= sqrt(d) eta} || eps_theta(x_t + delta, t) - (eps + sg(delta) / sigma_t) ||^2

The shifted target keeps x0 fixed: x_t + delta = sqrt(abar) x0 + sigma_t (eps + delta / sigma_t).
"""

from __future__ import annotations

import math

import torch


def ball_radius(max_norm: float, dim: int) -> float:
    """Radius sqrt(d) * eta of the L2 ball (eta is a per-dimension RMS, as ``adv_max_norm``)."""
    return math.sqrt(dim) * max_norm


def perturbed_target(eps_BCHW: torch.Tensor, delta_BCHW: torch.Tensor, sigma_B: torch.Tensor) -> torch.Tensor:
    """eps + sg(delta) / sigma_t: the noise that maps x0 to x_t + delta (no gradient into delta)."""
    return eps_BCHW + delta_BCHW.detach() / sigma_B.view(-1, *([1] * (eps_BCHW.dim() - 1)))


def epsilon_loss(pred_BCHW: torch.Tensor, target_BCHW: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error (guided-diffusion's ``mean_flat``), shape (B,)."""
    return (pred_BCHW - target_BCHW).pow(2).flatten(1).mean(1)


def ascend_l2(delta_BCHW: torch.Tensor, grad_BCHW: torch.Tensor, lr: float) -> torch.Tensor:
    """One normalized ascent step delta + lr * g / ||g||_2 per sample (norm floored at 1e-8, as official)."""
    norm = grad_BCHW.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, *([1] * (grad_BCHW.dim() - 1)))
    return delta_BCHW + lr * grad_BCHW / norm


def project_l2_ball(delta_BCHW: torch.Tensor, radius: float) -> torch.Tensor:
    """Rescale the samples whose ||delta||_2 exceeds ``radius`` onto the sphere; radius 0 gives exact zeros.

    The official code skips the projection when adv_max_norm = 0 (unbounded); here eta = 0 means no
    perturbation, so that eta = 0 reproduces standard training bit-for-bit (a documented deviation).
    """
    if radius == 0.0:
        return torch.zeros_like(delta_BCHW)
    norm = delta_BCHW.flatten(1).norm(dim=1).clamp_min(1e-8)
    scale = torch.where(norm > radius, radius / norm, torch.ones_like(norm))
    return delta_BCHW * scale.view(-1, *([1] * (delta_BCHW.dim() - 1)))


def input_perturbed_noise(eps_BCHW: torch.Tensor, xi_BCHW: torch.Tensor, gamma: float) -> torch.Tensor:
    """DDPM-IP (Ning et al. 2023): x_t is built from eps + gamma * xi while the target stays eps."""
    return eps_BCHW + gamma * xi_BCHW
