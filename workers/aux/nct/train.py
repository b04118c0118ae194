"""The NCT training loop (paper Alg. 1) and its ablations; it only calls f_theta and h (no data).

Shape legend: B batch, C channels, H x W image size.

Variants (same model, seeds and budget):
- ``nct``: L_con + lambda L_bound with the primal-dual lambda (Eq. 12);
- ``fixed_lambda``: the same with lambda kept at ``lambda_init`` (Table 3, w/o primal-dual);
- ``no_consistency``: L_bound only (Table 3, w/o consistency loss: coupled pairs only);
- ``no_boundary``: L_con only (Table 3, w/o boundary loss);
- ``naive_denoising``: the section 3.1 denoising-style adapter, d(f(z_t, c), f_theta(z)) at every level.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from workers.aux.common.one_step import OneStepGenerator
from workers.aux.common.runtime import progress
from workers.aux.nct.adapter import ControlAdapter, ControlledGenerator
from workers.aux.nct.config import NctSection, TrainSection
from workers.aux.nct.controls import ConditionModel
from workers.aux.nct.losses import (
    boundary_loss,
    consistency_loss,
    couple_noise,
    denoising_loss,
    distance,
    dual_update,
    sigma_grid,
)

VARIANTS = ("nct", "no_consistency", "no_boundary", "fixed_lambda", "naive_denoising")


@dataclass
class TrainHistory:
    """Per-step losses and the multiplier, for the lambda-vs-xi plot (the "lambda never moving" guard)."""

    con: list[float] = field(default_factory=list)
    bound: list[float] = field(default_factory=list)
    lam: list[float] = field(default_factory=list)


@torch.no_grad()
def draw_coupled(generator: OneStepGenerator, cond: ConditionModel, batch: int, shape: tuple[int, ...],
                 gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """z, eps ~ N(0, I); x = f_theta(z); c ~ p(c | x): the coupled pair of Alg. 1 (no real data)."""
    z = torch.randn((batch, *shape), generator=gen, device=device)
    eps = torch.randn((batch, *shape), generator=gen, device=device)
    x = generator(z)
    return z, eps, x, cond.as_map(cond.extract(x))


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


def nct_step_losses(model: ControlledGenerator, z: torch.Tensor, eps: torch.Tensor, x: torch.Tensor,
                    cmap: torch.Tensor, level: torch.Tensor, sigmas: torch.Tensor,
                    nct: NctSection) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_con, L_bound) with the two gradient-carrying passes batched into one forward (same maths)."""
    batch = z.shape[0]
    with torch.no_grad():  # sg[f(z_{t_k}, c)], the same eps as the less-coupled input
        target = model(couple_noise(z, eps, sigmas[level]), cmap)
    z_hi = couple_noise(z, eps, sigmas[level + 1])
    out = model(torch.cat([z_hi, z]), torch.cat([cmap, cmap]))
    con = distance(out[:batch], target, nct.distance, nct.huber_c).mean()
    bound = distance(out[batch:], x, nct.distance, nct.huber_c).mean()
    return con, bound


def train_adapter(generator: OneStepGenerator, cond: ConditionModel, variant: str, nct: NctSection,
                  train: TrainSection, seed: int, device: torch.device,
                  show_progress: bool = True) -> tuple[ControlledGenerator, TrainHistory]:
    """Train one adapter variant; returns the controlled generator (EMA weights) and its history."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown NCT variant {variant!r}; valid: {', '.join(VARIANTS)}")
    torch.manual_seed(seed)  # the hint encoder's init draws from the global RNG; pin it per variant
    adapter = ControlAdapter(generator, cond.map_channels, train.hint_width).to(device)
    model = ControlledGenerator(generator, adapter).to(device)
    ema = copy.deepcopy(adapter).requires_grad_(False) if train.ema_decay > 0 else None
    opt = torch.optim.AdamW(adapter.parameters(), lr=train.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sigmas = sigma_grid(nct.num_levels).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (generator.unet.config.in_channels, generator.unet.config.sample_size, generator.unet.config.sample_size)
    lam, hist = nct.lambda_init, TrainHistory()
    adapter.train()
    for _ in progress(range(train.steps), f"NCT adapter [{variant}]", show_progress):
        z, eps, x, cmap = draw_coupled(generator, cond, train.batch_size, shape, gen, device)
        if variant == "naive_denoising":
            level = torch.randint(0, nct.num_levels + 1, (train.batch_size,), generator=gen, device=device)
            loss = denoising_loss(model, z, eps, cmap, x, level, sigmas, nct.distance, nct.huber_c)
            con, bound = loss.detach(), torch.zeros(())
        elif variant == "no_consistency":
            bound = boundary_loss(model, z, cmap, x, nct.distance, nct.huber_c)
            loss, con = bound, torch.zeros(())
        elif variant == "no_boundary":
            level = torch.randint(0, nct.num_levels, (train.batch_size,), generator=gen, device=device)
            con = consistency_loss(model, z, eps, cmap, level, sigmas, nct.distance, nct.huber_c)
            loss, bound = con, torch.zeros(())
        else:  # nct, fixed_lambda
            level = torch.randint(0, nct.num_levels, (train.batch_size,), generator=gen, device=device)
            con, bound = nct_step_losses(model, z, eps, x, cmap, level, sigmas, nct)
            loss = nct.consistency_weight * con + lam * bound
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.parameters(), 1.0)
        opt.step()
        if ema is not None:
            _ema_update(ema, adapter, train.ema_decay)
        hist.con.append(float(con.detach()))
        hist.bound.append(float(bound.detach()))
        hist.lam.append(lam)
        if variant == "nct":  # dual ascent after the primal step (Alg. 1)
            lam = dual_update(lam, float(bound.detach()), nct.xi, nct.dual_lr)
    final = ControlledGenerator(generator, ema if ema is not None else adapter).eval()
    return final, hist
