"""Config of aux.graffe: Graffe (graph representation learning by a conditional diffusion decoder).

Pydantic only (the job registry imports this without torch). Field defaults equal the quick preset.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel


class NodeTaskConfig(StrictModel):
    """Node classification on one random-partition graph with deliberately weak features (GAT encoder)."""

    enabled: bool = Field(True, description="Run the node task.")
    num_classes: int = Field(5, ge=2, description="Blocks (= classes) of the partition graph.")
    nodes_per_class: int = Field(100, ge=10, description="Nodes per block.")
    homophily: float = Field(0.7, gt=0.0, le=1.0, description="Share of a node's expected edges inside its block.")
    average_degree: float = Field(8.0, gt=0.0, description="Expected node degree.")
    num_channels: int = Field(32, ge=2, description="Node feature dimension.")
    n_informative: int = Field(4, ge=1, description="Informative feature dimensions (make_classification).")
    flip_y: float = Field(0.3, ge=0.0, lt=1.0, description="Fraction of feature classes relabelled at random "
                          "(weakens the features so structure matters).")
    train_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Probe training nodes per seed.")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Validation nodes (mask-ratio tuning only).")


class GraphTaskConfig(StrictModel):
    """Graph classification of generated ER / BA / grid graphs (GIN + mean pool encoder)."""

    enabled: bool = Field(True, description="Run the graph task.")
    graphs_per_class: int = Field(60, ge=5, description="Graphs per class (3 classes).")
    ba_edges: int = Field(3, ge=1, description="Edges attached per new BA node.")
    max_degree: int = Field(8, ge=1, description="Degree one-hot is capped here.")
    feature_noise: float = Field(1.0, ge=0.0, description="Std of the Gaussian noise added to the degree one-hot.")
    folds: int = Field(10, ge=2, description="Stratified folds of the probe's cross-validation.")
    batch_graphs: int = Field(32, ge=1, description="Graphs per pretraining minibatch.")


class ModelConfig(StrictModel):
    """Sizes of the encoder E_phi and the graph U-Net denoiser D_theta."""

    hidden: int = Field(64, ge=4, description="Encoder hidden width (GAT: split over heads).")
    z_dim: int = Field(32, ge=2, description="Representation z width.")
    encoder_layers: int = Field(2, ge=1, description="GAT / GIN layers.")
    gat_heads: int = Field(4, ge=1, description="GAT attention heads (hidden and z_dim must divide by it).")
    decoder_hidden: int = Field(32, ge=4, description="Graph U-Net width.")
    decoder_depth: int = Field(1, ge=1, description="Graph U-Net pooling levels.")
    pool_ratio: float = Field(0.5, gt=0.0, le=1.0, description="TopK pooling ratio per U-Net level.")
    time_dim: int = Field(16, ge=2, description="Sinusoidal time-embedding width (even).")


class DiffusionConfig(StrictModel):
    """The forward process x_t = alpha_t x0 + sigma_t eps (a diffusers DDPMScheduler's alphas_cumprod)."""

    num_train_timesteps: int = Field(1000, ge=2, description="Discrete timesteps T.")
    beta_schedule: Literal["squaredcos_cap_v2", "linear"] = Field("squaredcos_cap_v2", description="diffusers beta schedule.")
    eval_timesteps: list[int] = Field([50, 200, 500, 800], min_length=1,
                                      description="Timesteps of the matched-t conditional vs unconditional DSM check.")
    eval_draws: int = Field(2, ge=1, description="Noise draws per eval timestep (same draws for every arm).")


class TrainConfig(StrictModel):
    """Pretraining of Graffe, its ablations and the GraphMAE baseline (identical budgets)."""

    steps: int = Field(150, ge=0, description="Optimizer steps per pretraining run.")
    lr: float = Field(2e-3, gt=0.0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay.")
    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="Fraction of nodes whose features the encoder sees "
                              "as the [MASK] token.")
    tune_mask_ratios: list[float] = Field([], description="If set, pick the node task's mask ratio for Graffe and "
                                          "GraphMAE from these by validation probe accuracy (seed 0 split).")
    sce_gamma: float = Field(2.0, ge=1.0, description="GraphMAE scaled-cosine-error exponent.")
    curve_points: int = Field(5, ge=0, description="Checkpoints of the -log(DSM) vs probe-accuracy curve (first seed).")


class EvalConfig(StrictModel):
    """The frozen-encoder linear probe."""

    num_seeds: int = Field(3, ge=1, description="Seeds (model init, masks, noise, node split); the table reports "
                           "mean and std over all of them.")
    probe_c: float = Field(1.0, gt=0.0, description="Inverse L2 strength of the logistic-regression probe.")
    uncond_seeds: int = Field(1, ge=1, description="Seeds (the first ones) that also train the unconditional "
                              "denoiser for the conditional-vs-unconditional DSM check.")


class GraffeConfig(AuxConfig):
    """aux.graffe: probe accuracy of Graffe vs raw features, random init, GraphMAE and the z-shuffle ablation."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"node_task": {"nodes_per_class": 30}, "graph_task": {"graphs_per_class": 10, "folds": 3},
                  "model": {"hidden": 16, "z_dim": 8, "decoder_hidden": 16, "decoder_depth": 1},
                  "diffusion": {"eval_timesteps": [100, 600], "eval_draws": 1},
                  "train": {"steps": 4, "curve_points": 2}, "eval": {"num_seeds": 2}},
        "quick": {},
        "full": {"graph_task": {"graphs_per_class": 100},
                 "train": {"steps": 150, "tune_mask_ratios": [0.25, 0.5, 0.75], "curve_points": 6},
                 "eval": {"num_seeds": 10, "uncond_seeds": 2}},
    }

    node_task: NodeTaskConfig = Field(NodeTaskConfig(), description="Node classification set.")
    graph_task: GraphTaskConfig = Field(GraphTaskConfig(), description="Graph classification set.")
    model: ModelConfig = Field(ModelConfig(), description="Encoder and decoder sizes.")
    diffusion: DiffusionConfig = Field(DiffusionConfig(), description="Noise schedule and the DSM evaluation.")
    train: TrainConfig = Field(TrainConfig(), description="Pretraining.")
    eval: EvalConfig = Field(EvalConfig(), description="Linear probing.")
    num_threads: int = Field(1, ge=1, description="torch intra-op threads during the run (restored after). The "
                             "small sparse graph ops run fastest single-threaded on a shared CPU.")

    @model_validator(mode="after")
    def _check(self) -> GraffeConfig:
        if not (self.node_task.enabled or self.graph_task.enabled):
            raise ValueError("node_task.enabled and graph_task.enabled are both false; enable at least one task")
        if self.node_task.n_informative > self.node_task.num_channels:
            raise ValueError(f"node_task.n_informative must be <= node_task.num_channels "
                             f"({self.node_task.n_informative} > {self.node_task.num_channels})")
        if 2 * self.node_task.num_classes > 2 ** self.node_task.n_informative:
            raise ValueError(f"node_task.n_informative must satisfy 2 * node_task.num_classes <= 2**n_informative "
                             f"(make_classification's two clusters per class); got {self.node_task.n_informative} "
                             f"for {self.node_task.num_classes} classes")
        if self.node_task.train_fraction + self.node_task.val_fraction >= 1.0:
            raise ValueError("node_task.train_fraction + node_task.val_fraction must be < 1 (the rest is the test set)")
        if self.model.hidden % self.model.gat_heads or self.model.z_dim % self.model.gat_heads:
            raise ValueError(f"model.hidden ({self.model.hidden}) and model.z_dim ({self.model.z_dim}) must be "
                             f"divisible by model.gat_heads ({self.model.gat_heads})")
        if self.model.time_dim % 2:
            raise ValueError(f"model.time_dim must be even, got {self.model.time_dim}")
        bad_t = [t for t in self.diffusion.eval_timesteps if not 0 <= t < self.diffusion.num_train_timesteps]
        if bad_t:
            raise ValueError(f"diffusion.eval_timesteps must lie in [0, diffusion.num_train_timesteps="
                             f"{self.diffusion.num_train_timesteps}); got {bad_t}")
        bad_r = [r for r in self.train.tune_mask_ratios if not 0.0 < r < 1.0]
        if bad_r:
            raise ValueError(f"train.tune_mask_ratios must lie in (0, 1); got {bad_r}")
        if self.train.tune_mask_ratios and self.node_task.val_fraction == 0.0:
            raise ValueError("train.tune_mask_ratios needs node_task.val_fraction > 0 (tuning never sees the test split)")
        if self.train.curve_points > self.train.steps:
            raise ValueError(f"train.curve_points must be <= train.steps ({self.train.curve_points} > {self.train.steps})")
        if self.eval.uncond_seeds > self.eval.num_seeds:
            raise ValueError(f"eval.uncond_seeds must be <= eval.num_seeds "
                             f"({self.eval.uncond_seeds} > {self.eval.num_seeds})")
        if self.graph_task.enabled and self.graph_task.folds > self.graph_task.graphs_per_class:
            raise ValueError(f"graph_task.folds must be <= graph_task.graphs_per_class "
                             f"({self.graph_task.folds} > {self.graph_task.graphs_per_class})")
        return self
