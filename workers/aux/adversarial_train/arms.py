"""The experiment's training arms, each a fresh copy of the pretrained weights trained for exactly the same
number of optimizer updates on the same seeded batch stream (AT/replay use its first updates/K batches).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from workers.aux.adversarial_train.consistency import ConsistencyPair, consistency_updates
from workers.aux.adversarial_train.training import (
    AdvSettings,
    Batch,
    Learner,
    adversarial_updates,
    batch_stream,
    input_perturbation_update,
    standard_update,
)
from workers.aux.common.results import Stopwatch
from workers.aux.common.runtime import generator, progress


@dataclass
class ArmLog:
    """What one arm did: loss per update, mean ||delta|| / ||grad delta|| per batch, batches, updates, seconds."""

    losses: list[float] = field(default_factory=list)
    delta_norms: list[float] = field(default_factory=list)
    delta_grad_norms: list[float] = field(default_factory=list)
    batches: int = 0
    updates: int = 0
    seconds: float = 0.0


def _on(batch: Batch, device: torch.device) -> Batch:
    return Batch(batch.x0_BCHW.to(device), batch.t_B.to(device), batch.eps_BCHW.to(device))


def train_dpm_arm(arm: str, base: torch.nn.Module, images_NCHW: torch.Tensor, alphas_cumprod: torch.Tensor, *,
                  updates: int, batch_size: int, lr: float, ema_decay: float, adv: AdvSettings, ip_gamma: float,
                  seed: int, device: torch.device, show_progress: bool = True) -> tuple[torch.nn.Module, ArmLog]:
    """Fine-tune a copy of ``base`` as ``arm`` (standard | at | ip | replay); returns the EMA model and the log."""
    learner = Learner(copy.deepcopy(base).to(device), lr=lr, ema_decay=ema_decay)
    stream = batch_stream(images_NCHW, batch_size, len(alphas_cumprod), generator(seed))
    ip_gen = generator(seed + 7)  # separate stream for xi, so IP sees the same batches as standard
    arm_adv = AdvSettings(adv.steps, adv.lr, 0.0) if arm == "replay" else adv
    log, clock = ArmLog(), Stopwatch()
    alphas = alphas_cumprod.to(device)
    bar = progress(range(updates), f"train {arm}", show_progress)
    while learner.updates < updates:
        batch = _on(next(stream), device)
        log.batches += 1
        if arm == "standard":
            log.losses.append(standard_update(learner, batch, alphas))
        elif arm == "ip":
            log.losses.append(input_perturbation_update(learner, batch, alphas, ip_gamma, ip_gen))
        elif arm in ("at", "replay"):
            stats = adversarial_updates(learner, batch, alphas, arm_adv)
            log.losses.extend(stats.losses)
            log.delta_norms.append(stats.delta_norm)
            log.delta_grad_norms.append(stats.delta_grad_norm)
        else:
            raise ValueError(f"unknown arm {arm!r}; valid: standard, at, ip, replay")
        for _ in range(learner.updates - log.updates):
            next(bar, None)
        log.updates = learner.updates
    next(bar, None)  # let tqdm close the bar
    log.seconds = clock.seconds()
    return learner.ema.copy_into(learner.unet), log


def train_cd_arm(arm: str, teacher: torch.nn.Module, images_NCHW: torch.Tensor, alphas_cumprod: torch.Tensor, *,
                 updates: int, batch_size: int, lr: float, skip: int, target_ema: float, adv: AdvSettings,
                 seed: int, device: torch.device, show_progress: bool = True) -> tuple[torch.nn.Module, ArmLog]:
    """Consistency-distil a student initialised from ``teacher``: arm cd (K=1 per batch) or cd_at (K, delta)."""
    if arm not in ("cd", "cd_at"):
        raise ValueError(f"unknown CD arm {arm!r}; valid: cd, cd_at")
    settings = adv if arm == "cd_at" else AdvSettings(steps=1, lr=0.0, max_norm=0.0)
    teacher = teacher.to(device)
    pair = ConsistencyPair.from_teacher(teacher, copy.deepcopy(teacher), lr=lr, target_ema=target_ema)
    stream = batch_stream(images_NCHW, batch_size, len(alphas_cumprod), generator(seed))
    log, clock = ArmLog(), Stopwatch()
    alphas = alphas_cumprod.to(device)
    bar = progress(range(updates), f"distil {arm}", show_progress)
    while pair.learner.updates < updates:
        stats = consistency_updates(pair, _on(next(stream), device), alphas, skip, settings)
        log.batches += 1
        log.losses.extend(stats.losses)
        log.delta_norms.append(stats.delta_norm)
        log.delta_grad_norms.append(stats.delta_grad_norm)
        for _ in range(pair.learner.updates - log.updates):
            next(bar, None)
        log.updates = pair.learner.updates
    next(bar, None)
    log.seconds = clock.seconds()
    return pair.learner.unet.eval(), log
