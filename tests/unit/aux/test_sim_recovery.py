"""aux.sim_recovery: SIM-DMIS math against float64 references, lazy-fake guards, config errors, loader.

References are written out here independently (numpy / scipy in float64), never by calling the
code under test a second time.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.optimize import brentq

from workers.aux.sim_recovery import ddim
from workers.aux.sim_recovery.config import SimRecoveryConfig
from workers.aux.sim_recovery.estimators import (
    SimHyper,
    linear_estimate,
    sim_dmfis,
    sim_dmis,
    sim_dms,
    start_point,
)
from workers.aux.sim_recovery.evaluation import held_out_signals, make_problems, run_arm
from workers.aux.sim_recovery.measurements import back_projection, gaussian_matrices, measure, mu_of_link
from workers.aux.sim_recovery.prior import DiffusionPrior, load_prior, to_data_and_noise
from workers.aux.sim_recovery.schedule import VpSchedule, t_star

BETAS = np.linspace(1e-4, 0.02, 1000)  # the DDPM linear schedule, written out independently
ABAR = np.cumprod(1.0 - BETAS)


@pytest.fixture(scope="module")
def schedule() -> VpSchedule:
    return VpSchedule(torch.tensor(ABAR))


def _abar_ref(t: float) -> float:
    return float(np.exp(np.interp(t, np.arange(len(ABAR)), np.log(ABAR))))


def gaussian_denoiser(mu: float, s: float, schedule: VpSchedule):
    """The exact posterior-mean denoiser of x0 ~ N(mu, s^2 I): a closed-form prior for ODE checks."""
    def denoise(x: torch.Tensor, t_B: torch.Tensor):
        a, g = (v.reshape(-1, 1, 1, 1) for v in schedule.alpha_sigma(t_B))
        x0 = mu + a * s**2 / (a**2 * s**2 + g**2) * (x - a * mu)
        return x0, (x - a * x0) / g
    return denoise


def tiny_unet(sample_size: int = 16):
    from diffusers import UNet2DModel

    torch.manual_seed(0)  # module init draws from the global RNG
    return UNet2DModel(sample_size=sample_size, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


@pytest.fixture(scope="module")
def tiny_prior() -> DiffusionPrior:
    return DiffusionPrior(tiny_unet(), torch.tensor(ABAR))


# ---------------------------------------------------------------- schedule and t*

def test_abar_matches_cumprod_and_log_linear_interpolation(schedule):
    t = torch.tensor([0.0, 1.0, 17.0, 17.25, 500.5, 998.9, 999.0], dtype=torch.float64)
    ref = np.array([_abar_ref(v) for v in t.tolist()])
    np.testing.assert_allclose(schedule.abar(t).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(schedule.time_of_abar(torch.tensor(ref)).numpy(), t.numpy(), atol=1e-9)


@pytest.mark.parametrize("c_s,m", [(15.0, 32), (15.0, 64), (15.0, 128), (3.0, 500), (22.0, 64)])
def test_t_star_gives_sigma_over_alpha_c_s_over_sqrt_m(schedule, c_s, m):
    t = float(t_star(schedule, c_s, m))
    # independent: root of sigma/alpha - C_s/sqrt(m) on the interpolated curve, by bracketing
    ref = brentq(lambda u: math.sqrt((1 - _abar_ref(u)) / _abar_ref(u)) - c_s / math.sqrt(m), 0.0, 999.0, xtol=1e-12)
    assert t == pytest.approx(ref, abs=1e-6)
    abar = _abar_ref(t)
    assert math.sqrt((1 - abar) / abar) == pytest.approx(c_s / math.sqrt(m), rel=1e-9)


def test_t_star_moves_toward_T_as_m_falls(schedule):
    ts = [float(t_star(schedule, 15.0, m)) for m in (16, 32, 64, 128, 256)]
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False))


def test_t_star_past_the_schedule_raises(schedule):
    with pytest.raises(ValueError, match="lower C_s or raise m"):
        t_star(schedule, 500.0, 4)


# ---------------------------------------------------------------- DDIM

def test_ddim_step_matches_formula():
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(3, 1, 4, 4)), rng.normal(size=(3, 1, 4, 4))
    a, s = np.array([0.9, 0.5, 0.1]), np.array([0.3, 0.8, 0.99])
    got = ddim.ddim_step(torch.tensor(x0), torch.tensor(eps), torch.tensor(a), torch.tensor(s)).numpy()
    np.testing.assert_allclose(got, a[:, None, None, None] * x0 + s[:, None, None, None] * eps, rtol=1e-14)


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_prediction_types_recover_data_and_noise(kind):
    rng = np.random.default_rng(1)
    x0, eps = rng.normal(size=(2, 1, 3, 3)), rng.normal(size=(2, 1, 3, 3))
    a = np.array([0.8, 0.3])
    s = np.sqrt(1 - a**2)
    A, S = a[:, None, None, None], s[:, None, None, None]
    xt = A * x0 + S * eps
    out = {"epsilon": eps, "sample": x0, "v_prediction": A * eps - S * x0}[kind]
    got0, gote = to_data_and_noise(torch.tensor(out), torch.tensor(xt), torch.tensor(a), torch.tensor(s), kind)
    np.testing.assert_allclose(got0.numpy(), x0, atol=1e-12)
    np.testing.assert_allclose(gote.numpy(), eps, atol=1e-12)


def test_transport_converges_to_the_exact_probability_flow_of_a_gaussian(schedule):
    """For x0 ~ N(mu, s^2) the PF-ODE keeps z = (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) fixed."""
    mu, s = 0.3, 0.5
    den = gaussian_denoiser(mu, s, schedule)
    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t1, t2 = 300.0, 999.0

    def exact(x, ta, tb):
        aa, ab = math.sqrt(_abar_ref(ta)), math.sqrt(_abar_ref(tb))
        sa, sb = math.sqrt(1 - aa**2), math.sqrt(1 - ab**2)
        return ab * mu + math.sqrt(ab**2 * s**2 + sb**2) / math.sqrt(aa**2 * s**2 + sa**2) * (x - aa * mu)

    t_B, T_B = torch.full((4,), t1, dtype=torch.float64), torch.full((4,), t2, dtype=torch.float64)
    errs = []
    for steps in (10, 100, 1000):
        got = ddim.transport(x, ddim.time_grid(t_B, T_B, steps), den, schedule)
        errs.append(float((got - exact(x, t1, t2)).abs().max()))
    assert errs[2] < errs[1] < errs[0]
    assert errs[2] < 1e-3
    # the cycle t* -> T -> t*: deterministic inversion followed by sampling returns the start point
    up = ddim.invert(x, t_B, 400, den, schedule)
    back = ddim.transport(up, ddim.time_grid(T_B, t_B, 400), den, schedule)
    assert float((back - x).abs().max()) < 5e-3


def test_point_mass_prior_inversion_and_sampling_are_exact(schedule):
    """With x0 = c for sure, DDIM is exact: inversion keeps the noise, sampling returns c."""
    c = torch.full((2, 1, 2, 2), 0.7, dtype=torch.float64)

    def den(x, t_B):
        a, g = (v.reshape(-1, 1, 1, 1) for v in schedule.alpha_sigma(t_B))
        return c, (x - a * c) / g

    z = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t_B = torch.tensor([200.0, 450.5], dtype=torch.float64)
    a, g = (v.reshape(-1, 1, 1, 1) for v in schedule.alpha_sigma(t_B))
    x_T = ddim.invert(a * c + g * z, t_B, 7, den, schedule)
    aT, gT = math.sqrt(ABAR[-1]), math.sqrt(1 - ABAR[-1])
    torch.testing.assert_close(x_T, aT * c + gT * z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ddim.sample(x_T, torch.full((2,), 999.0, dtype=torch.float64), 5, den, schedule), c)


# ---------------------------------------------------------------- measurements (Lemma 2)

def test_measure_and_back_projection_match_numpy():
    gen = torch.Generator().manual_seed(0)
    A = gaussian_matrices(2, 5, 7, gen, dtype=torch.float64)
    x = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    An, xn = A.numpy(), x.numpy()
    z = np.stack([An[b] @ xn[b] for b in range(2)])
    np.testing.assert_array_equal(measure(x, A, "sign", 0.0, gen).numpy(), np.sign(z))
    np.testing.assert_allclose(measure(x, A, "cubic", 0.0, gen).numpy(), z**3, rtol=1e-12)
    y = np.sign(z)
    ref = np.stack([sum(An[b, i] * y[b, i] for i in range(5)) / 5 for b in range(2)])
    np.testing.assert_allclose(back_projection(A, torch.tensor(y)).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("link", ["sign", "cubic"])
def test_back_projection_concentrates_on_mu_times_direction(link):
    """Lemma 2: A^T y / m -> mu x*/||x*|| with mu = E[f(r g) g] (sign: sqrt(2/pi); cubic: 3 r^3)."""
    gen = torch.Generator().manual_seed(1)
    n, m = 8, 100_000
    x = torch.randn(1, n, generator=gen, dtype=torch.float64) * 0.7
    r = float(x.norm())
    A = gaussian_matrices(1, m, n, gen, dtype=torch.float64)
    got = back_projection(A, measure(x, A, link, 0.0, gen))[0]
    expect = mu_of_link(link, r) * x[0] / r
    # per-coordinate std of the average is at most sqrt(E[f^2 g^2]) / sqrt(m): 1 (sign), sqrt(105) r^3 (cubic)
    std = (1.0 if link == "sign" else math.sqrt(105) * r**3) / math.sqrt(m)
    assert float((got - expect).abs().max()) < 6 * std
    assert float((got - expect).abs().max()) < 0.05 * float(expect.abs().max())


# ---------------------------------------------------------------- estimators and guards

def _problem(link: str = "sign", m: int = 64, scale: float = 1.0, count: int = 3):
    x = held_out_signals(count, 1)[0] * scale
    return make_problems(x, m, link, 0.05, seed=0)


def test_start_point_is_alpha_c_s_prime_back_projection(tiny_prior):
    p = _problem()
    hyper = SimHyper(15.0, 12.0, 3, 3)
    x, t_B = start_point(p.A_BMN, p.y_BM, hyper, tiny_prior)
    A, y = p.A_BMN.double().numpy(), p.y_BM.double().numpy()
    abar = _abar_ref(float(t_B[0]))
    ref = math.sqrt(abar) * 12.0 * np.einsum("bmn,bm->bn", A, y) / 64
    np.testing.assert_allclose(x.flatten(1).double().numpy(), ref, rtol=1e-5, atol=1e-6)
    assert math.sqrt((1 - abar) / abar) == pytest.approx(15.0 / 8.0, rel=1e-9)  # not a fixed t*


def test_linear_estimate_is_clipped_scaled_back_projection():
    p = _problem()
    got = linear_estimate(p.A_BMN, p.y_BM, 12.0, (1, 16, 16))
    ref = np.clip(12.0 * np.einsum("bmn,bm->bn", p.A_BMN.double().numpy(), p.y_BM.double().numpy()) / 64, -1, 1)
    np.testing.assert_allclose(got.flatten(1).numpy(), ref, atol=1e-5)


def test_one_bit_estimates_ignore_the_norm_of_x_star(tiny_prior):
    """No per-image ||x*|| oracle: 1-bit measurements of x* and 3 x* are identical, so are the outputs."""
    hyper = SimHyper(15.0, 12.0, 3, 3)
    a, b = _problem(scale=1.0), _problem(scale=3.0)
    torch.testing.assert_close(a.y_BM, b.y_BM, rtol=0, atol=0)
    for fn in (sim_dms, sim_dmis, sim_dmfis):
        torch.testing.assert_close(fn(a.A_BMN, a.y_BM, hyper, tiny_prior), fn(b.A_BMN, b.y_BM, hyper, tiny_prior))


def test_arms_are_deterministic_differ_and_count_nfe(tiny_prior):
    p = _problem("cubic", m=32)  # the cubic link through the same code path
    one = torch.ones(3, dtype=torch.float64)
    runs = {arm: run_arm(arm, p, 15.0 * one, 0.0023 * one, 1, 4, 3, tiny_prior, 64)
            for arm in ("linear", "sim_dms", "sim_dmfis", "sim_dmis")}
    assert {a: r.nfe for a, r in runs.items()} == {"linear": 0, "sim_dms": 3, "sim_dmfis": 7, "sim_dmis": 7}
    again = run_arm("sim_dmis", p, 15.0 * one, 0.0023 * one, 1, 4, 3, tiny_prior, 64)
    torch.testing.assert_close(again.images, runs["sim_dmis"].images, rtol=0, atol=0)  # no fresh noise anywhere
    for a, b in (("sim_dms", "sim_dmis"), ("sim_dmfis", "sim_dmis"), ("linear", "sim_dmis")):
        assert float((runs[a].images - runs[b].images).abs().max()) > 1e-3, (a, b)


def test_zero_length_inversion_reduces_sim_dmis_to_sim_dms(tiny_prior):
    """Identity setting: with t* = T the inversion t* -> T is empty, so SIM-DMIS must equal SIM-DMS."""
    p = _problem(m=64)
    c_s = math.sqrt(64 * (1 / ABAR[-1] - 1)) * (1 - 1e-12)  # sigma/alpha of the last step: t* = T
    hyper = SimHyper(c_s, 12.0, 4, 3)
    assert float(start_point(p.A_BMN, p.y_BM, hyper, tiny_prior)[1][0]) == pytest.approx(999.0, abs=1e-6)
    torch.testing.assert_close(sim_dmis(p.A_BMN, p.y_BM, hyper, tiny_prior),
                               sim_dms(p.A_BMN, p.y_BM, hyper, tiny_prior), rtol=0, atol=1e-3)  # float32 rounding


def test_batching_does_not_change_results(tiny_prior):
    p = _problem()
    c_s, c_sp = torch.tensor([10.0, 15.0, 22.0], dtype=torch.float64), torch.full((3,), 12.0, dtype=torch.float64)
    whole = run_arm("sim_dmis", p, c_s, c_sp, 1, 3, 2, tiny_prior, 64)
    split = run_arm("sim_dmis", p, c_s, c_sp, 1, 3, 2, tiny_prior, 1)
    torch.testing.assert_close(whole.images, split.images, rtol=0, atol=2e-3)  # float32 conv rounding only
    assert whole.nfe == split.nfe == 5


def test_held_out_signals_are_disjoint_and_not_in_training_data():
    from workers.aux.common.data import digits

    val, test = held_out_signals(20, 60)
    train = digits("train", size=16).images.flatten(1)
    for group in (val, test):
        assert float(torch.cdist(group.flatten(1), train).min()) > 0
    assert float(torch.cdist(val.flatten(1), test.flatten(1)).min()) > 0


# ---------------------------------------------------------------- config

def test_presets_validate_and_defaults_equal_quick():
    for preset in ("smoke", "quick", "full"):
        SimRecoveryConfig(preset=preset)
    assert SimRecoveryConfig.model_validate({}).model_dump() == SimRecoveryConfig(preset="quick").model_dump()
    assert SimRecoveryConfig(preset="quick").model_dump(exclude={"preset"}) == \
        SimRecoveryConfig.model_construct().model_dump(exclude={"preset"})


@pytest.mark.parametrize("data,needle", [
    ({"measure": {"m_values": [0]}}, "m_values"),
    ({"measure": {"m_values": [32, 32]}}, "measure.m_values must be distinct"),
    ({"measure": {"links": ["relu"]}}, "links"),
    ({"measure": {"noise_std": -1}}, "noise_std"),
    ({"data": {"num_val": 200, "num_test": 300}}, "data.num_val + data.num_test must be"),
    ({"grids": {"sign": {"c_s": [0.0], "c_s_prime": [1.0]}}}, "c_s"),
    ({"grids": {"cubic": {"c_s": [2000.0], "c_s_prime": [1.0]}}}, "grids.cubic.c_s must keep"),
    ({"solver": {"sampling_steps": 0}}, "sampling_steps"),
    ({"solver": {"steps": 3}}, "steps"),
    ({"preset": "huge"}, "preset"),
])
def test_bad_config_values_fail_with_the_field(data, needle):
    with pytest.raises(ValidationError, match=re.escape(needle)):
        SimRecoveryConfig.model_validate(data)


# ---------------------------------------------------------------- loader

def _save(tmp_path, layout: str, prediction_type: str):
    from diffusers import DDPMScheduler

    unet = tiny_unet(8)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type)
    if layout == "pipeline":
        unet.save_pretrained(tmp_path / "unet")
        sched.save_pretrained(tmp_path / "scheduler")
    else:  # flat, as google/ddpm-cifar10-32
        unet.save_pretrained(tmp_path)
        sched.save_pretrained(tmp_path)
    return unet


@pytest.mark.parametrize("layout,kind", [("pipeline", "epsilon"), ("flat", "v_prediction")])
def test_load_prior_reads_both_diffusers_layouts(tmp_path, layout, kind):
    unet = _save(tmp_path, layout, kind)
    prior = load_prior(tmp_path)
    assert prior.prediction_type == kind and prior.sample_shape == (1, 8, 8)
    np.testing.assert_allclose(prior.schedule.abar(torch.tensor([0.0, 999.0])).numpy(), ABAR[[0, -1]], rtol=1e-5)
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 500.0])
    with torch.no_grad():
        out = unet(x, t).sample
    a, s = prior.schedule.alpha_sigma(t)
    x0_ref, _ = to_data_and_noise(out, x, a.float(), s.float(), kind)
    torch.testing.assert_close(prior(x, t.double())[0], x0_ref)
    assert prior.nfe == 1


def test_load_prior_wrong_directory_names_path_and_fix(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"prior\.path=.*not a diffusers DDPM directory.*unet/config\.json"):
        load_prior(tmp_path)


def test_prior_of_wrong_shape_is_rejected(tmp_path):
    from workers.aux.sim_recovery.experiment import build_prior

    _save(tmp_path, "pipeline", "epsilon")
    cfg = SimRecoveryConfig(preset="smoke", prior={"path": str(tmp_path)})
    with pytest.raises(ValueError, match="1-channel 16x16"):
        build_prior(cfg, torch.device("cpu"), show_progress=False)
