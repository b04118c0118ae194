"""Sigma grids against plain float64 formulas (and diffusers' FLUX scheduler for the dynamic shift)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.sampling import SamplingInputError, flow_sigmas, flux_mu, time_shift_exponential


@pytest.mark.parametrize("num_steps", [1, 6, 10, 40])
def test_shift_one_is_linear(num_steps: int) -> None:
    sigmas = flow_sigmas(num_steps)
    expected = np.array([1.0 - i / num_steps for i in range(num_steps + 1)])
    assert sigmas.dtype == torch.float32
    assert sigmas.shape == (num_steps + 1,)
    np.testing.assert_allclose(sigmas.numpy(), expected, rtol=0, atol=1e-7)
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0


def test_shift_three_matches_formula() -> None:
    num_steps, shift = 10, 3.0
    s = np.linspace(1.0, 0.0, num_steps + 1)
    expected = shift * s / (1.0 + (shift - 1.0) * s)
    sigmas = flow_sigmas(num_steps, shift=shift)
    np.testing.assert_allclose(sigmas.numpy(), expected.astype(np.float32), rtol=0, atol=0)
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert bool(torch.all(sigmas[:-1] > sigmas[1:]))
    # shift > 1 spends more of the grid at high noise: every interior sigma moves up.
    assert bool(torch.all(sigmas[1:-1] > flow_sigmas(num_steps)[1:-1]))


def test_flux_mu_is_linear_interpolation() -> None:
    assert flux_mu(256) == pytest.approx(0.5)
    assert flux_mu(4096) == pytest.approx(1.15)
    # FLUX.1 at 512x512: (512/16)^2 = 1024 packed tokens.
    assert flux_mu(1024) == pytest.approx(0.5 + (1.15 - 0.5) * (1024 - 256) / (4096 - 256))
    assert flux_mu(1000, 100, 1100, 0.0, 1.0) == pytest.approx(0.9)


def test_time_shift_exponential_matches_formula_and_endpoints() -> None:
    mu = 0.83
    sigmas = flow_sigmas(8)
    out = time_shift_exponential(mu, sigmas)
    s = sigmas.double().numpy()[:-1]
    expected = math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0))
    np.testing.assert_allclose(out[:-1].numpy(), expected, rtol=1e-6)
    assert out[0].item() == 1.0 and out[-1].item() == 0.0
    assert out.dtype == sigmas.dtype
    assert bool(torch.all(out[:-1] > out[1:]))
    torch.testing.assert_close(time_shift_exponential(0.0, sigmas), sigmas)


def test_flux_grid_matches_diffusers_scheduler() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    num_steps, seq_len = 10, 1024
    mu = flux_mu(seq_len)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    # FLUX's pipeline passes linspace(1, 1/N, N) and the scheduler appends the terminal 0.
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / num_steps, num_steps).tolist(), mu=mu)
    ours = time_shift_exponential(mu, flow_sigmas(num_steps))
    torch.testing.assert_close(ours, scheduler.sigmas.to(torch.float32), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, True])
def test_bad_num_steps_raise(num_steps) -> None:
    with pytest.raises(SamplingInputError, match="num_steps"):
        flow_sigmas(num_steps)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_shift_raises(shift: float) -> None:
    with pytest.raises(SamplingInputError, match="shift"):
        flow_sigmas(10, shift=shift)


def test_time_shift_rejects_out_of_range_and_flux_mu_rejects_degenerate() -> None:
    with pytest.raises(SamplingInputError, match="sigmas"):
        time_shift_exponential(0.5, torch.tensor([1.2, 0.5, 0.0]))
    with pytest.raises(SamplingInputError, match="mu"):
        time_shift_exponential(float("nan"), flow_sigmas(4))
    with pytest.raises(SamplingInputError, match="max_seq_len"):
        flux_mu(1024, base_seq_len=256, max_seq_len=256)
    with pytest.raises(SamplingInputError, match="image_seq_len"):
        flux_mu(0)
