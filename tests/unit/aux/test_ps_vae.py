"""aux.ps_vae: math against float64 references, lazy-fake guards, loaders and config errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from workers.aux.ps_vae.autoencoder import PsVae, load_ps_vae
from workers.aux.ps_vae.config import PsVaeConfig
from workers.aux.ps_vae.encoders import RepresentationEncoder, load_representation_encoder
from workers.aux.ps_vae.flow import (
    euler_sample,
    interpolate,
    off_manifold_velocity,
    shift_factor,
    shift_time,
    velocity_target,
)
from workers.aux.ps_vae.generator import LatentGenerator, attention_mask, sample_latents
from workers.aux.ps_vae.objectives import kl_loss, semantic_loss
from workers.aux.ps_vae.toy import random_orthonormal, top_fraction_nn_distance
from workers.aux.ps_vae.training import (
    LossWeights,
    parameter_fingerprint,
    stage1_losses,
    stage2_losses,
    train_stage1,
    train_stage2,
)


def _tiny_vit(image_size: int = 8, patch: int = 4, hidden: int = 16, layers: int = 2):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=image_size, patch_size=patch, num_channels=1, hidden_size=hidden,
                    num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden)
    return RepresentationEncoder(ViTModel(cfg, add_pooling_layer=False), "vit", [0.5], [0.5])


def _tiny_ps_vae() -> PsVae:
    torch.manual_seed(1)
    return PsVae(_tiny_vit(), latent_channels=3, semantic_blocks=1, mlp_hidden=8, pixel_stride=4, pixel_channels=8)


def _images(n: int = 4, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1


# ---------------------------------------------------------------- math vs float64 references

def test_semantic_loss_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    an, bn = a.double().numpy(), b.double().numpy()
    ref = []
    for i in range(3):
        for j in range(5):
            u, v = an[i, j], bn[i, j]
            ref.append(np.mean((u - v) ** 2) + 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    assert semantic_loss(a.double(), b.double()).item() == pytest.approx(np.mean(ref), rel=1e-12)


def test_kl_loss_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, 2, 2, generator=g).double(), torch.randn(4, 3, 2, 2, generator=g).double()
    post = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(post, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    assert kl_loss(mu, logvar).item() == pytest.approx(ref.item(), rel=1e-12)


def test_shift_rule_values_of_the_paper():
    assert shift_factor(16, 2) == pytest.approx(2.0)  # Flux VAE
    assert shift_factor(768, 1) == pytest.approx(6.928, abs=1e-3)  # DINOv2-B
    assert shift_factor(96, 1) == pytest.approx(math.sqrt(96 / 16))  # PS-VAE 96c
    with pytest.raises(ValueError):
        shift_factor(0, 1)


def test_shift_time_matches_reference_and_identity():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for s in (0.5, 2.0, 6.93):
        ref = [s * x / (1 + (s - 1) * x) for x in t.tolist()]
        assert torch.allclose(shift_time(t, s), torch.tensor(ref, dtype=torch.float64), atol=1e-15)
    assert shift_time(t, 1.0) is t  # unshifted run = plain schedule, bit for bit


def _gauss_velocity(mean: np.ndarray, cov: np.ndarray, x: np.ndarray, t: float) -> np.ndarray:
    """Exact E[eps - x0 | x_t] for x0 ~ N(mean, cov), x_t = (1-t) x0 + t eps, by Gaussian conditioning."""
    cxx = (1 - t) ** 2 * cov + t**2 * np.eye(len(mean))
    ex0 = mean + ((1 - t) * cov @ np.linalg.solve(cxx, (x - (1 - t) * mean).T)).T
    return (x - ex0) / t


def test_off_manifold_velocity_matches_ambient_gaussian_reference():
    g = torch.Generator().manual_seed(0)
    q = random_orthonormal(8, 2, g).double()
    m = np.array([0.5, -1.0])
    a = np.array([[1.0, 0.3], [0.0, 0.5]])
    s2 = a @ a.T
    qn = q.numpy()
    x_t = torch.randn(6, 8, generator=g, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        tt = torch.full((6,), t, dtype=torch.float64)
        got = off_manifold_velocity(lambda z, tz: torch.from_numpy(_gauss_velocity(m, s2, z.numpy(), float(tz[0]))),
                                    q, x_t, tt)
        ref = _gauss_velocity(qn @ m, qn @ s2 @ qn.T, x_t.numpy(), t)  # direct 8-D computation
        assert np.allclose(got.numpy(), ref, atol=1e-9)


def test_euler_is_exact_for_a_point_mass():
    c = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # The optimal velocity for x0 = c is (x - c) / t; Euler on it lands on c for any grid (shifted too).
    out = euler_sample(lambda x, t: (x - c) / t.reshape(-1, 1), noise, steps=4, s=3.0)
    assert torch.allclose(out, c.expand(5, 2), atol=1e-12)
    x0, eps, t = torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([0.25, 1.0])
    assert torch.allclose(interpolate(x0, eps, t), torch.tensor([[0.75] * 3, [0.0] * 3]))
    assert torch.equal(velocity_target(x0, eps), -x0)


def test_top_fraction_nn_distance_matches_bruteforce():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 2, generator=g), torch.randn(30, 2, generator=g)
    d = np.array([min(np.linalg.norm(p - r) for r in b.double().numpy()) for p in a.double().numpy()])
    assert top_fraction_nn_distance(a, b, 0.1) == pytest.approx(np.sort(d)[-4:].mean(), rel=1e-9)
    q = random_orthonormal(8, 2, g)
    assert torch.allclose(q.T @ q, torch.eye(2), atol=1e-6)


# ---------------------------------------------------------------- guards against the brief's lazy fakes

def test_semantic_encoder_and_decoder_inherit_the_encoders_blocks():
    model = _tiny_ps_vae()
    last = model.rep.blocks[-1].state_dict()
    for copy_block in (model.sem_enc.blocks[0], model.sem_dec.blocks[0]):
        assert copy_block is not model.rep.blocks[-1]
        assert all(torch.equal(v, last[k]) for k, v in copy_block.state_dict().items())


def test_stage1_freezes_encoder_and_detaches_pixel_decoder_input():
    model = _tiny_ps_vae()
    weights = LossWeights(kl=1e-3)
    losses = stage1_losses(model, _images(), weights, torch.Generator().manual_seed(0))
    losses["pixel"].backward()  # L_p alone must train D_p only
    assert all(p.grad is None or not p.grad.any() for p in model.sem_enc.parameters())
    assert all(p.grad is None for p in model.rep.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.pix_dec.parameters())
    before = parameter_fingerprint(model.rep)
    train_stage1(model, _images(8), 2, 4, 1e-2, weights, torch.Generator().manual_seed(0), show_progress=False)
    assert parameter_fingerprint(model.rep) == before


def test_stage2_unfreezes_encoder_and_keeps_a_frozen_target():
    model = _tiny_ps_vae()
    original = parameter_fingerprint(model.rep)
    frozen = copy.deepcopy(model.rep).requires_grad_(False)
    losses = stage2_losses(model, frozen, _images(), LossWeights(semantic=0.0), torch.Generator().manual_seed(0))
    losses["total"].backward()  # pixel loss alone reaches the encoder: no detach in stage 2
    assert any(p.grad is not None and p.grad.any() for p in model.rep.parameters())
    model.zero_grad()
    _, target = train_stage2(model, _images(8), 3, 4, 1e-2, 1e-2, LossWeights(), torch.Generator().manual_seed(0),
                             show_progress=False)
    assert parameter_fingerprint(model.rep) != original  # the encoder moved
    assert parameter_fingerprint(target) == original  # the semantic target did not
    assert not any(p.requires_grad for p in target.parameters())


def test_stage2_with_zero_steps_is_stage1_bit_for_bit_and_ablation_changes_it():
    base = _tiny_ps_vae()
    same = copy.deepcopy(base)
    train_stage2(same, _images(8), 0, 4, 1e-2, 1e-2, LossWeights(), torch.Generator().manual_seed(0),
                 show_progress=False)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), same.state_dict().values(), strict=True))
    runs = {}
    for w_s in (1.0, 0.0):  # PS-VAE vs the P-VAE ablation, same seed and steps
        model = copy.deepcopy(base)
        train_stage2(model, _images(8), 3, 4, 1e-2, 1e-2, LossWeights(semantic=w_s),
                     torch.Generator().manual_seed(0), show_progress=False)
        runs[w_s] = parameter_fingerprint(model.rep)
    assert runs[1.0] != runs[0.0]


def test_latent_is_stochastic_and_kl_weight_enters_the_loss():
    model = _tiny_ps_vae()
    x = _images()
    a = stage1_losses(model, x, LossWeights(kl=0.0), torch.Generator().manual_seed(0))
    b = stage1_losses(model, x, LossWeights(kl=1.0), torch.Generator().manual_seed(0))
    assert a["kl"].item() > 0
    assert b["total"].item() == pytest.approx(a["total"].item() + a["kl"].item(), rel=1e-5)
    c = stage1_losses(model, x, LossWeights(kl=0.0), torch.Generator().manual_seed(1))
    assert c["semantic"].item() != a["semantic"].item()  # reparameterised sample, not the mean


def test_generator_mask_editing_source_and_cfg_identity():
    mask = attention_mask(4, 4)
    assert mask[4, 5:].all() and not mask[4, :5].any()  # instruction is causal
    assert not mask[5:].any() and not mask[:4].any()  # latents see everything
    torch.manual_seed(0)
    gen = LatentGenerator(3, 2, width=16, depth=1, heads=2)
    torch.nn.init.normal_(gen.out.weight)
    x, t, y = torch.randn(2, 3, 2, 2), torch.tensor([0.3, 0.7]), torch.tensor([1, 2])
    assert not torch.allclose(gen(x, t, y), gen(x, t, y, source=torch.randn(2, 3, 2, 2)))
    z1 = sample_latents(gen, y, 2, 1.0, 1.0, torch.Generator().manual_seed(0))
    z2 = sample_latents(gen, y, 2, 1.0, 3.0, torch.Generator().manual_seed(0))
    assert z1.shape == (2, 3, 2, 2) and not torch.allclose(z1, z2)


def test_edit_ops_are_distinct_bijections():
    from workers.aux.ps_vae.ladder import EDIT_OPS

    x = _images(2, 8)
    outs = [op(x) for op in EDIT_OPS.values()]
    for out in outs:
        assert out.shape == x.shape and not torch.equal(out, x)
        assert torch.equal(out.flatten(1).abs().sort(1).values, x.flatten(1).abs().sort(1).values)
    assert all(not torch.equal(a, b) for i, a in enumerate(outs) for b in outs[i + 1:])


# ---------------------------------------------------------------- loaders

def test_dinov2_loader_paper_scale_latent_shape(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             image_size=28, patch_size=14)).save_pretrained(tmp_path / "dino")
    rep = load_representation_encoder(tmp_path / "dino")
    assert rep.kind == "dinov2" and rep.in_channels == 3
    model = PsVae(rep, latent_channels=96, semantic_blocks=1, mlp_hidden=8, pixel_stride=16, pixel_channels=8)
    with torch.no_grad():
        mu, logvar = model.encode(torch.zeros(1, 1, 224, 224))
        assert mu.shape == logvar.shape == (1, 96, 16, 16)  # the paper's 96 x 16 x 16 latent
        assert model.decode_pixels(mu).shape == (1, 1, 256, 256)
        assert model.decode_semantic(mu).shape == (1, 256, 16)


def test_siglip2_loader_takes_vision_tower_of_full_checkpoint(tmp_path):
    from transformers import Siglip2Config, Siglip2Model, Siglip2TextConfig, Siglip2VisionConfig

    torch.manual_seed(0)
    cfg = Siglip2Config(
        text_config=Siglip2TextConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, vocab_size=64, bos_token_id=1, eos_token_id=2,
                                      pad_token_id=0).to_dict(),
        vision_config=Siglip2VisionConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=32, patch_size=4, num_patches=16).to_dict())
    full = Siglip2Model(cfg)
    full.save_pretrained(tmp_path / "siglip2")
    rep = load_representation_encoder(tmp_path / "siglip2")
    assert torch.equal(rep.model.embeddings.patch_embedding.weight, full.vision_model.embeddings.patch_embedding.weight)
    assert rep(_images(2, 16)).shape == (2, 16, 16) and len(rep.blocks) == 2


def test_loader_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)) as err:
        load_representation_encoder(tmp_path)
    assert "dinov2-base" in str(err.value)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="DINOv2, SigLIP2 or ViT"):
        load_representation_encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        load_ps_vae(tmp_path)


def test_ps_vae_save_and_load_roundtrip(tmp_path):
    model = _tiny_ps_vae().eval()
    model.save_pretrained(tmp_path / "psvae")
    loaded = load_ps_vae(tmp_path / "psvae")
    x = _images()
    with torch.no_grad():
        assert torch.equal(model.encode(x)[0], loaded.encode(x)[0])
        assert torch.equal(model.decode_pixels(model.encode(x)[0]), loaded.decode_pixels(loaded.encode(x)[0]))


# ---------------------------------------------------------------- config

def test_presets_and_defaults():
    quick = PsVaeConfig()
    assert PsVaeConfig.model_validate({"preset": "quick"}) == quick
    full = PsVaeConfig.model_validate({"preset": "full", "vae": {"stage1_steps": 7}})
    assert full.vae.stage1_steps == 7 and full.vae.stage2_steps == PsVaeConfig.PRESETS["full"]["vae"]["stage2_steps"]
    assert PsVaeConfig.model_validate({"preset": "smoke"}).encoder.layers == 2


@pytest.mark.parametrize(("data", "field"), [
    ({"vae": {"latent_channels": 0}}, "latent_channels"),
    ({"data": {"image_size": 20}}, "image_size"),
    ({"generator": {"shift": "auto"}}, "shift"),
    ({"vae": {"bogus": 1}}, "bogus"),
    ({"ladder": {"rungs": ["vq"]}}, "rungs"),
])
def test_config_rejects_bad_values(data, field):
    with pytest.raises(ValidationError, match=field):
        PsVaeConfig.model_validate(data)


@pytest.mark.parametrize(("data", "prefix"), [
    ({"encoder": {"hidden": 30, "heads": 4}}, "encoder.hidden"),
    ({"generator": {"width": 30, "heads": 4}}, "generator.width"),
    ({"encoder": {"patch_size": 3}}, "encoder.patch_size"),
    ({"vae": {"semantic_blocks": 5}}, "vae.semantic_blocks"),
    ({"vae": {"pixel_stride": 3}}, "vae.pixel_stride"),
    ({"vae": {"pixel_stride": 2}}, "vae.pixel_stride"),
    ({"ladder": {"rungs": ["rae", "rae"]}}, "ladder.rungs"),
])
def test_cross_field_errors_start_with_the_field(data, prefix):
    with pytest.raises(ValidationError) as err:
        PsVaeConfig.model_validate(data)
    assert err.value.errors()[0]["msg"].removeprefix("Value error, ").startswith(prefix)
