"""select_candidates and selection_fidelity against plain-Python / scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from workers.objectives.selection import SELECTION_MODES, select_candidates, selection_fidelity


def _order(row: list[float]) -> list[int]:
    """Best to worst; equal rewards keep index order."""
    return sorted(range(len(row)), key=lambda i: (-row[i], i))


def _tied_rewards(num_prompts: int, n: int, seed: int) -> torch.Tensor:
    # Few distinct values, so ties are common and tie-breaking is exercised.
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (num_prompts, n), generator=gen).double()


def test_best_worst_matches_reference_with_ties() -> None:
    rewards = _tied_rewards(5, 16, seed=1)
    got = select_candidates(rewards, 6, "best_worst")
    assert got.dtype == torch.int64 and got.shape == (5, 6)
    for p in range(5):
        order = _order(rewards[p].tolist())
        expected = order[:3] + order[-3:][::-1]
        assert got[p].tolist() == expected
        assert len(set(got[p].tolist())) == 6


def test_best_worst_sol_rl_shape_and_order() -> None:
    rewards = torch.randn(2, 96, generator=torch.Generator().manual_seed(0))
    got = select_candidates(rewards, 24, "best_worst")
    chosen = rewards.gather(1, got)
    # Best block descending, worst block ascending, and every best beats every worst.
    assert (chosen[:, :11] >= chosen[:, 1:12]).all()
    assert (chosen[:, 12:23] <= chosen[:, 13:]).all()
    assert (chosen[:, :12].amin(dim=1) > chosen[:, 12:].amax(dim=1)).all()


def test_all_equal_rewards_do_not_overlap() -> None:
    got = select_candidates(torch.zeros(1, 4), 4, "best_worst")
    assert got.tolist() == [[0, 1, 3, 2]]


def test_k_errors() -> None:
    rewards = torch.randn(2, 8)
    with pytest.raises(ValueError, match="even"):
        select_candidates(rewards, 3, "best_worst")
    with pytest.raises(ValueError, match=r"k=10.*N=8"):
        select_candidates(rewards, 10, "mean_deviation")
    with pytest.raises(ValueError, match="k=0"):
        select_candidates(rewards, 0, "best_worst")
    with pytest.raises(ValueError, match="best_worst, random, extremes_random, mean_deviation"):
        select_candidates(rewards, 2, "top")
    with pytest.raises(ValueError, match="Generator"):
        select_candidates(rewards, 2, "random")
    with pytest.raises(ValueError, match="NaN"):
        select_candidates(torch.tensor([[0.0, float("nan")]]), 2, "best_worst")


def test_random_reproducible_without_replacement() -> None:
    rewards = torch.randn(4, 20)
    first = select_candidates(rewards, 7, "random", torch.Generator().manual_seed(3))
    again = select_candidates(rewards, 7, "random", torch.Generator().manual_seed(3))
    other = select_candidates(rewards, 7, "random", torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == (4, 7) and first.dtype == torch.int64
    for row in first.tolist():
        assert len(set(row)) == 7 and all(0 <= i < 20 for i in row)
    # k = N is a permutation.
    full = select_candidates(rewards, 20, "random", torch.Generator().manual_seed(0))
    assert (full.sort(dim=1).values == torch.arange(20)).all()


def test_random_is_roughly_uniform() -> None:
    gen = torch.Generator().manual_seed(0)
    got = select_candidates(torch.zeros(2000, 10), 3, "random", gen)
    counts = torch.bincount(got.flatten(), minlength=10).double()
    # Expected 600 per index; 5 sigma is ~ +-110.
    assert (counts - 600).abs().max() < 120


def test_extremes_random_rule() -> None:
    rewards = _tied_rewards(6, 20, seed=2)
    k = 10  # m = 2 best, 2 worst, 6 from the middle 16
    got = select_candidates(rewards, k, "extremes_random", torch.Generator().manual_seed(5))
    again = select_candidates(rewards, k, "extremes_random", torch.Generator().manual_seed(5))
    assert torch.equal(got, again)
    for p in range(6):
        order = _order(rewards[p].tolist())
        row = got[p].tolist()
        assert row[:2] == order[:2]
        assert row[2:4] == order[-2:][::-1]
        middle = set(order[2:-2])
        assert set(row[4:]) <= middle
        assert len(set(row)) == k


def test_mean_deviation_matches_reference() -> None:
    rewards = torch.randn(5, 12, generator=torch.Generator().manual_seed(7)).double()
    rewards[0] = torch.tensor(
        [0.0, 2.0, -2.0, 1.0, -1.0, 0.0, 2.0, -2.0, 0.5, 0.5, 3.0, -3.0], dtype=torch.float64
    )
    got = select_candidates(rewards, 5, "mean_deviation")
    for p in range(5):
        row = rewards[p].tolist()
        mean = sum(row) / len(row)
        dev = [abs(r - mean) for r in row]
        expected = sorted(range(len(row)), key=lambda i: (-dev[i], i))[:5]
        assert got[p].tolist() == expected


def test_all_modes_listed() -> None:
    gen = torch.Generator().manual_seed(0)
    for mode in SELECTION_MODES:
        out = select_candidates(torch.randn(3, 16), 8, mode, gen)
        assert out.shape == (3, 8)


def _scipy_reference(proxy: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    rhos = [stats.spearmanr(proxy[p], true[p]).statistic for p in range(proxy.shape[0])]
    taus = [stats.kendalltau(proxy[p], true[p]).statistic for p in range(proxy.shape[0])]
    return float(np.mean(rhos)), float(np.mean(taus))


@pytest.mark.parametrize("tied", [False, True])
def test_fidelity_correlations_match_scipy(tied: bool) -> None:
    gen = torch.Generator().manual_seed(11)
    true = torch.randn(8, 40, generator=gen, dtype=torch.float64)
    proxy = true + 0.7 * torch.randn(8, 40, generator=gen, dtype=torch.float64)
    if tied:
        true = true.round()
        proxy = (proxy * 2).round()
    selected = select_candidates(proxy, 12, "best_worst")
    got = selection_fidelity(proxy, true, selected, k=6)
    rho, tau = _scipy_reference(proxy.numpy(), true.numpy())
    assert got["spearman"] == pytest.approx(rho, abs=1e-10)
    assert got["kendall_tau"] == pytest.approx(tau, abs=1e-10)
    assert got["num_undefined_prompts"] == 0.0


def test_fidelity_overlap_and_ranks_match_reference() -> None:
    gen = torch.Generator().manual_seed(12)
    true = torch.randn(5, 30, generator=gen, dtype=torch.float64)
    proxy = true + torch.randn(5, 30, generator=gen, dtype=torch.float64)
    selected = select_candidates(proxy, 10, "best_worst")
    got = selection_fidelity(proxy, true, selected, k=4)
    top, bottom, best_ranks, worst_ranks = [], [], [], []
    for p in range(5):
        proxy_order = _order(proxy[p].tolist())
        true_order = _order(true[p].tolist())
        top.append(len(set(proxy_order[:4]) & set(true_order[:4])) / 4)
        bottom.append(len(set(proxy_order[-4:]) & set(true_order[-4:])) / 4)
        true_rank = {idx: pos + 1 for pos, idx in enumerate(true_order)}  # no ties in continuous data
        best_ranks += [true_rank[i] for i in selected[p, :5].tolist()]
        worst_ranks += [true_rank[i] for i in selected[p, 5:].tolist()]
    assert got["topk_overlap"] == pytest.approx(np.mean(top))
    assert got["bottomk_overlap"] == pytest.approx(np.mean(bottom))
    assert got["best_half_mean_true_rank"] == pytest.approx(np.mean(best_ranks))
    assert got["worst_half_mean_true_rank"] == pytest.approx(np.mean(worst_ranks))


def test_fidelity_overlap_with_ties_is_the_random_tie_break_expectation() -> None:
    """Many tied rewards (e.g. zeros from a weak model) must not count as agreement: the overlap is the
    expectation over random tie-breaks, checked against enumerating every tie order by brute force."""
    import itertools

    proxy = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    true = torch.tensor([[0.0, 0.0, 0.0, 0.0, 3.0, 0.0]], dtype=torch.float64)
    k = 2

    def top_sets(values: list[float]) -> list[set[int]]:
        # every top-k set a random tie-break can produce, weighted by its count of permutations
        sets = []
        for perm in itertools.permutations(range(len(values))):
            order = sorted(range(len(values)), key=lambda i: (-values[i], perm.index(i)))
            sets.append(set(order[:k]))
        return sets

    proxy_sets, true_sets = top_sets(proxy[0].tolist()), top_sets(true[0].tolist())
    expected = np.mean([len(a & b) / k for a in proxy_sets for b in true_sets])
    selected = select_candidates(proxy, 2, "best_worst")
    got = selection_fidelity(proxy, true, selected, k=k)
    assert got["topk_overlap"] == pytest.approx(expected)
    # proxy top-2 = {5, 0}; true top-2 = {4} + one of five tied zeros, which is index 0 or 5 w.p. 2/5
    assert got["topk_overlap"] == pytest.approx((2 / 5) / 2)
    # All ties on both sides: the overlap is what random sets give, k / N, not 1.
    flat = torch.zeros(1, 6, dtype=torch.float64)
    assert selection_fidelity(flat, flat, select_candidates(flat, 2, "best_worst"), k=3)["topk_overlap"] == \
        pytest.approx(3 / 6)


def test_fidelity_perfect_and_reversed_proxy() -> None:
    true = torch.randn(4, 96, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    proxy = 3.0 * true + 1.0  # monotone transform: same ranking
    selected = select_candidates(proxy, 24, "best_worst")
    got = selection_fidelity(proxy, true, selected, k=4)
    assert got["spearman"] == pytest.approx(1.0)
    assert got["kendall_tau"] == pytest.approx(1.0)
    assert got["topk_overlap"] == 1.0 and got["bottomk_overlap"] == 1.0
    # Ranks 1..12 and 85..96: K/4 + 0.5 and N - K/4 + 0.5.
    assert got["best_half_mean_true_rank"] == pytest.approx(6.5)
    assert got["worst_half_mean_true_rank"] == pytest.approx(90.5)

    reversed_ = selection_fidelity(-true, true, select_candidates(-true, 24, "best_worst"), k=4)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0)
    assert reversed_["topk_overlap"] == 0.0
    assert reversed_["best_half_mean_true_rank"] == pytest.approx(90.5)


def test_fidelity_constant_prompt_is_left_out() -> None:
    true = torch.randn(3, 10, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    proxy = true.clone()
    proxy[1] = 0.0  # correlation undefined for prompt 1
    got = selection_fidelity(proxy, true, select_candidates(proxy, 4, "best_worst"), k=2)
    assert got["num_undefined_prompts"] == 1.0
    assert got["spearman"] == pytest.approx(1.0)


def test_fidelity_validation() -> None:
    rewards = torch.randn(2, 8)
    selected = select_candidates(rewards, 4, "best_worst")
    with pytest.raises(ValueError, match="same candidates"):
        selection_fidelity(rewards, torch.randn(2, 9), selected, k=2)
    with pytest.raises(ValueError, match="even"):
        selection_fidelity(rewards, rewards, selected[:, :3], k=2)
    with pytest.raises(ValueError, match="outside"):
        selection_fidelity(rewards, rewards, selected + 8, k=2)
    with pytest.raises(ValueError, match="k=9"):
        selection_fidelity(rewards, rewards, selected, k=9)
