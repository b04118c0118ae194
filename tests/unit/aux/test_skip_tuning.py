"""aux.skip_tuning: the rho schedule and hook against independent float64 references, the lazy-fake
guards (rho = 1 is bit-exact, rho changes the output, ablations change results, disjoint seed sets),
config errors and the checkpoint loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from workers.aux.common.nets import small_unet
from workers.aux.skip_tuning.config import SkipTuningConfig
from workers.aux.skip_tuning.experiment import seed_sets
from workers.aux.skip_tuning.loader import load_skip_tunable_ddpm
from workers.aux.skip_tuning.loss import denoising_losses, predict_x0
from workers.aux.skip_tuning.sampling import make_sampler, sample
from workers.aux.skip_tuning.scoring import paired_bootstrap_fd
from workers.aux.skip_tuning.skips import (
    SkipNormRecorder,
    output_changes,
    rho_schedule,
    skip_layout,
    skip_scales,
    skip_tuned,
)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)  # module init draws from the global RNG
    net = small_unet(16, channels=(8, 16, 16), layers_per_block=1).eval()
    with torch.no_grad():  # random init leaves some layers zero; perturb so every path carries signal
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return net


def reference_forward(unet, x, t, rhos_inner_first):
    """An independent float64 decoder with scaled skips: re-walks UNet2DModel.forward by hand."""
    u = unet.double()
    x, t = x.double(), torch.as_tensor(t)
    emb = u.time_embedding(u.time_proj(t.reshape(1)).to(torch.float64).expand(x.shape[0], -1))
    h = u.conv_in(x)
    skips = [h]
    for block in u.down_blocks:
        for resnet in block.resnets:
            h = resnet(h, emb)
            skips.append(h)
        for down in block.downsamplers or []:
            h = down(h)
            skips.append(h)
    h = u.mid_block(h, emb)  # resnet, self-attention, resnet: no skips inside
    n = len(skips)
    for block in u.up_blocks:
        for resnet in block.resnets:
            d = skips.pop()
            i = n - 1 - len(skips)  # 0 for the innermost (last appended) skip
            h = resnet(torch.cat([h, rhos_inner_first[i] * d], 1), emb)
        for up in block.upsamplers or []:
            h = up(h)
    out = u.conv_out(u.conv_act(u.conv_norm_out(h)))
    unet.float()
    return out


def test_rho_schedule_matches_formula():
    k = 5
    ref = [0.9 + i * (0.7 - 0.9) / k for i in range(k + 1)]  # rho_i = rho_bottom + i * (rho_top - rho_bottom) / k
    assert np.allclose(rho_schedule(0.7, 0.9, k + 1), ref, rtol=0, atol=1e-15)
    assert rho_schedule(0.7, 0.9, 6)[0] == 0.9 and rho_schedule(0.7, 0.9, 6)[-1] == pytest.approx(0.7)
    assert rho_schedule(0.5, 0.8, 1) == [0.8]


def test_layout_puts_conv_in_outermost(unet):
    layout = skip_layout(unet)
    assert layout == [[4, 5], [2, 3], [0, 1]]  # 3 levels, 1 layer each: conv_in + 3 resnets + 2 downsamplers
    scales = skip_scales(unet, rho_top=0.5, rho_bottom=1.0)
    assert scales[-1][0] == pytest.approx(0.5) and scales[0][-1] == pytest.approx(1.0)


@pytest.mark.parametrize("rho", [(1.0, 1.0), (0.7, 0.9), (1.05, 0.6)])
def test_hooked_unet_matches_float64_reference(unet, rho):
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), skip_tuned(unet, *rho):
        got = unet(x, torch.tensor(400)).sample
    with torch.no_grad():
        ref = reference_forward(unet, x, 400, rho_schedule(rho[0], rho[1], 6))
    assert torch.allclose(got.double(), ref, atol=1e-4, rtol=1e-4)


def test_rho_one_is_bit_exact_and_hooks_are_removed(unet):
    sampler = make_sampler("dpmsolver++", {"num_train_timesteps": 1000, "beta_schedule": "linear",
                                           "beta_start": 1e-4, "beta_end": 0.02})
    noise = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    base, calls = sample(unet, sampler, noise, 3, batch_size=3)  # two chunks: 3 + 2
    with skip_tuned(unet, 1.0, 1.0):
        same, _ = sample(unet, sampler, noise, 3, batch_size=3)
    assert calls == 3 and torch.equal(base, same)
    with skip_tuned(unet, 0.8, 0.9):
        tuned, _ = sample(unet, sampler, noise, 3, batch_size=3)
    after, _ = sample(unet, sampler, noise, 3, batch_size=3)
    assert not torch.equal(tuned, base) and torch.equal(after, base)


def test_rho_changes_output_despite_groupnorm(unet):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    assert output_changes(unet, x, torch.tensor(500), 0.8, 0.8) > 1e-4
    assert output_changes(unet, x, torch.tensor(500), 1.0, 1.0) == 0.0


def test_top_and_bottom_act_on_different_skips(unet):
    """An ablation of one end only must change the output differently from the other end."""
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        with skip_tuned(unet, 0.5, 1.0):
            top = unet(x, torch.tensor(300)).sample
        with skip_tuned(unet, 1.0, 0.5):
            bottom = unet(x, torch.tensor(300)).sample
    assert (top - bottom).abs().max() > 1e-4


def test_skip_norm_ratio_matches_manual_and_scales_with_rho(unet):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    base, tuned = SkipNormRecorder(), SkipNormRecorder()
    with torch.no_grad():
        with base.recording(unet):
            unet(x, torch.tensor(200))
        with skip_tuned(unet, 0.5, 0.5), tuned.recording(unet):
            unet(x, torch.tensor(200))
    rb, rt = base.ratios(), tuned.ratios()
    assert sorted(rb) == list(range(6))
    # the innermost skip's u is the mid-block output, unaffected by rho: its ratio halves exactly
    assert rt[5] == pytest.approx(0.5 * rb[5], rel=1e-5)
    # manual check of the innermost ratio: ||d|| / ||u|| with d the last down resnet output, u the mid output
    with torch.no_grad():
        emb = unet.time_embedding(unet.time_proj(torch.tensor([200])).expand(2, -1))
        h = unet.conv_in(x)
        for block in unet.down_blocks:
            h, _ = block(h, emb)
        d = h
        u = unet.mid_block(h, emb)
    manual = (d.flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)).mean()
    assert rb[5] == pytest.approx(float(manual), rel=1e-4)


def test_predict_x0_and_losses_against_float64(unet):
    a = torch.tensor(0.3, dtype=torch.float64)
    x0 = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    eps = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    assert torch.allclose(predict_x0(eps, xt, a, "epsilon"), x0, atol=1e-12)
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    assert torch.allclose(predict_x0(v, xt, a, "v_prediction"), x0, atol=1e-12)

    alphas = torch.linspace(0.999, 0.01, 1000)
    x0 = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(8)) * 2 - 1
    eps = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    feats = lambda x: x.flatten(1)[:, :10] * 3.0  # noqa: E731 - a fixed linear "feature net"
    got = denoising_losses(unet, x0, 250, alphas, eps, "epsilon", feats, batch_size=2)
    with torch.no_grad():
        ab = alphas[250].double()
        xt = (ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double()).float()
        eps_hat = unet(xt, torch.tensor(250)).sample.double()
        x0_hat = (xt.double() - (1 - ab).sqrt() * eps_hat) / ab.sqrt()
    assert got["pixel_mse"] == pytest.approx(float(((x0_hat - x0.double()) ** 2).mean()), rel=1e-4)
    ref_feat = ((feats(x0_hat.clamp(-1, 1)) - feats(x0.double())) ** 2).mean()
    assert got["feature_mse"] == pytest.approx(float(ref_feat), rel=1e-4)


def test_paired_bootstrap_identical_arms_have_zero_delta():
    g = np.random.default_rng(0)
    f, ref = g.normal(size=(40, 4)), g.normal(size=(60, 4))
    ci = paired_bootstrap_fd(f, f.copy(), ref, reps=20, ci=0.9, generator=torch.Generator().manual_seed(0))
    assert ci["fd_delta_ci"] == [0.0, 0.0] and ci["fd_base_ci"][0] < ci["fd_base_ci"][1]


def test_seed_sets_are_disjoint_and_reproducible():
    cfg = SkipTuningConfig(preset="smoke")
    a, b, seeds = seed_sets(cfg, (1, 16, 16))
    a2, _, _ = seed_sets(cfg, (1, 16, 16))
    assert seeds["seed_a"] != seeds["seed_b"] and torch.equal(a, a2)
    assert torch.cdist(a.flatten(1), b.flatten(1)).min() > 1.0  # no sample of A reappears in B


def test_presets_and_defaults():
    quick = SkipTuningConfig()
    assert quick == SkipTuningConfig(preset="quick")
    full = SkipTuningConfig(preset="full")
    assert set(full.sampling.nfe) <= set(range(5, 11)) and full.eval.num_samples > quick.eval.num_samples
    assert SkipTuningConfig(preset="full", eval={"bootstrap": 30}).eval.num_samples == full.eval.num_samples


@pytest.mark.parametrize(("data", "needle"), [
    ({"search": {"rho_grid": [0.8, 0.9]}}, "search.rho_grid must contain 1.0"),
    ({"loss": {"rho_values": [0.8]}}, "loss.rho_values must contain 1.0"),
    ({"sampling": {"nfe": [5, 5]}}, "sampling.nfe must not repeat"),
    ({"sampling": {"samplers": ["euler"]}}, "ddim"),
    ({"search": {"rho_grid": [0.0, 1.0]}}, "greater than 0"),
    ({"sampling": {"nfe": [0]}}, "greater than or equal to 1"),
    ({"eval": {"ci": 1.0}}, "less than 1"),
    ({"eval": {"typo": 1}}, "Extra inputs"),
])
def test_config_errors(data, needle):
    with pytest.raises(ValidationError, match=needle):
        SkipTuningConfig(**data)


def test_loader_roundtrip_and_errors(tmp_path, unet):
    from diffusers import DDPMScheduler

    unet.save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "ddpm" / "scheduler")
    loaded, sched = load_skip_tunable_ddpm(tmp_path / "ddpm")
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        assert torch.allclose(loaded(x, torch.tensor(10)).sample, unet(x, torch.tensor(10)).sample, atol=1e-6)
    assert sched.config.num_train_timesteps == 1000
    with pytest.raises(FileNotFoundError, match="pass its parent"):
        load_skip_tunable_ddpm(tmp_path / "ddpm" / "unet")
    with pytest.raises(FileNotFoundError, match=r"model.path=.*missing"):
        load_skip_tunable_ddpm(tmp_path / "nowhere")
    cfg = json.loads((tmp_path / "ddpm" / "unet" / "config.json").read_text())
    (tmp_path / "cond" / "unet").mkdir(parents=True)
    (tmp_path / "cond" / "unet" / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(TypeError, match="UNet2DConditionModel"):
        load_skip_tunable_ddpm(tmp_path / "cond")
