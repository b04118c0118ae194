"""Metrics shared by the auxiliary methods, all computed locally.

The Frechet distance uses features of ``SmallClassifier`` trained here on the digits train split
(a locally trained feature network instead of Inception, which cannot be downloaded); it is cached
under ``$SOLRL_AUX_CACHE`` (default ``~/.cache/solrl/aux``) per (size, seed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from workers.aux.common.data import digits
from workers.aux.common.nets import SmallClassifier


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-sample PSNR in dB of ``x`` against ``ref`` (leading dim = samples); range 2 for [-1, 1] data."""
    mse = ((x.double() - ref.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-sample SSIM (scikit-image, Gaussian window) of (N, C, H, W) images."""
    from skimage.metrics import structural_similarity

    out = []
    for a, b in zip(x.detach().cpu().double().numpy(), ref.detach().cpu().double().numpy(), strict=True):
        win = min(7, a.shape[-1] - (1 - a.shape[-1] % 2), a.shape[-2] - (1 - a.shape[-2] % 2))
        out.append(structural_similarity(a, b, data_range=data_range, channel_axis=0, win_size=max(3, win)))
    return torch.tensor(out, dtype=torch.float64)


def cosine_similarity(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of flattened vectors."""
    return F.cosine_similarity(x.double().flatten(1), ref.double().flatten(1), dim=1)


def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) in float64 (the FID formula)."""
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the FID reference code does
        eps = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two point clouds of equal size (random directions, seeded)."""
    if a.shape != b.shape:
        raise ValueError(f"point clouds must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64), dim=0)
    pa = torch.sort(a.double().cpu() @ dirs, dim=0).values
    pb = torch.sort(b.double().cpu() @ dirs, dim=0).values
    return float((pa - pb).abs().mean())


def mmd_rbf(a: torch.Tensor, b: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with a Gaussian kernel (median-heuristic bandwidth by default)."""
    a, b = a.double().cpu().flatten(1), b.double().cpu().flatten(1)
    joint = torch.cat([a, b])
    d2 = torch.cdist(joint, joint) ** 2
    h = bandwidth**2 if bandwidth else d2[d2 > 0].median().item()
    k = torch.exp(-d2 / h)
    n, m = len(a), len(b)
    kaa = (k[:n, :n].sum() - k[:n, :n].diagonal().sum()) / (n * (n - 1))
    kbb = (k[n:, n:].sum() - k[n:, n:].diagonal().sum()) / (m * (m - 1))
    return float(kaa + kbb - 2 * k[:n, n:].mean())


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence (nats) of two histograms (any shape; normalised here)."""
    p = p.double().flatten() / p.double().sum()
    q = q.double().flatten() / q.double().sum()
    m = 0.5 * (p + q)

    def kl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mask = x > 0
        return (x[mask] * (x[mask] / y[mask]).log()).sum()

    return float(0.5 * kl(p, m) + 0.5 * kl(q, m))


def _cache_dir() -> Path:
    return Path(os.environ.get("SOLRL_AUX_CACHE", Path.home() / ".cache" / "solrl" / "aux"))


def digits_classifier(size: int = 8, seed: int = 0, epochs: int = 30) -> SmallClassifier:
    """The feature network of the digits Frechet distance: trained on the train split, cached on disk."""
    path = _cache_dir() / f"digits_classifier_s{size}_seed{seed}_e{epochs}.pt"
    net = SmallClassifier()
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    data = digits("train", size=size)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nn.Module init draws from the global RNG; pin it for a reproducible net
    net = SmallClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(data.labels), generator=g).split(128):
            loss = F.cross_entropy(net(data.images[idx]), data.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net.eval()


@torch.no_grad()
def classifier_accuracy(net: SmallClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((net(images.float().cpu()).argmax(1) == labels.cpu()).float().mean())


@torch.no_grad()
def digits_frechet_distance(samples: torch.Tensor, reference: torch.Tensor, net: SmallClassifier) -> float:
    """Frechet distance between samples and reference digits in the classifier's feature space."""
    fa = net.features(samples.float().cpu().clamp(-1, 1)).numpy()
    fb = net.features(reference.float().cpu()).numpy()
    return frechet_distance(fa, fb)
