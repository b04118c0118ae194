"""Euler and DPM-Solver++(2M) ("dpm2") against independent float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sampling_refs import (
    gaussian_endpoint,
    gaussian_velocity,
    point_mass_velocity,
    reference_dpm_solver_pp_2m,
)

from workers.sampling import SamplingInputError, dpm2_step, euler_step, predict_x0, sample


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_euler_matches_formula_and_keeps_dtype() -> None:
    x, v = _rand(3, 4, 5, seed=1), _rand(3, 4, 5, seed=2)
    out = euler_step(x, v, 0.7, 0.55)
    torch.testing.assert_close(out, x + (0.55 - 0.7) * v, rtol=0, atol=1e-15)
    x_bf16 = x.to(torch.bfloat16)
    out_bf16 = euler_step(x_bf16, v.to(torch.bfloat16), 0.7, 0.55)
    assert out_bf16.dtype == torch.bfloat16
    # The update runs in float32, so the only error is the final bf16 rounding.
    expected = (x_bf16.double() + (0.55 - 0.7) * v.to(torch.bfloat16).double()).to(torch.bfloat16)
    torch.testing.assert_close(out_bf16, expected, rtol=0, atol=0)


def test_dpm2_first_order_is_the_ddim_flow_step_and_equals_euler() -> None:
    x, v = _rand(2, 3, 8, seed=3), _rand(2, 3, 8, seed=4)
    t, t_next = 0.8, 0.45
    x0 = x - t * v
    out = dpm2_step(x, x0, t, t_next)
    torch.testing.assert_close(out, (t_next / t) * x + (1 - t_next / t) * x0, rtol=0, atol=1e-14)
    torch.testing.assert_close(out, x + (t_next - t) * v, rtol=0, atol=1e-14)


def test_dpm2_handles_t_equal_one_without_nan() -> None:
    x, d = _rand(2, 6, seed=5), _rand(2, 6, seed=6)
    out = dpm2_step(x, d, 1.0, 0.9)
    assert torch.isfinite(out).all()
    # alpha_1 = 0: x_next = t_next x + (1 - t_next) D.
    torch.testing.assert_close(out, 0.9 * x + 0.1 * d, rtol=0, atol=1e-15)
    # A step whose previous point was t = 1 has h_prev = inf, so the 2M correction vanishes.
    out2 = dpm2_step(x, d, 0.9, 0.8, x0_prev=_rand(2, 6, seed=7), t_prev=1.0)
    torch.testing.assert_close(out2, dpm2_step(x, d, 0.9, 0.8), rtol=0, atol=0)


def test_dpm2_final_step_returns_x0_prediction_exactly() -> None:
    x, d, d_prev = _rand(2, 6, seed=8), _rand(2, 6, seed=9), _rand(2, 6, seed=10)
    assert torch.equal(dpm2_step(x, d, 0.1, 0.0), d)
    assert torch.equal(dpm2_step(x, d, 0.1, 0.0, x0_prev=d_prev, t_prev=0.2), d)
    for dtype in (torch.float32, torch.bfloat16):
        out = dpm2_step(x.to(dtype), d.float(), 0.1, 0.0, x0_prev=d_prev.float(), t_prev=0.2)
        assert torch.equal(out, d.float().to(dtype))


def test_dpm2_second_order_step_matches_lambda_space_formula() -> None:
    x, d, d_prev = _rand(3, 5, seed=11), _rand(3, 5, seed=12), _rand(3, 5, seed=13)
    t_prev, t, t_next = 0.8, 0.6, 0.3

    def lam(u: float) -> float:
        return float(np.log((1 - u) / u))

    h, h_prev = lam(t_next) - lam(t), lam(t) - lam(t_prev)
    r = h_prev / h
    d_eff = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
    expected = (t_next / t) * x - (1 - t_next) * np.expm1(-h) * d_eff
    out = dpm2_step(x, d, t, t_next, x0_prev=d_prev, t_prev=t_prev)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)


def test_dpm2_per_sample_times_match_scalar_calls() -> None:
    x, d, d_prev = _rand(3, 4, 2, seed=14), _rand(3, 4, 2, seed=15), _rand(3, 4, 2, seed=16)
    t_prev = torch.tensor([1.0, 0.9, 0.5], dtype=torch.float64)
    t = torch.tensor([0.9, 0.6, 0.2], dtype=torch.float64)
    t_next = torch.tensor([0.7, 0.3, 0.0], dtype=torch.float64)
    out = dpm2_step(x, d, t, t_next, x0_prev=d_prev, t_prev=t_prev)
    assert torch.isfinite(out).all()
    for i in range(3):
        row = dpm2_step(
            x[i : i + 1], d[i : i + 1], t[i].item(), t_next[i].item(), d_prev[i : i + 1], t_prev[i].item()
        )
        torch.testing.assert_close(out[i : i + 1], row, rtol=0, atol=1e-15)


def test_dpm2_with_exact_x0_model_follows_the_exact_path_and_lands_on_x0() -> None:
    x0 = _rand(4, 3, 6, seed=17)
    x1 = _rand(4, 3, 6, seed=18)
    sigmas = torch.linspace(1.0, 0.0, 8, dtype=torch.float64) ** 1.5
    result = sample(point_mass_velocity(x0), x1, sigmas, solver="dpm2", keep_trajectory=True)
    for t, x_t in zip(sigmas.tolist(), result.trajectory, strict=True):
        torch.testing.assert_close(x_t, (1 - t) * x0 + t * x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.x0, x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shift_power", [1.0, 0.5])
def test_dpm2_sampler_matches_reference_dpm_solver_pp_2m(shift_power: float) -> None:
    mu, s = 0.3, 0.8
    x1 = _rand(64, seed=19)
    sigmas = torch.linspace(1.0, 0.0, 11, dtype=torch.float64) ** shift_power
    velocity = gaussian_velocity(mu, s)
    ref = reference_dpm_solver_pp_2m(velocity, x1.numpy(), sigmas.numpy())
    result = sample(velocity, x1, sigmas, solver="dpm2", keep_trajectory=True)
    assert len(result.trajectory) == len(ref)
    for ours, theirs in zip(result.trajectory, ref, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-12)


def test_dpm2_converges_at_second_order_and_euler_at_first() -> None:
    mu, s = 0.5, 1.5
    x1 = _rand(256, seed=20)
    velocity = gaussian_velocity(mu, s)
    target = gaussian_endpoint(mu, s, x1)
    steps = [32, 64, 128, 256]
    errors: dict[str, list[float]] = {"euler": [], "dpm2": []}
    for n in steps:
        sigmas = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
        for solver in errors:
            x0 = sample(velocity, x1, sigmas, solver=solver).x0
            errors[solver].append((x0 - target).abs().max().item())
    slope = {k: np.polyfit(np.log(steps), np.log(e), 1)[0] for k, e in errors.items()}
    # On a uniform-t grid the end steps are O(1) in lambda, which adds a log N factor (slope ~ -1.75 here).
    assert -1.1 < slope["euler"] < -0.9, slope
    assert slope["dpm2"] < -1.6, slope
    assert all(d < e for d, e in zip(errors["dpm2"], errors["euler"], strict=True))


def test_predict_x0_and_validation_errors() -> None:
    x, v = _rand(2, 3, seed=21), _rand(2, 3, seed=22)
    torch.testing.assert_close(predict_x0(x, v, 0.4), x - 0.4 * v, rtol=0, atol=1e-15)
    with pytest.raises(SamplingInputError, match="t_next"):
        euler_step(x, v, 0.4, 0.5)
    with pytest.raises(SamplingInputError, match="t_next"):
        euler_step(x, v, 1.2, 0.5)
    with pytest.raises(SamplingInputError, match="shape"):
        euler_step(x, v[:, :2], 0.4, 0.3)
    with pytest.raises(SamplingInputError, match="go together"):
        dpm2_step(x, v, 0.4, 0.3, x0_prev=v)
    with pytest.raises(SamplingInputError, match="t_prev"):
        dpm2_step(x, v, 0.4, 0.3, x0_prev=v, t_prev=0.35)
    with pytest.raises(SamplingInputError, match="shape"):
        euler_step(x, v, torch.tensor([0.4, 0.5, 0.6]), 0.3)
