"""``solrl report convergence``: held-out score against training time from RL run folders.

A session folder holds ``compare/<method>_s<seed>/`` (timed runs), ``audit/<name>/`` (selection-fidelity
audits), ``pretrain/summary.json`` (the base model) and ``gpus.txt``. Several sessions are pooled per method.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from orchestration.metrics import read_records

log = logging.getLogger(__name__)

MARKER = "<!-- analysis -->"
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
METHOD_ORDER = ("solrl_nvfp4", "solrl_fp8", "solrl_fp8_16steps", "naive_quant", "naive_scaling", "diffusionnft", "flow_grpo")
PARTIAL, STRICT = "eval_reward_geneval_rules", "eval_reward_geneval_rules_strict"
PLOTS = ("reward_vs_wallclock.png", "reward_vs_wallclock_warm.png", "reward_vs_iteration.png", "strict_vs_wallclock.png",
         "per_category.png")
DEFAULT_TITLE = "Convergence: held-out score against training time"
TOL = 1e-9  # a seed-mean of the same floats can sit an ulp under the target it was computed from

Value = Callable[[dict], float | None]


# ---- reading -------------------------------------------------------------------------------------
def num(value: object) -> float | None:
    """A finite float, or None (null, NaN, missing, non-numeric)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    return data if isinstance(data, dict) else {}


def read_json(path: Path) -> dict:
    data = json.loads(path.read_text()) if path.exists() else None
    return data if isinstance(data, dict) else {}


def run_label(config: dict, fallback: str = "unknown") -> str:
    """The config's ``name``; else ``solrl_<stage-1 precision>`` for Sol-RL, else the method name."""
    if config.get("name"):
        return str(config["name"])
    method = str(config.get("method") or fallback)
    precision = (config.get("rollout") or {}).get("precision")
    return f"solrl_{precision}" if method == "solrl" and precision else method


@dataclass
class Run:
    label: str
    seed: int | None
    path: Path
    config: dict
    train: list[dict]
    evals: list[dict]
    summary: dict = field(default_factory=dict)

    def cumulative_seconds(self) -> dict[int, float]:
        """Training seconds after each iteration (older files lack train_seconds: sum iteration_seconds)."""
        out: dict[int, float] = {}
        total = 0.0
        for i, rec in enumerate(self.train):
            cum = num(rec.get("train_seconds"))
            total = cum if cum is not None else total + (num(rec.get("iteration_seconds")) or 0.0)
            out[int(rec.get("iteration", i))] = total
        return out

    def eval_seconds(self, rec: dict, cumulative: dict[int, float]) -> float | None:
        seconds = num(rec.get("train_seconds"))
        if seconds is not None:
            return seconds
        done = int(rec.get("iteration", 0))  # an eval at iteration i follows iterations 0..i-1
        before = [s for it, s in cumulative.items() if it < done]
        return before[-1] if before else 0.0

    def warmup_seconds(self) -> float:
        """One-time cost of the first iteration (compilation, allocator, autotuning): its seconds minus the median
        of the others'; 0 with fewer than two iterations."""
        values = [v for r in self.train if (v := num(r.get("iteration_seconds"))) is not None]
        if len(values) < 2:
            return 0.0
        return max(0.0, values[0] - float(np.median(values[1:])))

    def series(self, value: Value, x: str = "seconds") -> tuple[np.ndarray, np.ndarray]:
        """(x, value) of the evaluations that have both; x = "seconds" (training seconds), "steady" (training
        seconds less the first iteration's warm-up, for evaluations after it) or "iteration"."""
        cumulative = self.cumulative_seconds()
        warmup = self.warmup_seconds() if x == "steady" else 0.0
        points: dict[float, float] = {}
        for rec in self.evals:
            if x == "iteration":
                xv = num(rec.get("iteration"))
            else:
                xv = self.eval_seconds(rec, cumulative)
                xv = None if xv is None else max(0.0, xv - warmup)
            yv = value(rec)
            if xv is not None and yv is not None:
                points[xv] = yv  # a resumed run repeats an evaluation: the later one wins
        xs = np.array(sorted(points), dtype=float)
        return xs, np.array([points[v] for v in xs], dtype=float)

    def iterations(self) -> float | None:
        if self.train:
            return float(max(int(r.get("iteration", i)) for i, r in enumerate(self.train)) + 1)
        return num(self.summary.get("iterations"))

    def train_seconds(self) -> float | None:
        cumulative = self.cumulative_seconds()
        return list(cumulative.values())[-1] if cumulative else num(self.summary.get("train_seconds"))

    def seconds_per_iteration(self) -> float | None:
        """The median iteration's seconds (the steady state: the first iteration also compiles)."""
        values = [v for r in self.train if (v := num(r.get("iteration_seconds"))) is not None]
        if values:
            return float(np.median(values))
        total, its = self.train_seconds(), self.iterations()
        return total / its if total is not None and its else None


def is_eval(rec: dict) -> bool:
    return "eval_reward_mean" in rec or PARTIAL in rec


def load_run(path: Path) -> Run | None:
    records = read_records(path / "metrics.jsonl")
    if not records:
        return None
    config, summary = read_yaml(path / "config.yaml"), read_json(path / "summary.json")
    match = re.search(r"_s(\d+)$", path.name)
    seed = config.get("seed", int(match.group(1)) if match else None)
    label = run_label(config, fallback=summary.get("method") or re.sub(r"_s\d+$", "", path.name))
    return Run(label, seed, path, config, [r for r in records if not is_eval(r)],
               [r for r in records if is_eval(r)], summary)


def gpu_name(path: Path) -> str:
    """``2× NVIDIA H200`` from ``nvidia-smi -L`` output."""
    names = re.findall(r"^GPU \d+: (.+?) \(UUID", path.read_text(), re.M) if path.exists() else []
    if not names:
        return "unknown GPU"
    return ", ".join(f"{names.count(n)}× {n}" for n in dict.fromkeys(names))


@dataclass
class Session:
    root: Path
    gpu: str
    runs: list[Run]
    audits: list[Run]
    pretrain: dict


def load_runs(folder: Path) -> list[Run]:
    if not folder.is_dir():
        return []
    return [run for d in sorted(folder.iterdir()) if d.is_dir() and (run := load_run(d)) is not None]


def load_session(root: Path) -> Session:
    return Session(root, gpu_name(root / "gpus.txt"), load_runs(root / "compare"), load_runs(root / "audit"),
                   read_json(root / "pretrain" / "summary.json"))


def group(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs per label, in the report's method order."""
    out: dict[str, list[Run]] = {}
    for run in runs:
        out.setdefault(run.label, []).append(run)
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return {k: out[k] for k in sorted(out, key=lambda k: (rank.get(k, len(rank)), k))}


# ---- values and curves ---------------------------------------------------------------------------
def metric(*keys: str) -> Value:
    """The first finite value among ``keys`` of a record."""
    def value(rec: dict) -> float | None:
        return next((v for k in keys if (v := num(rec.get(k))) is not None), None)
    return value


partial_score = metric(PARTIAL, "eval_reward_mean")
strict_score = metric(STRICT)


@dataclass
class Curve:
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    seeds: int


def mean_curve(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> Curve | None:
    """Seed mean on the union of the seeds' x, each seed linearly interpolated.

    Past a seed's last evaluation its last value is held: budgeted runs end within one iteration of
    each other, and dropping the tail would drop every seed's final evaluation but the shortest one's.
    """
    series = [(x, y) for x, y in series if len(x)]
    if not series:
        return None
    grid = np.unique(np.concatenate([x for x, _ in series]))
    ys = np.stack([np.interp(grid, x, y) for x, y in series])
    return Curve(grid, ys.mean(0), ys.min(0), ys.max(0), len(series))


def first_reach(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """First x at which the piecewise-linear curve (x, y) reaches ``target``, or None."""
    hits = np.nonzero(y >= target - TOL)[0]
    if not len(hits):
        return None
    i = int(hits[0])
    if i == 0 or y[i] <= target:
        return float(x[i])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


def finals(runs: Sequence[Run], value: Value, first: bool = False) -> list[float]:
    """Each run's last (or first) evaluation of ``value``."""
    out = []
    for run in runs:
        _, y = run.series(value, "iteration")
        if len(y):
            out.append(float(y[0] if first else y[-1]))
    return out


def mean_of(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


@dataclass
class MethodStats:
    label: str
    runs: list[Run]
    first: list[float]
    final: list[float]
    strict: list[float]
    curves: dict[str, Curve | None]  # seed-mean curve per clock: "seconds", "steady" (warm-up excluded), "iteration"

    @property
    def curve(self) -> Curve | None:
        return self.curves["seconds"]

    @property
    def final_mean(self) -> float | None:
        return mean_of(self.final)


CLOCKS = ("seconds", "steady", "iteration")


def method_stats(label: str, runs: list[Run]) -> MethodStats:
    return MethodStats(label, runs, finals(runs, partial_score, first=True), finals(runs, partial_score),
                       finals(runs, strict_score),
                       {clock: mean_curve([run.series(partial_score, clock) for run in runs]) for clock in CLOCKS})


@dataclass
class Comparison:
    """Time to reach the baseline's final score, speedup over it and gap to the reference, per method, on one
    clock. The baseline's own time is when its seed-mean curve first reaches its final score (so its speedup
    is 1 by construction; a baseline that plateaus early is not credited with the seconds it spent flat)."""
    target: float | None
    baseline_seconds: float | None
    reference_final: float | None
    reach: dict[str, float | None]

    def speedup(self, label: str) -> float | None:
        t = self.reach.get(label)
        return self.baseline_seconds / t if t and self.baseline_seconds is not None else None

    def gap(self, stats: MethodStats) -> float | None:
        final, ref = stats.final_mean, self.reference_final
        return 100.0 * (final - ref) / ref if final is not None and ref else None


def compare(stats: dict[str, MethodStats], baseline: str, reference: str, clock: str = "seconds",
            target: float | None = None) -> Comparison:
    """Times to reach ``target`` (default: the baseline's final score) on ``clock``, with the baseline's own."""
    base, ref = stats.get(baseline), stats.get(reference)
    if target is None:
        target = base.final_mean if base else None
    reach = {}
    for label, s in stats.items():
        curve = s.curves[clock]
        reach[label] = first_reach(curve.x, curve.mean, target) if curve and target is not None else None
    return Comparison(target, reach.get(baseline), ref.final_mean if ref else None, reach)


# ---- formatting ----------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ".4f", missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def pm(values: Sequence[float], spec: str = ".4f") -> str:
    """mean ± std (sample std, over seeds) or the single value."""
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], spec)
    return f"{np.mean(values):{spec}} ± {np.std(values, ddof=1):{spec}}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def seeds_cell(runs: Sequence[Run]) -> str:
    return f"{len(runs)} ({', '.join('?' if r.seed is None else str(r.seed) for r in runs)})"


def comparison_table(stats: dict[str, MethodStats], cmps: dict[str, Comparison], baseline: str, reference: str
                     ) -> str:
    header = ["method", "seeds", "iterations", "train s", "warm-up s", "s / iteration (median)",
              "held-out partial first → final", "GenEval strict final", f"t to {baseline} final (s)",
              f"speedup vs {baseline}", "t, warm-up excluded (s)", "speedup, warm-up excluded",
              f"gap to {reference}"]
    rows = []
    for label, s in stats.items():
        cells = []
        for cmp in (cmps["seconds"], cmps["steady"]):
            reach, speedup = cmp.reach.get(label), cmp.speedup(label)
            cells += ["not reached" if reach is None and cmp.target is not None else fmt(reach, ".1f"),
                      fmt(speedup, ".2f") + ("×" if speedup is not None else "")]
        gap = cmps["seconds"].gap(s)
        rows.append([label, seeds_cell(s.runs), fmt(mean_of([r.iterations() for r in s.runs]), ".1f"),
                     fmt(mean_of([r.train_seconds() for r in s.runs]), ".1f"),
                     fmt(mean_of([r.warmup_seconds() for r in s.runs]), ".1f"),
                     fmt(mean_of([r.seconds_per_iteration() for r in s.runs]), ".2f"),
                     f"{pm(s.first)} → {pm(s.final)}", pm(s.strict), *cells,
                     fmt(gap, "+.1f") + (" %" if gap is not None else "")])
    return table(header, rows)


def common_iteration(stats: dict[str, MethodStats]) -> float | None:
    """The last iteration every run has an evaluation at or beyond: where all methods can be compared."""
    lasts = [x[-1] for s in stats.values() for run in s.runs if len(x := run.series(partial_score, "iteration")[0])]
    return float(min(lasts)) if lasts else None


def scores_at(runs: Sequence[Run], iteration: float) -> list[float]:
    """Each run's held-out partial score at ``iteration`` (linear between its evaluations)."""
    out = []
    for run in runs:
        x, y = run.series(partial_score, "iteration")
        if len(x) and x[-1] >= iteration:
            out.append(float(np.interp(iteration, x, y)))
    return out


def iteration_table(stats: dict[str, MethodStats], cmp: Comparison, baseline: str, reference: str,
                    iteration: float | None) -> str | None:
    if iteration is None:
        return None
    ref = mean_of(scores_at(stats[reference].runs, iteration)) if reference in stats else None
    header = ["method", "seeds", f"iterations to {baseline} final", f"speedup vs {baseline}, in iterations",
              f"held-out partial at iteration {iteration:g}", f"gap to {reference} at iteration {iteration:g}"]
    rows = []
    for label, s in stats.items():
        reach, speedup = cmp.reach.get(label), cmp.speedup(label)
        at = scores_at(s.runs, iteration)
        gap = 100.0 * (np.mean(at) - ref) / ref if at and ref else None
        rows.append([label, seeds_cell(s.runs),
                     "not reached" if reach is None and cmp.target is not None else fmt(reach, ".1f"),
                     fmt(speedup, ".2f") + ("×" if speedup is not None else ""), pm(at),
                     fmt(gap, "+.1f") + (" %" if gap is not None else "")])
    return table(header, rows)


def peak_of(curve: Curve | None) -> tuple[float, float] | None:
    """(highest seed-mean score, the x where the curve first reaches it)."""
    if curve is None or not len(curve.x):
        return None
    i = int(np.argmax(curve.mean))
    return float(curve.mean[i]), float(curve.x[i])


def peak_table(stats: dict[str, MethodStats]) -> str:
    """Each method's best seed-mean held-out score and when it got there, against its final score: a run that
    learns and then degrades ends below its peak, which the final-score columns alone hide."""
    header = ["method", "seeds", "peak seed-mean held-out partial", "at t, warm-up excluded (s)",
              "at iteration", "final (seed mean)", "final − peak"]
    rows = []
    for label, s in stats.items():
        steady, by_iteration, final = peak_of(s.curves["steady"]), peak_of(s.curves["iteration"]), s.final_mean
        drop = final - steady[0] if steady and final is not None else None
        rows.append([label, seeds_cell(s.runs), fmt(steady[0] if steady else None), fmt(steady[1] if steady else None, ".1f"),
                     fmt(by_iteration[1] if by_iteration else None, ".0f"), fmt(final), fmt(drop, "+.4f")])
    return table(header, rows)


def threshold_table(stats: dict[str, MethodStats], baseline: str, thresholds: Sequence[float]) -> str | None:
    """Warm-up-excluded seconds and iterations for each method's seed-mean curve to first reach each fixed score,
    with the speedup over ``baseline`` at that score: the race before the final scores, which a method that
    plateaus or degrades never shows in the time-to-final columns."""
    if not thresholds:
        return None
    header = ["method", "seeds"] + [f"to {t:g}: s, warm-up excluded (speedup vs {baseline})" for t in thresholds] + [
        f"to {t:g}: iterations" for t in thresholds]
    by_score = [(compare(stats, baseline, baseline, "steady", t), compare(stats, baseline, baseline, "iteration", t))
                for t in thresholds]
    rows = []
    for label, s in stats.items():
        seconds, iterations = [], []
        for steady, by_iteration in by_score:
            t_s, speedup, t_it = steady.reach.get(label), steady.speedup(label), by_iteration.reach.get(label)
            seconds.append("not reached" if t_s is None else f"{t_s:.1f}" + (f" ({speedup:.2f}×)" if speedup else ""))
            iterations.append("not reached" if t_it is None else f"{t_it:.1f}")
        rows.append([label, seeds_cell(s.runs), *seconds, *iterations])
    return table(header, rows)


def iteration_caption(cmp: Comparison, baseline: str, reference: str) -> str:
    return (f"The same runs on the iteration clock, which concurrent runs on one host cannot distort: iterations at "
            f"which the seed-mean curve first reaches {baseline}'s final partial score {fmt(cmp.target)} "
            f"({baseline}'s own: {fmt(cmp.baseline_seconds, '.1f')}), and every method's score at the last iteration "
            f"all runs evaluated (linear between evaluations), against {reference}'s there. Wall-clock follows "
            f"from these and an uncontended seconds-per-iteration measurement.")


def comparison_caption(cmps: dict[str, Comparison], baseline: str, reference: str) -> str:
    cmp, steady = cmps["seconds"], cmps["steady"]
    return (f"Held-out partial score = rule-based GenEval partial credit, strict = GenEval all-or-nothing "
            f"(mean ± std over seeds); t = first training second at which the seed-mean eval curve (linear "
            f"between evaluations) reaches {baseline}'s final partial score {fmt(cmp.target)}; speedup = "
            f"{baseline}'s own t ({fmt(cmp.baseline_seconds, '.1f')} s; {fmt(steady.baseline_seconds, '.1f')} s "
            f"warm-up excluded) / t. Warm-up = the first iteration's seconds less the median iteration's (torch.compile "
            f"of the samplers and learner, paid once per process); the warm-up-excluded clock subtracts it, as a run "
            f"long enough to amortise it would. gap = (final − {reference} final {fmt(cmp.reference_final)}) / "
            f"{reference} final.")


def category_table(stats: dict[str, MethodStats], strict: bool) -> str:
    prefix = "eval_geneval_rules_strict_" if strict else "eval_geneval_rules_"
    rows = [[label, *(pm(finals(s.runs, metric(prefix + cat)), ".3f") for cat in CATEGORIES)]
            for label, s in stats.items()]
    return table(["method", *CATEGORIES], rows)


def base_table(sessions: Sequence[Session]) -> str | None:
    rows = []
    for ses in sessions:
        p = ses.pretrain
        if not p:
            continue
        params = p.get("parameters") if isinstance(p.get("parameters"), dict) else {}
        total = sum(v for v in params.values() if isinstance(v, int | float)) if params else None
        by_cat = p.get("heldout_accuracy_by_category") or {}
        size = num(p.get("checkpoint_bytes"))
        rows.append([f"`{ses.root.name}`", fmt(num(p.get("steps")), ".0f"), fmt(num(p.get("train_seconds")), ".1f"),
                     fmt(num(params.get("transformer")), ",.0f"), fmt(total, ",.0f"),
                     fmt(size / 1e6 if size is not None else None, ".1f"),
                     fmt(num(p.get("heldout_score_mean"))), fmt(num(p.get("heldout_overall"))),
                     *(fmt(num(by_cat.get(cat)), ".3f") for cat in CATEGORIES)])
    if not rows:
        return None
    return table(["session", "steps", "train s", "transformer params", "all params", "checkpoint MB",
                  "held-out partial", "held-out GenEval strict", *CATEGORIES], rows)


# ---- selection fidelity ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FidelitySpec:
    prefix: str
    overlaps: tuple[str, ...]  # metric suffixes of the overlap columns
    over_pool: bool  # ranks among all N (audit) or among the K regenerated (timed runs)


AUDIT = FidelitySpec("audit", ("topk_overlap", "bottomk_overlap"), over_pool=True)
TIMED = FidelitySpec("fidelity", ("half_overlap",), over_pool=False)


def nan_mean(records: Sequence[dict], key: str) -> tuple[float | None, int]:
    values = [v for r in records if (v := num(r.get(key))) is not None]
    return (float(np.mean(values)) if values else None), len(values)


def fidelity_row(label: str, runs: list[Run], spec: FidelitySpec) -> list[str] | None:
    records = [r for run in runs for r in run.train if f"{spec.prefix}_spearman" in r]
    if not records:
        return None
    cfg = runs[0].config
    n = num((cfg.get("rollout") or {}).get("num_candidates"))
    k = num((cfg.get("regen") or {}).get("num_selected"))

    def cell(suffix: str, spec_fmt: str = ".3f") -> str:
        mean, valid = nan_mean(records, f"{spec.prefix}_{suffix}")
        return fmt(mean, spec_fmt) + (f" (n={valid})" if valid < len(records) else "")

    pool = n if spec.over_pool else k
    refs = ("—", "—")
    if pool is not None and k is not None:
        refs = (f"{(k / 2 + 1) / 2:.1f} / {pool - (k / 2 - 1) / 2:.1f}", f"{(pool + 1) / 2:.1f}")
    return [label, str(len(runs)), fmt(n, ".0f"), fmt(k, ".0f"), str(len(records)), cell("spearman"),
            cell("kendall"), *(cell(o) for o in spec.overlaps), cell("best_half_bf16_rank", ".2f"),
            cell("worst_half_bf16_rank", ".2f"), *refs]


def fidelity_table(groups: dict[str, list[Run]], spec: FidelitySpec) -> str | None:
    rows = [row for label, runs in groups.items() if (row := fidelity_row(label, runs, spec))]
    if not rows:
        return None
    overlaps = {"topk_overlap": "top-K/2 overlap", "bottomk_overlap": "bottom-K/2 overlap",
                "half_overlap": "best-half overlap"}
    return table(["method", "runs", "N", "K", "iterations", "Spearman ρ", "Kendall τ",
                  *(overlaps[o] for o in spec.overlaps), "best-half BF16 rank", "worst-half BF16 rank",
                  "perfect best / worst", "random"], rows)


# ---- plots -----------------------------------------------------------------------------------------
def draw(ax: object, groups: dict[str, list[Run]], value: Value, x: str, colors: dict[str, str]) -> None:
    for label, runs in groups.items():
        curve = mean_curve([run.series(value, x) for run in runs])
        if curve is None:
            continue
        if curve.seeds == 1:
            ax.plot(curve.x, curve.mean, "o-", ms=3, color=colors[label], label=label)
            continue
        ax.plot(curve.x, curve.mean, color=colors[label], label=f"{label} (mean of {curve.seeds})")
        ax.fill_between(curve.x, curve.lo, curve.hi, color=colors[label], alpha=0.2, lw=0)


def write_plots(groups: dict[str, list[Run]], plots: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    colors = {label: f"C{i % 10}" for i, label in enumerate(groups)}
    single = [("reward_vs_wallclock.png", partial_score, "seconds", "held-out partial score"),
              ("reward_vs_wallclock_warm.png", partial_score, "steady", "held-out partial score"),
              ("reward_vs_iteration.png", partial_score, "iteration", "held-out partial score"),
              ("strict_vs_wallclock.png", strict_score, "seconds", "held-out GenEval strict score")]
    written = []
    for name, value, x, ylabel in single:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
        draw(ax, groups, value, x, colors)
        xlabel = {"seconds": "training seconds", "steady": "training seconds, first iteration's warm-up excluded",
                  "iteration": "iteration"}[x]
        ax.set(xlabel=xlabel, ylabel=ylabel, title="seed mean; shade = min–max over seeds")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # an old run without strict scores draws nothing
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / name)
        plt.close(fig)
        written.append(plots / name)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=110, sharex=True)
    for ax, cat in zip(axes.flat, CATEGORIES, strict=True):
        draw(ax, groups, metric(f"eval_geneval_rules_{cat}"), "seconds", colors)
        ax.set_title(cat, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("training seconds")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=8)
    fig.suptitle("held-out partial score per category (seed mean; shade = min–max over seeds)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(plots / "per_category.png")
    plt.close(fig)
    return [*written, plots / "per_category.png"]


# ---- the report ------------------------------------------------------------------------------------
def command_line(runs: Sequence[Path], out: Path, plots: Path | None, baseline: str, reference: str,
                 title: str | None, thresholds: Sequence[float] = ()) -> str:
    args = ["solrl", "report", "convergence"]
    for root in runs:
        args += ["--runs", str(root)]
    args += ["--out", str(out)]
    if plots is not None:
        args += ["--plots", str(plots)]
    args += ["--baseline", baseline, "--reference", reference]
    if title:
        args += ["--title", title]
    for t in thresholds:
        args += ["--threshold", f"{t:g}"]
    return " ".join(shlex.quote(a) for a in args)


def header(sessions: Sequence[Session], title: str, command: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {title}", ""]
    for ses in sessions:
        date = re.search(r"\d{4}-\d{2}-\d{2}", ses.root.name)
        lines.append(f"- runs: `{ses.root}` — {ses.gpu}" + (f", {date.group(0)}" if date else "")
                     + f"; {len(ses.runs)} timed, {len(ses.audits)} audit")
    budgets = sorted({b for ses in sessions for r in ses.runs if (b := num(r.config.get("budget_seconds")))})
    if budgets:
        lines.append(f"- budget_seconds: {', '.join(f'{b:g}' for b in budgets)}")
    lines += [f"- generated: {now}", f"- command: `{command}`"]
    return "\n".join(lines)


def section(title: str, caption: str, body: str | None) -> list[str]:
    return [f"## {title}", "", caption, "", body, ""] if body else []


def build_markdown(sessions: Sequence[Session], out: Path, plots: Path, baseline: str, reference: str,
                   title: str, command: str, thresholds: Sequence[float] = ()) -> tuple[str, str]:
    """The generated part of the report, and its comparison table alone (what the CLI prints)."""
    groups = group([r for ses in sessions for r in ses.runs])
    audits = group([r for ses in sessions for r in ses.audits])
    stats = {label: method_stats(label, runs) for label, runs in groups.items()}
    cmps = {clock: compare(stats, baseline, reference, clock) for clock in CLOCKS}
    comparison = comparison_table(stats, cmps, baseline, reference)
    rank_note = ("Ranks are mean BF16 ranks (1 = best) of the proxy's best / worst half; perfect = "
                 "(K/2+1)/2 / pool − (K/2−1)/2, random = (pool+1)/2; (n=…) = iterations with a defined value "
                 "(rewards that tie leave ρ, τ undefined).")
    rel = Path(os.path.relpath(plots, out.parent)).as_posix()
    parts = [header(sessions, title, command), "",
             *section("Base model", "The pretrained model every run starts from; held-out partial = mean "
                      "partial credit, strict and per category = GenEval all-or-nothing accuracy.",
                      base_table(sessions)),
             *section("Held-out score against training time", comparison_caption(cmps, baseline, reference),
                      comparison),
             *section("Held-out score against iterations", iteration_caption(cmps["iteration"], baseline, reference),
                      iteration_table(stats, cmps["iteration"], baseline, reference, common_iteration(stats))),
             *section("Peak against final", "The highest point of each method's seed-mean held-out curve "
                      "(warm-up-excluded clock; the iteration is where the iteration-clock seed mean peaks) and how "
                      "far the final evaluation fell below it.", peak_table(stats)),
             *section("Time to fixed scores", "First point at which each method's seed-mean held-out curve "
                      "reaches each score given with --threshold (linear between evaluations), on the "
                      "warm-up-excluded clock and the iteration clock.",
                      threshold_table(stats, baseline, thresholds)),
             *section("Per category, partial score (final evaluation)", "Final held-out partial score per "
                      "GenEval category, mean ± std over seeds.", category_table(stats, strict=False)),
             *section("Per category, GenEval strict (final evaluation)", "Final held-out all-or-nothing "
                      "accuracy per category, mean ± std over seeds.", category_table(stats, strict=True)),
             *section("Selection fidelity: audit runs (proxy choice ranked among all N in BF16)",
                      "Spearman / Kendall over all N candidates per prompt; overlaps of the proxy's and BF16's "
                      "top and bottom K/2 of N; pool = N. " + rank_note, fidelity_table(audits, AUDIT)),
             *section("Selection fidelity: timed Sol-RL runs (proxy vs BF16 on the K regenerated)",
                      "Spearman / Kendall over the K regenerated per prompt; overlap of the proxy's and BF16's "
                      "best K/2 of K; pool = K. " + rank_note, fidelity_table(groups, TIMED)),
             "## Plots", "", "\n\n".join(f"![{Path(name).stem}]({rel}/{name})" for name in PLOTS)]
    return "\n".join(parts) + "\n", comparison


def merge_analysis(generated: str, existing: str | None) -> str:
    """The generated part, the marker, then whatever the old file had after its marker."""
    tail = ""
    if existing is not None:
        _, sep, rest = existing.partition(MARKER)
        tail = rest if sep else "\n\n" + existing  # no marker yet: keep the old text below it, lose nothing
    return generated.rstrip("\n") + "\n\n" + MARKER + (tail if tail.strip() else "\n")


def default_plots(out: Path) -> Path:
    return out.with_suffix("") if out.suffix == ".md" else out.parent / (out.name + "_plots")


def write_convergence_report(runs: Sequence[Path], out: Path, plots: Path | None = None,
                             baseline: str = "diffusionnft", reference: str = "naive_scaling",
                             title: str | None = None, thresholds: Sequence[float] = ()) -> str:
    """Write the plots and the markdown (keeping the analysis after the marker); return the comparison table."""
    for t in thresholds:
        if not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise ValueError(f"--threshold {t:g} is not a held-out partial score; give a value in (0, 1], e.g. 0.15")
    sessions = [load_session(Path(root)) for root in runs]
    if not any(ses.runs for ses in sessions):
        raise ValueError(f"no timed runs (compare/<run>/metrics.jsonl) under {', '.join(map(str, runs))}")
    plots_dir = plots or default_plots(out)
    command = command_line(runs, out, plots, baseline, reference, title, thresholds)
    markdown, comparison = build_markdown(sessions, out, plots_dir, baseline, reference, title or DEFAULT_TITLE,
                                          command, thresholds)
    write_plots(group([r for ses in sessions for r in ses.runs]), plots_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(merge_analysis(markdown, out.read_text() if out.exists() else None))
    return comparison
