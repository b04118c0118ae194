"""aux.adversarial_train: the AT math against float64 references written out here, the guards against the
brief's lazy fakes (eta = 0 / K = 1 / gamma = 0 reproduce standard training bit-for-bit, delta really
changes the result), the consistency variant, config errors, and the checkpoint loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from workers.aux.adversarial_train.config import AdversarialTrainConfig
from workers.aux.adversarial_train.consistency import (
    ConsistencyPair,
    boundary_coefficients,
    cd_timesteps,
    consistency_function,
    consistency_updates,
    teacher_ddim_step,
)
from workers.aux.adversarial_train.loader import CheckpointError, check_digits_compatible, load_pretrained_dpm
from workers.aux.adversarial_train.perturbation import (
    ascend_l2,
    ball_radius,
    perturbed_target,
    project_l2_ball,
)
from workers.aux.adversarial_train.sampling import make_sampler, mismatch_per_step, sample
from workers.aux.adversarial_train.training import (
    AdvSettings,
    Batch,
    Learner,
    adversarial_updates,
    input_perturbation_update,
    noisy_input,
    standard_update,
)
from workers.aux.common.ddpm import make_scheduler
from workers.aux.common.nets import small_unet

ALPHAS = make_scheduler().alphas_cumprod.float()


# ---------------------------------------------------------------- float64 references (written independently)

def ref_target(eps, delta, sigma):
    return eps + delta / sigma[:, None]


def ref_ascend_project(delta, grad, lr, radius):
    out = delta.copy()
    for b in range(len(delta)):
        g = grad[b] / max(np.sqrt((grad[b] ** 2).sum()), 1e-8)
        out[b] = delta[b] + lr * g
        n = np.sqrt((out[b] ** 2).sum())
        if n > radius:
            out[b] *= radius / n
    return out


@dataclass
class _Out:
    sample: torch.Tensor


class LinearEps(torch.nn.Module):
    """eps_theta(x) = W x on flattened pixels (float64), so gradients have a closed form."""

    def __init__(self, w: np.ndarray) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> _Out:
        return _Out((x.flatten(1) @ self.w.T).view_as(x))


def ref_adversarial(w, x_t, eps, sigma, adv_lr, radius, steps, lr, betas=(0.9, 0.999), eps_adam=1e-8):
    """Efficient AT with Adam, by hand: closed-form gradients of mean_b mean_d (W(x+d) - eps - d/sigma)^2."""
    B, d = x_t.shape
    delta = np.zeros_like(x_t)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for k in range(steps):
        inp = x_t + delta
        r = inp @ w.T - ref_target(eps, delta, sigma)  # residual (B, d); the target does not depend on delta
        grad_w = 2.0 / (B * d) * r.T @ inp
        if k < steps - 1:
            grad_delta = 2.0 / (B * d) * r @ w
            delta = ref_ascend_project(delta, grad_delta, adv_lr, radius)
        m = betas[0] * m + (1 - betas[0]) * grad_w
        v = betas[1] * v + (1 - betas[1]) * grad_w**2
        mhat, vhat = m / (1 - betas[0] ** (k + 1)), v / (1 - betas[1] ** (k + 1))
        w = w - lr * mhat / (np.sqrt(vhat) + eps_adam)
    return w


# ---------------------------------------------------------------- math

def test_target_and_projection_match_float64_reference():
    g = torch.Generator().manual_seed(0)
    eps, delta, grad = (torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    sigma = torch.rand(5, generator=g, dtype=torch.float64) + 0.05
    np.testing.assert_allclose(perturbed_target(eps, delta, sigma).flatten(1).numpy(),
                               ref_target(eps.flatten(1).numpy(), delta.flatten(1).numpy(), sigma.numpy()), rtol=1e-12)
    radius = ball_radius(0.4, 4)
    assert radius == pytest.approx(0.8)
    ours = project_l2_ball(ascend_l2(delta, grad, 0.7), radius).flatten(1).numpy()
    ref = ref_ascend_project(delta.flatten(1).numpy(), grad.flatten(1).numpy(), 0.7, radius)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert (np.linalg.norm(ours, axis=1) <= radius + 1e-12).all()
    assert torch.equal(project_l2_ball(delta, 0.0), torch.zeros_like(delta))


def test_target_keeps_x0_fixed():
    """x_t + delta is the forward process of the same x0 with noise eps + delta/sigma_t."""
    g = torch.Generator().manual_seed(1)
    x0, eps, delta = (torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0, 10, 500, 999])
    alphas = ALPHAS.double()
    sigma = (1 - alphas[t]).sqrt()
    lhs = noisy_input(x0, eps, t, alphas) + delta
    rhs = noisy_input(x0, perturbed_target(eps, delta, sigma), t, alphas)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_adversarial_updates_match_handwritten_float64_loop():
    """K=3 inner steps, delta ascent with binding projection, Adam update after each step."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 4)) * 0.5
    x0, eps = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    t = torch.tensor([3, 200, 900])
    alphas = ALPHAS.double()
    model = LinearEps(w0)
    learner = Learner(model, lr=0.05)
    batch = Batch(torch.tensor(x0).view(3, 1, 2, 2), t, torch.tensor(eps).view(3, 1, 2, 2))
    adv = AdvSettings(steps=3, lr=1.0, max_norm=0.3)  # radius 0.6 < 2 * lr: the projection binds
    stats = adversarial_updates(learner, batch, alphas, adv)
    a = alphas[t].numpy()[:, None]
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    ref_w = ref_adversarial(w0, x_t, eps, np.sqrt(1 - a[:, 0]), 1.0, 0.6, 3, 0.05)
    np.testing.assert_allclose(model.w.detach().numpy(), ref_w, rtol=1e-10, atol=1e-12)
    assert learner.updates == 3 and len(stats.losses) == 3
    assert stats.delta_norm == pytest.approx(0.6) and stats.delta_grad_norm > 0  # logged, as the official code


# ---------------------------------------------------------------- guards against lazy fakes

def _tiny_unet(seed: int = 0):
    torch.manual_seed(seed)  # module init draws from the global RNG
    return small_unet(8, channels=(8, 16))


def _batch(seed: int = 0, n: int = 4) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 1000, (n,), generator=g),
                 torch.randn(n, 1, 8, 8, generator=g))


def _params(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_eta_zero_is_standard_training_bit_for_bit_and_eta_changes_it():
    batch = _batch()
    std = Learner(_tiny_unet(), lr=1e-3)
    for _ in range(3):
        standard_update(std, batch, ALPHAS)
    at0 = Learner(_tiny_unet(), lr=1e-3)
    adversarial_updates(at0, batch, ALPHAS, AdvSettings(steps=3, lr=0.1, max_norm=0.0))
    at = Learner(_tiny_unet(), lr=1e-3)
    stats = adversarial_updates(at, batch, ALPHAS, AdvSettings(steps=3, lr=0.1, max_norm=0.1))
    assert _same(_params(std.unet), _params(at0.unet))
    assert not _same(_params(std.unet), _params(at.unet))
    assert stats.delta_norm > 0


def test_k1_is_one_standard_update_and_ip_gamma_zero_is_standard():
    batch = _batch(1)
    std = Learner(_tiny_unet(), lr=1e-3)
    standard_update(std, batch, ALPHAS)
    k1 = Learner(_tiny_unet(), lr=1e-3)
    adversarial_updates(k1, batch, ALPHAS, AdvSettings(steps=1, lr=0.1, max_norm=0.1))
    ip0 = Learner(_tiny_unet(), lr=1e-3)
    input_perturbation_update(ip0, batch, ALPHAS, 0.0, torch.Generator().manual_seed(0))
    ip = Learner(_tiny_unet(), lr=1e-3)
    input_perturbation_update(ip, batch, ALPHAS, 0.1, torch.Generator().manual_seed(0))
    assert _same(_params(std.unet), _params(k1.unet)) and _same(_params(std.unet), _params(ip0.unet))
    assert not _same(_params(std.unet), _params(ip.unet))


# ---------------------------------------------------------------- consistency variant

def test_boundary_coefficients_match_reference_and_f_is_identity_at_zero():
    t = torch.tensor([0, 1, 19, 999])
    c_skip, c_out = boundary_coefficients(t)
    ct = t.double().numpy() * 10.0
    np.testing.assert_allclose(c_skip.numpy(), 0.25 / (ct**2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(c_out.numpy(), ct / np.sqrt(ct**2 + 0.25), rtol=1e-6)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(consistency_function(_tiny_unet(), x, torch.zeros(2, dtype=torch.long), ALPHAS), x)


def test_teacher_ddim_step_matches_reference():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 4)) * 0.3
    x = rng.normal(size=(2, 4))
    t, tp = torch.tensor([519, 19]), torch.tensor([499, 0])
    out = teacher_ddim_step(LinearEps(w), torch.tensor(x).view(2, 1, 2, 2), t, tp, ALPHAS.double()).flatten(1)
    a, ap = ALPHAS.double()[t].numpy()[:, None], ALPHAS.double()[tp].numpy()[:, None]
    e = x @ w.T
    x0 = (x - np.sqrt(1 - a) * e) / np.sqrt(a)
    np.testing.assert_allclose(out.numpy(), np.sqrt(ap) * x0 + np.sqrt(1 - ap) * e, rtol=1e-10)


def test_cd_timesteps_grid():
    t_next, t_prev = cd_timesteps(torch.arange(1000), 20, 1000)
    assert set(t_next.tolist()) == set(range(19, 1000, 20))
    assert torch.equal(t_prev, (t_next - 20).clamp_min(0)) and t_prev.min() == 0


def _pair(seed: int = 0) -> ConsistencyPair:
    return ConsistencyPair.from_teacher(_tiny_unet(seed), _tiny_unet(seed), lr=1e-3, target_ema=0.9)


def test_cd_eta_zero_equals_k_standard_cd_updates_and_eta_changes_it():
    batch = _batch(3)
    std = _pair()
    for _ in range(3):
        consistency_updates(std, batch, ALPHAS, 20, AdvSettings(steps=1, lr=0.0, max_norm=0.0))
    at0, at = _pair(), _pair()
    consistency_updates(at0, batch, ALPHAS, 20, AdvSettings(steps=3, lr=0.1, max_norm=0.0))
    stats = consistency_updates(at, batch, ALPHAS, 20, AdvSettings(steps=3, lr=0.1, max_norm=0.1))
    assert _same(_params(std.learner.unet), _params(at0.learner.unet))
    assert not _same(_params(std.learner.unet), _params(at.learner.unet))
    assert std.learner.updates == at.learner.updates == 3 and stats.delta_norm > 0


# ---------------------------------------------------------------- sampling and mismatch

def test_samplers_use_nfe_steps_from_t_max_and_mismatch_is_small_on_q_itself():
    ddpm = make_scheduler()
    for kind in ("ddim", "dpmsolver++"):
        s = make_sampler(kind, ddpm, 5)
        assert len(s.timesteps) == 5 and int(s.timesteps[0]) == 999
    with pytest.raises(ValueError, match="sampler must be"):
        make_sampler("euler", ddpm, 5)
    traj = sample(_tiny_unet(), make_sampler("ddim", ddpm, 3), torch.randn(4, 1, 8, 8), record=True)
    assert len(traj.states) == 3 and traj.samples_BCHW.shape == (4, 1, 8, 8)
    # q(x_T) is N(~0, I): the sampler's start state (pure noise) matches it, so W1 of norms is small
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2000, 1, 8, 8, generator=g) * 2 - 1
    start = type(traj)(traj.samples_BCHW, (999,), (torch.randn(2000, 1, 8, 8, generator=g),))
    rows = mismatch_per_step(start, x0, ddpm.alphas_cumprod, g)
    assert rows[0]["w1_norm"] < 0.02 and math.isclose(rows[0]["q_norm"], 1.0, abs_tol=0.02)


# ---------------------------------------------------------------- config

def test_presets_validate_and_defaults_equal_quick():
    for preset in ("smoke", "quick", "full"):
        AdversarialTrainConfig(preset=preset)
    assert AdversarialTrainConfig().model_dump() == AdversarialTrainConfig(preset="quick").model_dump()


@pytest.mark.parametrize(("data", "needle"), [
    ({"adv": {"steps": 0}}, "adv.steps"),
    ({"adv": {"max_norm": -0.1}}, "max_norm"),
    ({"arms": ["standard", "pgd"]}, "arms"),
    ({"eval": {"samplers": ["euler"]}}, "samplers"),
    ({"train": {"lr": 0.0}}, "lr"),
    ({"train": {"bogus": 1}}, "bogus"),
])
def test_config_field_errors(data, needle):
    with pytest.raises(ValidationError, match=needle):
        AdversarialTrainConfig(**data)


@pytest.mark.parametrize(("data", "prefix"), [
    ({"adv": {"steps": 1}}, "adv.steps must be >= 2"),
    ({"train": {"updates": 61}}, "train.updates (61) must be a multiple"),
    ({"cm": {"updates": 31}}, "cm.updates (31) must be a multiple"),
    ({"eval": {"nfe": [5, 20], "mismatch_nfe": 10}}, "eval.mismatch_nfe (10) must be one of"),
    ({"arms": ["at", "ip"]}, "arms must be distinct and include 'standard'"),
])
def test_cross_field_errors_start_with_the_field(data, prefix):
    with pytest.raises(ValidationError) as err:
        AdversarialTrainConfig(**data)
    assert err.value.errors()[0]["msg"].removeprefix("Value error, ").startswith(prefix)


def test_runner_error_names_the_config_path():
    from orchestration.aux_runner import AuxJobError, build_config

    with pytest.raises(AuxJobError, match=r"config\.train\.updates"):
        build_config("adversarial_train", {"train": {"updates": 61}})


# ---------------------------------------------------------------- loader

def _save_tiny_ddpm(path, prediction_type="epsilon", size=16):
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    unet = small_unet(size, channels=(8, 16))
    unet.save_pretrained(path / "unet")
    DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type).save_pretrained(path / "scheduler")
    return unet


def test_loader_roundtrip_and_errors(tmp_path):
    saved = _save_tiny_ddpm(tmp_path / "ddpm")
    unet, sched = load_pretrained_dpm(tmp_path / "ddpm")
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), unet.state_dict().values(), strict=True))
    assert sched.config.prediction_type == "epsilon"
    check_digits_compatible(unet)
    with pytest.raises(CheckpointError, match=r"missing.*not a directory.*unet/ and scheduler/"):
        load_pretrained_dpm(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="bare model.*parent pipeline directory"):
        load_pretrained_dpm(tmp_path / "ddpm" / "unet")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(CheckpointError, match=r"half.*unet/config.json"):
        load_pretrained_dpm(tmp_path / "half")
    _save_tiny_ddpm(tmp_path / "vpred", prediction_type="v_prediction")
    with pytest.raises(CheckpointError, match="epsilon-prediction"):
        load_pretrained_dpm(tmp_path / "vpred")
    small, _ = load_pretrained_dpm(_save_tiny_ddpm(tmp_path / "s8", size=8) and tmp_path / "s8")
    with pytest.raises(CheckpointError, match="16px"):
        check_digits_compatible(small)
