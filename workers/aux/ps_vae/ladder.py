"""The RAE -> S-VAE -> P-VAE -> PS-VAE ladder (paper Table 4) on digits with a local ViT as E_rep.

Per seed: one encoder; RAE trains D_p on its raw tokens for stage1 + stage2 steps; S-VAE is stage 1;
PS-VAE is S-VAE + stage 2; P-VAE is S-VAE + stage 2 with w_s = 0 (pixel loss only). Every rung is then
scored on the held-out test split: reconstruction PSNR/SSIM, a linear probe on its latents, and a
class-conditional rectified-flow generator trained in its latent space with the same budget, judged by
a separately trained digits classifier (accuracy, Frechet distance in its feature space); and an
editing generator ([source | instruction | noisy]) on synthetic edits with known answers, scored by
PSNR/SSIM against the true edit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workers.aux.common.data import digits
from workers.aux.common.metrics import (
    classifier_accuracy,
    digits_classifier,
    digits_frechet_distance,
    psnr,
    ssim,
)
from workers.aux.ps_vae.autoencoder import PsVae, Rae
from workers.aux.ps_vae.config import PsVaeConfig
from workers.aux.ps_vae.encoders import LocalVitSpec, local_vit_encoder
from workers.aux.ps_vae.flow import shift_factor
from workers.aux.ps_vae.generator import LatentGenerator, sample_latents, train_generator
from workers.aux.ps_vae.objectives import kl_per_element, semantic_loss
from workers.aux.ps_vae.training import (
    LossWeights,
    parameter_fingerprint,
    train_rae_decoder,
    train_stage1,
    train_stage2,
)

RUNG_NAMES = {"rae": "RAE", "s_vae": "S-VAE", "p_vae": "P-VAE", "ps_vae": "PS-VAE"}


@dataclass
class RungOutput:
    metrics: dict[str, float]
    recon: torch.Tensor  # first test reconstructions (for the figure)
    samples: torch.Tensor | None = None
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def encode_all(model: nn.Module, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
    mus, logvars = [], []
    for chunk in images.split(batch):
        mu, logvar = model.encode(chunk)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus), (None if logvars[0] is None else torch.cat(logvars))


@torch.no_grad()
def decode_all(model: nn.Module, latents: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([model.decode_pixels(chunk) for chunk in latents.split(batch)]).clamp(-1, 1)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 max_iter: int = 500) -> float:
    """Top-1 test accuracy of a logistic regression on standardised flattened latents (fit on train only)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x.flatten(1).double().numpy())
    clf = LogisticRegression(max_iter=max_iter, C=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # smoke-sized budgets stop early on purpose
        clf.fit(scaler.transform(train_x.flatten(1).double().numpy()), train_y.numpy())
    return float(clf.score(scaler.transform(test_x.flatten(1).double().numpy()), test_y.numpy()))


def evaluate_rung(model: nn.Module, original_rep: nn.Module, train, test, cfg: PsVaeConfig, seed: int,
                  show_progress: bool, name: str) -> RungOutput:
    """Reconstruction, probe, semantic fidelity and (optionally) generation metrics of one latent space."""
    model.eval()
    # A 10-per-class probe too: digits are ~linearly separable in pixels, so the full probe saturates.
    shots = torch.cat([torch.nonzero(train.labels == c)[:10, 0] for c in range(10)])
    mu_tr, logvar_tr = encode_all(model, train.images)
    mu_te, logvar_te = encode_all(model, test.images)
    recon = decode_all(model, mu_te)
    metrics: dict[str, float] = {
        "psnr": float(psnr(recon, test.images).mean()),
        "ssim": float(ssim(recon, test.images).mean()),
        "linear_probe": linear_probe(mu_tr, train.labels, mu_te, test.labels, cfg.ladder.probe_max_iter),
        "probe_10shot": linear_probe(mu_tr[shots], train.labels[shots], mu_te, test.labels, cfg.ladder.probe_max_iter),
        "latent_channels": float(mu_te.shape[1]),
    }
    with torch.no_grad():
        target = original_rep(test.images)
        if isinstance(model, PsVae):
            metrics["semantic_cosine"] = float(torch.nn.functional.cosine_similarity(
                target, model.decode_semantic(mu_te), dim=-1).mean())
            metrics["semantic_loss"] = float(semantic_loss(target, model.decode_semantic(mu_te)))
            metrics["kl_per_element"] = float(kl_per_element(mu_te, logvar_te).mean())
            metrics["posterior_std"] = float((0.5 * logvar_te).exp().mean())
        metrics["encoder_feature_cosine"] = float(torch.nn.functional.cosine_similarity(
            target, model.rep(test.images), dim=-1).mean())
    out = RungOutput(metrics, recon[:16])
    if not cfg.ladder.generate:
        return out
    gen_cfg = cfg.generator
    # Train on posterior samples (the decoder saw noisy latents in training), standardised per channel.
    g = torch.Generator().manual_seed(seed + 500)
    latents = mu_tr if logvar_tr is None else mu_tr + (0.5 * logvar_tr).exp() * torch.randn(mu_tr.shape, generator=g)
    mean = latents.mean((0, 2, 3), keepdim=True)
    std = latents.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    s = shift_factor(latents.shape[1], 1, gen_cfg.shift_base_channels) if gen_cfg.shift == "rule" else 1.0
    torch.manual_seed(seed + 600)  # same init draw for every rung of a seed (channel counts differ)
    gen = LatentGenerator(latents.shape[1], latents.shape[-1], gen_cfg.width, gen_cfg.depth, gen_cfg.heads)
    train_generator(gen, (latents - mean) / std, train.labels, gen_cfg.steps, gen_cfg.batch_size, gen_cfg.lr, s,
                    gen_cfg.label_dropout, gen_cfg.logit_mean, gen_cfg.logit_std, g, show_progress=show_progress,
                    desc=f"ps_vae: generator in {RUNG_NAMES[name]} space")
    labels = torch.arange(10).repeat_interleave(gen_cfg.samples_per_class)
    z = sample_latents(gen, labels, gen_cfg.sample_steps, s, gen_cfg.cfg_scale,
                       torch.Generator().manual_seed(seed + 700))
    images = decode_all(model, z * std + mean)
    clf = digits_classifier(size=cfg.data.image_size)
    metrics.update({"shift": s, "gen_accuracy": classifier_accuracy(clf, images, labels),
                    "gen_frechet": digits_frechet_distance(images, test.images, clf),
                    "recon_frechet": digits_frechet_distance(recon, test.images, clf)})
    out.samples = images
    if cfg.ladder.edit:
        metrics.update(evaluate_editing(model, train.images, test.images, mean, std, s, cfg, seed, show_progress,
                                        name))
    return out


# Synthetic instruction edits with a known answer (the stand-in for OmniEdit / GEdit-Bench).
EDIT_OPS = {
    "flip_lr": lambda x: x.flip(-1),
    "flip_ud": lambda x: x.flip(-2),
    "rot90": lambda x: x.rot90(1, (-2, -1)),
    "invert": lambda x: -x,
}


def evaluate_editing(model: nn.Module, train_images: torch.Tensor, test_images: torch.Tensor, mean: torch.Tensor,
                     std: torch.Tensor, shift: float, cfg: PsVaeConfig, seed: int, show_progress: bool,
                     name: str) -> dict[str, float]:
    """Train ``[clean source | instruction | noisy target]`` in the rung's latent space on (image, op(image))
    pairs; score held-out edits by PSNR/SSIM of the decoded edit against op(source) in pixels."""
    gen_cfg = cfg.generator
    ops = list(EDIT_OPS.values())
    g = torch.Generator().manual_seed(seed + 800)

    def latents(images: torch.Tensor) -> torch.Tensor:
        mu, logvar = encode_all(model, images)
        z = mu if logvar is None else mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g)
        return (z - mean) / std

    sources = latents(train_images).repeat(len(ops), 1, 1, 1)
    targets = torch.cat([latents(op(train_images)) for op in ops])
    op_ids = torch.arange(len(ops)).repeat_interleave(len(train_images))
    torch.manual_seed(seed + 900)
    gen = LatentGenerator(sources.shape[1], sources.shape[-1], gen_cfg.width, gen_cfg.depth, gen_cfg.heads,
                          num_classes=len(ops))
    train_generator(gen, targets, op_ids, gen_cfg.steps, gen_cfg.batch_size, gen_cfg.lr, shift, 0.0,
                    gen_cfg.logit_mean, gen_cfg.logit_std, g, sources=sources, show_progress=show_progress,
                    desc=f"ps_vae: editing generator in {RUNG_NAMES[name]} space")
    src = test_images[: cfg.ladder.edit_samples]
    ids = torch.arange(len(src)) % len(ops)
    truth = torch.stack([ops[int(i)](x) for i, x in zip(ids, src, strict=True)])
    z = sample_latents(gen, ids, gen_cfg.sample_steps, shift, 1.0, torch.Generator().manual_seed(seed + 1000),
                       source=latents(src))
    edited = decode_all(model, z * std + mean)
    return {"edit_psnr": float(psnr(edited, truth).mean()), "edit_ssim": float(ssim(edited, truth).mean())}


def run_seed(cfg: PsVaeConfig, seed: int, show_progress: bool = True) -> dict[str, RungOutput]:
    """All requested rungs for one seed."""
    enc, vae = cfg.encoder, cfg.vae
    spec = LocalVitSpec(cfg.data.image_size, enc.patch_size, enc.hidden, enc.layers, enc.heads, enc.epochs, enc.lr,
                        seed)
    rep = local_vit_encoder(spec, show_progress=show_progress).requires_grad_(False)
    train, test = digits("train", size=cfg.data.image_size), digits("test", size=cfg.data.image_size)
    weights = LossWeights(vae.semantic_weight, vae.pixel_weight, vae.kl_weight, vae.pixel_l2)
    outputs: dict[str, RungOutput] = {}
    rungs = cfg.ladder.rungs

    if "rae" in rungs:
        torch.manual_seed(seed + 100)
        rae = Rae(copy.deepcopy(rep), vae.pixel_stride, vae.pixel_channels)
        hist = train_rae_decoder(rae, train.images, vae.stage1_steps + vae.stage2_steps, vae.batch_size, vae.lr,
                                 vae.pixel_l2, torch.Generator().manual_seed(seed + 101), show_progress)
        outputs["rae"] = evaluate_rung(rae, rep, train, test, cfg, seed, show_progress, "rae")
        outputs["rae"].history = hist

    if not {"s_vae", "p_vae", "ps_vae"} & set(rungs):
        return outputs
    torch.manual_seed(seed + 200)
    s_vae = PsVae(copy.deepcopy(rep), vae.latent_channels, vae.semantic_blocks, vae.mlp_hidden, vae.pixel_stride,
                  vae.pixel_channels)
    hist1 = train_stage1(s_vae, train.images, vae.stage1_steps, vae.batch_size, vae.lr, weights,
                         torch.Generator().manual_seed(seed + 201), show_progress)
    fingerprint = parameter_fingerprint(s_vae.rep)
    for name, w_s, w_p in (("ps_vae", vae.semantic_weight, vae.pixel_weight), ("p_vae", 0.0, vae.pvae_pixel_weight)):
        if name not in rungs:
            continue
        model = copy.deepcopy(s_vae)
        stage_weights = LossWeights(w_s, w_p, vae.kl_weight, vae.pixel_l2)
        hist2, _ = train_stage2(model, train.images, vae.stage2_steps, vae.batch_size, vae.lr, vae.encoder_lr,
                                stage_weights, torch.Generator().manual_seed(seed + 301), show_progress,
                                desc=f"ps_vae: stage 2 ({RUNG_NAMES[name]})")
        outputs[name] = evaluate_rung(model, rep, train, test, cfg, seed, show_progress, name)
        outputs[name].metrics["encoder_changed"] = float(parameter_fingerprint(model.rep) != fingerprint)
        outputs[name].history = hist1 + hist2
    if "s_vae" in rungs:
        outputs["s_vae"] = evaluate_rung(s_vae, rep, train, test, cfg, seed, show_progress, "s_vae")
        outputs["s_vae"].metrics["encoder_changed"] = float(parameter_fingerprint(s_vae.rep) != fingerprint)
        outputs["s_vae"].history = hist1
    return {k: outputs[k] for k in rungs if k in outputs}


def aggregate(per_seed: list[dict[str, RungOutput]]) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of every metric of every rung."""
    table: dict[str, dict[str, float]] = {}
    for rung in per_seed[0]:
        keys = per_seed[0][rung].metrics.keys()
        row: dict[str, float] = {}
        for key in keys:
            vals = np.array([run[rung].metrics[key] for run in per_seed], dtype=np.float64)
            row[key] = float(vals.mean())
            row[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        table[rung] = row
    return table
