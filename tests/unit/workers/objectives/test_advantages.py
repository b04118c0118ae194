"""compute_advantages / zero_std_fraction against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.objectives.advantages import compute_advantages, zero_std_fraction


def _reference(rewards: np.ndarray, global_std: bool, eps: float, clip: float) -> np.ndarray:
    rewards = rewards.astype(np.float64)
    out = np.zeros_like(rewards)
    all_std = np.std(rewards)  # population std, as flow_grpo
    for p in range(rewards.shape[0]):
        row = rewards[p]
        mean = sum(row) / len(row)
        std = all_std if global_std else np.std(row)
        for k in range(len(row)):
            out[p, k] = min(max((row[k] - mean) / (std + eps), -clip), clip)
    return out


@pytest.mark.parametrize("global_std", [True, False])
def test_matches_reference(global_std: bool) -> None:
    rng = np.random.default_rng(0)
    # Different per-prompt scales so that global and per-prompt std differ.
    rewards = rng.normal(size=(6, 8)) * np.arange(1, 7)[:, None] + rng.normal(size=(6, 1))
    got = compute_advantages(torch.from_numpy(rewards), global_std=global_std, clip=100.0)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(
        got.numpy(), _reference(rewards, global_std, 1e-4, 100.0), rtol=1e-12, atol=1e-12
    )


def test_global_and_per_prompt_differ() -> None:
    rewards = torch.tensor([[0.0, 1.0], [0.0, 10.0]], dtype=torch.float64)
    per_prompt = compute_advantages(rewards, global_std=False)
    global_ = compute_advantages(rewards, global_std=True)
    # Per-prompt std normalises each group to +-1; the global one keeps the scale difference.
    np.testing.assert_allclose(per_prompt.numpy(), [[-1, 1], [-1, 1]], atol=1e-3)
    assert global_[1, 1] > 5 * global_[0, 1]


def test_population_std_not_sample_std() -> None:
    rewards = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    # Population std of {1, 3} is 1 (the sample std would be sqrt(2)).
    got = compute_advantages(rewards, global_std=False, eps=0.0)
    np.testing.assert_allclose(got.numpy(), [[-1.0, 1.0]], rtol=1e-12)


def test_clipping() -> None:
    rewards = torch.zeros(1, 100, dtype=torch.float64)
    rewards[0, 0] = 1000.0  # one outlier: (r - mean)/std = 99/sqrt(99) ~ 9.9 > 5
    got = compute_advantages(rewards, global_std=False, clip=5.0)
    ref = _reference(rewards.numpy(), False, 1e-4, 5.0)
    assert got[0, 0].item() == pytest.approx(5.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert got.abs().max().item() <= 5.0


def test_zero_std_group_gives_zero_advantage() -> None:
    rewards = torch.tensor([[2.0, 2.0, 2.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    for global_std in (True, False):
        got = compute_advantages(rewards, global_std=global_std)
        assert torch.equal(got[0], torch.zeros(3, dtype=torch.float64))
        assert torch.isfinite(got).all()
    assert zero_std_fraction(rewards) == pytest.approx(0.5)
    assert zero_std_fraction(torch.ones(4, 3)) == 1.0
    assert zero_std_fraction(torch.arange(12.0).reshape(4, 3)) == 0.0


def test_integer_rewards_become_float32() -> None:
    got = compute_advantages(torch.tensor([[0, 1], [1, 1]]))
    assert got.dtype == torch.float32


@pytest.mark.parametrize(
    ("rewards", "kwargs", "match"),
    [
        (torch.zeros(4), {}, r"\[P, K\]"),
        (torch.zeros(0, 3), {}, "empty"),
        (torch.tensor([[0.0, float("nan")]]), {}, "NaN"),
        (torch.zeros(2, 2), {"clip": 0.0}, "clip"),
        (torch.zeros(2, 2), {"eps": -1.0}, "eps"),
    ],
)
def test_validation(rewards: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_advantages(rewards, **kwargs)
