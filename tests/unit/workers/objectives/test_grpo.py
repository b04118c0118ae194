"""Flow-GRPO clipped loss, Gaussian KL and SDE window against float64 loop references."""

from __future__ import annotations

import math

import pytest
import torch

from workers.objectives.grpo import gaussian_mean_kl, grpo_loss, sde_window


def _reference(new, old, adv, clip_range, kl, kl_beta) -> tuple[float, float]:
    """(loss, clip_fraction) by plain loops in float64."""
    batch, steps = len(new), len(new[0])
    terms, clipped = [], 0
    for i in range(batch):
        for k in range(steps):
            ratio = math.exp(new[i][k] - old[i][k])
            clipped_ratio = min(max(ratio, 1 - clip_range), 1 + clip_range)
            terms.append(max(-adv[i] * ratio, -adv[i] * clipped_ratio))
            clipped += abs(ratio - 1) > clip_range
    loss = sum(terms) / len(terms)
    if kl is not None:
        loss += kl_beta * sum(sum(row) for row in kl) / (batch * steps)
    return loss, clipped / (batch * steps)


def _case(seed: int, scale: float):
    gen = torch.Generator().manual_seed(seed)
    old = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    new = old + scale * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    kl = torch.rand(4, 3, generator=gen, dtype=torch.float64)
    return new, old, adv, kl


@pytest.mark.parametrize(
    ("scale", "clip_range", "kl_beta"), [(1e-5, 1e-4, 0.0), (1e-3, 1e-4, 0.04), (0.3, 0.2, 0.01)]
)
def test_matches_reference(scale: float, clip_range: float, kl_beta: float) -> None:
    new, old, adv, kl = _case(0, scale)
    out = grpo_loss(new, old, adv, clip_range=clip_range, kl_BT=kl, kl_beta=kl_beta)
    loss, clip_fraction = _reference(
        new.tolist(), old.tolist(), adv.tolist(), clip_range, kl.tolist(), kl_beta
    )
    assert out.loss.item() == pytest.approx(loss, rel=1e-12, abs=1e-15)
    assert out.clip_fraction.item() == pytest.approx(clip_fraction)
    assert out.kl.item() == pytest.approx(kl.mean().item())
    assert out.approx_kl.item() == pytest.approx(0.5 * ((new - old) ** 2).mean().item())
    assert out.ratio_mean.item() == pytest.approx(torch.exp(new - old).mean().item())


def test_clipping_engages_beyond_range() -> None:
    old = torch.zeros(2, 4, dtype=torch.float64)
    # ratios exp(+-2e-4) lie outside 1 +- 1e-4; exp(+-5e-5) lie inside.
    new = torch.tensor([[2e-4, -2e-4, 5e-5, -5e-5], [2e-4, -2e-4, 5e-5, -5e-5]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    leaf = new.clone().requires_grad_(True)
    out = grpo_loss(leaf, old, adv, clip_range=1e-4)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    out.loss.backward()
    grad = leaf.grad
    # A > 0: ratio above 1 + eps is clipped (no gradient); below 1 - eps keeps its gradient (pessimistic).
    assert grad[0, 0] == 0 and grad[0, 1] != 0
    # A < 0: ratio below 1 - eps is clipped; above 1 + eps keeps its gradient.
    assert grad[1, 1] == 0 and grad[1, 0] != 0
    assert (grad[:, 2:] != 0).all()


def test_gradient_sign_follows_advantage() -> None:
    old = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaf = old.clone().requires_grad_(True)  # ratio = 1: inside the clip range
    adv = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    grpo_loss(leaf, old, adv).loss.backward()
    # Gradient descent moves log_prob_new opposite to the gradient: up for A > 0, down for A < 0.
    torch.testing.assert_close(leaf.grad, -adv[:, None].expand(3, 5) / 15)
    assert (leaf.grad[0] < 0).all() and (leaf.grad[1] > 0).all() and (leaf.grad[2] == 0).all()


def test_kl_term_and_errors() -> None:
    new, old, adv, kl = _case(2, 1e-5)
    with_kl = grpo_loss(new, old, adv, kl_BT=kl, kl_beta=0.5).loss.item()
    without = grpo_loss(new, old, adv, kl_BT=kl).loss.item()
    assert with_kl - without == pytest.approx(0.5 * kl.mean().item())
    with pytest.raises(ValueError, match="kl_BT is None"):
        grpo_loss(new, old, adv, kl_beta=0.1)
    with pytest.raises(ValueError, match="kl_BT"):
        grpo_loss(new, old, adv, kl_BT=kl[:, :2])
    with pytest.raises(ValueError, match=r"advantages_B must have shape \[B=4\]"):
        grpo_loss(new, old, adv[:3])
    with pytest.raises(ValueError, match="log_prob_old_BT"):
        grpo_loss(new, old[:, :2], adv)
    with pytest.raises(ValueError, match="clip_range"):
        grpo_loss(new, old, adv, clip_range=0.0)


def test_gaussian_mean_kl_matches_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    mu = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    mu_ref = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    std = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    got = gaussian_mean_kl(mu, mu_ref, std)
    flat_mu, flat_ref = mu.reshape(3, -1).tolist(), mu_ref.reshape(3, -1).tolist()
    for b in range(3):
        dim = len(flat_mu[b])
        expected = (
            sum((a - c) ** 2 for a, c in zip(flat_mu[b], flat_ref[b], strict=True))
            / dim
            / (2 * std[b].item() ** 2)
        )
        assert got[b].item() == pytest.approx(expected, rel=1e-12)
    # A scalar std broadcasts over the batch.
    torch.testing.assert_close(
        gaussian_mean_kl(mu, mu_ref, 0.5), gaussian_mean_kl(mu, mu_ref, torch.full((3,), 0.5))
    )
    # Gradient pulls mu_theta toward mu_ref and not the other way.
    leaf = mu.clone().requires_grad_(True)
    ref_leaf = mu_ref.clone().requires_grad_(True)
    gaussian_mean_kl(leaf, ref_leaf, std).sum().backward()
    assert ((leaf.grad * (mu_ref - mu)).sum() < 0) and ref_leaf.grad is None


def test_gaussian_mean_kl_errors() -> None:
    mu = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="> 0"):
        gaussian_mean_kl(mu, mu, 0.0)
    with pytest.raises(ValueError, match=r"\[B=2\]"):
        gaussian_mean_kl(mu, mu, torch.ones(3))
    with pytest.raises(ValueError, match="mean_ref"):
        gaussian_mean_kl(mu, torch.zeros(2, 4), 1.0)


def test_sde_window_ranges() -> None:
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(300):
        window = sde_window(10, 2, (0, 10), gen)
        assert isinstance(window, range) and len(window) == 2 and window.step == 1
        assert 0 <= window.start and window.stop <= 10
        starts.add(window.start)
    assert starts == set(range(0, 9))  # every start 0..hi - size is reachable
    # High-noise half, as the *_fast_nocfg configs.
    starts = {sde_window(10, 3, (0, 5), gen).start for _ in range(200)}
    assert starts == {0, 1, 2}
    assert sde_window(10, 4, (3, 7), gen) == range(3, 7)  # window fills the range
    first = [sde_window(10, 2, (0, 10), torch.Generator().manual_seed(9)) for _ in range(2)]
    assert first[0] == first[1]


@pytest.mark.parametrize(
    ("num_steps", "size", "window_range", "match"),
    [
        (0, 1, (0, 1), "num_steps"),
        (10, 0, (0, 10), "window_size"),
        (10, 5, (2, 6), "window_size"),
        (10, 2, (0, 11), "window_range"),
        (10, 2, (5, 5), "window_range"),
        (10, 2, (-1, 4), "window_range"),
    ],
)
def test_sde_window_errors(num_steps: int, size: int, window_range: tuple[int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sde_window(num_steps, size, window_range, torch.Generator().manual_seed(0))
