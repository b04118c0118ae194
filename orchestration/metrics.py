"""Where a run's numbers go: metrics.jsonl, TensorBoard events, and Ray metrics (Prometheus).

Ray metrics carry the names of DESIGN.md, ``solrl_<role>_<quantity>_<unit>``, tagged by job id (and
precision or reward source where that is the point); Ray exports them as ``ray_solrl_...`` on its
Prometheus endpoint and shows them in the dashboard's Metrics view.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

# Record key -> (Ray metric name, description, extra tags taken from the record context).
RAY_GAUGES: dict[str, tuple[str, str]] = {
    "rollout_images_per_second": ("solrl_rollout_images_per_second", "Stage-1 (or sampling) images per second"),
    "reward_mean": ("solrl_reward_mean", "Mean reward of the training samples (BF16)"),
    "reward_std": ("solrl_reward_std", "Std of the training samples' rewards"),
    "reward_max": ("solrl_reward_max", "Max reward of the training samples"),
    "proxy_reward_mean": ("solrl_rollout_proxy_reward_mean", "Mean stage-1 (proxy) reward"),
    "eval_reward_mean": ("solrl_eval_reward_mean", "Held-out reward (fixed seeds, BF16)"),
    "fidelity_spearman": ("solrl_selection_spearman", "Spearman between proxy and BF16 rewards of regenerated candidates"),
    "fidelity_kendall": ("solrl_selection_kendall", "Kendall tau between proxy and BF16 rewards"),
    "fidelity_half_overlap": ("solrl_selection_topk_overlap", "Overlap of proxy and BF16 best halves"),
    "loss": ("solrl_learner_loss", "Training loss"),
    "kl": ("solrl_learner_kl", "KL term of the loss"),
    "grad_norm": ("solrl_learner_grad_norm", "Gradient norm before clipping"),
    "clip_fraction": ("solrl_learner_clip_fraction", "GRPO ratio clip fraction"),
    "sync_seconds": ("solrl_weight_sync_seconds", "Learner -> sampling copies weight refresh"),
    "stage1_seconds": ("solrl_phase_stage1_seconds", "Stage-1 exploration seconds"),
    "stage2_seconds": ("solrl_phase_stage2_seconds", "Stage-2 BF16 regeneration seconds"),
    "learner_seconds": ("solrl_phase_learner_seconds", "Learner update seconds"),
    "iteration_seconds": ("solrl_phase_iteration_seconds", "Whole iteration seconds"),
    "stage1_precision_bits": ("solrl_rollout_precision_bits", "Bits of the stage-1 proxy precision (4, 8, 16)"),
    "policy_version": ("solrl_policy_version", "Policy version the iteration sampled with"),
}

ROLES = ("rollout", "regen", "learner", "reward", "selection", "eval", "weight_sync", "phase", "policy")


def metric_role(name: str) -> str:
    """The role a metric belongs to, from its name (solrl_<role>_<quantity>_<unit>)."""
    rest = name.removeprefix("solrl_")
    for role in ROLES:
        if rest.startswith(role + "_"):
            return role
    return "driver"


def ray_metric_names() -> list[str]:
    return sorted({name for name, _ in RAY_GAUGES.values()})


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class MetricsSink:
    """Appends every record to metrics.jsonl and mirrors numeric fields to TensorBoard and Ray."""

    def __init__(self, out_dir: Path, job_id: str, *, append: bool = False, ray_metrics: bool = False) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.file = self.path.open("a" if append else "w")
        self.job_id = job_id
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))
        except ImportError:  # tensorboard is an optional dependency
            self.tb = None
        self.gauges = {}
        if ray_metrics:
            from ray.util.metrics import Gauge

            for key, (name, description) in RAY_GAUGES.items():
                self.gauges[key] = Gauge(name, description=description, tag_keys=("job_id", "role", "precision"))

    def emit(self, record: dict, precision: str | None = None) -> None:
        clean = {k: (v if _finite(v) or not isinstance(v, float) else None) for k, v in record.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        step = int(record.get("iteration", 0))
        for key, value in record.items():
            if not _finite(value) or key == "iteration":
                continue
            if self.tb is not None:
                self.tb.add_scalar(key, float(value), step)
            gauge = self.gauges.get(key)
            if gauge is not None:
                tags = {"job_id": self.job_id, "role": metric_role(RAY_GAUGES[key][0]), "precision": precision or "none"}
                gauge.set(float(value), tags=tags)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_records(path: Path) -> list[dict]:
    """The JSON objects of a metrics.jsonl; a line a killed run left half-written is skipped with a warning."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: skipping an unreadable line", path)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
