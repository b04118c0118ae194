"""aux.graffe: math against float64 references, guards against the brief's lazy fakes, config errors, loaders."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch_geometric.data import Data

from workers.aux.common.graphs import (
    GraphClassesSpec,
    OfflineDatasetError,
    degree_onehot,
    graph_classes,
    load_planetoid,
    load_tudataset,
    partition_graph,
    random_node_split,
)
from workers.aux.common.runtime import generator
from workers.aux.graffe.checkpoint import load_encoder, save_encoder
from workers.aux.graffe.config import GraffeConfig
from workers.aux.graffe.decoder import ConditionalGraphUNet
from workers.aux.graffe.diffusion import VpSchedule, dsm_loss, mi_bound_gap, x0_mse_from_eps_mse
from workers.aux.graffe.encoders import EncoderSpec, build_encoder
from workers.aux.graffe.evaluation import dsm_at_timesteps, embed, probe_split
from workers.aux.graffe.masking import apply_mask, sample_node_mask, shuffle_rows
from workers.aux.graffe.objectives import sce_loss
from workers.aux.graffe.pretrain import DecoderSpec, PretrainSettings, pretrain
from workers.aux.graffe.views import UnlabeledGraphs

warnings.filterwarnings("ignore", message="Sparse")


@pytest.fixture(scope="module")
def node_graph() -> Data:
    return partition_graph(num_classes=3, nodes_per_class=30, average_degree=6.0, num_channels=8, n_informative=3,
                           seed=3)


@pytest.fixture(scope="module")
def schedule() -> VpSchedule:
    return VpSchedule.from_diffusers(100, "squaredcos_cap_v2")


def _tiny(data: UnlabeledGraphs, kind: str) -> tuple[EncoderSpec, DecoderSpec]:
    return EncoderSpec(kind, data.num_features, hidden=8, z_dim=4, layers=2, heads=2), DecoderSpec(8, 1, 0.5, 4)


# ---- math vs independent float64 references ------------------------------------------------------------

def _cosine_abar_f64(T: int) -> np.ndarray:
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=np.float64)
    return np.cumprod(1.0 - betas)


def test_schedule_matches_float64_formulas():
    cos = VpSchedule.from_diffusers(50, "squaredcos_cap_v2").alphas_cumprod.double().numpy()
    np.testing.assert_allclose(cos, _cosine_abar_f64(50), rtol=1e-5, atol=1e-7)
    lin = VpSchedule.from_diffusers(50, "linear").alphas_cumprod.double().numpy()
    np.testing.assert_allclose(lin, np.cumprod(1 - np.linspace(1e-4, 0.02, 50)), rtol=1e-5)


def test_add_noise_and_dsm_loss_match_float64(schedule):
    g = generator(0)
    x0, eps = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    t = torch.tensor([0, 5, 10, 50, 99, 99, 1])
    abar = _cosine_abar_f64(100)[t.numpy()]
    ref = np.sqrt(abar)[:, None] * x0.double().numpy() + np.sqrt(1 - abar)[:, None] * eps.double().numpy()
    np.testing.assert_allclose(schedule.add_noise(x0, t, eps).double().numpy(), ref, rtol=1e-5, atol=1e-6)
    pred = torch.randn(7, 3, generator=g)
    ref_loss = np.mean((pred.double().numpy() - eps.double().numpy()) ** 2)
    assert float(dsm_loss(pred, eps)) == pytest.approx(ref_loss, rel=1e-6)


def test_sce_loss_matches_float64():
    g = generator(1)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    an, bn = a.double().numpy(), b.double().numpy()
    cos = (an * bn).sum(1) / (np.linalg.norm(an, axis=1) * np.linalg.norm(bn, axis=1))
    for gamma in (1.0, 2.0, 3.0):
        assert float(sce_loss(a, b, gamma)) == pytest.approx(np.mean((1 - cos) ** gamma), rel=1e-5)


def test_mi_gap_is_difference_of_gaussian_entropy_bounds():
    d, m_u, m_c = 12, 0.8, 0.5
    h = lambda m: 0.5 * d * np.log(2 * np.pi * np.e * m)  # noqa: E731  Gaussian max-entropy bound
    assert mi_bound_gap(m_u, m_c, d) == pytest.approx(h(m_u) - h(m_c), rel=1e-12)
    assert mi_bound_gap(m_c, m_c, d) == 0.0


def test_x0_error_from_eps_error_matches_explicit_reconstruction():
    rng = np.random.default_rng(0)
    x0, eps, delta = rng.normal(size=(3, 1000))
    a, s = 0.6, 0.8
    x_t = a * x0 + s * eps
    x0_hat = (x_t - s * (eps + delta)) / a
    assert x0_mse_from_eps_mse(np.mean(delta**2), a, s) == pytest.approx(np.mean((x0_hat - x0) ** 2), rel=1e-10)


def test_gin_graph_z_is_mean_of_node_embeddings():
    spec = EncoderSpec("gin", 3, hidden=6, z_dim=4, layers=2)
    enc = build_encoder(spec, seed=0).double()
    x = torch.randn(5, 3, generator=generator(2), dtype=torch.float64)
    ei = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    batch = torch.tensor([0, 0, 1, 1, 1])
    h = enc.node_embeddings(x, ei, batch).detach().numpy()
    z = enc(x, ei, batch).detach().numpy()
    np.testing.assert_allclose(z, np.stack([h[:2].mean(0), h[2:].mean(0)]), rtol=1e-12)


def test_mask_and_shuffle():
    mask = sample_node_mask(10, 0.3, generator(0))
    assert int(mask.sum()) == 3
    x, token = torch.randn(10, 4), torch.full((4,), 7.0)
    xm = apply_mask(x, mask, token)
    assert torch.equal(xm[~mask], x[~mask]) and bool((xm[mask] == 7.0).all())
    assert torch.equal(apply_mask(x, sample_node_mask(10, 0.0, generator(0)), token), x)
    z = torch.arange(20.0).reshape(10, 2)
    zs = shuffle_rows(z, generator(0))
    assert not torch.equal(zs, z) and torch.equal(zs.sort(0).values, z)


def test_degree_onehot_counts_edges():
    ei = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])
    np.testing.assert_array_equal(degree_onehot(ei, 5, max_degree=2).argmax(1).numpy(), [2, 1, 1, 1, 0])


# ---- offline data ---------------------------------------------------------------------------------------

def test_partition_graph_is_seeded_symmetric_and_homophilous(node_graph):
    state = torch.get_rng_state()
    again = partition_graph(num_classes=3, nodes_per_class=30, average_degree=6.0, num_channels=8, n_informative=3,
                            seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is forked, not consumed
    assert torch.equal(again.edge_index, node_graph.edge_index) and torch.equal(again.x, node_graph.x)
    ei = node_graph.edge_index
    assert set(map(tuple, ei.t().tolist())) == set(map(tuple, ei.flip(0).t().tolist()))
    same = float((node_graph.y[ei[0]] == node_graph.y[ei[1]]).float().mean())
    assert same > 0.5  # homophily 0.7 requested (vs 1/3 by chance)
    assert 3.0 < ei.shape[1] / node_graph.num_nodes < 9.0


def test_graph_classes_match_node_counts():
    graphs = graph_classes(GraphClassesSpec(graphs_per_class=4), seed=0)
    assert [int(g.y) for g in graphs[:3]] == [0, 1, 2]
    for i in range(0, len(graphs), 3):
        assert len({g.num_nodes for g in graphs[i:i + 3]}) == 1


def test_node_split_is_disjoint():
    tr, va, te = random_node_split(50, 0.2, 0.2, generator(0))
    assert len(tr) == 10 and len(va) == 10 and len(te) == 30
    assert len(set(tr.tolist()) | set(va.tolist()) | set(te.tolist())) == 50


def test_raw_features_are_weak(node_graph):
    """The brief's trivially-separable-dataset fake: the raw-feature probe must sit well below the ceiling."""
    g = partition_graph(num_classes=5, nodes_per_class=100, seed=0)
    tr, _, te = (i.numpy() for i in random_node_split(g.num_nodes, 0.2, 0.2, generator(0)))
    acc = probe_split(g.x.double().numpy(), g.y.numpy(), tr, te, c=1.0)
    assert acc < 0.6


# ---- guards against the lazy fakes ---------------------------------------------------------------------

def test_zero_steps_reproduce_random_init_bit_for_bit(node_graph, schedule):
    data = UnlabeledGraphs([node_graph], None)
    enc, dec = _tiny(data, "gat")
    run = pretrain("graffe", data, enc, dec, schedule, PretrainSettings(steps=0), seed=5)
    assert np.array_equal(embed(run.encoder, data.full()), embed(build_encoder(enc, 5), data.full()))


def test_labels_never_reach_pretraining(node_graph, schedule):
    data = UnlabeledGraphs([node_graph], None)
    assert all("y" not in g for g in data._graphs)
    shuffled_labels = Data(x=node_graph.x, edge_index=node_graph.edge_index, y=node_graph.y.flip(0))
    data2 = UnlabeledGraphs([shuffled_labels], None)
    enc, dec = _tiny(data, "gat")
    a = pretrain("graffe", data, enc, dec, schedule, PretrainSettings(steps=3), seed=1)
    b = pretrain("graffe", data2, enc, dec, schedule, PretrainSettings(steps=3), seed=1)
    assert np.array_equal(embed(a.encoder, data.full()), embed(b.encoder, data2.full()))


def test_z_shuffle_ablation_changes_training_and_loss(node_graph, schedule):
    data = UnlabeledGraphs([node_graph], None)
    enc, dec = _tiny(data, "gat")
    cond = pretrain("graffe", data, enc, dec, schedule, PretrainSettings(steps=3), seed=1)
    shuf = pretrain("graffe_shuffled", data, enc, dec, schedule, PretrainSettings(steps=3), seed=1)
    assert not np.array_equal(embed(cond.encoder, data.full()), embed(shuf.encoder, data.full()))
    view = data.full()
    plain = dsm_at_timesteps(cond.encoder, cond.decoder, view, schedule, [10, 60], 1, seed=0)
    assert plain == dsm_at_timesteps(cond.encoder, cond.decoder, view, schedule, [10, 60], 1, seed=0)  # matched
    assert plain != dsm_at_timesteps(cond.encoder, cond.decoder, view, schedule, [10, 60], 1, seed=0, shuffle_z=True)


def test_graph_task_pretraining_runs_and_decoder_needs_z(schedule):
    data = UnlabeledGraphs(graph_classes(GraphClassesSpec(graphs_per_class=3), seed=0), batch_graphs=4)
    enc, dec = _tiny(data, "gin")
    for objective in ("graffe", "graphmae", "uncond"):
        run = pretrain(objective, data, enc, dec, schedule, PretrainSettings(steps=2), seed=0)
        assert len(run.losses) == 2 and all(math.isfinite(v) for v in run.losses)
    with pytest.raises(ValueError, match="conditional"):
        ConditionalGraphUNet(3, 2, 8, 1, 0.5, 4)(torch.randn(4, 3), torch.tensor([[0, 1], [1, 0]]),
                                                   torch.zeros(4, dtype=torch.long), None)


# ---- config errors -------------------------------------------------------------------------------------

def test_presets_validate_and_defaults_are_quick():
    for preset in ("smoke", "quick", "full"):
        GraffeConfig(preset=preset)
    assert GraffeConfig(preset="quick") == GraffeConfig()


@pytest.mark.parametrize("data, match", [
    ({"preset": "huge"}, "preset"),
    ({"train": {"steps": -1}}, "steps"),
    ({"train": {"mask_ratio": 1.0}}, "mask_ratio"),
    ({"diffusion": {"beta_schedule": "sigmoid"}}, "beta_schedule"),
    ({"model": {"wdith": 3}}, "wdith"),
    ({"node_task": {"n_informative": 40}}, "node_task.n_informative must"),
    ({"node_task": {"num_classes": 9}}, "node_task.n_informative must satisfy"),
    ({"node_task": {"train_fraction": 0.6, "val_fraction": 0.4}}, "node_task.train_fraction"),
    ({"model": {"hidden": 30}}, "model.hidden"),
    ({"model": {"time_dim": 5}}, "model.time_dim must"),
    ({"diffusion": {"eval_timesteps": [1000]}}, "diffusion.eval_timesteps must"),
    ({"train": {"tune_mask_ratios": [0.5]}, "node_task": {"val_fraction": 0.0}}, "train.tune_mask_ratios needs"),
    ({"train": {"steps": 2, "curve_points": 3}}, "train.curve_points must"),
    ({"eval": {"num_seeds": 1, "uncond_seeds": 2}}, "eval.uncond_seeds must"),
    ({"node_task": {"enabled": False}, "graph_task": {"enabled": False}}, "node_task.enabled and graph_task.enabled"),
    ({"graph_task": {"graphs_per_class": 5, "folds": 6}}, "graph_task.folds must"),
])
def test_bad_config_values_fail_clearly(data, match):
    with pytest.raises(ValidationError, match=match):
        GraffeConfig.model_validate(data)


# ---- loaders -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gat", "gin"])
def test_encoder_checkpoint_roundtrip(tmp_path, kind):
    enc = build_encoder(EncoderSpec(kind, 5, hidden=8, z_dim=4, heads=2), seed=4)
    save_encoder(enc, tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    x, ei = torch.randn(6, 5, generator=generator(0)), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(enc.eval()(x, ei), loaded(x, ei))


def test_encoder_loader_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"encoder_config\.json.*save_encoder"):
        load_encoder(tmp_path)


def _write_tu(root, name: str) -> None:
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    (raw / f"{name}_A.txt").write_text("1, 2\n2, 1\n2, 3\n3, 2\n4, 5\n5, 4\n")
    (raw / f"{name}_graph_indicator.txt").write_text("1\n1\n1\n2\n2\n")
    (raw / f"{name}_graph_labels.txt").write_text("0\n1\n")
    (raw / f"{name}_node_labels.txt").write_text("0\n1\n0\n1\n1\n")


def test_tudataset_loads_local_tu_files(tmp_path):
    _write_tu(tmp_path, "TOY")
    ds = load_tudataset(tmp_path, "TOY", offline=True)
    assert len(ds) == 2 and ds[0].num_nodes == 3 and ds[1].y.tolist() == [1]


def _write_planetoid(root, name: str, n_all: int = 510, n_test: int = 10) -> None:
    """A tiny Planetoid release: ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index} (pickles + text)."""
    import pickle

    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    allx, tx = rng.random((n_all, 3)), rng.random((n_test, 3))
    ally, ty = np.eye(2)[np.arange(n_all) % 2], np.eye(2)[np.arange(n_test) % 2]
    n = n_all + n_test
    parts = {"x": allx[:20], "tx": tx, "allx": allx, "y": ally[:20], "ty": ty, "ally": ally,
             "graph": {i: [(i + 1) % n, (i - 1) % n] for i in range(n)}}
    for part, obj in parts.items():
        (raw / f"ind.{name.lower()}.{part}").write_bytes(pickle.dumps(obj))
    (raw / f"ind.{name.lower()}.test.index").write_text("\n".join(str(i) for i in range(n_all, n)) + "\n")


def test_planetoid_loads_local_raw_files(tmp_path):
    _write_planetoid(tmp_path, "Cora")
    ds = load_planetoid(tmp_path, "Cora", offline=True)
    assert ds[0].num_nodes == 520 and ds[0].x.shape == (520, 3) and ds[0].edge_index.shape[1] == 1040


def test_standard_loaders_refuse_missing_files_offline(tmp_path):
    with pytest.raises(OfflineDatasetError, match=r"MUTAG_A\.txt.*offline=False"):
        load_tudataset(tmp_path, "MUTAG", offline=True)
    with pytest.raises(OfflineDatasetError, match=r"ind\.cora\.x.*offline=False"):
        load_planetoid(tmp_path, "Cora", offline=True)
    with pytest.raises(ValueError, match="Planetoid name"):
        load_planetoid(tmp_path, "Corra")
