"""The autoencoder losses of PS-VAE (paper Sec. 3.3-3.4; equation names follow the paper's text).

- ``semantic_loss``: L_s(f', f'') = ||f' - f''||^2 + (1 - cos(f', f'')), per token, averaged;
- ``kl_loss``: L_KL = KL(N(mu, sigma^2) || N(0, I)) as in LDM (sum over latent elements, batch mean);
- ``pixel_loss``: L_p, here L1 + w * MSE (the paper's LDM loss adds LPIPS and a patch GAN; see the docs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def semantic_loss(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """L_s over (B, N, D) token features: mean-squared error per token plus (1 - cosine), averaged over tokens.

    The squared norm is averaged over the D channels (not summed) so the two terms have comparable scale
    whatever the encoder width; the paper does not state its reduction.
    """
    mse = ((target - recon) ** 2).mean(-1)
    cos = F.cosine_similarity(target, recon, dim=-1)
    return (mse + (1.0 - cos)).mean()


def kl_per_element(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent element: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)."""
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """L_KL of a diagonal Gaussian latent: summed over all non-batch dims, averaged over the batch (LDM)."""
    return kl_per_element(mu, logvar).flatten(1).sum(1).mean()


def pixel_loss(images: torch.Tensor, recon: torch.Tensor, l2_weight: float = 1.0) -> torch.Tensor:
    """L_p: mean absolute error plus ``l2_weight`` times mean squared error."""
    diff = recon - images
    return diff.abs().mean() + l2_weight * (diff**2).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """f_l = mu + sigma * eps with eps from ``generator`` (the posterior mean when generator is None)."""
    if generator is None:
        return mu
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps
