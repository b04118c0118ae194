"""aux.nct: the NCT losses vs float64 references, the lazy-fake guards, config errors and loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import ndimage

from workers.aux.common.nets import small_unet
from workers.aux.common.one_step import OneStepGenerator, load_one_step_generator, save_one_step_generator
from workers.aux.nct.adapter import ControlAdapter, ControlledGenerator, unet_forward_with_residuals
from workers.aux.nct.config import NctConfig, NctSection, TrainSection
from workers.aux.nct.controls import ConditionModel, layout, sobel_edges
from workers.aux.nct.evaluate import make_eval_set
from workers.aux.nct.experiment import param_hash
from workers.aux.nct.loader import load_adapter, load_sd_generator_with_controlnet, save_adapter
from workers.aux.nct.losses import (
    consistency_loss,
    couple_noise,
    distance,
    dual_update,
    sigma_grid,
)
from workers.aux.nct.train import nct_step_losses, train_adapter


def tiny_generator(seed: int = 0) -> OneStepGenerator:
    torch.manual_seed(seed)  # module init uses the global RNG
    unet = small_unet(8, channels=(8, 16))
    return OneStepGenerator(unet, timestep=999).eval().requires_grad_(False)


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- math vs float64 references -----------------------------------------------------------------

def test_couple_noise_matches_float64_vp_interpolation():
    z = torch.randn(5, 1, 4, 4, generator=g(0), dtype=torch.float64)
    eps = torch.randn(5, 1, 4, 4, generator=g(1), dtype=torch.float64)
    sig = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64)
    out = couple_noise(z, eps, sig).numpy()
    zn, en = z.numpy(), eps.numpy()
    for i, s in enumerate([0.0, 0.25, 0.5, 0.9, 1.0]):
        ref = np.sqrt(1.0 - s * s) * zn[i] + s * en[i]
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(out[0], zn[0])  # t_0: the coupled noise itself
    np.testing.assert_array_equal(out[-1], en[-1])  # t_N: independent of z


def test_sigma_grid_endpoints():
    s = sigma_grid(4, torch.float64)
    np.testing.assert_allclose(s.numpy(), [0.0, 0.25, 0.5, 0.75, 1.0])


def test_distances_match_float64_reference():
    a = torch.randn(3, 1, 4, 4, generator=g(2), dtype=torch.float64)
    b = torch.randn(3, 1, 4, 4, generator=g(3), dtype=torch.float64)
    mse = ((a.numpy() - b.numpy()) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(distance(a, b, "l2").numpy(), mse, rtol=1e-12)
    c = 0.03
    np.testing.assert_allclose(distance(a, b, "pseudo_huber", c).numpy(), np.sqrt(mse + c * c) - c, rtol=1e-12)


def test_dual_update_is_projected_ascent():
    assert dual_update(1.0, 0.5, 0.1, 2.0) == pytest.approx(1.8)
    assert dual_update(0.1, 0.0, 0.1, 2.0) == 0.0  # projected onto lambda >= 0
    assert dual_update(0.3, 0.1, 0.1, 5.0) == pytest.approx(0.3)  # at the constraint, lambda stays


class ScalarModel(torch.nn.Module):
    """f(z, c) = w z + c: small enough for a by-hand gradient; records what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.3, dtype=torch.float64))
        self.inputs: list[torch.Tensor] = []

    def forward(self, z, c):
        self.inputs.append(z.detach().clone())
        return self.w * z + c


def test_consistency_loss_uses_same_eps_and_stop_gradient():
    z = torch.randn(6, 1, 2, 2, generator=g(4), dtype=torch.float64)
    eps = torch.randn(6, 1, 2, 2, generator=g(5), dtype=torch.float64)
    c = torch.randn(6, 1, 2, 2, generator=g(6), dtype=torch.float64)
    level = torch.tensor([0, 1, 2, 3, 1, 2])
    sig = sigma_grid(4, torch.float64)
    model = ScalarModel()
    loss = consistency_loss(model, z, eps, c, level, sig)
    loss.backward()
    z_lo, z_hi = model.inputs
    # the same eps at both levels: solving each input for eps gives back the one eps (level 0 has sigma 0)
    for zi, s in ((z_hi, sig[level + 1]), (z_lo, sig[level])):
        s = s.view(-1, 1, 1, 1)
        rec = (zi - (1 - s ** 2).sqrt() * z) / s.clamp_min(1e-12)
        mask = s.view(-1) > 0
        np.testing.assert_allclose(rec[mask].numpy(), eps[mask].numpy(), atol=1e-12)
    # float64 by-hand gradient with the target held constant (sg): mean_b mean_pix 2 (w zh - w zl) zh
    w = 1.3
    zh, zl = z_hi.numpy(), z_lo.numpy()
    diff = w * zh - w * zl
    ref_loss = (diff ** 2).reshape(6, -1).mean(1).mean()
    ref_grad = (2 * diff * zh).reshape(6, -1).mean(1).mean()
    no_sg_grad = (2 * diff * (zh - zl)).reshape(6, -1).mean(1).mean()
    assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-12)
    assert float(model.w.grad) == pytest.approx(ref_grad, rel=1e-10)
    assert abs(ref_grad - no_sg_grad) > 1e-3  # the test can tell a missing sg apart


# ---- controls -----------------------------------------------------------------------------------

def test_layout_and_sobel_match_float64_references():
    x = torch.rand(2, 1, 8, 8, generator=g(7), dtype=torch.float64) * 2 - 1
    ref = x.numpy().reshape(2, 1, 4, 2, 4, 2).mean((3, 5))
    np.testing.assert_allclose(layout(x, 4).numpy(), ref, atol=1e-14)
    xn = x.numpy()[:, 0]
    gx = np.stack([ndimage.sobel(im, axis=1, mode="nearest") for im in xn])
    gy = np.stack([ndimage.sobel(im, axis=0, mode="nearest") for im in xn])
    np.testing.assert_allclose(sobel_edges(x).numpy()[:, 0], np.sqrt(gx ** 2 + gy ** 2) / 8, atol=1e-5)


def test_condition_maps_and_class_requires_classifier():
    cond = ConditionModel("layout", 8, 4)
    c = cond.extract(torch.zeros(2, 1, 8, 8))
    assert c.shape == (2, 1, 4, 4) and cond.as_map(c).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="needs a classifier"):
        ConditionModel("class", 8)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    cls = ConditionModel("class", 8, classifier=net)
    m = cls.as_map(torch.tensor([3, 7]))
    assert m.shape == (2, 10, 8, 8) and m[0, 3].eq(1).all() and m[0].sum() == 64


# ---- guards against lazy fakes --------------------------------------------------------------------

def test_identity_adapter_reproduces_the_generator_bit_for_bit():
    gen = tiny_generator()
    z = torch.randn(4, 1, 8, 8, generator=g(8))
    with torch.no_grad():
        assert torch.equal(unet_forward_with_residuals(gen.unet, z, gen.timestep), gen(z))
        torch.manual_seed(1)
        model = ControlledGenerator(gen, ControlAdapter(gen, 1))
        assert torch.equal(model(z, torch.randn(4, 1, 8, 8, generator=g(9))), gen(z))


def test_batched_nct_step_equals_separate_losses():
    gen = tiny_generator()
    torch.manual_seed(1)
    adapter = ControlAdapter(gen, 1)
    with torch.no_grad():  # move the zero convs so the adapter matters
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g(10)))
    model = ControlledGenerator(gen, adapter)
    z, eps, cmap = (torch.randn(3, 1, 8, 8, generator=g(i)) for i in (11, 12, 13))
    with torch.no_grad():
        x = gen(z)
    level = torch.tensor([0, 2, 3])
    sig = sigma_grid(4)
    con, bound = nct_step_losses(model, z, eps, x, cmap, level, sig, NctSection())
    con_ref = consistency_loss(model, z, eps, cmap, level, sig)
    bound_ref = distance(model(z, cmap), x).mean()
    assert float(con.detach()) == pytest.approx(float(con_ref.detach()), rel=1e-4, abs=1e-9)
    assert float(bound.detach()) == pytest.approx(float(bound_ref.detach()), rel=1e-4, abs=1e-9)
    assert float(con.detach()) > 0


@pytest.fixture(scope="module")
def trained():
    gen = tiny_generator()
    cond = ConditionModel("layout", 8, 4)
    train = TrainSection(steps=3, batch_size=4, ema_decay=0.0)
    nct = NctSection(num_levels=4, xi=0.0, dual_lr=100.0)
    before = param_hash(gen)
    out = {v: train_adapter(gen, cond, v, nct, train, seed=0, device=torch.device("cpu"), show_progress=False)
           for v in ("nct", "fixed_lambda", "no_boundary", "no_consistency", "naive_denoising")}
    return gen, before, out


def test_base_generator_stays_frozen(trained):
    gen, before, _ = trained
    assert param_hash(gen) == before


def test_ablations_change_the_adapter(trained):
    _, _, out = trained
    flat = {v: torch.cat([p.flatten() for p in m.adapter.parameters()]) for v, (m, _) in out.items()}
    for a in ("nct", "no_boundary", "naive_denoising"):
        for b in ("nct", "no_boundary", "naive_denoising"):
            if a < b:
                assert not torch.equal(flat[a], flat[b]), (a, b)


def test_boundary_only_training_stays_at_the_identity(trained):
    """Zero-init adapter: L_bound = 0 with zero gradient, so "no_consistency" reproduces the base bit for bit."""
    gen, _, out = trained
    z = torch.randn(4, 1, 8, 8, generator=g(15))
    cmap = torch.randn(4, 1, 8, 8, generator=g(16))
    with torch.no_grad():
        assert torch.equal(out["no_consistency"][0](z, cmap), gen(z))
        assert not torch.equal(out["nct"][0](z, cmap), gen(z))


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="unknown NCT variant 'ncm'; valid: nct"):
        train_adapter(tiny_generator(), ConditionModel("layout", 8, 4), "ncm", NctSection(), TrainSection(),
                      seed=0, device=torch.device("cpu"), show_progress=False)


def test_multiplier_moves_only_in_primal_dual(trained):
    _, _, out = trained
    lam_nct = out["nct"][1].lam
    assert lam_nct[0] == 1.0 and lam_nct[-1] != lam_nct[0]  # xi = 0: every positive L_bound raises lambda
    assert set(out["fixed_lambda"][1].lam) == {1.0}


def test_eval_conditions_are_independent_of_the_noise():
    gen = tiny_generator()
    cond = ConditionModel("layout", 8, 4)
    data = make_eval_set(gen, cond, 16, seed=0, test_images=torch.zeros(1, 1, 8, 8), device=torch.device("cpu"))
    with torch.no_grad():
        coupled = cond.extract(gen(data.z))
    assert not torch.allclose(coupled, data.cond)


# ---- config errors ----------------------------------------------------------------------------------

def test_defaults_equal_quick_and_presets_validate():
    assert NctConfig() == NctConfig(preset="quick")
    for name in ("smoke", "quick", "full"):
        NctConfig(preset=name)


@pytest.mark.parametrize("data, message", [
    ({"control": {"layout_size": 3}}, "control.layout_size must divide"),
    ({"train": {"variants": []}}, "train.variants must name"),
    ({"train": {"variants": ["nct", "nct"]}}, "train.variants must not repeat"),
    ({"nct": {"lambda_init": 0.0}}, "nct.lambda_init must be > 0"),
    ({"control": {"kind": "canny"}}, "layout"),
    ({"train": {"steps": 0}}, "greater than or equal to 1"),
    ({"train": {"ema_decay": 1.0}}, "less than 1"),
    ({"nct": {"distance": "l1"}}, "pseudo_huber"),
    ({"train": {"stepz": 3}}, "Extra inputs"),
])
def test_bad_config_values_fail_clearly(data, message):
    with pytest.raises(ValidationError, match=message):
        NctConfig.model_validate(data)


# ---- loaders ------------------------------------------------------------------------------------------

def test_one_step_generator_and_adapter_round_trip(tmp_path):
    gen = tiny_generator()
    loaded = load_one_step_generator(save_one_step_generator(gen, tmp_path / "gen"))
    z = torch.randn(2, 1, 8, 8, generator=g(14))
    with torch.no_grad():
        assert torch.equal(loaded(z), gen(z))
    torch.manual_seed(2)
    adapter = ControlAdapter(gen, 1)
    back = load_adapter(loaded, save_adapter(adapter, tmp_path / "ad"), cond_channels=1)
    assert all(torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), back.state_dict().values(), strict=True))
    with pytest.raises(FileNotFoundError, match="generator/config.json"):
        load_one_step_generator(tmp_path / "ad")
    with pytest.raises(FileNotFoundError, match="adapter.pt"):
        load_adapter(loaded, tmp_path / "gen", cond_channels=1)


def test_sd_controlnet_loader_on_tiny_random_unet(tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=4, attention_head_dim=2)
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    u, cn = load_sd_generator_with_controlnet(tmp_path / "pipe")
    assert isinstance(cn, ControlNetModel)
    assert torch.equal(cn.conv_in.weight, u.conv_in.weight)  # ControlNet init: a copy of the encoder
    assert all(not p.requires_grad for p in u.parameters())
    with torch.no_grad():
        cn.conv_in.weight.add_(1.0)
    cn.save_pretrained(tmp_path / "pipe" / "controlnet")
    _, cn2 = load_sd_generator_with_controlnet(tmp_path / "pipe")
    assert torch.equal(cn2.conv_in.weight, cn.conv_in.weight)  # the trained adapter is loaded, not re-initialised
    with pytest.raises(FileNotFoundError, match=r"unet/config.json"):
        load_sd_generator_with_controlnet(tmp_path / "pipe" / "unet")
