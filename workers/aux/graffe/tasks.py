"""The experiment's two tasks run through one arm loop: data, probe and seeds differ, the arms do not.

Arms (brief 4(e)), all probed with the same logistic regression on the same seeds:
raw features, random-init encoder, GraphMAE, Graffe, Graffe trained with z shuffled (the ablation).
The unconditional denoiser is trained only for the Diff-InfoMax check (conditional vs unconditional
DSM loss at matched t).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from workers.aux.common.graphs import GraphClassesSpec, graph_classes, partition_graph, random_node_split
from workers.aux.common.runtime import generator, progress
from workers.aux.graffe.checkpoint import save_encoder
from workers.aux.graffe.config import GraffeConfig
from workers.aux.graffe.diffusion import VpSchedule
from workers.aux.graffe.encoders import EncoderSpec, build_encoder
from workers.aux.graffe.evaluation import dsm_at_timesteps, embed, probe_cv, probe_split
from workers.aux.graffe.pretrain import DecoderSpec, Pretrained, PretrainSettings, pretrain
from workers.aux.graffe.views import UnlabeledGraphs

ARMS = ("raw features", "random-init encoder", "GraphMAE", "Graffe", "Graffe, z shuffled")

# probe(features, seed_index, split) -> accuracy; split is "test" (or "val" for tuning / the curve)
ProbeFn = Callable[[np.ndarray, int, str], float]


@dataclass
class TaskSetup:
    name: str
    data: UnlabeledGraphs
    probe: ProbeFn
    raw_features: np.ndarray
    enc_spec: EncoderSpec
    notes: dict = field(default_factory=dict)


@dataclass
class TaskResult:
    name: str
    accuracies: dict[str, list[float]]
    dsm: dict[str, dict[int, list[float]]]  # arm -> t -> per-seed eps-MSE
    curve: list[dict[str, float]]
    mask_ratios: dict[str, float]
    tuning: list[dict[str, float]]
    notes: dict


def seeds_of(cfg: GraffeConfig) -> list[int]:
    return [cfg.seed + i for i in range(cfg.eval.num_seeds)]


def node_setup(cfg: GraffeConfig, device: torch.device) -> TaskSetup:
    """The random-partition graph; per seed a fresh (train, val, test) node split."""
    nt = cfg.node_task
    graph = partition_graph(nt.num_classes, nt.nodes_per_class, nt.homophily, nt.average_degree, nt.num_channels,
                            nt.n_informative, nt.flip_y, seed=cfg.seed)
    labels = graph.y.numpy()
    data = UnlabeledGraphs([graph], None, device)
    splits = [tuple(i.numpy() for i in random_node_split(graph.num_nodes, nt.train_fraction, nt.val_fraction,
                                                         generator(s + 10_000))) for s in seeds_of(cfg)]

    def probe(features: np.ndarray, i: int, split: str) -> float:
        train, val, test = splits[i]
        return probe_split(features, labels, train, val if split == "val" else test, cfg.eval.probe_c, seed=i)

    raw = data.full().x.double().cpu().numpy()
    spec = EncoderSpec("gat", data.num_features, cfg.model.hidden, cfg.model.z_dim, cfg.model.encoder_layers,
                       cfg.model.gat_heads)
    homophily = float((graph.y[graph.edge_index[0]] == graph.y[graph.edge_index[1]]).float().mean())
    return TaskSetup("node", data, probe, raw, spec,
                     {"nodes": graph.num_nodes, "edges": int(graph.edge_index.shape[1]) // 2,
                      "edge_homophily": homophily, "probe": f"logistic regression, {nt.train_fraction:.0%} train / "
                      f"{1 - nt.train_fraction - nt.val_fraction:.0%} test nodes, fresh split per seed"})


def graph_setup(cfg: GraffeConfig, device: torch.device) -> TaskSetup:
    """ER / BA / grid graphs; the probe is stratified k-fold cross-validation (GraphMAE's protocol)."""
    gt = cfg.graph_task
    graphs = graph_classes(GraphClassesSpec(gt.graphs_per_class, ba_edges=gt.ba_edges, max_degree=gt.max_degree,
                                            feature_noise=gt.feature_noise), seed=cfg.seed)
    labels = np.array([int(g.y) for g in graphs])
    data = UnlabeledGraphs(graphs, gt.batch_graphs, device)

    def probe(features: np.ndarray, i: int, split: str) -> float:
        return probe_cv(features, labels, gt.folds, cfg.eval.probe_c, seed=i)

    view = data.full()
    raw = torch.zeros(view.num_graphs, view.x.shape[1]).index_add_(0, view.batch.cpu(), view.x.cpu())
    raw = (raw / torch.bincount(view.batch.cpu()).unsqueeze(1)).double().numpy()  # mean-pooled raw features
    spec = EncoderSpec("gin", data.num_features, cfg.model.hidden, cfg.model.z_dim, cfg.model.encoder_layers,
                       cfg.model.gat_heads)
    return TaskSetup("graph", data, probe, raw, spec,
                     {"graphs": len(graphs), "mean_nodes": float(np.mean([g.num_nodes for g in graphs])),
                      "probe": f"logistic regression, stratified {gt.folds}-fold CV"})


def _settings(cfg: GraffeConfig, mask_ratio: float) -> PretrainSettings:
    t = cfg.train
    return PretrainSettings(t.steps, t.lr, t.weight_decay, mask_ratio, t.sce_gamma)


def _dec_spec(cfg: GraffeConfig) -> DecoderSpec:
    m = cfg.model
    return DecoderSpec(m.decoder_hidden, m.decoder_depth, m.pool_ratio, m.time_dim)


def tune_mask_ratio(cfg: GraffeConfig, task: TaskSetup, schedule: VpSchedule, show_progress: bool
                    ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Pick each method's mask ratio by validation probe accuracy on the first seed's split (never test)."""
    chosen = {"graffe": cfg.train.mask_ratio, "graphmae": cfg.train.mask_ratio}
    if task.name != "node" or not cfg.train.tune_mask_ratios:
        return chosen, []
    rows, seed = [], cfg.seed
    for ratio in progress(cfg.train.tune_mask_ratios, "graffe mask-ratio tuning", show_progress):
        row = {"mask_ratio": ratio}
        for objective in ("graffe", "graphmae"):
            run = pretrain(objective, task.data, task.enc_spec, _dec_spec(cfg), schedule, _settings(cfg, ratio), seed)
            row[f"{objective} val acc"] = task.probe(embed(run.encoder, task.data.full()), 0, "val")
        rows.append(row)
    for objective in ("graffe", "graphmae"):
        chosen[objective] = max(rows, key=lambda r: r[f"{objective} val acc"])["mask_ratio"]
    return chosen, rows


def run_task(cfg: GraffeConfig, task: TaskSetup, schedule: VpSchedule, out_dir, show_progress: bool) -> TaskResult:
    """All arms on all seeds for one task, plus the DSM check and the -log(DSM) vs accuracy curve."""
    ratios, tuning = tune_mask_ratio(cfg, task, schedule, show_progress)
    view = task.data.full()
    ts, draws = cfg.diffusion.eval_timesteps, cfg.diffusion.eval_draws
    acc: dict[str, list[float]] = {arm: [] for arm in ARMS}
    dsm: dict[str, dict[int, list[float]]] = {k: {t: [] for t in ts} for k in
                                              ("Graffe", "Graffe, z shuffled at eval", "Graffe, z shuffled",
                                               "unconditional")}
    curve: list[dict[str, float]] = []
    n_ckpt = cfg.train.curve_points
    ckpts = tuple(int(round(s)) for s in np.linspace(0, cfg.train.steps, n_ckpt)) if n_ckpt else ()

    def record_curve(step: int, run: Pretrained) -> None:
        losses = dsm_at_timesteps(run.encoder, run.decoder, view, schedule, ts, 1, seed=10_007)  # one draw: cheap
        mean = float(np.mean(list(losses.values())))
        curve.append({"step": step, "dsm": mean, "-log dsm": -float(np.log(mean)),
                      "probe acc (val)": task.probe(embed(run.encoder, view), 0, "val")})

    for i, seed in enumerate(progress(seeds_of(cfg), f"graffe {task.name} seeds", show_progress)):
        acc["raw features"].append(task.probe(task.raw_features, i, "test"))
        acc["random-init encoder"].append(task.probe(embed(build_encoder(task.enc_spec, seed).to(view.x.device), view),
                                                      i, "test"))
        mae = pretrain("graphmae", task.data, task.enc_spec, _dec_spec(cfg), schedule,
                       _settings(cfg, ratios["graphmae"]), seed)
        acc["GraphMAE"].append(task.probe(embed(mae.encoder, view), i, "test"))
        first = i == 0
        graffe = pretrain("graffe", task.data, task.enc_spec, _dec_spec(cfg), schedule,
                          _settings(cfg, ratios["graffe"]), seed, checkpoints=ckpts if first else (),
                          on_checkpoint=record_curve if first else None)
        acc["Graffe"].append(task.probe(embed(graffe.encoder, view), i, "test"))
        shuffled = pretrain("graffe_shuffled", task.data, task.enc_spec, _dec_spec(cfg), schedule,
                            _settings(cfg, ratios["graffe"]), seed)
        acc["Graffe, z shuffled"].append(task.probe(embed(shuffled.encoder, view), i, "test"))
        eval_seed = 20_011 + i  # same noise for every arm of this seed: matched t and eps
        evals = {"Graffe": (graffe, False), "Graffe, z shuffled at eval": (graffe, True),
                 "Graffe, z shuffled": (shuffled, False)}
        if i < cfg.eval.uncond_seeds:
            evals["unconditional"] = (pretrain("uncond", task.data, task.enc_spec, _dec_spec(cfg), schedule,
                                               _settings(cfg, ratios["graffe"]), seed), False)
        for name, (run, shuffle) in evals.items():
            for t, v in dsm_at_timesteps(run.encoder, run.decoder, view, schedule, ts, draws, eval_seed,
                                         shuffle_z=shuffle).items():
                dsm[name][t].append(v)
        if first:
            save_encoder(graffe.encoder, out_dir / f"encoder_{task.name}")
    return TaskResult(task.name, acc, dsm, curve, ratios, tuning, task.notes)
