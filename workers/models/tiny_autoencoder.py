"""A short fit of the tiny family's VAE on procedural shape images.

A random-init VAE decoder ignores its latent (its GroupNorm layers normalise the latent's scale
away and its random convolutions paint a fixed texture), so no image reward could depend on what
the transformer generates. Fitting the autoencoder for a few hundred steps on procedural images
(coloured ellipses and rectangles) gives it the property a real VAE has: the decoded image is a
function of the latent. The fit is seeded and takes seconds on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn


def render_shapes(n: int, size: int, generator: torch.Generator, max_shapes: int = 3) -> torch.Tensor:
    """``n`` images in [0, 1], ``[n, 3, size, size]``: a flat background and coloured shapes."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = torch.rand(n, 3, 1, 1, generator=generator).expand(n, 3, size, size).clone()
    for _ in range(max_shapes):
        centre = torch.rand(n, 2, 1, 1, generator=generator)
        radius = 0.1 + 0.25 * torch.rand(n, 2, 1, 1, generator=generator)
        colour = torch.rand(n, 3, 1, 1, generator=generator)
        is_ellipse = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
        dx, dy = (xx - centre[:, :1]) / radius[:, :1], (yy - centre[:, 1:]) / radius[:, 1:]
        ellipse = dx**2 + dy**2 <= 1
        rectangle = (dx.abs() <= 1) & (dy.abs() <= 1)
        mask = torch.where(is_ellipse, ellipse, rectangle).float()
        images = images * (1 - mask) + colour * mask
    return images


def _encode(vae: nn.Module, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    out = vae.encode(x)
    if hasattr(out, "latent_dist"):  # AutoencoderKL: sample the posterior, KL to N(0, I)
        posterior = out.latent_dist
        return posterior.sample(generator=generator), posterior.kl().mean() / x[0].numel()
    latent = out.latent  # AutoencoderDC: deterministic; a small L2 keeps the latent scale bounded
    return latent, latent.pow(2).mean()


def fit_tiny_autoencoder(vae: nn.Module, *, size: int, steps: int = 250, seed: int = 0, batch: int = 32) -> float:
    """Fit ``vae`` in place; sets ``scaling_factor`` so scaled latents have unit std. Returns final MSE."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    vae.train()
    mse = float("nan")
    for _ in range(steps):
        x = render_shapes(batch, size, gen) * 2 - 1
        latent, reg = _encode(vae, x, gen)
        recon = vae.decode(latent).sample
        loss = nn.functional.mse_loss(recon, x) + 1e-3 * reg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mse = float(nn.functional.mse_loss(recon.detach(), x))
    vae.eval()
    with torch.no_grad():
        latent, _ = _encode(vae, render_shapes(256, size, gen) * 2 - 1, gen)
    vae.register_to_config(scaling_factor=float(1.0 / latent.std()))
    return mse
