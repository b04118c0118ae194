"""Offline graph datasets: generated node- and graph-classification sets, and gated standard loaders.

Everything here runs without network access. The generated sets reuse torch_geometric's own
generators (the ``RandomPartitionGraphDataset`` recipe for stochastic-block-model graphs with
weak ``make_classification`` features; ``ERGraph`` / ``BAGraph`` / ``GridGraph`` for graph classes). Those
draw from torch's global RNG, so each call runs inside ``torch.random.fork_rng`` seeded from the
caller's seed: the caller's global RNG state is left untouched and results are reproducible.

The standard sets (Planetoid: Cora/CiteSeer/PubMed; TUDataset: MUTAG, PROTEINS, ...) need a download
the first time. ``load_planetoid`` / ``load_tudataset`` with ``offline=True`` refuse a root that does
not already hold the raw files, naming the path and the files expected, instead of fetching silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch_geometric.data import Data

PLANETOID_NAMES = ("Cora", "CiteSeer", "PubMed")
_PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


class OfflineDatasetError(FileNotFoundError):
    """A standard dataset was asked for offline but its files are not under the given root."""


def partition_graph(num_classes: int = 5, nodes_per_class: int = 200, homophily: float = 0.7,
                    average_degree: float = 8.0, num_channels: int = 32, n_informative: int = 4,
                    flip_y: float = 0.3, seed: int = 0) -> Data:
    """One random-partition (planted-partition SBM) graph with weak node features.

    The recipe of torch_geometric's ``RandomPartitionGraphDataset``: ``p_in + (C-1) p_out`` set by
    ``average_degree / nodes_per_class`` with ``p_in`` its ``homophily`` share, edges from
    ``stochastic_blockmodel_graph``, features from ``sklearn.datasets.make_classification`` sorted by
    their class. The dataset class itself is not called: in torch_geometric 2.8 its ``process``
    passes a tensor as ``weights``, which current scikit-learn rejects (``'Tensor' object has no
    attribute 'copy'``), and its cache name ignores the seed. ``flip_y`` relabels that fraction of
    the feature classes at random, which makes the features deliberately weak.
    Returns ``Data(x (N, num_channels) float32, edge_index (2, E), y (N,))``.
    """
    import numpy as np
    from sklearn.datasets import make_classification
    from torch_geometric.utils import stochastic_blockmodel_graph

    if num_classes < 2:
        raise ValueError(f"partition_graph needs num_classes >= 2, got {num_classes}")
    ec_over_v2 = average_degree / nodes_per_class
    p_in = homophily * ec_over_v2
    p_out = (ec_over_v2 - p_in) / (num_classes - 1)
    probs = torch.full((num_classes, num_classes), p_out)
    probs.fill_diagonal_(p_in)
    sizes = torch.full((num_classes,), nodes_per_class, dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the edge sampler draws from torch's global RNG; the fork isolates it
        edge_index = stochastic_blockmodel_graph(sizes, probs, directed=False)
    n = num_classes * nodes_per_class
    x, y_feat = make_classification(n_samples=n, n_features=num_channels, n_informative=n_informative,
                                    n_redundant=0, n_classes=num_classes, weights=[1 / num_classes] * num_classes,
                                    flip_y=flip_y, shuffle=False, random_state=seed)
    x = torch.from_numpy(x[np.argsort(y_feat, kind="stable")]).float()
    y = torch.arange(num_classes).repeat_interleave(nodes_per_class)
    return Data(x=x, edge_index=edge_index, y=y)


def degree_onehot(edge_index: torch.Tensor, num_nodes: int, max_degree: int) -> torch.Tensor:
    """(N, max_degree + 1) one-hot of each node's degree, capped at ``max_degree``."""
    from torch_geometric.utils import degree

    deg = degree(edge_index[0], num_nodes=num_nodes).long().clamp(max=max_degree)
    return torch.nn.functional.one_hot(deg, max_degree + 1).float()


@dataclass(frozen=True)
class GraphClassesSpec:
    """Three structural classes with matched node counts: ER (0), BA (1), 2-D grid (2).

    Each graph picks a grid shape from ``grid_shapes``; the ER and BA graphs of that draw get the same
    node count, ER's edge probability matches the grid's mean degree, and BA attaches ``ba_edges``
    edges per new node (torch_geometric's grid is the 8-neighbour lattice, self-loops dropped here).
    Node features: degree one-hot (capped) plus Gaussian noise.
    """

    graphs_per_class: int = 200
    grid_shapes: tuple[tuple[int, int], ...] = ((4, 5), (5, 5), (5, 6), (6, 6))
    ba_edges: int = 3
    max_degree: int = 8
    feature_noise: float = 0.5


def graph_classes(spec: GraphClassesSpec, seed: int = 0) -> list[Data]:
    """``3 * graphs_per_class`` undirected graphs, classes interleaved, each ``Data(x, edge_index, y)``."""
    from torch_geometric.datasets.graph_generator import BAGraph, ERGraph, GridGraph
    from torch_geometric.utils import remove_self_loops

    graphs: list[Data] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the generators draw from torch's global RNG; the fork isolates it
        for _ in range(spec.graphs_per_class):
            h, w = spec.grid_shapes[int(torch.randint(len(spec.grid_shapes), (1,)))]
            n = h * w
            grid_edges = remove_self_loops(GridGraph(h, w)().edge_index)[0]  # 8-neighbour lattice
            p = grid_edges.shape[1] / (n * (n - 1))  # ER with the grid's mean degree
            for label, edge_index in enumerate((ERGraph(n, p)().edge_index, BAGraph(n, spec.ba_edges)().edge_index,
                                                grid_edges)):
                x = degree_onehot(edge_index, n, spec.max_degree)
                x = x + spec.feature_noise * torch.randn(x.shape)
                graphs.append(Data(x=x, edge_index=edge_index, y=torch.tensor([label]), num_nodes=n))
    return graphs


def random_node_split(num_nodes: int, train_fraction: float, val_fraction: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint (train, val, test) node index tensors; test gets the remainder."""
    perm = torch.randperm(num_nodes, generator=generator)
    n_train, n_val = int(round(train_fraction * num_nodes)), int(round(val_fraction * num_nodes))
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]


def _require_files(root: Path, files: list[Path], what: str, how: str) -> None:
    missing = [f for f in files if not f.exists()]
    if missing:
        names = ", ".join(str(f.relative_to(root)) for f in missing)
        raise OfflineDatasetError(
            f"{what}: offline=True and {root} lacks {names}. Put the dataset's raw files there "
            f"({how}) or pass offline=False to let torch_geometric download it.")


def load_planetoid(root: str | Path, name: str, *, offline: bool = True):
    """``torch_geometric.datasets.Planetoid(root, name)``; offline it needs ``root/<name>/raw/ind.<name>.*``."""
    from torch_geometric.datasets import Planetoid

    if name not in PLANETOID_NAMES:
        raise ValueError(f"Planetoid name {name!r} is not one of {', '.join(PLANETOID_NAMES)}")
    root = Path(root)
    if offline:
        raw = root / name / "raw"
        _require_files(root, [raw / f"ind.{name.lower()}.{p}" for p in _PLANETOID_PARTS], f"Planetoid {name}",
                       "the ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index} files of the Planetoid release")
    return Planetoid(str(root), name)


def load_tudataset(root: str | Path, name: str, *, offline: bool = True):
    """``torch_geometric.datasets.TUDataset(root, name)``; offline it needs ``root/<name>/raw/<name>_A.txt``
    and ``<name>_graph_indicator.txt`` (plus the optional label/attribute files of the TU format)."""
    from torch_geometric.datasets import TUDataset

    root = Path(root)
    if offline:
        raw = root / name / "raw"
        _require_files(root, [raw / f"{name}_A.txt", raw / f"{name}_graph_indicator.txt"], f"TUDataset {name}",
                       "the unzipped TU-format text files")
    return TUDataset(str(root), name)
