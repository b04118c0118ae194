"""Pretraining loops: Graffe (and its ablations) and GraphMAE, with identical budgets.

Every run is seeded: the encoder is built with ``build_encoder(spec, seed)`` (so zero steps give the
random-init encoder bit for bit), the decoder after ``torch.manual_seed(seed + 1)``, and masks, timesteps
and noise come from one ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from workers.aux.common.runtime import generator, progress
from workers.aux.graffe.decoder import ConditionalGraphUNet, GraphMaeDecoder
from workers.aux.graffe.diffusion import VpSchedule
from workers.aux.graffe.encoders import EncoderSpec, build_encoder
from workers.aux.graffe.objectives import graffe_loss, graphmae_loss
from workers.aux.graffe.views import UnlabeledGraphs

Objective = Literal["graffe", "graffe_shuffled", "uncond", "graphmae"]


@dataclass(frozen=True)
class DecoderSpec:
    hidden: int = 64
    depth: int = 2
    pool_ratio: float = 0.5
    time_dim: int = 16


@dataclass(frozen=True)
class PretrainSettings:
    steps: int
    lr: float = 2e-3
    weight_decay: float = 0.0
    mask_ratio: float = 0.5
    sce_gamma: float = 2.0


@dataclass
class Pretrained:
    objective: Objective
    encoder: torch.nn.Module | None  # None for the unconditional denoiser
    decoder: torch.nn.Module
    losses: list[float] = field(default_factory=list)


CheckpointFn = Callable[[int, "Pretrained"], None]


def build_decoder(objective: Objective, enc: EncoderSpec, dec: DecoderSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed + 1)  # module init draws from the global RNG
    if objective == "graphmae":
        return GraphMaeDecoder(enc.z_dim, enc.in_dim)
    z_dim = 0 if objective == "uncond" else enc.z_dim
    return ConditionalGraphUNet(enc.in_dim, z_dim, dec.hidden, dec.depth, dec.pool_ratio, dec.time_dim)


def pretrain(objective: Objective, data: UnlabeledGraphs, enc_spec: EncoderSpec, dec_spec: DecoderSpec,
             schedule: VpSchedule, settings: PretrainSettings, seed: int, *, show_progress: bool = False,
             checkpoints: tuple[int, ...] = (), on_checkpoint: CheckpointFn | None = None) -> Pretrained:
    """Train encoder and decoder for ``settings.steps`` Adam steps on ``objective``.

    ``graffe``: conditional DSM with z = E(masked graph); ``graffe_shuffled``: the same with z permuted
    across nodes/graphs (the ablation); ``uncond``: the decoder alone without z; ``graphmae``: masked
    feature reconstruction with SCE. ``on_checkpoint(step, run)`` is called after each step in
    ``checkpoints`` (and for step 0 if listed) with the models in eval mode.
    """
    device = data.device
    encoder = None if objective == "uncond" else build_encoder(enc_spec, seed).to(device)
    decoder = build_decoder(objective, enc_spec, dec_spec, seed).to(device)
    run = Pretrained(objective, encoder, decoder)
    params = [p for m in (encoder, decoder) if m is not None for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    gen = generator(seed + 2)
    if 0 in checkpoints and on_checkpoint is not None:
        on_checkpoint(0, run)
    for step in progress(range(1, settings.steps + 1), f"graffe pretrain {objective} s{seed}", show_progress):
        for m in (encoder, decoder):
            if m is not None:
                m.train()
        view = data.sample(gen)
        if objective == "graphmae":
            loss = graphmae_loss(encoder, decoder, view, settings.mask_ratio, settings.sce_gamma, gen)
        else:
            conditioning = {"graffe": "z", "graffe_shuffled": "shuffled", "uncond": "none"}[objective]
            loss = graffe_loss(encoder, decoder, view, schedule, settings.mask_ratio, gen, conditioning)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.losses.append(float(loss.detach()))
        if step in checkpoints and on_checkpoint is not None:
            on_checkpoint(step, run)
    for m in (encoder, decoder):
        if m is not None:
            m.eval()
    return run
