"""The markdown body of the aux.adversarial_train report: tables and a reading generated from the numbers."""

from __future__ import annotations

from typing import Any

from workers.aux.adversarial_train.config import AdversarialTrainConfig
from workers.aux.common.results import markdown_table


def fd_table(rows: list[dict]) -> list[dict[str, Any]]:
    """Pivot FD rows to one row per (sampler, NFE) with a column per model."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        out.setdefault((r["sampler"], r["nfe"]), {"sampler": r["sampler"], "NFE": r["nfe"]})[r["model"]] = r["fd"]
    return list(out.values())


def _wins(rows: list[dict], arm: str, against: str) -> tuple[int, int]:
    table = fd_table(rows)
    n = sum(1 for r in table if arm in r and against in r)
    return sum(1 for r in table if arm in r and against in r and r[arm] < r[against]), n


def render_report(cfg: AdversarialTrainConfig, res: dict[str, Any]) -> str:
    models = list(dict.fromkeys(r["model"] for r in res["fd"]))
    k = cfg.adv.steps
    base = (f"`{cfg.base.path}`" if cfg.base.path else f"the shared digits DDPM (channels {list(cfg.base.channels)}, "
            f"{cfg.base.train_steps} steps, EMA {cfg.base.ema_decay})")
    parts = [
        f"Base model: {base}.",
        "",
        "Adversarial fine-tuning of the pretrained digits DDPM (16x16, epsilon prediction) against standard "
        f"fine-tuning and input perturbation (IP, gamma={cfg.ip.gamma}); every arm makes {cfg.train.updates} "
        f"AdamW updates (lr {cfg.train.lr}, batch {cfg.train.batch_size}) from the same weights and seed. AT: "
        f"K={k}, adv lr {cfg.adv.lr}, eta {cfg.adv.max_norm} (ball radius sqrt(d)*eta), target eps + "
        f"sg(delta)/sigma_t; AT and replay (= AT with eta 0) use {cfg.train.updates // k} batches, {k} updates "
        f"each. `base` is the pretrained model without fine-tuning. EMA decay {cfg.train.ema_decay}.",
        "",
        f"## Sample quality: digits Frechet distance vs the held-out test split ({cfg.eval.num_samples} samples, "
        "same noise for every model; lower is better)",
        "",
        markdown_table(fd_table(res["fd"]), ["sampler", "NFE", *models]),
        f"Data floor (train split vs test split, same feature net): {res['fd_data_floor']:.4g}. "
        "Seed-to-seed spread of the FD (model `standard`, lowest NFE, two noise seeds):",
        "",
        markdown_table(res["fd_seed_spread"], ["sampler", "nfe", "fd_seed_a", "fd_seed_b", "abs_diff"]),
        "",
        "![FD vs NFE](fd_vs_nfe.png)",
        "",
        f"## Mismatch of sampler x_t vs q(x_t) (NFE {cfg.eval.mismatch_nfe}; W1 of ||x_t||/sqrt(d))",
        "",
        markdown_table(res["mismatch"], ["model", "sampler", "mean_w1_norm", "last_step_w1_norm"]),
        "![mismatch](mismatch.png)",
        "",
        "## Training (matched updates; wall seconds per arm)",
        "",
        markdown_table(res["train"], ["arm", "updates", "batches", "seconds", "final_loss", "mean_delta_norm",
                                      "mean_delta_grad_norm"]),
    ]
    if res["cm_fd"]:
        parts += ["## Consistency distillation: CD vs AT-CD (FD, matched updates, same sampling noise)", "",
                  markdown_table(res["cm_fd"], ["model", "steps", "fd"])]
    parts += ["![samples](samples.png)", "", "## Reading", "", _reading(cfg, res)]
    return "\n".join(parts) + "\n"


def _reading(cfg: AdversarialTrainConfig, res: dict[str, Any]) -> str:
    lines = []
    if "base" in {r["model"] for r in res["fd"]}:
        won, n = _wins(res["fd"], "standard", "base")
        lines.append(f"- `standard` fine-tuning itself beats the un-fine-tuned `base` in {won} of {n} cells.")
    for arm in ("at", "ip", "replay"):
        if arm in cfg.arms:
            won, n = _wins(res["fd"], arm, "standard")
            lines.append(f"- `{arm}` has a lower FD than `standard` in {won} of {n} (sampler, NFE) cells.")
    if "at" in cfg.arms:
        low = min(cfg.eval.nfe)
        cells = [r for r in fd_table(res["fd"]) if r["NFE"] == low]
        gaps = ", ".join(f"{r['sampler']}: {r['standard'] - r['at']:+.3g}" for r in cells)
        lines.append(f"- FD gain of AT over standard at the lowest NFE ({low}), standard - at: {gaps}.")
        if "replay" in cfg.arms:
            won, n = _wins(res["fd"], "at", "replay")
            lines.append(f"- Against `replay` (same batches and updates, delta = 0) AT wins {won} of {n} cells: "
                         "this isolates the perturbation from the K-fold batch reuse. If replay is as good as "
                         "AT, AT's gain over standard comes from reusing each batch K times, not from delta.")
    if res["cm_fd"]:
        by = {(r["model"], r["steps"]): r["fd"] for r in res["cm_fd"]}
        for steps in cfg.cm.eval_steps:
            lines.append(f"- CM, {steps}-step: CD {by[('cd', steps)]:.4g} vs AT-CD {by[('cd_at', steps)]:.4g}.")
    noise = max(r["abs_diff"] for r in res["fd_seed_spread"])
    lines.append(f"- The FD moves by up to {noise:.3g} between two noise seeds of the same model (table above); "
                 "arms share their noise, so their differences are paired and less noisy than that, but a gap "
                 "well below it, or one not consistent across samplers and NFE, is not evidence. "
                 "The paper fine-tunes for hundreds of thousands of updates; this run makes "
                 f"{cfg.train.updates}, so a null result here does not contradict it.")
    return "\n".join(lines)
