"""Flow-GRPO SDE step and Gaussian log-prob against float64 references written out here."""

from __future__ import annotations

import math

import pytest
import torch

from workers.sampling import SamplingInputError, euler_step, gaussian_log_prob, sde_mean_std, sde_step


def _rand(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _reference(x, v, t, t_next, a, noise, sigma_max=None):
    """Flow-GRPO eq. 9 in float64: returns (mean, std, x_next, log_prob_B)."""
    x, v, noise = x.double(), v.double(), noise.double()
    denom_t = sigma_max if t == 1.0 else t
    sigma_t = a * math.sqrt(t / (1.0 - denom_t))
    dt = t_next - t
    mean = x * (1 + sigma_t**2 / (2 * t) * dt) + v * (1 + sigma_t**2 * (1 - t) / (2 * t)) * dt
    std = sigma_t * math.sqrt(-dt)
    x_next = mean + std * noise
    log_prob = -((x_next - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return mean, std, x_next, log_prob.mean(dim=tuple(range(1, x.ndim)))


@pytest.mark.parametrize(("t", "t_next", "a"), [(0.6, 0.5, 0.7), (0.3, 0.0, 0.7), (0.95, 0.7, 1.2)])
def test_sde_step_matches_reference_float64(t: float, t_next: float, a: float) -> None:
    x, v, noise = _rand(3, 4, 6, seed=1), _rand(3, 4, 6, seed=2), _rand(3, 4, 6, seed=3)
    mean, std, x_next, log_prob = _reference(x, v, t, t_next, a, noise)
    step = sde_step(x, v, t, t_next, a, noise)
    torch.testing.assert_close(step.mean, mean, rtol=0, atol=1e-13)
    assert step.std.shape == (3, 1, 1)
    torch.testing.assert_close(step.std, torch.full((3, 1, 1), std, dtype=torch.float64), rtol=1e-14, atol=0)
    torch.testing.assert_close(step.x_next, x_next, rtol=0, atol=1e-13)
    torch.testing.assert_close(
        gaussian_log_prob(step.x_next, step.mean, step.std), log_prob, rtol=1e-12, atol=0
    )


def test_sde_step_float32_and_bf16_close_to_reference() -> None:
    x, v, noise = _rand(2, 16, seed=4), _rand(2, 16, seed=5), _rand(2, 16, seed=6)
    mean, std, x_next, _ = _reference(x, v, 0.7, 0.6, 0.7, noise)
    step = sde_step(x.float(), v.float(), 0.7, 0.6, 0.7, noise.float())
    assert step.x_next.dtype == torch.float32 and step.mean.dtype == torch.float32
    torch.testing.assert_close(step.mean.double(), mean, rtol=0, atol=1e-5)
    step_bf16 = sde_step(x.bfloat16(), v.bfloat16(), 0.7, 0.6, 0.7, noise.bfloat16())
    # The latent comes back in bf16, the mean and std stay float32 for the log-prob.
    assert step_bf16.x_next.dtype == torch.bfloat16
    assert step_bf16.mean.dtype == torch.float32 and step_bf16.std.dtype == torch.float32


def test_log_prob_matches_torch_normal_averaged_over_dims() -> None:
    x, v, noise = _rand(4, 3, 5, 5, seed=7), _rand(4, 3, 5, 5, seed=8), _rand(4, 3, 5, 5, seed=9)
    step = sde_step(x, v, 0.5, 0.4, 0.7, noise)
    normal = torch.distributions.Normal(step.mean, step.std.expand_as(step.mean))
    expected = normal.log_prob(step.x_next).mean(dim=(1, 2, 3))
    got = gaussian_log_prob(step.x_next, step.mean, step.std)
    assert got.shape == (4,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # Evaluating a different sample gives a lower density than the one drawn at the mean.
    assert bool(torch.all(gaussian_log_prob(step.mean, step.mean, step.std) > got))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_zero_noise_level_is_exactly_euler(dtype: torch.dtype) -> None:
    x, v, noise = (
        _rand(2, 3, 4, seed=10, dtype=dtype),
        _rand(2, 3, 4, seed=11, dtype=dtype),
        _rand(2, 3, 4, seed=12),
    )
    for t, t_next in [(0.8, 0.6), (0.2, 0.0), (1.0, 0.9)]:
        step = sde_step(x, v, t, t_next, 0.0, noise, sigma_max=0.9)
        assert torch.equal(step.x_next, euler_step(x, v, t, t_next))
        assert torch.all(step.std == 0)
        with pytest.raises(SamplingInputError, match="std"):
            gaussian_log_prob(step.x_next, step.mean, step.std)


def test_t_equal_one_uses_sigma_max_in_the_denominator() -> None:
    x, v, noise = _rand(2, 8, seed=13), _rand(2, 8, seed=14), _rand(2, 8, seed=15)
    with pytest.raises(SamplingInputError, match="sigma_max"):
        sde_step(x, v, 1.0, 0.9, 0.7, noise)
    step = sde_step(x, v, 1.0, 0.9, 0.7, noise, sigma_max=0.9)
    assert torch.isfinite(step.x_next).all()
    # flow_grpo: sigma_t = a * sqrt(t / (1 - sigma_max)) at t = 1 -> a * sqrt(10); std multiplies sqrt(-dt).
    torch.testing.assert_close(
        step.std[0, 0].item(), 0.7 * math.sqrt(10.0) * math.sqrt(0.1), rtol=1e-12, atol=0
    )
    mean, _, x_next, _ = _reference(x, v, 1.0, 0.9, 0.7, noise, sigma_max=0.9)
    torch.testing.assert_close(step.mean, mean, rtol=0, atol=1e-13)
    torch.testing.assert_close(step.x_next, x_next, rtol=0, atol=1e-13)
    # sigma_max is ignored away from t = 1.
    a = sde_step(x, v, 0.8, 0.7, 0.7, noise)
    b = sde_step(x, v, 0.8, 0.7, 0.7, noise, sigma_max=0.5)
    assert torch.equal(a.x_next, b.x_next)


def test_per_sample_tensor_times_match_scalar_calls() -> None:
    x, v, noise = _rand(3, 2, 5, seed=16), _rand(3, 2, 5, seed=17), _rand(3, 2, 5, seed=18)
    t = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    t_next = torch.tensor([0.9, 0.3, 0.0], dtype=torch.float64)
    step = sde_step(x, v, t, t_next, 0.7, noise, sigma_max=0.9)
    log_prob = gaussian_log_prob(step.x_next, step.mean, step.std)
    for i in range(3):
        row = sde_step(x[i : i + 1], v[i : i + 1], t[i].item(), t_next[i].item(), 0.7, noise[i : i + 1], 0.9)
        torch.testing.assert_close(step.x_next[i : i + 1], row.x_next, rtol=0, atol=1e-15)
        torch.testing.assert_close(step.std[i : i + 1], row.std, rtol=0, atol=1e-15)
        torch.testing.assert_close(
            log_prob[i : i + 1], gaussian_log_prob(row.x_next, row.mean, row.std), rtol=1e-14, atol=0
        )


def test_mean_std_without_sampling_matches_step() -> None:
    x, v, noise = _rand(2, 7, seed=19), _rand(2, 7, seed=20), _rand(2, 7, seed=21)
    mean, std = sde_mean_std(x, v, 0.6, 0.45, 0.7)
    step = sde_step(x, v, 0.6, 0.45, 0.7, noise)
    assert torch.equal(mean, step.mean) and torch.equal(std, step.std)


def test_sde_validation_errors() -> None:
    x, v = _rand(2, 3, seed=22), _rand(2, 3, seed=23)
    with pytest.raises(SamplingInputError, match="noise_level"):
        sde_step(x, v, 0.5, 0.4, -0.1, x)
    with pytest.raises(SamplingInputError, match="t_next"):
        sde_step(x, v, 0.5, 0.5, 0.7, x)
    with pytest.raises(SamplingInputError, match="shape"):
        sde_step(x, v, 0.5, 0.4, 0.7, x[:, :2])
    with pytest.raises(SamplingInputError, match="sigma_max"):
        sde_step(x, v, 1.0, 0.4, 0.7, x, sigma_max=1.0)
