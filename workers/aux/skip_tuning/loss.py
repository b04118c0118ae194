"""Denoising loss vs rho (Skip-Tuning Sec. 4): pixel-space loss of the x0 prediction, and the same loss
in a feature space. The paper finds the pixel loss rises while the feature loss falls.

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps                                        (DDPM forward)
    x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)                            (eps-prediction)
    L_pix(t)  = E ||x0_hat - x0||^2 / D,     L_feat(t) = E ||f(x0_hat) - f(x0)||^2 / d_f

Tensor legend: N images, C channels, H, W spatial, F features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def predict_x0(model_out: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x0 from the network output for the three diffusers parameterisations."""
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "epsilon":
        return (x_t - s * model_out) / a
    if prediction_type == "v_prediction":  # v = a eps - s x0  =>  x0 = a x_t - s v
        return a * x_t - s * model_out
    if prediction_type == "sample":
        return model_out
    raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}")


@torch.no_grad()
def denoising_losses(unet: nn.Module, x0_NCHW: torch.Tensor, t: int, alphas_cumprod: torch.Tensor,
                     eps_NCHW: torch.Tensor, prediction_type: str,
                     features: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256) -> dict[str, float]:
    """Pixel and feature MSE of the one-shot x0 prediction at timestep ``t`` (fixed noise ``eps``)."""
    device = next(unet.parameters()).device
    alpha_bar = alphas_cumprod[t].to(torch.float32)
    preds = []
    for x0, eps in zip(x0_NCHW.split(batch_size), eps_NCHW.split(batch_size), strict=True):
        x0, eps = x0.to(device), eps.to(device)
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
        out = unet(x_t, torch.tensor(t, device=device)).sample
        preds.append(predict_x0(out, x_t, alpha_bar.to(device), prediction_type).cpu())
    x0_hat = torch.cat(preds)
    pixel = ((x0_hat.double() - x0_NCHW.double()) ** 2).flatten(1).mean(1)
    feats_hat_NF, feats_NF = features(x0_hat.clamp(-1, 1)), features(x0_NCHW)
    feature = ((feats_hat_NF.double() - feats_NF.double()) ** 2).mean(1)
    return {"pixel_mse": float(pixel.mean()), "feature_mse": float(feature.mean())}
