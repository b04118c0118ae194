"""Posterior-collapse guards (VADD brief, "lazy fakes"): active units and z-sensitivity."""

from __future__ import annotations

import torch

from workers.aux.common.masked_diffusion import forward_mask
from workers.aux.vadd.model import Denoiser, Recognition
from workers.aux.vadd.objective import stratified_times


@torch.no_grad()
def active_units(rec: Recognition, x0: torch.Tensor, generator: torch.Generator, threshold: float = 0.01
                 ) -> tuple[int, torch.Tensor]:
    """Latent dimensions whose KL(r || p), averaged over data and masks, exceeds ``threshold``: (count, KL [Z])."""
    t = stratified_times(x0.shape[0], generator)
    _, masked = forward_mask(x0, t, rec.spec.vocab_size, generator)
    mean, logvar = rec(x0, masked)
    per_dim = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=0)  # gaussian_kl, not summed
    return int((per_dim > threshold).sum()), per_dim


@torch.no_grad()
def z_sensitivity(den: Denoiser, n: int, generator: torch.Generator, t: float = 1.0) -> float:
    """Mean total-variation distance between mu(x_t, z1) and mu(x_t, z2) for two prior draws, at the fully
    masked x_t of time ``t`` (the input of a one-step sampler); 0 means z is ignored."""
    spec = den.spec
    x_t = torch.full((n, spec.seq_len), spec.mask_id, dtype=torch.long)
    tt = torch.full((n,), t)
    z1 = torch.randn(n, spec.latent_dim, generator=generator)
    z2 = torch.randn(n, spec.latent_dim, generator=generator)
    return float(0.5 * (den.probs(x_t, tt, z1) - den.probs(x_t, tt, z2)).abs().sum(-1).mean())
