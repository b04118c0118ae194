"""Experiment of aux.adversarial_train: the brief's smallest faithful experiment (aux_methods_a.md, 5e).

Phases: load the pretrained digits DDPM; fine-tune one copy per arm (standard / AT / IP / replay) for the
same number of optimizer updates on the same seeded batches; sample every model with DDIM and
DPM-Solver++ at each NFE from the same noise; score the digits Frechet distance against the held-out
test split; measure the sampler-vs-q(x_t) mismatch; then the consistency-distillation variant (CD vs
AT-CD, matched updates) sampled in 1-2 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from workers.aux.adversarial_train.arms import ArmLog, train_cd_arm, train_dpm_arm
from workers.aux.adversarial_train.config import AdversarialTrainConfig
from workers.aux.adversarial_train.consistency import consistency_sample
from workers.aux.adversarial_train.loader import base_dpm
from workers.aux.adversarial_train.plots import plot_fd_vs_nfe, plot_mismatch, plot_samples
from workers.aux.adversarial_train.report import render_report
from workers.aux.adversarial_train.sampling import make_sampler, mismatch_per_step, sample
from workers.aux.adversarial_train.training import AdvSettings
from workers.aux.common.data import digits
from workers.aux.common.metrics import digits_classifier, digits_frechet_distance
from workers.aux.common.runtime import generator, progress, resolve_device

FEATURE_SIZE = 8  # the cached digits feature net works at the native 8x8 resolution of the data


def to_feature_size(x_NCHW: torch.Tensor) -> torch.Tensor:
    """16x16 -> 8x8 by 2x2 average pooling, applied to samples and reference alike."""
    return F.adaptive_avg_pool2d(x_NCHW.float().cpu().clamp(-1, 1), FEATURE_SIZE)


def _frechet(samples: torch.Tensor, reference: torch.Tensor, net) -> float:
    return digits_frechet_distance(to_feature_size(samples), reference, net)


def train_arms(cfg: AdversarialTrainConfig, base, train_images, alphas, device, show_progress: bool):
    """One fine-tuned (EMA) model and log per arm, all from the same weights, seed and update count."""
    adv = AdvSettings(cfg.adv.steps, cfg.adv.lr, cfg.adv.max_norm)
    models, logs = {}, {}
    for arm in cfg.arms:
        models[arm], logs[arm] = train_dpm_arm(
            arm, base, train_images, alphas, updates=cfg.train.updates, batch_size=cfg.train.batch_size,
            lr=cfg.train.lr, ema_decay=cfg.train.ema_decay, adv=adv, ip_gamma=cfg.ip.gamma, seed=cfg.seed,
            device=device, show_progress=show_progress)
    return models, logs


def evaluate_dpms(cfg: AdversarialTrainConfig, models: dict, scheduler, reference, test_images, net, device,
                  show_progress: bool) -> tuple[list[dict], dict, dict]:
    """FD per (model, sampler, NFE) from shared noise; mismatch rows at eval.mismatch_nfe; sample grids."""
    shape = (cfg.eval.num_samples, 1, 16, 16)
    fd_rows, mismatch, grids = [], {}, {}
    jobs = [(s, n) for s in cfg.eval.samplers for n in cfg.eval.nfe]
    for sampler_kind, nfe in progress(jobs, "sample", show_progress):
        noise = torch.randn(shape, generator=generator(cfg.seed + 1000 + nfe))  # same noise for every model
        for name, unet in models.items():
            record = nfe == cfg.eval.mismatch_nfe
            traj = sample(unet.to(device), make_sampler(sampler_kind, scheduler, nfe), noise.to(device), record)
            fd_rows.append({"model": name, "sampler": sampler_kind, "nfe": nfe,
                            "fd": _frechet(traj.samples_BCHW, reference, net)})
            if record:
                mismatch[(name, sampler_kind)] = mismatch_per_step(
                    traj, test_images, scheduler.alphas_cumprod, generator(cfg.seed + 2000))
            if sampler_kind == cfg.eval.samplers[0] and nfe == min(cfg.eval.nfe):
                grids[name] = traj.samples_BCHW[:32].cpu()
    return fd_rows, mismatch, grids


def seed_spread(cfg: AdversarialTrainConfig, unet, scheduler, reference, net, device) -> list[dict]:
    """FD of one model at the lowest NFE from two noise seeds: the scale of FD differences that is just noise."""
    nfe, rows = min(cfg.eval.nfe), []
    for sampler_kind in cfg.eval.samplers:
        fds = []
        for offset in (1000 + nfe, 5000):  # the first is the seed the main table used
            noise = torch.randn((cfg.eval.num_samples, 1, 16, 16), generator=generator(cfg.seed + offset))
            traj = sample(unet.to(device), make_sampler(sampler_kind, scheduler, nfe), noise.to(device))
            fds.append(_frechet(traj.samples_BCHW, reference, net))
        rows.append({"sampler": sampler_kind, "nfe": nfe, "fd_seed_a": fds[0], "fd_seed_b": fds[1],
                     "abs_diff": abs(fds[0] - fds[1])})
    return rows


def run_consistency(cfg: AdversarialTrainConfig, base, train_images, alphas, reference, net, device,
                    show_progress: bool) -> tuple[list[dict], dict[str, ArmLog]]:
    """CD vs AT-CD from the same teacher, matched in updates; FD at cm.eval_steps sampling steps."""
    adv = AdvSettings(cfg.adv.steps, cfg.adv.lr, cfg.adv.max_norm)
    rows, logs = [], {}
    for arm in ("cd", "cd_at"):
        student, logs[arm] = train_cd_arm(
            arm, base, train_images, alphas, updates=cfg.cm.updates, batch_size=cfg.cm.batch_size, lr=cfg.cm.lr,
            skip=cfg.cm.skip, target_ema=cfg.cm.target_ema, adv=adv, seed=cfg.seed, device=device,
            show_progress=show_progress)
        for steps in cfg.cm.eval_steps:
            noise = torch.randn((cfg.eval.num_samples, 1, 16, 16), generator=generator(cfg.seed + 3000))
            x = consistency_sample(student, noise.to(device), steps, alphas.to(device), generator(cfg.seed + 3001))
            rows.append({"model": arm, "steps": steps, "fd": _frechet(x, reference, net)})
    return rows, logs


def run(cfg: AdversarialTrainConfig, out: Path, *, show_progress: bool = True) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    base, scheduler = base_dpm(cfg.base.path, cfg.base.channels, cfg.base.train_steps, cfg.base.ema_decay,
                               show_progress)
    base = base.to(device).eval()
    if cfg.cm.enabled and cfg.cm.skip >= len(scheduler.alphas_cumprod):
        raise ValueError(f"cm.skip ({cfg.cm.skip}) must be below the model's {len(scheduler.alphas_cumprod)} "
                         "training timesteps")
    alphas = scheduler.alphas_cumprod.float()
    train_images = digits("train", size=16).images
    test_images = digits("test", size=16).images
    net = digits_classifier(size=FEATURE_SIZE)
    reference = to_feature_size(test_images)  # held-out: the feature net and every model saw only train
    floor = _frechet(digits("train", size=16).images[: len(test_images)], reference, net)

    models, logs = train_arms(cfg, base, train_images, alphas, device, show_progress)
    fd_rows, mismatch, grids = evaluate_dpms(cfg, {"base": base, **models}, scheduler, reference, test_images,
                                             net, device, show_progress)
    spread = seed_spread(cfg, models["standard"], scheduler, reference, net, device)
    cm_rows, cm_logs = ([], {})
    if cfg.cm.enabled:
        cm_rows, cm_logs = run_consistency(cfg, base, train_images, alphas, reference, net, device, show_progress)

    plots = [plot_fd_vs_nfe(fd_rows, out / "fd_vs_nfe.png"),
             plot_mismatch(mismatch, out / "mismatch.png", cfg.eval.mismatch_nfe),
             plot_samples(grids, out / "samples.png", min(cfg.eval.nfe))]
    mismatch_rows = [{"model": m, "sampler": s, "mean_w1_norm": sum(r["w1_norm"] for r in rows) / len(rows),
                      "last_step_w1_norm": rows[-1]["w1_norm"]} for (m, s), rows in mismatch.items()]
    train_rows = [_train_row(arm, log) for arm, log in {**logs, **cm_logs}.items()]
    results: dict[str, Any] = {
        "fd": fd_rows, "fd_data_floor": floor, "fd_seed_spread": spread, "mismatch": mismatch_rows,
        "mismatch_per_step": {f"{m}/{s}": rows for (m, s), rows in mismatch.items()},
        "train": train_rows, "cm_fd": cm_rows, "plots": [p.name for p in plots],
    }
    results["report_md"] = render_report(cfg, results)
    return results


def _train_row(arm: str, log: ArmLog) -> dict[str, Any]:
    tail = log.losses[-max(1, len(log.losses) // 5):]
    return {"arm": arm, "updates": log.updates, "batches": log.batches, "seconds": log.seconds,
            "final_loss": sum(tail) / len(tail),
            "mean_delta_norm": sum(log.delta_norms) / len(log.delta_norms) if log.delta_norms else 0.0,
            "mean_delta_grad_norm": sum(log.delta_grad_norms) / len(log.delta_grad_norms) if log.delta_grad_norms else 0.0}
