"""A small class-to-image (and editing) rectified-flow generator in a latent space (paper Sec. 4.2, scaled down).

Sequence layout as in the paper's Transfusion-style model: ``[clean source latent | instruction | noisy
latent]`` for editing and ``[instruction | noisy latent]`` for generation; the "instruction" is one
class-label token (the stand-in for text). 2-D sin-cos positions on latent tokens, the timestep
embedding added to the initial hidden states, causal attention for the instruction and full attention
for latents. Training draws t from a logit-normal and shifts it by s (``flow.shift_time``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workers.aux.common.nets import sinusoidal_embedding
from workers.aux.common.runtime import progress
from workers.aux.ps_vae.autoencoder import grid_to_tokens, tokens_to_grid
from workers.aux.ps_vae.flow import euler_sample, interpolate, logit_normal_t, shift_time, velocity_target


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed 2-D sin-cos positions: half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([sinusoidal_embedding(rows.flatten().float(), dim // 2, 100.0),
                      sinusoidal_embedding(cols.flatten().float(), dim // 2, 100.0)], dim=1)


def attention_mask(n_source: int, n_latent: int) -> torch.Tensor:
    """Boolean (L, L), True = blocked. The instruction token (after the source tokens) is causal: it cannot
    see the noisy latent after it; source and noisy latent tokens attend to everything."""
    length = n_source + 1 + n_latent
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[n_source, n_source + 1:] = True
    return mask


class LatentGenerator(nn.Module):
    """Velocity model v(x_t, t, label[, source]) over (B, C, g, g) latents."""

    def __init__(self, channels: int, grid: int, width: int = 96, depth: int = 3, heads: int = 4,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.channels, self.grid, self.num_classes = channels, grid, num_classes
        self.inp = nn.Linear(channels, width)
        self.src_inp = nn.Linear(channels, width)
        self.register_buffer("pos", sincos_2d(grid, width), persistent=False)
        self.segment = nn.Embedding(3, width)  # 0 source latent, 1 instruction, 2 noisy latent
        self.label = nn.Embedding(num_classes + 1, width)  # the last id is the null label of CFG
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, channels)
        nn.init.zeros_(self.out.weight)  # start at v = 0, as DiT's zero-initialised final layer
        nn.init.zeros_(self.out.bias)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                source: torch.Tensor | None = None) -> torch.Tensor:
        width = self.pos.shape[1]
        noisy = self.inp(grid_to_tokens(x_t)) + self.pos + self.segment.weight[2]
        instr = (self.label(labels) + self.segment.weight[1]).unsqueeze(1)
        parts = [instr, noisy]
        if source is not None:
            parts.insert(0, self.src_inp(grid_to_tokens(source)) + self.pos + self.segment.weight[0])
        seq = torch.cat(parts, dim=1)
        seq = seq + self.time(sinusoidal_embedding(t * 1000.0, width)).unsqueeze(1)
        n_source = 0 if source is None else source.shape[-1] * source.shape[-2]
        mask = attention_mask(n_source, noisy.shape[1]).to(seq.device)
        h = self.norm(self.blocks(seq, mask=mask))
        return tokens_to_grid(self.out(h[:, -noisy.shape[1]:]))


def flow_loss(model: LatentGenerator, x0: torch.Tensor, labels: torch.Tensor, shift: float,
              logit_mean: float, logit_std: float, generator: torch.Generator,
              source: torch.Tensor | None = None) -> torch.Tensor:
    """Rectified-flow MSE: t ~ shift(logit-normal), x_t = (1 - t) x0 + t eps, target eps - x0."""
    t = shift_time(logit_normal_t(x0.shape[0], logit_mean, logit_std, generator, x0.device), shift)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device)
    pred = model(interpolate(x0, eps, t), t, labels, source)
    return F.mse_loss(pred, velocity_target(x0, eps))


def train_generator(model: LatentGenerator, latents: torch.Tensor, labels: torch.Tensor, steps: int, batch: int,
                    lr: float, shift: float, label_dropout: float, logit_mean: float, logit_std: float,
                    generator: torch.Generator, sources: torch.Tensor | None = None, show_progress: bool = True,
                    desc: str = "ps_vae: latent generator") -> list[float]:
    """Train on (already normalised) latents; ``sources`` pairs each target with a clean source (editing)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i / steps, 1.0))))
    losses = []
    for _ in progress(range(steps), desc, show_progress):
        idx = torch.randint(0, len(latents), (batch,), generator=generator)
        y = labels[idx].clone()
        drop = torch.rand(batch, generator=generator) < label_dropout
        y[drop] = model.null_label
        src = None if sources is None else sources[idx]
        loss = flow_loss(model, latents[idx], y, shift, logit_mean, logit_std, generator, src)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def sample_latents(model: LatentGenerator, labels: torch.Tensor, steps: int, shift: float, cfg_scale: float,
                   generator: torch.Generator, source: torch.Tensor | None = None) -> torch.Tensor:
    """Euler sampling from t = 1 to 0 on the shifted grid; CFG v = v_null + w (v_label - v_null)."""
    model.eval()
    noise = torch.randn(len(labels), model.channels, model.grid, model.grid, generator=generator)
    null = torch.full_like(labels, model.null_label)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_c = model(x, t, labels, source)
        if cfg_scale == 1.0:
            return v_c
        v_u = model(x, t, null, source)
        return v_u + cfg_scale * (v_c - v_u)

    return euler_sample(velocity, noise, steps, shift)
