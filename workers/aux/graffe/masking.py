"""Node masking for the encoder's input and the z-shuffle ablation.

Shapes: N nodes, F features, G graphs in a batch, D representation width.
"""

from __future__ import annotations

import torch


def sample_node_mask(num_nodes: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(N,) bool mask with exactly ``round(ratio * N)`` True entries, chosen uniformly without replacement.

    The training step's ``M ~ Bernoulli(r)`` over nodes, drawn as a fixed-size subset (GraphMAE's way).
    """
    num_masked = int(round(ratio * num_nodes))
    mask_N = torch.zeros(num_nodes, dtype=torch.bool)
    mask_N[torch.randperm(num_nodes, generator=generator)[:num_masked]] = True
    return mask_N


def apply_mask(x_NF: torch.Tensor, mask_N: torch.Tensor, token_F: torch.Tensor) -> torch.Tensor:
    """``X_m``: the masked rows replaced by the learnable [MASK] token, the others unchanged."""
    return torch.where(mask_N.unsqueeze(1), token_F.unsqueeze(0).expand_as(x_NF), x_NF)


def shuffle_rows(z_RD: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rows of ``z`` permuted at random: nodes (node task) or graphs (graph task) get another's z.

    The ablation of the conditioning: the decoder still sees a z with the right marginal statistics,
    but it no longer belongs to the graph it denoises.
    """
    perm = torch.randperm(z_RD.shape[0], generator=generator)
    return z_RD[perm.to(z_RD.device)]
