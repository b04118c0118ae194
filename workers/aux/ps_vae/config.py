"""Config of aux.ps_vae: PS-VAE (Zhang et al., arXiv 2512.17909) at digits scale.

Sections: ``data`` (images), ``encoder`` (the locally trained ViT that plays DINOv2), ``vae`` (the
semantic encoder/decoder, KL latent and pixel decoder; both training stages), ``generator`` (the
class-conditional rectified-flow model trained in each latent space), ``toy`` (the off-manifold toy of
Section 3.2) and ``ladder`` (which rungs of RAE -> S-VAE -> P-VAE -> PS-VAE run, over which seeds).
Field defaults equal the ``quick`` preset. Pydantic only (no torch import).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel

Rung = Literal["rae", "s_vae", "p_vae", "ps_vae"]


class DataSection(StrictModel):
    image_size: Literal[16, 32] = Field(16, description="Digits are resized from 8x8 to this many pixels.")


class EncoderSection(StrictModel):
    hidden: int = Field(64, ge=8, description="Width of the local ViT (DINOv2-B: 768).")
    layers: int = Field(4, ge=1, le=24, description="Transformer blocks of the local ViT.")
    heads: int = Field(4, ge=1, description="Attention heads of the local ViT.")
    patch_size: int = Field(4, ge=1, description="ViT patch size: the latent grid is image_size / patch_size.")
    epochs: int = Field(5, ge=1, description="Supervised 10-way epochs that train the ViT before it is frozen.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the ViT pre-training.")


class VaeSection(StrictModel):
    latent_channels: int = Field(8, ge=1, description="Channels C of the KL latent f_l (paper: 96).")
    semantic_blocks: int = Field(2, ge=1, description="Blocks copied from the end of the encoder into E_s and "
                                 "into D_s (paper: 3).")
    mlp_hidden: int = Field(128, ge=4, description="Hidden width of the MLP projections of E_s and D_s.")
    pixel_stride: int = Field(4, ge=1, description="Upsampling factor of the pixel decoder D_p, a power of 2 "
                              "(paper: 16, 16x16 latent -> 256 px).")
    pixel_channels: int = Field(32, ge=8, description="Base width of the conv pixel decoder.")
    kl_weight: float = Field(1e-3, ge=0, description="beta of L_KL (summed over latent elements, batch mean).")
    semantic_weight: float = Field(1.0, ge=0, description="w_s of L_s in stage 2 (paper Sec. 4.1: 1).")
    pixel_weight: float = Field(0.1, ge=0, description="w_p of L_p in stage 2 (paper Sec. 4.1: 0.1).")
    pvae_pixel_weight: float = Field(1.0, ge=0, description="w_p of the P-VAE ablation (stage 2 with w_s = 0): "
                                     "pixel loss only, at unit weight as in an LDM VAE.")
    pixel_l2: float = Field(1.0, ge=0, description="Weight of the MSE term added to L1 in L_p (stand-in for LPIPS).")
    stage1_steps: int = Field(80, ge=0, description="Stage-1 (S-VAE, encoder frozen) optimizer steps.")
    stage2_steps: int = Field(80, ge=0, description="Stage-2 (encoder unfrozen) optimizer steps.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of E_s, D_s, D_p.")
    encoder_lr: float = Field(5e-4, gt=0, description="Learning rate of the unfrozen encoder in stage 2 "
                              "(paper: 1e-4 everywhere).")
    batch_size: int = Field(32, ge=2, description="Images per autoencoder step.")


class GeneratorSection(StrictModel):
    width: int = Field(64, ge=8, description="Token width of the latent transformer.")
    depth: int = Field(2, ge=1, description="Transformer blocks of the latent generator.")
    heads: int = Field(4, ge=1, description="Attention heads of the latent generator.")
    steps: int = Field(150, ge=1, description="Rectified-flow training steps, the same for every rung.")
    batch_size: int = Field(128, ge=2, description="Latents per generator step.")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate of the generator.")
    label_dropout: float = Field(0.1, ge=0, lt=1, description="Probability of the null class (enables CFG).")
    logit_mean: float = Field(0.0, description="Mean of the logit-normal t before the shift.")
    logit_std: float = Field(1.0, gt=0, description="Std of the logit-normal t before the shift.")
    shift: Literal["rule", "none"] = Field("rule", description="rule: s = sqrt(C P^2 / (C_base P_base^2)) of "
                                           "the space; none: s = 1 (ablation).")
    shift_base_channels: int = Field(16, ge=1, description="C_base of the shift rule (paper: 16, Flux VAE).")
    sample_steps: int = Field(25, ge=1, description="Euler steps of sampling (paper: 50).")
    cfg_scale: float = Field(2.0, ge=1, description="Classifier-free guidance scale (paper: 6.5); 1 = off.")
    samples_per_class: int = Field(20, ge=2, description="Generated samples per digit class for the metrics.")


class ToySection(StrictModel):
    enabled: bool = Field(True, description="Run the off-manifold toy (paper Sec. 3.2, Fig. 3).")
    ambient_dim: int = Field(8, ge=3, description="h: the 2-D data is embedded as x = Q z, Q in R^{h x 2}.")
    hidden: int = Field(256, ge=8, description="Width of the MLP velocity model (paper: 256).")
    steps: int = Field(400, ge=1, description="Training steps per arm (equal for all arms).")
    batch_size: int = Field(256, ge=2, description="Points per toy step.")
    samples: int = Field(1000, ge=20, description="Generated points per arm.")
    sample_steps: int = Field(50, ge=1, description="Euler steps of toy sampling.")
    vae_steps: int = Field(400, ge=1, description="Steps of the width-2 KL-VAE of the third arm.")
    vae_kl_weight: float = Field(1e-3, ge=0, description="beta of the toy KL-VAE.")


class LadderSection(StrictModel):
    rungs: list[Rung] = Field(["rae", "s_vae", "p_vae", "ps_vae"], description="Latent spaces to compare.")
    seeds: int = Field(1, ge=1, le=10, description="Independent seeds (config.seed, +1, ...): encoder, "
                       "autoencoders and generators are retrained per seed.")
    generate: bool = Field(True, description="Train a latent generator per rung and score its samples.")
    edit: bool = Field(True, description="Also train an editing generator per rung ([source | instruction | "
                       "noisy]) on synthetic edits (flips, rotation, inversion) and score it against the true edit (needs ladder.generate).")
    edit_samples: int = Field(100, ge=4, description="Held-out source images edited per rung.")
    probe_max_iter: int = Field(500, ge=1, description="L-BFGS iterations of the linear probe (logistic regression).")


class PsVaeConfig(AuxConfig):
    """aux.ps_vae: the off-manifold toy and the RAE -> S-VAE -> P-VAE -> PS-VAE ladder on digits."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {
            "encoder": {"hidden": 32, "layers": 2, "heads": 2, "epochs": 1},
            "vae": {"semantic_blocks": 1, "mlp_hidden": 32, "pixel_channels": 16, "stage1_steps": 3,
                    "stage2_steps": 3, "batch_size": 16},
            "generator": {"width": 32, "depth": 1, "heads": 2, "steps": 3, "batch_size": 16, "sample_steps": 2,
                          "samples_per_class": 2},
            "toy": {"hidden": 32, "steps": 3, "samples": 40, "sample_steps": 2, "vae_steps": 3},
            "ladder": {"probe_max_iter": 20, "edit_samples": 8},
        },
        "quick": {},
        "full": {
            "encoder": {"epochs": 15},
            "vae": {"stage1_steps": 300, "stage2_steps": 300},
            "generator": {"depth": 3, "steps": 500, "samples_per_class": 50},
            "toy": {"steps": 3000, "vae_steps": 2000, "samples": 2000},
            "ladder": {"seeds": 5},  # the brief's five seeds (about 23 min on one CPU thread)
        },
    }

    data: DataSection = Field(DataSection(), description="Images.")
    encoder: EncoderSection = Field(EncoderSection(), description="The local representation encoder (ViT).")
    vae: VaeSection = Field(VaeSection(), description="The semantic-pixel autoencoder and its two stages.")
    generator: GeneratorSection = Field(GeneratorSection(), description="The latent class-to-image generator.")
    toy: ToySection = Field(ToySection(), description="The off-manifold toy.")
    ladder: LadderSection = Field(LadderSection(), description="Rungs and seeds of the ladder.")

    @model_validator(mode="after")
    def _cross_field(self) -> PsVaeConfig:
        enc, vae, gen = self.encoder, self.vae, self.generator
        if enc.hidden % enc.heads:
            raise ValueError(f"encoder.hidden ({enc.hidden}) must be divisible by encoder.heads ({enc.heads})")
        if gen.width % gen.heads:
            raise ValueError(f"generator.width ({gen.width}) must be divisible by generator.heads ({gen.heads})")
        if self.data.image_size % enc.patch_size:
            raise ValueError(f"encoder.patch_size ({enc.patch_size}) must divide data.image_size "
                             f"({self.data.image_size})")
        if vae.semantic_blocks > enc.layers:
            raise ValueError(f"vae.semantic_blocks ({vae.semantic_blocks}) must be <= encoder.layers "
                             f"({enc.layers}): E_s and D_s are copies of the encoder's last blocks")
        if vae.pixel_stride & (vae.pixel_stride - 1):
            raise ValueError(f"vae.pixel_stride must be a power of 2, got {vae.pixel_stride}")
        grid = self.data.image_size // enc.patch_size
        if grid * vae.pixel_stride != self.data.image_size:
            raise ValueError(f"vae.pixel_stride ({vae.pixel_stride}) must map the {grid}x{grid} latent grid back "
                             f"to data.image_size ({self.data.image_size}); use {self.data.image_size // grid}")
        if len(set(self.ladder.rungs)) != len(self.ladder.rungs) or not self.ladder.rungs:
            raise ValueError(f"ladder.rungs must be non-empty and without repeats, got {self.ladder.rungs}")
        return self

