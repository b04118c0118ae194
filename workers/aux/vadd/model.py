"""VADD's networks: the latent-conditioned denoiser mu_theta(x_t, z, t) and the recognition model
r_phi(z | x_0, M_t) (VADD Sec. 3; the official repo's GenDIT and InferDIT).

Shape legend: B batch, L tokens, V data vocabulary (the MASK id is V), D width, Z latent dimension.

- The denoiser is ``MaskedTransformer`` with AdaLN: the condition is emb(t) + W z, fed to every norm (z enters
  "through AdaLN before attention and before the FFN in each block"). With ``latent_dim=0`` the very same
  network, minus W, is the MDLM baseline. Its output is MDLM's SUBS parameterisation: the MASK class gets
  probability 0.
- The recognition model reads the clean x_0 and the mask pattern M_t: a learnable vector R_phi conditions
  (AdaLN) the masked positions and another one the unmasked positions, then a mean-pooled head gives
  (m, log sigma^2) of a diagonal Gaussian. It must see M_t: with x_0 alone the posterior collapses (paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workers.aux.common.masked_diffusion import Block, MaskedTransformer, TransformerSpec, sinusoidal_time


@dataclass(frozen=True)
class VaddSpec:
    """Sizes of the denoiser (and, for latent_dim > 0, of the recognition model)."""

    vocab_size: int  # data tokens; the MASK id is vocab_size
    seq_len: int
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    latent_dim: int = 8  # 0: MDLM (no z)
    enc_layers: int = 1
    time_dim: int = 64

    @property
    def mask_id(self) -> int:
        return self.vocab_size


class Denoiser(nn.Module):
    """mu_theta(x_t, z, t): logits [B, L, V] of x_0 (the MASK class excluded: SUBS)."""

    def __init__(self, spec: VaddSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = MaskedTransformer(TransformerSpec(
            vocab_size=spec.vocab_size + 1, dim=spec.dim, n_layers=spec.n_layers, n_heads=spec.n_heads,
            cond_dim=spec.dim))
        self.time_mlp = nn.Sequential(nn.Linear(spec.time_dim, spec.dim), nn.SiLU(), nn.Linear(spec.dim, spec.dim))
        self.z_proj = nn.Linear(spec.latent_dim, spec.dim) if spec.latent_dim else None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.time_mlp(sinusoidal_time(t, self.spec.time_dim))
        if self.z_proj is not None:
            if z is None:
                raise ValueError("a VADD denoiser (latent_dim > 0) needs z; draw it from the prior N(0, I)")
            cond = cond + self.z_proj(z)
        logits = self.backbone(x_t, cond=cond).logits
        return logits[..., : self.spec.vocab_size]

    def probs(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return torch.softmax(self(x_t, t, z).float(), dim=-1)


class Recognition(nn.Module):
    """r_phi(z | x_0, M_t) = N(m, diag sigma^2): reads the clean tokens and which of them x_t masks."""

    def __init__(self, spec: VaddSpec) -> None:
        super().__init__()
        if spec.latent_dim <= 0:
            raise ValueError("the recognition model needs latent_dim > 0")
        self.spec = spec
        tspec = TransformerSpec(vocab_size=spec.vocab_size, dim=spec.dim, n_layers=spec.enc_layers,
                                n_heads=spec.n_heads, cond_dim=spec.dim)
        self.wte = nn.Embedding(spec.vocab_size, spec.dim)
        self.mask_vec = nn.Parameter(torch.randn(spec.dim) * 0.5)  # R_phi: the condition of masked positions
        self.keep_vec = nn.Parameter(torch.zeros(spec.dim))
        self.blocks = nn.ModuleList(Block(tspec) for _ in range(spec.enc_layers))
        for block in self.blocks:  # unlike the denoiser's, this AdaLN must see M_t from the first step
            nn.init.normal_(block.attn_ada.proj.weight, std=0.02)
            nn.init.normal_(block.ff_ada.proj.weight, std=0.02)
        self.norm = nn.RMSNorm(spec.dim)
        self.head = nn.Linear(spec.dim, 2 * spec.latent_dim)

    def forward(self, x0: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [B, Z], log variance [B, Z])."""
        h = self.wte(x0)
        cond = torch.where(masked[..., None], self.mask_vec, self.keep_vec)  # [B, L, D]: per-position AdaLN
        for block in self.blocks:
            h, _ = block(h, 0, None, False, cond)
        mean, logvar = self.head(self.norm(h).mean(dim=1)).chunk(2, dim=-1)
        return mean, logvar.clamp(-12.0, 6.0)


def build_models(spec: VaddSpec, seed: int) -> tuple[Denoiser, Recognition | None]:
    """Denoiser (and recognition model when latent_dim > 0), initialised from ``seed``.

    The backbone is built first from the same seed for MDLM and VADD, so both start from identical weights.
    """
    torch.manual_seed(seed)  # nn.Module init draws from the global RNG; pin it
    den = Denoiser(spec)
    rec = Recognition(spec) if spec.latent_dim else None
    return den, rec
