"""The encoder E_phi: GAT for node tasks, GIN + mean pooling for graph tasks.

Both read node features in which masked rows were replaced by a learnable [MASK] token (Graffe's
"randomly masked node features"; the token lives here so the encoder owns its input convention).
Shapes: N nodes, F features, G graphs, D = z width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

EncoderKind = Literal["gat", "gin"]


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild an encoder (saved next to its weights)."""

    kind: EncoderKind
    in_dim: int
    hidden: int = 64
    z_dim: int = 32
    layers: int = 2
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class GatEncoder(nn.Module):
    """Node encoder: ``layers`` GATConv blocks (ELU between), heads concatenated; z per node (N, D)."""

    level = "node"

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv

        self.spec = spec
        self.mask_token = nn.Parameter(torch.zeros(spec.in_dim))
        widths = [spec.in_dim] + [spec.hidden] * (spec.layers - 1) + [spec.z_dim]
        self.convs = nn.ModuleList(GATConv(w_in, w_out // spec.heads, heads=spec.heads)
                                   for w_in, w_out in zip(widths[:-1], widths[1:], strict=True))
        self.act = nn.ELU()

    def forward(self, x_NF: torch.Tensor, edge_index: torch.Tensor, batch_N: torch.Tensor | None = None) -> torch.Tensor:
        h = x_NF
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = self.act(h)
        return h

    def node_embeddings(self, x_NF, edge_index, batch_N=None) -> torch.Tensor:
        return self.forward(x_NF, edge_index, batch_N)


class GinEncoder(nn.Module):
    """Graph encoder: ``layers`` GINConv blocks on nodes, then mean pooling per graph; z per graph (G, D)."""

    level = "graph"

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        from torch_geometric.nn import GINConv

        self.spec = spec
        self.mask_token = nn.Parameter(torch.zeros(spec.in_dim))
        widths = [spec.in_dim] + [spec.hidden] * (spec.layers - 1) + [spec.z_dim]
        self.convs = nn.ModuleList(
            GINConv(nn.Sequential(nn.Linear(w_in, w_out), nn.ReLU(), nn.Linear(w_out, w_out)), train_eps=True)
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True))

    def node_embeddings(self, x_NF: torch.Tensor, edge_index: torch.Tensor,
                        batch_N: torch.Tensor | None = None) -> torch.Tensor:
        h = x_NF
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return h

    def forward(self, x_NF: torch.Tensor, edge_index: torch.Tensor, batch_N: torch.Tensor | None = None) -> torch.Tensor:
        from torch_geometric.nn import global_mean_pool

        if batch_N is None:
            batch_N = torch.zeros(x_NF.shape[0], dtype=torch.long, device=x_NF.device)
        return global_mean_pool(self.node_embeddings(x_NF, edge_index, batch_N), batch_N)


def build_encoder(spec: EncoderSpec, seed: int) -> GatEncoder | GinEncoder:
    """A freshly initialised encoder; module init uses torch's global RNG, so it is seeded right here."""
    torch.manual_seed(seed)
    return GatEncoder(spec) if spec.kind == "gat" else GinEncoder(spec)
