"""VADD's objective and likelihood estimates, and the MDLM baseline's (VADD Sec. 3, MDLM Eq. 10).

Shape legend: B batch, L tokens, Z latent dimension, S importance samples.

Schedule: linear, alpha_t = 1 - t, so a token is masked at time t with probability t and the ELBO weight is
w(t) = -alpha'_t / (1 - alpha_t) = 1 / t.

- MDLM:  NELBO = E_t E_{x_t} [ w(t) sum_{i masked} -log mu^i(x_t, t)[x_0^i] ].
- VADD (DELBO, with KL annealing lambda):
  L_lambda = E_t E_{x_t} E_{r(z|x0, x_t)} [ w(t) ( -log p(x_0 | x_t, z) + lambda KL(r || N(0, I)) ) ],
  log p(x_0 | x_t, z) = sum_{i masked} log mu^i(x_t, z, t)[x_0^i]; z = m + sigma * eps (reparameterised).
- Importance-weighted DELBO (the paper's likelihood estimate): per (t, x_t), the single-sample bracket is
  replaced by -log (1/S) sum_s p(x_0 | x_t, z_s) p(z_s) / r(z_s | x_0, x_t), z_s ~ r.
Times are drawn stratified over the batch (MDLM's low-discrepancy sampler) to cut the variance of w(t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workers.aux.common.masked_diffusion import forward_mask, masked_nll
from workers.aux.vadd.model import Denoiser, Recognition

T_MIN = 1e-3  # w(t) = 1/t: keep t away from 0 (MDLM uses the same kind of floor)


def stratified_times(n: int, generator: torch.Generator, t_min: float = T_MIN) -> torch.Tensor:
    """n times in [t_min, 1): one per stratum of width 1/n (shared random offset), strata shuffled over rows
    so that every row's time is uniform on its own."""
    u = (torch.rand((), generator=generator) + torch.randperm(n, generator=generator)) / n
    return t_min + (1 - t_min) * u


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(m, diag e^logvar) || N(0, I)) per row: 0.5 sum(m^2 + e^logvar - 1 - logvar)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; m, diag e^logvar), summed over the last dimension."""
    return -0.5 * (((z - mean) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(dim=-1)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/S) sum_s exp(log_w_s), the importance-weighted bound's estimator (Burda et al. Eq. 8)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


@dataclass
class LossParts:
    loss: torch.Tensor  # what is minimised (scalar)
    nelbo: torch.Tensor  # [B] the bound at lambda = 1 (nats per sequence)
    kl: torch.Tensor  # [B] KL(r || p) (zeros for MDLM)


def mdlm_loss(den: Denoiser, x0: torch.Tensor, generator: torch.Generator) -> LossParts:
    """MDLM's continuous-time NELBO, one Monte-Carlo draw of t and x_t per row."""
    t = stratified_times(x0.shape[0], generator).to(x0.device)
    x_t, masked = forward_mask(x0, t, den.spec.mask_id, generator)
    nelbo = masked_nll(den(x_t, t), x0, masked) / t
    return LossParts(nelbo.mean(), nelbo, torch.zeros_like(nelbo))


def delbo_loss(den: Denoiser, rec: Recognition, x0: torch.Tensor, generator: torch.Generator,
               kl_weight: float) -> LossParts:
    """VADD's annealed DELBO (KL weighted by lambda and, as the bound is written, by w(t))."""
    t = stratified_times(x0.shape[0], generator).to(x0.device)
    x_t, masked = forward_mask(x0, t, den.spec.mask_id, generator)
    mean, logvar = rec(x0, masked)
    eps = torch.randn(mean.shape, generator=generator, device=mean.device)
    z = mean + (0.5 * logvar).exp() * eps
    nll = masked_nll(den(x_t, t, z), x0, masked)
    kl = gaussian_kl(mean, logvar)
    loss = ((nll + kl_weight * kl) / t).mean()
    return LossParts(loss, (nll + kl) / t, kl)


@torch.no_grad()
def nelbo_estimate(den: Denoiser, rec: Recognition | None, x0: torch.Tensor, generator: torch.Generator,
                   n_times: int, iw_samples: int = 1) -> dict[str, torch.Tensor]:
    """Per-row negative bounds (nats), averaged over ``n_times`` draws of (t, x_t).

    MDLM: {"nelbo"}. VADD: {"delbo": single-sample DELBO (lambda = 1), "iw": importance-weighted with
    ``iw_samples`` z's from r}. By Jensen, E[iw] <= E[delbo] (in negative form).
    """
    b = x0.shape[0]
    acc: dict[str, torch.Tensor] = {}
    for _ in range(n_times):
        t = stratified_times(b, generator).to(x0.device)
        x_t, masked = forward_mask(x0, t, den.spec.mask_id, generator)
        if rec is None:
            terms = {"nelbo": masked_nll(den(x_t, t), x0, masked) / t}
        else:
            mean, logvar = rec(x0, masked)
            log_w, single = [], []
            for s in range(iw_samples):
                eps = torch.randn(mean.shape, generator=generator, device=mean.device)
                z = mean + (0.5 * logvar).exp() * eps
                log_lik = -masked_nll(den(x_t, t, z), x0, masked)
                log_prior = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
                log_w.append(log_lik + log_prior - gaussian_log_prob(z, mean, logvar))
                if s == 0:
                    single.append(-log_lik + gaussian_kl(mean, logvar))
            terms = {"delbo": single[0] / t, "iw": -log_mean_exp(torch.stack(log_w)) / t}
        for key, value in terms.items():
            acc[key] = acc.get(key, 0) + value / n_times
    return acc


def bits_per_dim(nats_per_sequence: torch.Tensor, seq_len: int) -> float:
    return float(nats_per_sequence.mean()) / (seq_len * math.log(2))
