"""Few-step ancestral sampling of MDLM and VADD (VADD Algorithm 2). It takes no data: the recognition model
is training-only, and z is drawn from the prior N(0, I).

From t to s < t (linear schedule, alpha_t = 1 - t), each masked token is revealed with probability
(alpha_s - alpha_t) / (1 - alpha_t) = (t - s) / t, with a value drawn from mu^i(x_t, z, t); revealed tokens
never change (absorbing process). Steps are K equal intervals of [0, 1]; the last step reveals everything.
Given z the tokens are drawn independently (parallel), so a single step of MDLM can only produce the
product of its marginals, while VADD's z couples them.
"""

from __future__ import annotations

import torch

from workers.aux.vadd.model import Denoiser


@torch.no_grad()
def sample(den: Denoiser, n: int, steps: int, generator: torch.Generator, *, consistent_z: bool = False,
           device: torch.device | str = "cpu", batch_size: int = 4096) -> torch.Tensor:
    """``n`` sequences [n, L] of data tokens in ``steps`` denoising steps."""
    chunks = []
    for start in range(0, n, batch_size):
        chunks.append(_sample_batch(den, min(batch_size, n - start), steps, generator, consistent_z, device))
    return torch.cat(chunks)


def _sample_batch(den: Denoiser, n: int, steps: int, generator: torch.Generator, consistent_z: bool,
                  device: torch.device | str) -> torch.Tensor:
    spec = den.spec
    x = torch.full((n, spec.seq_len), spec.mask_id, dtype=torch.long, device=device)
    times = torch.linspace(1.0, 0.0, steps + 1)
    z_fixed = torch.randn(n, spec.latent_dim, generator=generator).to(device) if spec.latent_dim else None
    for i in range(steps):
        t, s = float(times[i]), float(times[i + 1])
        z = None
        if spec.latent_dim:
            z = z_fixed if consistent_z else torch.randn(n, spec.latent_dim, generator=generator).to(device)
        probs = den.probs(x, torch.full((n,), t, device=device), z)
        draw = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
        draw = draw.reshape(n, spec.seq_len).to(device)
        reveal_p = 1.0 if s == 0.0 else (t - s) / t
        reveal = (torch.rand(x.shape, generator=generator) < reveal_p).to(device) & (x == spec.mask_id)
        x = torch.where(reveal, draw, x)
    return x
