"""The off-manifold toy of paper Sec. 3.2 / Fig. 3: a 2-D "PS" glyph embedded in R^h by x = Q z.

Three arms with the same 256-wide MLP rectified-flow model and the same steps: on the 2-D data, on the
h-D embedded data, and on the 2-wide latent of a KL-VAE trained on the h-D data (the S-VAE analogue).
Metric: the mean nearest-neighbour distance to the true glyph of the top 5 % farthest samples, after
projecting h-D samples back with Q^T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workers.aux.common.nets import TimeMLP
from workers.aux.common.runtime import progress
from workers.aux.ps_vae.flow import euler_sample, interpolate, velocity_target
from workers.aux.ps_vae.objectives import kl_loss, reparameterize

# Strokes of "P" and "S" as (kind, params); arcs are (cx, cy, r, theta0, theta1), lines (x0, y0, x1, y1).
_STROKES = (
    ("line", (-1.6, -1.0, -1.6, 1.0)),
    ("arc", (-1.6, 0.5, 0.5, math.pi / 2, -math.pi / 2)),
    ("arc", (0.9, 0.5, 0.5, math.pi / 6, 3 * math.pi / 2)),
    ("arc", (0.9, -0.5, 0.5, math.pi / 2, -5 * math.pi / 6)),
)


def _length(kind: str, p: tuple[float, ...]) -> float:
    return math.hypot(p[2] - p[0], p[3] - p[1]) if kind == "line" else abs(p[4] - p[3]) * p[2]


def ps_glyph(n: int, generator: torch.Generator, noise: float = 0.03) -> torch.Tensor:
    """``n`` points on the strokes of the letters "PS" (uniform by arc length) plus Gaussian jitter."""
    weights = torch.tensor([_length(k, p) for k, p in _STROKES])
    stroke = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
    u = torch.rand(n, generator=generator)
    out = torch.empty(n, 2)
    for i, (kind, p) in enumerate(_STROKES):
        sel = stroke == i
        if kind == "line":
            out[sel, 0] = p[0] + u[sel] * (p[2] - p[0])
            out[sel, 1] = p[1] + u[sel] * (p[3] - p[1])
        else:
            theta = p[3] + u[sel] * (p[4] - p[3])
            out[sel, 0] = p[0] + p[2] * torch.cos(theta)
            out[sel, 1] = p[1] + p[2] * torch.sin(theta)
    return out + noise * torch.randn(n, 2, generator=generator)


def random_orthonormal(h: int, low: int, generator: torch.Generator) -> torch.Tensor:
    """Q in R^{h x low} with Q^T Q = I (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(h, low, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def top_fraction_nn_distance(samples: torch.Tensor, reference: torch.Tensor, fraction: float = 0.05) -> float:
    """Mean distance to the nearest reference point over the ``fraction`` of samples farthest from it."""
    d = torch.cdist(samples.double(), reference.double()).min(1).values
    k = max(1, int(round(fraction * len(d))))
    return float(d.topk(k).values.mean())


def train_flow_mlp(sample_batch, dim: int, hidden: int, steps: int, batch: int, generator: torch.Generator,
                   desc: str, show_progress: bool, seed: int) -> TimeMLP:
    """Rectified flow with uniform t on fresh batches from ``sample_batch(n)``."""
    torch.manual_seed(seed)  # same init for every arm of the same width
    model = TimeMLP(dim, hidden=hidden, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in progress(range(steps), desc, show_progress):
        x0 = sample_batch(batch)
        t = torch.rand(batch, generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        loss = F.mse_loss(model(interpolate(x0, eps, t), t), velocity_target(x0, eps))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


class ToyVae(nn.Module):
    """An MLP KL-VAE R^h -> R^2 -> R^h (the toy's S-VAE analogue)."""

    def __init__(self, dim: int, latent: int = 2, hidden: int = 128) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)


@dataclass
class ToyResult:
    metrics: dict[str, dict[str, float]]
    samples: dict[str, torch.Tensor]  # projected to 2-D
    reference: torch.Tensor


def run_toy(ambient_dim: int, hidden: int, steps: int, batch: int, n_samples: int, sample_steps: int,
            vae_steps: int, vae_kl_weight: float, seed: int, show_progress: bool = True) -> ToyResult:
    g = torch.Generator().manual_seed(seed)
    q = random_orthonormal(ambient_dim, 2, g)
    reference = ps_glyph(5000, torch.Generator().manual_seed(seed + 10_000))
    samples: dict[str, torch.Tensor] = {}
    extra: dict[str, dict[str, float]] = {}

    def draw(n: int) -> torch.Tensor:
        return ps_glyph(n, g)

    def sample(model: TimeMLP, dim: int) -> torch.Tensor:
        noise = torch.randn(n_samples, dim, generator=torch.Generator().manual_seed(seed + 1))
        return euler_sample(lambda x, t: model(x, t), noise, sample_steps)

    m2 = train_flow_mlp(draw, 2, hidden, steps, batch, g, "ps_vae toy: 2-D arm", show_progress, seed)
    samples["2-D data"] = sample(m2, 2)

    mh = train_flow_mlp(lambda n: draw(n) @ q.T, ambient_dim, hidden, steps, batch, g,
                        f"ps_vae toy: {ambient_dim}-D arm", show_progress, seed)
    xh = sample(mh, ambient_dim)
    samples[f"{ambient_dim}-D ambient"] = xh @ q
    extra[f"{ambient_dim}-D ambient"] = {"off_manifold_norm": float((xh - xh @ q @ q.T).norm(dim=1).mean())}

    torch.manual_seed(seed)
    vae = ToyVae(ambient_dim)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for _ in progress(range(vae_steps), "ps_vae toy: KL-VAE", show_progress):
        x = draw(batch) @ q.T
        mu, logvar = vae.encode(x)
        recon = vae.dec(reparameterize(mu, logvar, g))
        loss = ((recon - x) ** 2).sum(1).mean() + vae_kl_weight * kl_loss(mu, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        z_mu, _ = vae.encode(draw(4096) @ q.T)
        z_mean, z_std = z_mu.mean(0), z_mu.std(0)
    mz = train_flow_mlp(lambda n: (vae.encode(draw(n) @ q.T)[0].detach() - z_mean) / z_std, 2, hidden, steps,
                        batch, g, "ps_vae toy: VAE-latent arm", show_progress, seed)
    with torch.no_grad():
        xv = vae.dec(sample(mz, 2) * z_std + z_mean)
    samples[f"{ambient_dim}-D via 2-wide KL-VAE"] = xv @ q
    extra[f"{ambient_dim}-D via 2-wide KL-VAE"] = {"off_manifold_norm": float((xv - xv @ q @ q.T).norm(dim=1).mean())}

    metrics = {}
    for arm, pts in samples.items():
        nn_all = torch.cdist(pts.double(), reference.double()).min(1).values
        metrics[arm] = {"top5_nn_distance": top_fraction_nn_distance(pts, reference),
                        "mean_nn_distance": float(nn_all.mean()), **extra.get(arm, {"off_manifold_norm": 0.0})}
    return ToyResult(metrics, samples, reference)
