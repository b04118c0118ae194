"""The two training stages of PS-VAE (paper Sec. 3.3-3.4) and the RAE decoder baseline.

- Stage 1 (S-VAE): E_rep frozen; loss = L_s(f_h', f_h'') + beta L_KL + L_p(I, D_p(f_l.detach())),
  so the pixel loss trains D_p only.
- Stage 2 (PS-VAE): E_rep unfrozen, a frozen copy E_rep0 gives the semantic target;
  loss = w_s L_s(E_rep0(I), f_h'') + beta L_KL + w_p L_p(I, D_p(f_l)), no detach.
  With w_s = 0 this is the P-VAE ablation (pixel loss only, Table 4).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from workers.aux.common.runtime import progress
from workers.aux.ps_vae.autoencoder import PsVae, Rae
from workers.aux.ps_vae.encoders import RepresentationEncoder
from workers.aux.ps_vae.objectives import kl_loss, pixel_loss, reparameterize, semantic_loss


@dataclass(frozen=True)
class LossWeights:
    semantic: float = 1.0  # w_s (stage 2)
    pixel: float = 0.1  # w_p (stage 2)
    kl: float = 1e-3  # beta
    pixel_l2: float = 1.0  # MSE weight inside L_p


def stage1_losses(model: PsVae, images: torch.Tensor, weights: LossWeights,
                  generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The S-VAE objective; the encoder runs without grad and D_p sees the detached latent."""
    with torch.no_grad():
        f_h = model.rep(images)
    mu, logvar = model.posterior(f_h)
    f_l = reparameterize(mu, logvar, generator)
    semantic = semantic_loss(f_h, model.decode_semantic(f_l))
    kl = kl_loss(mu, logvar)
    pixel = pixel_loss(images, model.decode_pixels(f_l.detach()), weights.pixel_l2)
    return {"total": semantic + weights.kl * kl + pixel, "semantic": semantic, "kl": kl, "pixel": pixel}


def stage2_losses(model: PsVae, frozen_rep: RepresentationEncoder, images: torch.Tensor, weights: LossWeights,
                  generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The PS-VAE objective: gradients of both L_s and L_p reach the unfrozen encoder; the target is E_rep0."""
    with torch.no_grad():
        target = frozen_rep(images)
    mu, logvar = model.posterior(model.rep(images))
    f_l = reparameterize(mu, logvar, generator)
    semantic = semantic_loss(target, model.decode_semantic(f_l))
    kl = kl_loss(mu, logvar)
    pixel = pixel_loss(images, model.decode_pixels(f_l), weights.pixel_l2)
    total = weights.semantic * semantic + weights.kl * kl + weights.pixel * pixel
    return {"total": total, "semantic": semantic, "kl": kl, "pixel": pixel}


def _batches(n: int, batch: int, steps: int, generator: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=generator)


def _run(loss_fn, params: list[dict], images: torch.Tensor, steps: int, batch: int, generator: torch.Generator,
         desc: str, show_progress: bool) -> list[dict[str, float]]:
    opt = torch.optim.AdamW(params, weight_decay=0.0)
    history = []
    for idx in progress(_batches(len(images), batch, steps, generator), desc, show_progress, total=steps):
        losses = loss_fn(images[idx])
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return history


def train_stage1(model: PsVae, images: torch.Tensor, steps: int, batch: int, lr: float, weights: LossWeights,
                 generator: torch.Generator, show_progress: bool = True) -> list[dict[str, float]]:
    """Stage 1: E_rep frozen (not in the optimizer); E_s, D_s, D_p trained."""
    model.rep.requires_grad_(False)
    params = [p for m in (model.sem_enc, model.sem_dec, model.pix_dec) for p in m.parameters()]
    return _run(lambda x: stage1_losses(model, x, weights, generator), [{"params": params, "lr": lr}], images,
                steps, batch, generator, "ps_vae: stage 1 (S-VAE)", show_progress)


def train_stage2(model: PsVae, images: torch.Tensor, steps: int, batch: int, lr: float, encoder_lr: float,
                 weights: LossWeights, generator: torch.Generator, show_progress: bool = True,
                 desc: str = "ps_vae: stage 2 (PS-VAE)") -> tuple[list[dict[str, float]], RepresentationEncoder]:
    """Stage 2: E_rep unfrozen; a frozen copy E_rep0 (requires_grad False, outside the optimizer) is the target.

    Returns the loss history and E_rep0.
    """
    frozen = copy.deepcopy(model.rep).requires_grad_(False).eval()
    model.rep.requires_grad_(True)
    heads = [p for m in (model.sem_enc, model.sem_dec, model.pix_dec) for p in m.parameters()]
    groups = [{"params": list(model.rep.parameters()), "lr": encoder_lr}, {"params": heads, "lr": lr}]
    history = _run(lambda x: stage2_losses(model, frozen, x, weights, generator), groups, images, steps, batch,
                   generator, desc, show_progress)
    return history, frozen


def train_rae_decoder(model: Rae, images: torch.Tensor, steps: int, batch: int, lr: float, pixel_l2: float,
                      generator: torch.Generator, show_progress: bool = True) -> list[dict[str, float]]:
    """RAE: D_p on the frozen encoder's raw tokens with L_p only."""
    model.rep.requires_grad_(False)

    def loss_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            latent, _ = model.encode(x)
        loss = pixel_loss(x, model.decode_pixels(latent), pixel_l2)
        return {"total": loss, "pixel": loss}

    return _run(loss_fn, [{"params": list(model.pix_dec.parameters()), "lr": lr}], images, steps, batch, generator,
                "ps_vae: RAE pixel decoder", show_progress)


def parameter_fingerprint(module: nn.Module) -> str:
    """A hash of every parameter's bytes: tells whether stage 2 changed the encoder."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
