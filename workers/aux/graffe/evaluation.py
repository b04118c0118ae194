"""Frozen-encoder evaluation: embeddings, the linear probe, and the DSM loss at matched timesteps.

The probe input is exactly ``E_phi(X, A)`` on the unmasked graph (no raw features concatenated).
Shapes: N nodes, F features, G graphs, D = z width.
"""

from __future__ import annotations

import numpy as np
import torch

from workers.aux.common.runtime import generator
from workers.aux.graffe.diffusion import VpSchedule
from workers.aux.graffe.masking import shuffle_rows
from workers.aux.graffe.objectives import condition_nodes
from workers.aux.graffe.views import GraphView


@torch.no_grad()
def embed(encoder: torch.nn.Module, view: GraphView) -> np.ndarray:
    """(N, D) node or (G, D) graph representations of the unmasked graph(s), float64 numpy."""
    encoder.eval()
    return encoder(view.x, view.edge_index, view.batch).double().cpu().numpy()


def _probe_model(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


def probe_split(features: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
                c: float, seed: int = 0) -> float:
    """Accuracy on ``test_idx`` of an L2 logistic regression fit on ``train_idx`` only."""
    model = _probe_model(c, seed).fit(features[train_idx], labels[train_idx])
    return float((model.predict(features[test_idx]) == labels[test_idx]).mean())


def probe_cv(features: np.ndarray, labels: np.ndarray, folds: int, c: float, seed: int) -> float:
    """Mean accuracy of the same probe under stratified ``folds``-fold cross-validation."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(_probe_model(c, seed), features, labels, cv=cv).mean())


@torch.no_grad()
def dsm_at_timesteps(encoder: torch.nn.Module | None, decoder: torch.nn.Module, view: GraphView,
                     schedule: VpSchedule, timesteps: list[int], draws: int, seed: int,
                     shuffle_z: bool = False) -> dict[int, float]:
    """Held-out eps-MSE per timestep, z = E(unmasked graph) (or none for the unconditional decoder).

    The noise comes from ``generator(seed)`` alone, so every arm evaluated with the same seed sees the
    same eps at the same t (matched comparison); the shuffle permutation has its own generator.
    """
    decoder.eval()
    z_nodes = None
    if encoder is not None:
        encoder.eval()
        z = encoder(view.x, view.edge_index, view.batch)
        if shuffle_z:
            z = shuffle_rows(z, generator(seed + 7919))
        z_nodes = condition_nodes(z, view, encoder.level)
    gen = generator(seed)
    out: dict[int, float] = {}
    for t in timesteps:
        errs = []
        for _ in range(draws):
            eps = torch.randn(view.x.shape, generator=gen).to(view.x.device)
            t_N = torch.full((view.num_nodes,), t, dtype=torch.long, device=view.x.device)
            x_t = schedule.add_noise(view.x, t_N, eps)
            errs.append(float((decoder(x_t, view.edge_index, t_N, z_nodes, view.batch) - eps).pow(2).mean()))
        out[t] = float(np.mean(errs))
    return out
