"""What pretraining may see: node features and edges, never labels.

Pretraining functions take an ``UnlabeledGraphs``; it is built from torch_geometric ``Data`` objects
by copying only ``x`` and ``edge_index``, so no label can leak into the encoder or decoder
(the brief's "labels leak into pretraining" fake). Shapes: N nodes, F features, G graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.data import Batch, Data


@dataclass(frozen=True)
class GraphView:
    """A (batch of) graph(s): ``batch_N`` maps nodes to graphs (None for the one graph of a node task)."""

    x: torch.Tensor  # (N, F)
    edge_index: torch.Tensor  # (2, E)
    batch: torch.Tensor | None  # (N,) or None
    num_graphs: int

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    def graph_of_node(self) -> torch.Tensor:
        """(N,) graph index of every node (all zeros for a single graph)."""
        if self.batch is None:
            return torch.zeros(self.num_nodes, dtype=torch.long, device=self.x.device)
        return self.batch


class UnlabeledGraphs:
    """Label-free graphs with standardised features; ``sample`` draws a pretraining minibatch."""

    def __init__(self, graphs: list[Data], batch_graphs: int | None, device: torch.device | str = "cpu") -> None:
        if not graphs:
            raise ValueError("UnlabeledGraphs needs at least one graph")
        self.level = "node" if len(graphs) == 1 else "graph"
        x_all = torch.cat([g.x for g in graphs])
        # per-feature standardisation over all nodes (unsupervised), so x0 has unit scale like eps
        mean, std = x_all.mean(0), x_all.std(0).clamp_min(1e-6)
        self._graphs = [Data(x=((g.x - mean) / std).float(), edge_index=g.edge_index, num_nodes=g.num_nodes)
                        for g in graphs]
        self.batch_graphs = min(batch_graphs or len(graphs), len(graphs))
        self.device = torch.device(device)
        self.num_features = int(x_all.shape[1])

    def __len__(self) -> int:
        return len(self._graphs)

    def _view(self, items: list[Data]) -> GraphView:
        if self.level == "node":
            g = items[0]
            return GraphView(g.x.to(self.device), g.edge_index.to(self.device), None, 1)
        b = Batch.from_data_list(items)
        return GraphView(b.x.to(self.device), b.edge_index.to(self.device), b.batch.to(self.device), len(items))

    def full(self) -> GraphView:
        """Every graph at once (embedding and evaluation)."""
        return self._view(self._graphs)

    def sample(self, generator: torch.Generator) -> GraphView:
        """A random minibatch of ``batch_graphs`` graphs (the whole graph for a node task)."""
        if self.level == "node":
            return self.full()
        idx = torch.randperm(len(self._graphs), generator=generator)[: self.batch_graphs]
        return self._view([self._graphs[i] for i in idx.tolist()])
