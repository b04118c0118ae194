"""One training step's loss: Graffe's conditional denoising objective and GraphMAE's masked SCE.

Graffe training step (paper, section "Training"; brief 4(a)):
    M ~ Bernoulli(r) over nodes; X_m = X with masked rows -> [MASK];  z = E_phi(X_m, A)
    t ~ U{0..T-1}; eps ~ N(0, I); X_t = alpha_t X + sigma_t eps
    loss = || D_theta(X_t, A, t, z) - eps ||^2
Shapes: N nodes, F features, G graphs, D = z width.
"""

from __future__ import annotations

from typing import Literal

import torch

from workers.aux.graffe.decoder import ConditionalGraphUNet, GraphMaeDecoder
from workers.aux.graffe.diffusion import VpSchedule, dsm_loss
from workers.aux.graffe.masking import apply_mask, sample_node_mask, shuffle_rows
from workers.aux.graffe.views import GraphView

Conditioning = Literal["z", "shuffled", "none"]


def condition_nodes(z: torch.Tensor, view: GraphView, level: str) -> torch.Tensor:
    """z per node: the node's own z (node task) or its graph's z broadcast to its nodes (graph task)."""
    return z if level == "node" else z[view.graph_of_node()]


def graffe_loss(encoder: torch.nn.Module | None, decoder: ConditionalGraphUNet, view: GraphView,
                schedule: VpSchedule, mask_ratio: float, generator: torch.Generator,
                conditioning: Conditioning = "z") -> torch.Tensor:
    """The conditional DSM loss of one step. ``conditioning``: ``z`` (Graffe), ``shuffled`` (z permuted
    across nodes / graphs before decoding: the ablation) or ``none`` (no encoder: the unconditional
    denoiser of the Diff-InfoMax check)."""
    x0 = view.x
    z_nodes = None
    if conditioning != "none":
        if encoder is None:
            raise ValueError(f"conditioning={conditioning!r} needs an encoder")
        mask_N = sample_node_mask(view.num_nodes, mask_ratio, generator).to(x0.device)
        z = encoder(apply_mask(x0, mask_N, encoder.mask_token), view.edge_index, view.batch)
        if conditioning == "shuffled":
            z = shuffle_rows(z, generator)
        z_nodes = condition_nodes(z, view, encoder.level)
    t_G = torch.randint(schedule.num_timesteps, (view.num_graphs,), generator=generator).to(x0.device)
    t_N = t_G[view.graph_of_node()]  # one noise level per graph, shared by its nodes
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = schedule.add_noise(x0, t_N, eps)
    return dsm_loss(decoder(x_t, view.edge_index, t_N, z_nodes, view.batch), eps)


def sce_loss(x_rec_NF: torch.Tensor, x_NF: torch.Tensor, gamma: float) -> torch.Tensor:
    """GraphMAE's scaled cosine error: mean over nodes of ``(1 - cos(x_rec, x))^gamma``."""
    cos = torch.nn.functional.cosine_similarity(x_rec_NF, x_NF, dim=1)
    return (1.0 - cos).pow(gamma).mean()


def graphmae_loss(encoder: torch.nn.Module, decoder: GraphMaeDecoder, view: GraphView, mask_ratio: float,
                  gamma: float, generator: torch.Generator) -> torch.Tensor:
    """GraphMAE: reconstruct the masked nodes' features from the masked graph (SCE on masked rows only)."""
    mask_N = sample_node_mask(view.num_nodes, mask_ratio, generator).to(view.x.device)
    if not bool(mask_N.any()):
        raise ValueError(f"GraphMAE needs at least one masked node; mask_ratio={mask_ratio} masks none of "
                         f"{view.num_nodes}")
    h = encoder.node_embeddings(apply_mask(view.x, mask_N, encoder.mask_token), view.edge_index, view.batch)
    x_rec = decoder(h, view.edge_index, mask_N)
    return sce_loss(x_rec[mask_N], view.x[mask_N], gamma)
