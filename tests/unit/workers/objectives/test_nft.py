"""DiffusionNFT loss against a float64 loop reference, its gradient directions, and the old-adapter EMA."""

from __future__ import annotations

import math

import pytest
import torch

from workers.objectives.nft import ema_decay, nft_loss, update_old_params


def _reference(v_theta, v_old, v_ref, x_t, x0, t, adv, beta, adv_clip, kl_beta) -> float:
    """Plain-Python float64 NFT loss, one sample and one element at a time."""
    batch = v_theta.shape[0]
    flat = [x.reshape(batch, -1).double().tolist() for x in (v_theta, v_old, v_ref, x_t, x0)]
    vth, vo, vr, xt, x0s = flat
    policy_terms, kl_terms = [], []
    for b in range(batch):
        a = min(max(float(adv[b]), -adv_clip), adv_clip)
        r = min(max(a / adv_clip / 2 + 0.5, 0.0), 1.0)
        tb = float(t[b])
        dim = len(vth[b])
        err_pos = [xt[b][d] - tb * (beta * vth[b][d] + (1 - beta) * vo[b][d]) - x0s[b][d] for d in range(dim)]
        err_neg = [xt[b][d] - tb * ((1 + beta) * vo[b][d] - beta * vth[b][d]) - x0s[b][d] for d in range(dim)]
        l_pos = (sum(e * e for e in err_pos) / dim) / max(sum(abs(e) for e in err_pos) / dim, 1e-5)
        l_neg = (sum(e * e for e in err_neg) / dim) / max(sum(abs(e) for e in err_neg) / dim, 1e-5)
        policy_terms.append((r * l_pos + (1 - r) * l_neg) / beta)
        kl_terms.append(sum((vth[b][d] - vr[b][d]) ** 2 for d in range(dim)) / dim)
    policy = adv_clip * sum(policy_terms) / batch
    kl = sum(kl_terms) / batch
    return policy + kl_beta * kl


def _case(shape: tuple[int, ...], seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    batch = shape[0]
    x0 = torch.randn(shape, generator=gen, dtype=dtype)
    eps = torch.randn(shape, generator=gen, dtype=dtype)
    t = torch.rand(batch, generator=gen, dtype=dtype) * 0.8 + 0.1
    tt = t.reshape((-1,) + (1,) * (len(shape) - 1))
    x_t = (1 - tt) * x0 + tt * eps
    target = eps - x0
    v_old = target + 0.3 * torch.randn(shape, generator=gen, dtype=dtype)
    v_theta = v_old + 0.1 * torch.randn(shape, generator=gen, dtype=dtype)
    v_ref = target + 0.5 * torch.randn(shape, generator=gen, dtype=dtype)
    adv = torch.randn(batch, generator=gen, dtype=dtype) * 4
    return v_theta, v_old, v_ref, x_t, x0, t, adv, target


@pytest.mark.parametrize(
    ("shape", "beta", "adv_clip", "kl_beta"),
    [((3, 2, 4, 4), 1.0, 5.0, 1e-4), ((4, 6, 3), 0.3, 5.0, 0.1), ((2, 3, 2, 2), 0.1, 2.0, 0.0)],
)
def test_matches_reference(shape, beta, adv_clip, kl_beta) -> None:
    v_theta, v_old, v_ref, x_t, x0, t, adv, _ = _case(shape, seed=0)
    adv[0] = 50.0  # beyond the clip
    out = nft_loss(v_theta, v_old, v_ref, x_t, x0, t, adv, beta=beta, adv_clip=adv_clip, kl_beta=kl_beta)
    expected = _reference(v_theta, v_old, v_ref, x_t, x0, t, adv, beta, adv_clip, kl_beta)
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    assert out.policy_loss.item() + kl_beta * out.kl.item() == pytest.approx(expected, rel=1e-10)
    assert not out.nonfinite.item()
    r = (adv.clamp(-adv_clip, adv_clip) / adv_clip / 2 + 0.5).clamp(0, 1)
    assert out.r_mean.item() == pytest.approx(r.mean().item())


def test_bf16_inputs_are_upcast() -> None:
    v_theta, v_old, v_ref, x_t, x0, t, adv, _ = _case((2, 4, 8), seed=1)
    out = nft_loss(*(x.bfloat16() for x in (v_theta, v_old, v_ref, x_t, x0, t, adv)))
    assert out.loss.dtype == torch.float32
    expected = _reference(*(x.bfloat16() for x in (v_theta, v_old, v_ref, x_t, x0, t, adv)), 1.0, 5.0, 1e-4)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def _sgd_step(v_theta, v_old, v_ref, x_t, x0, t, adv, lr=1e-2, **kwargs):
    leaf = v_theta.clone().requires_grad_(True)
    out = nft_loss(leaf, v_old, v_ref, x_t, x0, t, adv, **kwargs)
    out.loss.backward()
    return out.loss.item(), (leaf - lr * leaf.grad).detach(), leaf.grad


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_positive_advantage_moves_toward_target(beta: float) -> None:
    v_theta, v_old, v_ref, x_t, x0, t, _, target = _case((4, 2, 4, 4), seed=2)
    adv = torch.full((4,), 5.0, dtype=torch.float64)  # r = 1: only the positive policy is trained
    v_theta = v_old.clone()
    loss_before, stepped, _ = _sgd_step(v_theta, v_old, v_ref, x_t, x0, t, adv, beta=beta, kl_beta=0.0)
    loss_after = nft_loss(stepped, v_old, v_ref, x_t, x0, t, adv, beta=beta, kl_beta=0.0).loss.item()
    assert loss_after < loss_before
    tt = t[:, None, None, None]
    dist = lambda v: ((x_t - tt * v) - x0).pow(2).sum().item()  # noqa: E731
    v_pos_before = beta * v_theta + (1 - beta) * v_old
    v_pos_after = beta * stepped + (1 - beta) * v_old
    assert dist(v_pos_after) < dist(v_pos_before)  # x0_pos moves toward x0
    assert ((stepped - v_theta) * (target - v_theta)).sum().item() > 0


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_negative_advantage_moves_away_from_target(beta: float) -> None:
    v_theta, v_old, v_ref, x_t, x0, t, _, target = _case((4, 2, 4, 4), seed=3)
    adv = torch.full((4,), -5.0, dtype=torch.float64)  # r = 0: only the implicit negative policy
    v_theta = v_old.clone()
    loss_before, stepped, _ = _sgd_step(v_theta, v_old, v_ref, x_t, x0, t, adv, beta=beta, kl_beta=0.0)
    loss_after = nft_loss(stepped, v_old, v_ref, x_t, x0, t, adv, beta=beta, kl_beta=0.0).loss.item()
    assert loss_after < loss_before
    v_neg_before = (1 + beta) * v_old - beta * v_theta
    v_neg_after = (1 + beta) * v_old - beta * stepped
    assert (v_neg_after - target).norm() < (v_neg_before - target).norm()  # v_neg -> target
    assert ((stepped - v_theta) * (target - v_theta)).sum().item() < 0  # v_theta moves away


def test_zero_advantage_at_old_policy_leaves_only_kl_gradient() -> None:
    # With A = 0 (r = 1/2) and v_theta = v_old, the l+ and l- gradients cancel, so the gradient is
    # exactly the KL's: kl_beta * 2 (v_theta - v_ref) / (B * D).
    v_theta, v_old, v_ref, x_t, x0, t, _, _ = _case((3, 5, 6), seed=4)
    v_theta = v_old.clone()
    adv = torch.zeros(3, dtype=torch.float64)
    kl_beta = 0.5
    _, stepped, grad = _sgd_step(v_theta, v_old, v_ref, x_t, x0, t, adv, kl_beta=kl_beta)
    expected_grad = kl_beta * 2 * (v_theta - v_ref) / (3 * 5 * 6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)
    assert (stepped - v_ref).norm() < (v_theta - v_ref).norm()


def test_old_and_ref_get_no_gradient() -> None:
    v_theta, v_old, v_ref, x_t, x0, t, adv, _ = _case((2, 3, 4), seed=5)
    leaves = [x.clone().requires_grad_(True) for x in (v_theta, v_old, v_ref)]
    nft_loss(*leaves, x_t, x0, t, adv).loss.backward()
    assert leaves[0].grad is not None and leaves[0].grad.abs().sum() > 0
    assert leaves[1].grad is None and leaves[2].grad is None


def test_nonfinite_loss_is_zeroed_with_zero_gradient() -> None:
    v_theta, v_old, v_ref, x_t, x0, t, adv, _ = _case((2, 3, 4), seed=6)
    x0 = x0.clone()
    x0[0, 0, 0] = math.inf
    leaf = v_theta.clone().requires_grad_(True)
    out = nft_loss(leaf, v_old, v_ref, x_t, x0, t, adv)
    assert out.nonfinite.item()
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.equal(leaf.grad, torch.zeros_like(leaf))

    nan_leaf = v_theta.clone()
    nan_leaf[1, 2, 3] = math.nan
    nan_leaf.requires_grad_(True)
    out = nft_loss(nan_leaf, v_old, v_ref, x_t, x0, t, adv)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(nan_leaf.grad, torch.zeros_like(nan_leaf))


def test_validation() -> None:
    v_theta, v_old, v_ref, x_t, x0, t, adv, _ = _case((2, 3, 4), seed=7)
    with pytest.raises(ValueError, match="v_old"):
        nft_loss(v_theta, v_old[:, :2], v_ref, x_t, x0, t, adv)
    with pytest.raises(ValueError, match=r"t must have shape \[B=2\]"):
        nft_loss(v_theta, v_old, v_ref, x_t, x0, t[:, None], adv)
    with pytest.raises(ValueError, match="beta"):
        nft_loss(v_theta, v_old, v_ref, x_t, x0, t, adv, beta=0.0)
    with pytest.raises(ValueError, match="adv_clip"):
        nft_loss(v_theta, v_old, v_ref, x_t, x0, t, adv, adv_clip=-1.0)
    with pytest.raises(ValueError, match="kl_beta"):
        nft_loss(v_theta, v_old, v_ref, x_t, x0, t, adv, kl_beta=math.nan)


def test_ema_decay_schedules() -> None:
    assert [ema_decay(s, 1) for s in (0, 1, 100, 499, 500, 5000)] == pytest.approx(
        [0.0, 0.001, 0.1, 0.499, 0.5, 0.5]
    )
    assert [ema_decay(s, 2) for s in (0, 74, 75, 76, 175, 208, 209, 10_000)] == pytest.approx(
        [0.0, 0.0, 0.0, 0.0075, 0.75, 0.9975, 0.999, 0.999]
    )
    with pytest.raises(ValueError, match=r"valid: \[1, 2\]"):
        ema_decay(1, 3)
    with pytest.raises(ValueError, match="step"):
        ema_decay(-1, 1)


def test_update_old_params_in_place() -> None:
    gen = torch.Generator().manual_seed(8)
    old = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    new = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    old_copy = [o.double().tolist() for o in old]
    handles = [o.data_ptr() for o in old]
    update_old_params(old, new, 0.25)
    for o, o_before, n, ptr in zip(old, old_copy, new, handles, strict=True):
        expected = 0.25 * torch.tensor(o_before, dtype=torch.float64) + 0.75 * n.double()
        torch.testing.assert_close(o.double(), expected, rtol=1e-6, atol=1e-6)
        assert o.data_ptr() == ptr
    update_old_params(old, new, 0.0)
    assert all(torch.equal(o, n) for o, n in zip(old, new, strict=True))


def test_update_old_params_with_parameters_and_errors() -> None:
    old = torch.nn.Parameter(torch.zeros(2))
    new = torch.nn.Parameter(torch.ones(2))
    update_old_params([old], [new], 0.5)  # must not complain about in-place ops on leaves
    assert old.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="decay"):
        update_old_params([old], [new], 1.5)
    with pytest.raises(ValueError, match="1 tensors but new has 2"):
        update_old_params([old], [new, new], 0.5)
    with pytest.raises(ValueError, match="shape"):
        update_old_params([old], [torch.ones(3)], 0.5)
