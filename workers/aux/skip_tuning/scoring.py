"""Sample quality for the search and the report: Frechet distance in the locally trained digits feature
net (common/metrics.py) against the held-out test split, with paired bootstrap intervals.

Tensor legend: N samples, F features.
"""

from __future__ import annotations

import numpy as np
import torch

from workers.aux.common.metrics import frechet_distance, mmd_rbf
from workers.aux.common.nets import SmallClassifier


@torch.no_grad()
def digit_features(net: SmallClassifier, images: torch.Tensor) -> np.ndarray:
    """Penultimate-layer features (N, F) in float64; samples are clamped to the data range [-1, 1]."""
    return net.features(images.float().cpu().clamp(-1, 1)).double().numpy()


def quality(feats_NF: np.ndarray, ref_NF: np.ndarray) -> dict[str, float]:
    """FD and the RBF MMD^2 of the features against the reference features."""
    return {"fd": frechet_distance(feats_NF, ref_NF),
            "mmd": mmd_rbf(torch.from_numpy(feats_NF), torch.from_numpy(ref_NF))}


def paired_bootstrap_fd(base_NF: np.ndarray, tuned_NF: np.ndarray, ref_NF: np.ndarray, reps: int, ci: float,
                        generator: torch.Generator) -> dict[str, list[float]]:
    """Percentile intervals of FD(base), FD(tuned) and FD(tuned) - FD(base), resampling the sample index.

    The two arms share their initial noise, so each resample takes the same indices in both (paired);
    the reference (test split) is held fixed.
    """
    n = len(base_NF)
    base, tuned = [], []
    for _ in range(reps):
        idx = torch.randint(0, n, (n,), generator=generator).numpy()
        base.append(frechet_distance(base_NF[idx], ref_NF))
        tuned.append(frechet_distance(tuned_NF[idx], ref_NF))
    b, t = np.array(base), np.array(tuned)
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2

    def interval(v: np.ndarray) -> list[float]:
        return [float(np.percentile(v, lo)), float(np.percentile(v, hi))]

    return {"fd_base_ci": interval(b), "fd_tuned_ci": interval(t), "fd_delta_ci": interval(t - b)}
