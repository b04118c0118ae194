"""The sampling loop: analytic endpoints, bit-for-bit regeneration, SDE windows, shapes and validation."""

from __future__ import annotations

import pytest
import torch
from sampling_refs import gaussian_endpoint, gaussian_velocity, point_mass_velocity

from workers.sampling import (
    SamplingInputError,
    candidate_seed,
    euler_step,
    flow_sigmas,
    gaussian_log_prob,
    initial_noise,
    sample,
    sde_mean_std,
    step_noise,
)

SHAPE = (2, 4, 4)  # per-sample latent (C, H, W)


def _seeds(n: int, iteration: int = 0) -> list[int]:
    return [candidate_seed(42, iteration, 0, k) for k in range(n)]


def _x_init(seeds: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return initial_noise(seeds, SHAPE, dtype=dtype, device="cpu")


def test_euler_with_point_mass_field_lands_on_the_analytic_solution() -> None:
    x0 = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = _x_init(_seeds(3), torch.float64)
    sigmas = flow_sigmas(7, shift=3.0)
    result = sample(point_mass_velocity(x0), x1, sigmas, solver="euler", keep_trajectory=True)
    # Euler is exact for this field: each step stays on x_t = (1 - t) x0 + t x1.
    for t, x_t in zip(sigmas.tolist(), result.trajectory, strict=True):
        torch.testing.assert_close(x_t, (1 - t) * x0 + t * x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.x0, x0, rtol=0, atol=1e-12)
    assert result.log_probs_BT is None and result.stochastic_steps == ()


def test_euler_with_gaussian_field_converges_to_the_analytic_endpoint() -> None:
    mu, s = 0.4, 0.6
    x1 = _x_init(_seeds(4), torch.float64)
    result = sample(gaussian_velocity(mu, s), x1, flow_sigmas(400), solver="euler")
    torch.testing.assert_close(result.x0, gaussian_endpoint(mu, s, x1), rtol=0, atol=1e-2)


def test_velocity_fn_sees_wide_t_and_latent_dtype() -> None:
    seen = []

    def velocity(x: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        seen.append((x.dtype, t_B.dtype, tuple(t_B.shape), t_B[0].item()))
        return torch.zeros_like(x)

    sigmas = flow_sigmas(3)
    result = sample(velocity, _x_init(_seeds(2), torch.bfloat16), sigmas, solver="dpm2")
    assert result.x0.dtype == torch.bfloat16
    assert [s[:3] for s in seen] == [(torch.bfloat16, torch.float32, (2,))] * 3
    assert [s[3] for s in seen] == sigmas[:-1].tolist()


def test_sde_sampling_is_regenerable_bit_for_bit() -> None:
    seeds = _seeds(3)
    velocity = gaussian_velocity(0.2, 0.5)
    kwargs = dict(solver="sde", seeds=seeds, noise_level=0.7, keep_trajectory=True)
    first = sample(velocity, _x_init(seeds), flow_sigmas(6), **kwargs)
    again = sample(velocity, _x_init(seeds), flow_sigmas(6), **kwargs)
    assert torch.equal(first.x0, again.x0)
    assert torch.equal(first.log_probs_BT, again.log_probs_BT)
    assert all(torch.equal(a, b) for a, b in zip(first.trajectory, again.trajectory, strict=True))
    # One candidate regenerated alone gets the same trajectory as inside its original batch.
    alone = sample(velocity, _x_init(seeds[1:2]), flow_sigmas(6), **{**kwargs, "seeds": seeds[1:2]})
    assert torch.equal(alone.x0[0], first.x0[1])
    torch.testing.assert_close(alone.log_probs_BT[0], first.log_probs_BT[1], rtol=1e-6, atol=1e-6)
    # Other seeds (another iteration) give other samples.
    other_seeds = _seeds(3, iteration=1)
    other = sample(velocity, _x_init(seeds), flow_sigmas(6), **{**kwargs, "seeds": other_seeds})
    assert not torch.equal(other.x0, first.x0)


def test_sde_log_probs_shape_and_trainer_style_reevaluation() -> None:
    seeds = _seeds(2)
    velocity = gaussian_velocity(0.0, 0.8)
    sigmas = flow_sigmas(5, shift=3.0)
    result = sample(
        velocity, _x_init(seeds), sigmas, solver="sde", seeds=seeds, noise_level=0.7, keep_trajectory=True
    )
    assert result.log_probs_BT.shape == (2, 5)
    assert result.means_BT.shape == (2, 5, *SHAPE) and result.stds_BT.shape == (2, 5)
    assert result.stochastic_steps == tuple(range(5))
    ts = sigmas.tolist()
    for i in range(5):
        x_t, x_next = result.trajectory[i], result.trajectory[i + 1]
        t_B = torch.full((2,), ts[i])
        mean, std = sde_mean_std(x_t, velocity(x_t, t_B), ts[i], ts[i + 1], 0.7, sigma_max=ts[1])
        assert torch.equal(gaussian_log_prob(x_next, mean, std), result.log_probs_BT[:, i])
        # The noise actually used is step_noise(seeds, i): x_next = mean + std * noise.
        noise = step_noise(seeds, i, SHAPE, dtype=torch.float32, device="cpu")
        torch.testing.assert_close(x_next, mean + std * noise, rtol=0, atol=1e-6)


def test_sde_window_makes_only_window_steps_stochastic() -> None:
    seeds = _seeds(2)
    velocity = gaussian_velocity(0.3, 0.7)
    sigmas = flow_sigmas(8)
    x1 = _x_init(seeds)
    window = range(2, 4)
    result = sample(
        velocity,
        x1,
        sigmas,
        solver="sde",
        seeds=seeds,
        noise_level=0.7,
        sde_window=window,
        keep_trajectory=True,
    )
    ode = sample(velocity, x1, sigmas, solver="euler", keep_trajectory=True)
    assert result.stochastic_steps == (2, 3)
    assert result.log_probs_BT.shape == (2, 2)
    ts = sigmas.tolist()
    for i in range(8):
        x_t, x_next = result.trajectory[i], result.trajectory[i + 1]
        euler = euler_step(x_t, velocity(x_t, torch.full((2,), ts[i])), ts[i], ts[i + 1])
        assert torch.equal(x_next, euler) == (i not in window), i
    # Before the window the trajectory is the ODE one; from the window on it has diverged.
    assert all(torch.equal(result.trajectory[i], ode.trajectory[i]) for i in range(3))
    assert not torch.equal(result.x0, ode.x0)


def test_cps_sampler_shapes_and_deterministic_last_step() -> None:
    seeds = _seeds(3)
    result = sample(
        gaussian_velocity(0.1, 0.9),
        _x_init(seeds),
        flow_sigmas(4),
        solver="cps",
        seeds=seeds,
        noise_level=0.8,
    )
    assert result.log_probs_BT.shape == (3, 4)
    assert torch.all(result.log_probs_BT <= 0)
    # sigma_cps = t_next sin(.) vanishes on the step to t = 0.
    assert torch.equal(result.stds_BT[:, -1], torch.zeros(3))
    assert torch.equal(result.log_probs_BT[:, -1], torch.zeros(3))


def test_progress_callback_is_called_once_per_step() -> None:
    calls: list[tuple[int, int]] = []
    sample(
        gaussian_velocity(0.0, 1.0),
        _x_init(_seeds(1)),
        flow_sigmas(5),
        solver="euler",
        progress=lambda i, n: calls.append((i, n)),
    )
    assert calls == [(i, 5) for i in range(5)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(solver="heun"), "solver"),
        (dict(solver="sde", noise_level=0.7), "seeds"),
        (dict(solver="sde", seeds=[1, 2], noise_level=0.0), "noise_level"),
        (dict(solver="cps", seeds=[1, 2], noise_level=1.5), "noise_level"),
        (dict(solver="euler", noise_level=0.7), "noise_level"),
        (dict(solver="dpm2", sde_window=range(0, 2)), "sde_window"),
        (dict(solver="sde", seeds=[1, 2], noise_level=0.7, sde_window=range(3, 5)), "sde_window"),
        (dict(solver="sde", seeds=[1, 2], noise_level=0.7, sde_window=range(2, 2)), "sde_window"),
        (dict(solver="sde", seeds=[1], noise_level=0.7), "seeds"),
    ],
)
def test_sample_validation_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(SamplingInputError, match=match):
        sample(gaussian_velocity(0.0, 1.0), torch.zeros(2, 3), flow_sigmas(4), **kwargs)


def test_bad_grids_and_velocity_shapes_raise() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(SamplingInputError, match="sigmas"):
        sample(gaussian_velocity(0.0, 1.0), x, torch.tensor([0.0, 0.5, 1.0]), solver="euler")
    with pytest.raises(SamplingInputError, match="sigmas"):
        sample(gaussian_velocity(0.0, 1.0), x, torch.tensor([1.0]), solver="euler")
    with pytest.raises(SamplingInputError, match="velocity_fn"):
        sample(lambda x, t: x[:, :2], x, flow_sigmas(2), solver="euler")
