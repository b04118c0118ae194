"""The semantic-pixel autoencoder of PS-VAE (paper Sec. 3.3, Fig. 4) and the RAE baseline.

Shapes: images (B, c, H, W) in [-1, 1]; encoder tokens f_h (B, N, D) with N = g * g; latents are
spatial, (B, C, g, g): (B, 96, 16, 16) for DINOv2-B/14 at 224 px with 96 channels, the paper's setting.

- ``SemanticEncoder`` E_s: copies of the encoder's last k blocks + its final norm + an MLP to (mu, logvar);
- ``SemanticDecoder`` D_s: an MLP from C back to D + copies of the same k blocks + the final norm;
- ``PixelDecoder`` D_p: a small LDM-style conv decoder, latent grid -> pixels (x ``stride``);
- ``PsVae`` bundles E_rep, E_s, D_s, D_p; ``Rae`` is E_rep (frozen) + D_p on the raw features.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from torch import nn

from workers.aux.ps_vae.encoders import RepresentationEncoder, _call_block, load_representation_encoder


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, C, g, g) for a square token grid."""
    b, n, c = tokens.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"expected a square token grid, got {n} tokens")
    return tokens.transpose(1, 2).reshape(b, c, g, g)


def grid_to_tokens(grid: torch.Tensor) -> torch.Tensor:
    """(B, C, g, g) -> (B, N, C)."""
    return grid.flatten(2).transpose(1, 2)


class SemanticEncoder(nn.Module):
    """E_s: k transformer blocks inherited from E_rep, its final norm, then an MLP to 2C (mu, log sigma^2)."""

    def __init__(self, rep: RepresentationEncoder, blocks: int, latent_channels: int, mlp_hidden: int) -> None:
        super().__init__()
        self.blocks = copy.deepcopy(rep.blocks[-blocks:])
        self.norm = copy.deepcopy(rep.final_norm)
        self.proj = nn.Sequential(nn.Linear(rep.hidden, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, 2 * latent_channels))

    def forward(self, f_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = f_h
        for block in self.blocks:
            h = _call_block(block, h)
        mu, logvar = self.proj(self.norm(h)).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)  # the LDM clamp: keeps exp(logvar) finite early in training


class SemanticDecoder(nn.Module):
    """D_s: an MLP from C to D, then k blocks inherited from E_rep and its final norm -> f_h''."""

    def __init__(self, rep: RepresentationEncoder, blocks: int, latent_channels: int, mlp_hidden: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(latent_channels, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, rep.hidden))
        self.blocks = copy.deepcopy(rep.blocks[-blocks:])
        self.norm = copy.deepcopy(rep.final_norm)

    def forward(self, f_l: torch.Tensor) -> torch.Tensor:
        h = self.proj(f_l)
        for block in self.blocks:
            h = _call_block(block, h)
        return self.norm(h)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = math.gcd(8, channels)
        self.body = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelDecoder(nn.Module):
    """D_p: conv in, a residual block per scale, ``log2(stride)`` nearest x2 upsamplings, conv out (LDM-style)."""

    def __init__(self, in_channels: int, out_channels: int = 1, base: int = 64, stride: int = 4) -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"pixel decoder stride must be a power of 2, got {stride}")
        self.stride = stride
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base, 3, padding=1), _ResBlock(base)]
        for _ in range(int(math.log2(stride))):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(base, base, 3, padding=1), _ResBlock(base)]
        layers += [nn.GroupNorm(math.gcd(8, base), base), nn.SiLU(), nn.Conv2d(base, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)


class PsVae(nn.Module):
    """E_rep + E_s + D_s + D_p. ``encode`` gives the Gaussian posterior of the compact latent f_l."""

    def __init__(self, rep: RepresentationEncoder, latent_channels: int = 96, semantic_blocks: int = 3,
                 mlp_hidden: int = 1024, pixel_stride: int = 16, pixel_channels: int = 128,
                 out_channels: int = 1) -> None:
        super().__init__()
        if semantic_blocks > len(rep.blocks):
            raise ValueError(f"semantic_blocks={semantic_blocks} but the encoder has only {len(rep.blocks)} blocks")
        self.rep = rep
        self.arch = {"latent_channels": latent_channels, "semantic_blocks": semantic_blocks, "mlp_hidden": mlp_hidden,
                     "pixel_stride": pixel_stride, "pixel_channels": pixel_channels, "out_channels": out_channels}
        self.sem_enc = SemanticEncoder(rep, semantic_blocks, latent_channels, mlp_hidden)
        self.sem_dec = SemanticDecoder(rep, semantic_blocks, latent_channels, mlp_hidden)
        self.pix_dec = PixelDecoder(latent_channels, out_channels, pixel_channels, pixel_stride)

    @property
    def latent_channels(self) -> int:
        return int(self.arch["latent_channels"])

    def posterior(self, f_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) as (B, C, g, g) from encoder tokens."""
        mu, logvar = self.sem_enc(f_h)
        return tokens_to_grid(mu), tokens_to_grid(logvar)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.posterior(self.rep(images))

    def decode_semantic(self, latent: torch.Tensor) -> torch.Tensor:
        """f_h'' (B, N, D) from a spatial latent."""
        return self.sem_dec(grid_to_tokens(latent))

    def decode_pixels(self, latent: torch.Tensor) -> torch.Tensor:
        return self.pix_dec(latent)

    def save_pretrained(self, path: str | Path) -> Path:
        """``encoder/`` (transformers layout), ``ps_vae.json`` (architecture) and ``heads.pt`` (E_s, D_s, D_p)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.rep.model.save_pretrained(path / "encoder")
        norm = {"image_mean": self.rep.mean.flatten().tolist(), "image_std": self.rep.std.flatten().tolist()}
        (path / "encoder" / "preprocessor_config.json").write_text(json.dumps(norm) + "\n")
        (path / "ps_vae.json").write_text(json.dumps(self.arch, indent=2) + "\n")
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith("rep.")}
        torch.save(heads, path / "heads.pt")
        return path


def load_ps_vae(path: str | Path, device: torch.device | str = "cpu") -> PsVae:
    """A PS-VAE saved by ``PsVae.save_pretrained`` (no published PS-VAE checkpoints exist to load)."""
    path = Path(path)
    if not (path / "ps_vae.json").exists() or not (path / "heads.pt").exists():
        raise FileNotFoundError(f"{path} is not a PS-VAE directory (expected ps_vae.json, heads.pt and encoder/); "
                                "write one with PsVae.save_pretrained(dir), or load a bare DINOv2/SigLIP2 encoder "
                                "with load_representation_encoder(dir)")
    rep = load_representation_encoder(path / "encoder", device)
    model = PsVae(rep, **json.loads((path / "ps_vae.json").read_text()))
    missing, unexpected = model.load_state_dict(torch.load(path / "heads.pt", weights_only=True, map_location=device),
                                                strict=False)
    missing = [k for k in missing if not k.startswith("rep.")]
    if missing or unexpected:
        raise ValueError(f"{path / 'heads.pt'} does not match ps_vae.json: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval()


class Rae(nn.Module):
    """The RAE baseline: the frozen encoder's raw tokens are the latent (D channels), D_p decodes them."""

    def __init__(self, rep: RepresentationEncoder, pixel_stride: int, pixel_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        self.rep = rep
        self.pix_dec = PixelDecoder(rep.hidden, out_channels, pixel_channels, pixel_stride)

    @property
    def latent_channels(self) -> int:
        return self.rep.hidden

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return tokens_to_grid(self.rep(images)), None

    def decode_pixels(self, latent: torch.Tensor) -> torch.Tensor:
        return self.pix_dec(latent)
