"""Coefficients-Preserving Sampling step against float64 references written out here."""

from __future__ import annotations

import math

import pytest
import torch

from workers.sampling import SamplingInputError, cps_log_prob, cps_mean_std, cps_step, euler_step


def _rand(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _reference(x, v, t, t_next, eta, noise):
    """CPS (arXiv 2509.05952) in float64 exactly as written: returns (mean, sigma_cps, x_next, log_prob_B)."""
    x, v, noise = x.double(), v.double(), noise.double()
    sigma = t_next * math.sin(eta * math.pi / 2)
    x0_hat = x - t * v
    x1_hat = x + (1 - t) * v
    mean = (1 - t_next) * x0_hat + math.sqrt(max(t_next**2 - sigma**2, 0.0)) * x1_hat
    x_next = mean + sigma * noise
    return mean, sigma, x_next, -((x_next - mean) ** 2).mean(dim=tuple(range(1, x.ndim)))


@pytest.mark.parametrize(
    ("t", "t_next", "eta"), [(0.6, 0.5, 0.8), (1.0, 0.9, 0.8), (0.3, 0.0, 0.5), (0.7, 0.2, 1.0)]
)
def test_cps_step_matches_reference(t: float, t_next: float, eta: float) -> None:
    x, v, noise = _rand(3, 4, 5, seed=1), _rand(3, 4, 5, seed=2), _rand(3, 4, 5, seed=3)
    mean, sigma, x_next, log_prob = _reference(x, v, t, t_next, eta, noise)
    step = cps_step(x, v, t, t_next, eta, noise)
    torch.testing.assert_close(step.mean, mean, rtol=0, atol=1e-13)
    torch.testing.assert_close(
        step.std, torch.full((3, 1, 1), sigma, dtype=torch.float64), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(step.x_next, x_next, rtol=0, atol=1e-13)
    torch.testing.assert_close(cps_log_prob(step.x_next, step.mean), log_prob, rtol=1e-12, atol=1e-15)


def test_eta_zero_is_the_deterministic_flow_step_and_equals_euler() -> None:
    x, v, noise = _rand(2, 6, seed=4), _rand(2, 6, seed=5), _rand(2, 6, seed=6)
    t, t_next = 0.75, 0.4
    step = cps_step(x, v, t, t_next, 0.0, noise)
    ddim_like = (1 - t_next) * (x - t * v) + t_next * (x + (1 - t) * v)
    torch.testing.assert_close(step.mean, ddim_like, rtol=0, atol=1e-14)
    torch.testing.assert_close(step.x_next, euler_step(x, v, t, t_next), rtol=0, atol=1e-14)
    assert torch.all(step.std == 0)
    assert torch.equal(cps_log_prob(step.x_next, step.mean), torch.zeros(2, dtype=torch.float64))


def test_coefficients_are_preserved_for_the_exact_velocity() -> None:
    # With the exact v = eps - x0 at x_t = (1-t) x0 + t eps, x_next = (1-t') x0 + t' cos(.) eps + sigma_cps n:
    # the x0 coefficient is (1 - t') and the total noise std is t', as on the training path.
    x0, eps, noise = _rand(2, 32, seed=7), _rand(2, 32, seed=8), _rand(2, 32, seed=9)
    t, t_next, eta = 0.8, 0.5, 0.8
    x_t = (1 - t) * x0 + t * eps
    step = cps_step(x_t, eps - x0, t, t_next, eta, noise)
    sigma = t_next * math.sin(eta * math.pi / 2)
    torch.testing.assert_close(
        step.x_next,
        (1 - t_next) * x0 + math.sqrt(t_next**2 - sigma**2) * eps + sigma * noise,
        rtol=0,
        atol=1e-14,
    )


def test_per_sample_times_and_final_step() -> None:
    x, v, noise = _rand(3, 2, 4, seed=10), _rand(3, 2, 4, seed=11), _rand(3, 2, 4, seed=12)
    t = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    t_next = torch.tensor([0.9, 0.3, 0.0], dtype=torch.float64)
    step = cps_step(x, v, t, t_next, 0.8, noise)
    for i in range(3):
        row = cps_step(x[i : i + 1], v[i : i + 1], t[i].item(), t_next[i].item(), 0.8, noise[i : i + 1])
        torch.testing.assert_close(step.x_next[i : i + 1], row.x_next, rtol=0, atol=1e-15)
    # t_next = 0: no noise, the mean is the x0 prediction.
    assert step.std[2].item() == 0.0
    torch.testing.assert_close(step.x_next[2], x[2] - 0.2 * v[2], rtol=0, atol=1e-15)


def test_mean_std_without_sampling_and_dtypes() -> None:
    x, v, noise = _rand(2, 5, seed=13), _rand(2, 5, seed=14), _rand(2, 5, seed=15)
    mean, std = cps_mean_std(x, v, 0.6, 0.5, 0.8)
    step = cps_step(x, v, 0.6, 0.5, 0.8, noise)
    assert torch.equal(mean, step.mean) and torch.equal(std, step.std)
    step_bf16 = cps_step(x.bfloat16(), v.bfloat16(), 0.6, 0.5, 0.8, noise.bfloat16())
    assert step_bf16.x_next.dtype == torch.bfloat16 and step_bf16.mean.dtype == torch.float32
    assert cps_log_prob(step_bf16.x_next, step_bf16.mean).dtype == torch.float32


def test_cps_validation_errors() -> None:
    x, v = _rand(2, 3, seed=16), _rand(2, 3, seed=17)
    with pytest.raises(SamplingInputError, match="noise_level"):
        cps_step(x, v, 0.5, 0.4, 1.5, x)
    with pytest.raises(SamplingInputError, match="noise_level"):
        cps_step(x, v, 0.5, 0.4, -0.1, x)
    with pytest.raises(SamplingInputError, match="t_next"):
        cps_step(x, v, 0.4, 0.5, 0.8, x)
    with pytest.raises(SamplingInputError, match="shape"):
        cps_log_prob(x, x[:, :2])
