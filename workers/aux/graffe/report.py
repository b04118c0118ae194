"""Tables, plots and the markdown reading of one Graffe run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.aux.common.results import markdown_table, new_figure, save_figure
from workers.aux.graffe.diffusion import mi_bound_gap
from workers.aux.graffe.tasks import ARMS, TaskResult


def accuracy_rows(res: TaskResult) -> list[dict]:
    rows = []
    for arm in ARMS:
        a = np.asarray(res.accuracies[arm])
        rows.append({"arm": arm, "probe acc mean": float(a.mean()), "std": float(a.std()), "seeds": len(a)})
    return rows


def dsm_rows(res: TaskResult, feature_dim: int) -> list[dict]:
    """Per t: eps-MSE of each arm (mean over seeds) and the MI gap on the seeds that have the uncond model."""
    rows = []
    for t in sorted(res.dsm["Graffe"]):
        k = len(res.dsm["unconditional"][t])
        cond_k, uncond_k = float(np.mean(res.dsm["Graffe"][t][:k])), float(np.mean(res.dsm["unconditional"][t]))
        row = {"t": t}
        for name, per_t in res.dsm.items():
            row[name] = float(np.mean(per_t[t]))
        row["MI gap per node (nats)"] = mi_bound_gap(uncond_k, cond_k, feature_dim)
        rows.append(row)
    return rows


def plot_accuracy(res: TaskResult, out: Path) -> str:
    fig, axes = new_figure(size=(6.0, 3.5))
    ax = axes[0][0]
    rows = accuracy_rows(res)
    ax.bar(range(len(rows)), [r["probe acc mean"] for r in rows], yerr=[r["std"] for r in rows], capsize=4,
           color=["0.6", "0.6", "tab:blue", "tab:red", "tab:orange"])
    ax.set_xticks(range(len(rows)), [r["arm"].replace(", ", ",\n") for r in rows], fontsize=8)
    ax.set_ylabel("linear-probe accuracy")
    ax.set_title(f"{res.name} task: mean ± std over {rows[0]['seeds']} seeds")
    ax.set_ylim(0, 1)
    name = f"probe_{res.name}.png"
    save_figure(fig, out / name)
    return name


def plot_dsm(res: TaskResult, out: Path) -> str:
    fig, axes = new_figure(size=(5.0, 3.5))
    ax = axes[0][0]
    for arm, per_t in res.dsm.items():
        ts = sorted(per_t)
        ax.plot(ts, [np.mean(per_t[t]) for t in ts], marker="o", label=arm)
    ax.set_xlabel("timestep t")
    ax.set_ylabel("held-out eps-MSE")
    ax.set_yscale("log")
    ax.set_title(f"{res.name} task: DSM loss at matched t")
    ax.legend(fontsize=7)
    name = f"dsm_{res.name}.png"
    save_figure(fig, out / name)
    return name


def plot_curve(res: TaskResult, out: Path) -> str | None:
    if not res.curve:
        return None
    fig, axes = new_figure(size=(4.5, 3.5))
    ax = axes[0][0]
    xs, ys = [c["-log dsm"] for c in res.curve], [c["probe acc (val)"] for c in res.curve]
    ax.plot(xs, ys, marker="o")
    for c in res.curve:
        ax.annotate(str(c["step"]), (c["-log dsm"], c["probe acc (val)"]), fontsize=7)
    ax.set_xlabel("-log(held-out DSM loss)")
    ax.set_ylabel("probe accuracy" + (" (val)" if res.name == "node" else " (CV)"))
    ax.set_title(f"{res.name} task: Graffe during training (first seed)")
    name = f"curve_{res.name}.png"
    save_figure(fig, out / name)
    return name


def spearman(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def task_section(res: TaskResult, feature_dim: int, out: Path) -> tuple[str, dict]:
    """Markdown of one task and its summary numbers."""
    acc, dsm = accuracy_rows(res), dsm_rows(res, feature_dim)
    plots = [plot_accuracy(res, out), plot_dsm(res, out), plot_curve(res, out)]
    by_arm = {r["arm"]: r["probe acc mean"] for r in acc}
    cond_lt_uncond = all(r["Graffe"] < r["unconditional"] for r in dsm)
    shuffle_raises = all(r["Graffe, z shuffled at eval"] > r["Graffe"] for r in dsm)
    rho = spearman([c["-log dsm"] for c in res.curve], [c["probe acc (val)"] for c in res.curve])
    summary = {"accuracy": {r["arm"]: {"mean": r["probe acc mean"], "std": r["std"]} for r in acc},
               "accuracy_per_seed": res.accuracies, "dsm": dsm, "curve": res.curve, "mask_ratios": res.mask_ratios,
               "tuning": res.tuning, "notes": res.notes,
               "graffe_minus_random": by_arm["Graffe"] - by_arm["random-init encoder"],
               "graffe_minus_shuffled": by_arm["Graffe"] - by_arm["Graffe, z shuffled"],
               "graffe_minus_raw": by_arm["Graffe"] - by_arm["raw features"],
               "graffe_minus_graphmae": by_arm["Graffe"] - by_arm["GraphMAE"],
               "cond_dsm_below_uncond_all_t": cond_lt_uncond, "shuffle_at_eval_raises_dsm_all_t": shuffle_raises,
               "curve_spearman": rho}
    notes = ", ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in res.notes.items())
    md = [f"## {res.name.capitalize()} task", "", notes + ".",
          f"Mask ratios used: Graffe {res.mask_ratios['graffe']}, GraphMAE {res.mask_ratios['graphmae']}.", ""]
    if res.tuning:
        md += ["Mask-ratio tuning (first seed's validation nodes only):", "", markdown_table(res.tuning), ""]
    md += ["Linear-probe test accuracy:", "", markdown_table(acc, digits=3), f"![probe accuracy]({plots[0]})", "",
           "Held-out DSM loss (eps-MSE per element) at matched t and noise; the MI gap is "
           "(d/2) log(MSE_uncond / MSE_Graffe) per node (d = feature width), on the seeds with an unconditional model:",
           "", markdown_table(dsm), f"![dsm]({plots[1]})", ""]
    if plots[2]:
        md += [f"-log(DSM) vs probe accuracy during Graffe training (first seed): Spearman rho = {rho:.2f}.", "",
               markdown_table(res.curve), f"![curve]({plots[2]})", ""]
    return "\n".join(md), summary


def reading(summaries: dict[str, dict]) -> str:
    """A plain reading of the numbers against the brief's expectations."""
    lines = ["## Reading", ""]
    for name, s in summaries.items():
        a = s["accuracy"]
        verdict = lambda ok: "holds" if ok else "does not hold"  # noqa: E731
        lines.append(
            f"- **{name} task.** Graffe {a['Graffe']['mean']:.3f} ± {a['Graffe']['std']:.3f} vs random-init "
            f"{a['random-init encoder']['mean']:.3f}, z-shuffled {a['Graffe, z shuffled']['mean']:.3f}, raw features "
            f"{a['raw features']['mean']:.3f}, GraphMAE {a['GraphMAE']['mean']:.3f}. "
            f"Graffe > random init {verdict(s['graffe_minus_random'] > 0)} ({s['graffe_minus_random']:+.3f}); "
            f"Graffe > z-shuffled {verdict(s['graffe_minus_shuffled'] > 0)} ({s['graffe_minus_shuffled']:+.3f}); "
            f"Graffe > raw {verdict(s['graffe_minus_raw'] > 0)} ({s['graffe_minus_raw']:+.3f}); "
            f"Graffe vs GraphMAE {s['graffe_minus_graphmae']:+.3f}. "
            f"Conditional DSM below unconditional at every evaluated t: {s['cond_dsm_below_uncond_all_t']}; "
            f"shuffling z at evaluation raises the DSM loss at every t: {s['shuffle_at_eval_raises_dsm_all_t']}; "
            f"Spearman(-log DSM, probe acc) over training: {s['curve_spearman']:.2f}.")
    lines += ["", "Differences smaller than the std across seeds are not evidence either way. The encoders are "
              "small and briefly trained (CPU budget); see docs/methods/graffe.md for every deviation from the paper."]
    return "\n".join(lines) + "\n"
