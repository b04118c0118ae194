"""The control adapter phi of NCT: a ControlNet-style branch on a frozen one-step generator.

Shape legend: B batch, C channels, H x W image size.

ControlNet (Zhang et al. 2023) at small scale, hand-written because diffusers' ``ControlNetModel``
targets ``UNet2DConditionModel`` while our one-step generator is a ``UNet2DModel`` (brief section 6):

- a trainable copy of the generator's encoder (conv_in, down blocks, mid block), initialised from the
  frozen weights as the ControlNet paper does;
- a hint encoder that maps the condition map to conv_in's width, whose last conv is zero-initialised
  and whose output is added after conv_in;
- one zero-initialised 1x1 conv per skip connection and one for the mid block, whose outputs are
  added to the frozen generator's skips and mid output.

With the zero convs at zero, f_{theta,phi}(z, c) = f_theta(z) exactly (the identity guard test).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from workers.aux.common.one_step import OneStepGenerator


def _check_plain_unet(unet) -> None:
    """Only the plain UNet2DModel layout (no skip_conv blocks, class or Fourier embedding) is supported."""
    cfg = unet.config
    if cfg.time_embedding_type != "positional" or cfg.class_embed_type is not None or cfg.center_input_sample:
        raise ValueError("the NCT adapter supports a UNet2DModel with positional time embedding, no class "
                         "embedding and center_input_sample=False")
    if any(hasattr(b, "skip_conv") for b in [*unet.down_blocks, *unet.up_blocks]):
        raise ValueError("the NCT adapter does not support skip-type (SkipDownBlock2D/SkipUpBlock2D) blocks")


def _time_embedding(unet, timestep: int, batch: int, ref: torch.Tensor) -> torch.Tensor:
    t = torch.full((batch,), timestep, dtype=torch.long, device=ref.device)
    return unet.time_embedding(unet.time_proj(t).to(dtype=ref.dtype))


def unet_forward_with_residuals(unet, sample_BCHW: torch.Tensor, timestep: int,
                                down_residuals: tuple[torch.Tensor, ...] | None = None,
                                mid_residual: torch.Tensor | None = None) -> torch.Tensor:
    """``UNet2DModel.forward`` for the plain layout, adding ControlNet residuals to the skips and mid output.

    This is the ``down_block_additional_residuals`` / ``mid_block_additional_residual`` hook that
    diffusers gives ``UNet2DConditionModel`` but not ``UNet2DModel``; with no residuals it computes
    the same ops in the same order as ``unet(sample, timestep).sample``.
    """
    emb = _time_embedding(unet, timestep, sample_BCHW.shape[0], sample_BCHW)
    h = unet.conv_in(sample_BCHW)
    skips: tuple[torch.Tensor, ...] = (h,)
    for block in unet.down_blocks:
        h, res = block(hidden_states=h, temb=emb)
        skips += res
    if down_residuals is not None:
        if len(down_residuals) != len(skips):
            raise ValueError(f"expected {len(skips)} down residuals, got {len(down_residuals)}")
        skips = tuple(s + r for s, r in zip(skips, down_residuals, strict=True))
    if unet.mid_block is not None:
        h = unet.mid_block(h, emb)
    if mid_residual is not None:
        h = h + mid_residual
    for block in unet.up_blocks:
        res, skips = skips[-len(block.resnets):], skips[:-len(block.resnets)]
        h = block(h, res, emb)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlAdapter(nn.Module):
    """phi: (z, condition map) -> residuals for the frozen generator's skips and mid block."""

    def __init__(self, generator: OneStepGenerator, cond_channels: int, hint_width: int = 16) -> None:
        super().__init__()
        unet = generator.unet
        _check_plain_unet(unet)
        self.timestep = generator.timestep
        # the trainable copy of the encoder (ControlNet's initialisation); the time MLP is copied too
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.conv_in = copy.deepcopy(unet.conv_in)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        for p in self.parameters():
            p.requires_grad_(True)
        width = unet.config.block_out_channels[0]
        last = nn.Conv2d(hint_width, width, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.hint = nn.Sequential(nn.Conv2d(cond_channels, hint_width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(hint_width, hint_width, 3, padding=1), nn.SiLU(), last)
        skip_channels = [width]
        for block in unet.down_blocks:
            skip_channels += [r.out_channels for r in block.resnets]
            if block.downsamplers is not None:
                skip_channels.append(block.downsamplers[0].out_channels)
        self.zero_convs = nn.ModuleList(_zero_conv(ch) for ch in skip_channels)
        self.mid_zero_conv = _zero_conv(unet.config.block_out_channels[-1])

    def forward(self, z_BCHW: torch.Tensor, cond_map_BCHW: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        emb = _time_embedding(self, self.timestep, z_BCHW.shape[0], z_BCHW)
        h = self.conv_in(z_BCHW) + self.hint(cond_map_BCHW)
        feats: tuple[torch.Tensor, ...] = (h,)
        for block in self.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            feats += res
        h = self.mid_block(h, emb)
        down = tuple(conv(f) for conv, f in zip(self.zero_convs, feats, strict=True))
        return down, self.mid_zero_conv(h)


class ControlledGenerator(nn.Module):
    """f_{theta,phi}(z, c): the frozen one-step generator steered by the adapter (one forward pass)."""

    def __init__(self, generator: OneStepGenerator, adapter: ControlAdapter) -> None:
        super().__init__()
        self.generator = generator.eval().requires_grad_(False)  # f_theta stays frozen
        self.adapter = adapter

    def forward(self, z_BCHW: torch.Tensor, cond_map_BCHW: torch.Tensor) -> torch.Tensor:
        down, mid = self.adapter(z_BCHW, cond_map_BCHW)
        return unet_forward_with_residuals(self.generator.unet, z_BCHW, self.generator.timestep, down, mid)
