"""The decoder D_theta: a conditional graph U-Net denoiser of node features, and GraphMAE's decoder.

Shapes: N nodes, F features, D = z width, T_e = time-embedding width.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.aux.common.nets import sinusoidal_embedding


class ConditionalGraphUNet(nn.Module):
    """``D_theta(x_t, A, t, z)`` predicting eps, with torch_geometric's ``GraphUNet`` as the backbone.

    Input per node: ``[x_t, z_node, embed(t)]``. ``GraphUNet`` mixes neighbours from its first GCN layer
    on, so a per-node head reads ``[unet_out, x_t, z_node, embed(t)]``: each node's own noisy value
    then reaches the output without being averaged with its neighbours' (denoising is per node).
    With ``z_dim=0`` it is the unconditional denoiser of the Diff-InfoMax check.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 64, depth: int = 2, pool_ratio: float = 0.5,
                 time_dim: int = 16) -> None:
        super().__init__()
        from torch_geometric.nn import GraphUNet

        self.z_dim, self.time_dim = z_dim, time_dim
        width = x_dim + z_dim + time_dim
        self.unet = GraphUNet(width, hidden, hidden, depth=depth, pool_ratios=pool_ratio)
        self.head = nn.Sequential(nn.Linear(hidden + width, hidden), nn.SiLU(), nn.Linear(hidden, x_dim))

    def forward(self, x_t_NF: torch.Tensor, edge_index: torch.Tensor, t_N: torch.Tensor,
                z_ND: torch.Tensor | None, batch_N: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x_t_NF]
        if self.z_dim:
            if z_ND is None:
                raise ValueError(f"this decoder is conditional (z_dim={self.z_dim}) but got z=None")
            parts.append(z_ND)
        parts.append(sinusoidal_embedding(t_N.float(), self.time_dim))
        inp = torch.cat(parts, dim=1)
        h = self.unet(inp, edge_index, batch_N)
        return self.head(torch.cat([h, inp], dim=1))


class GraphMaeDecoder(nn.Module):
    """GraphMAE's decoder: re-mask the masked nodes' codes, then one GATConv back to feature space."""

    def __init__(self, z_dim: int, x_dim: int) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv

        self.proj = nn.Linear(z_dim, z_dim, bias=False)  # GraphMAE's encoder-to-decoder map
        self.conv = GATConv(z_dim, x_dim, heads=1)

    def forward(self, h_ND: torch.Tensor, edge_index: torch.Tensor, mask_N: torch.Tensor) -> torch.Tensor:
        h = self.proj(h_ND)
        h = torch.where(mask_N.unsqueeze(1), torch.zeros_like(h), h)  # re-mask: decoder must use neighbours
        return self.conv(h, edge_index)
