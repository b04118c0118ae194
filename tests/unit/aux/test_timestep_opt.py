"""aux.timestep_opt: the objective against float64 references, the optimiser, the diffusers bridge, the flow
grid for the RL sampler, the loader and the config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.integrate import quad

from workers.aux.common.data import GaussianMixture2D
from workers.aux.common.ddpm import make_scheduler
from workers.aux.timestep_opt.config import TimestepOptConfig
from workers.aux.timestep_opt.diffusers_bridge import make_solver, set_grid, solve
from workers.aux.timestep_opt.flow import optimized_flow_sigmas, sampler_order_pattern
from workers.aux.timestep_opt.grids import baseline_lambdas
from workers.aux.timestep_opt.loader import load_vp_model
from workers.aux.timestep_opt.objective import lagrange_exp_weights, order_pattern, step_objective
from workers.aux.timestep_opt.optimize import optimize_time_steps
from workers.aux.timestep_opt.problems import gmm_flow_velocity_fn, gmm_posterior_mean
from workers.aux.timestep_opt.schedule import DiscreteVPSchedule, FlowSchedule


@pytest.fixture(scope="module")
def vp() -> DiscreteVPSchedule:
    return DiscreteVPSchedule.from_scheduler(make_scheduler())


# ---- float64 references, written out independently of the package ------------------------------------
def quad_weights(nodes: list[float], a: float, b: float) -> list[float]:
    """int_a^b e^x l_j(x) dx by adaptive quadrature of the Lagrange basis."""
    def basis(j: int, x: float) -> float:
        return math.prod((x - nodes[i]) / (nodes[j] - nodes[i]) for i in range(len(nodes)) if i != j)
    return [quad(lambda x, j=j: math.exp(x) * basis(j, x), a, b, epsabs=0, epsrel=1e-13)[0] for j in range(len(nodes))]


def paper_objective(lam: np.ndarray, trunc: int, weight: str = "s2a") -> float:
    """The brief's closed forms (H0, H1, H2; order 1, 2, 3, ..., 3, 2, 1), one step at a time."""
    n_steps = len(lam) - 1
    h = np.diff(lam)
    e = np.exp(lam)
    alpha, sigma = 1 / np.sqrt(1 + np.exp(-2 * lam)), 1 / np.sqrt(1 + np.exp(2 * lam))
    w = sigma**2 / alpha if weight == "s2a" else sigma / alpha

    def h0(x):
        return math.exp(x) - 1

    def h1(x):
        return x * math.exp(x) - h0(x)

    def h2(x):
        return x * x * math.exp(x) - 2 * h1(x)

    res, c = 0.0, np.zeros(n_steps + 1)
    for s in range(n_steps):
        if s in (0, n_steps - 1):
            res += abs(w[s] * (e[s + 1] - e[s]))
            continue
        if s in (1, n_steps - 2):
            n = s - 1
            js = [-e[n + 1] * h1(h[n + 1]) / h[n], e[n + 1] * (h1(h[n + 1]) + h[n] * h0(h[n + 1])) / h[n]]
        else:
            n, hh = s - 2, h[s]
            js = [e[n + 2] * (h2(hh) + h[n + 1] * h1(hh)) / (h[n] * (h[n] + h[n + 1])),
                  -e[n + 2] * (h2(hh) + (h[n] + h[n + 1]) * h1(hh)) / (h[n] * h[n + 1]),
                  e[n + 2] * (h2(hh) + (2 * h[n + 1] + h[n]) * h1(hh) + h[n + 1] * (h[n] + h[n + 1]) * h0(hh))
                  / (h[n + 1] * (h[n] + h[n + 1]))]
        terms = [w[n + j] * v for j, v in enumerate(js)]
        if s >= trunc:
            for j, v in enumerate(terms):
                c[n + j] += v
        else:
            res += math.sqrt(sum(v * v for v in terms))
    return res + float(np.abs(c).sum())


# ---- the math ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes,a,b", [([0.3], 0.3, 0.9), ([-1.2, -0.4], -0.4, 0.5), ([-2.0, -1.1, -0.5], -0.5, 0.7),
                                       ([1.0, 2.5, 3.1], 3.1, 4.4)])
def test_exponential_lagrange_weights_match_quadrature(nodes, a, b):
    assert lagrange_exp_weights(nodes, a, b) == pytest.approx(quad_weights(nodes, a, b), rel=1e-9)


@pytest.mark.parametrize("trunc", [0, 3, 99])
@pytest.mark.parametrize("weight", ["sigma2_over_alpha", "sigma_over_alpha"])
def test_objective_matches_the_closed_form_reference(trunc, weight):
    rng = np.random.default_rng(trunc)
    for n_steps in (5, 6, 9):
        lam = np.sort(rng.uniform(-5.0, 4.6, n_steps + 1))
        ours = step_objective(lam, order_pattern(n_steps, 3), weight, trunc)
        ref = paper_objective(lam, trunc, "s2a" if weight == "sigma2_over_alpha" else "sa")
        assert ours == pytest.approx(ref, rel=1e-10)


def test_order_pattern_is_what_diffusers_unipc_runs():
    assert order_pattern(6, 3) == [1, 2, 3, 3, 2, 1]
    assert order_pattern(3, 3) == [1, 2, 1]
    base = make_scheduler()
    sched = DiscreteVPSchedule.from_scheduler(base)
    solver = make_solver("unipc", base.config)
    set_grid(solver, sched.t_of_lambda(baseline_lambdas(sched, 7, "unif")), sched)
    seen = []
    x = torch.zeros(2, 2)
    for t in solver.timesteps:
        x = solver.step(torch.zeros_like(x), t, x).prev_sample
        seen.append(solver.this_order)
    assert seen == order_pattern(7, 3)


def test_discrete_schedule_matches_alphas_cumprod_and_inverts(vp):
    ac = make_scheduler().alphas_cumprod.double().numpy()
    n = np.array([0, 10, 500, 999])
    assert vp.lambda_of_t((n + 1) / 1000) == pytest.approx(0.5 * np.log(ac[n] / (1 - ac[n])), rel=1e-12)
    t = np.array([1.0, 0.731, 0.2, 0.0013, 0.001])
    assert vp.t_of_lambda(vp.lambda_of_t(t)) == pytest.approx(t, rel=1e-9)
    flow = FlowSchedule()
    assert flow.lambda_of_t(np.array([0.25])) == pytest.approx([math.log(3.0)])
    assert flow.t_of_lambda(flow.lambda_of_t(np.array([0.9, 0.5, 0.01]))) == pytest.approx([0.9, 0.5, 0.01])


def test_baseline_grids(vp):
    lam = baseline_lambdas(vp, 5, "unif")
    assert np.diff(lam) == pytest.approx(np.full(5, (lam[-1] - lam[0]) / 5))
    t = vp.t_of_lambda(baseline_lambdas(vp, 4, "unif_t"))
    assert t == pytest.approx(np.linspace(1.0, 1e-3, 5), rel=1e-9)
    edm = np.exp(-baseline_lambdas(vp, 4, "edm")) ** (1 / 7)  # EDM sigma^(1/rho) is uniform
    assert np.diff(edm) == pytest.approx(np.full(4, np.diff(edm)[0]))


# ---- the optimiser: guards against returning the initial grid or moving the endpoints ----------------
def test_optimiser_lowers_the_objective_and_moves_the_grid(vp):
    res = optimize_time_steps(vp, 6)
    assert res.objective_opt < 0.5 * res.objective_init
    assert np.max(np.abs(res.lambdas - res.init_lambdas)) > 0.1
    assert res.lambdas[0] == res.init_lambdas[0] and res.lambdas[-1] == res.init_lambdas[-1]
    assert res.t[0] == 1.0 and res.t[-1] == pytest.approx(1e-3)
    assert np.all(np.diff(res.t) < 0)
    ints = np.rint(vp.model_time(res.t[:-1]))
    assert np.all(np.diff(ints) < 0) and ints[-1] > 0  # strictly decreasing after rounding, no duplicates
    assert res.seconds < 15.0


def test_ablations_change_the_grid(vp):
    base = optimize_time_steps(vp, 5)
    other_weight = optimize_time_steps(vp, 5, weight="sigma_over_alpha")
    order2 = optimize_time_steps(vp, 5, max_order=2)
    assert np.max(np.abs(base.t - other_weight.t)) > 1e-3
    assert np.max(np.abs(base.t - order2.t)) > 1e-3


# ---- the diffusers bridge --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dpmsolver++", "unipc"])
def test_default_grid_through_the_bridge_reproduces_diffusers(kind, vp):
    """Passing diffusers' own default timesteps through set_grid gives its own samples (identity check)."""
    base = make_scheduler()
    gmm = GaussianMixture2D.ring()
    from workers.aux.timestep_opt.problems import gmm_vp_eps_fn

    eps = gmm_vp_eps_fn(gmm, vp)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    plain = make_solver(kind, base.config)
    plain.set_timesteps(6)
    expected = solve(plain, eps, x)
    ours = make_solver(kind, base.config)
    t = np.append((plain.timesteps.numpy() + 1.0) / 1000, vp.t_min)
    set_grid(ours, t, vp)
    assert torch.equal(ours.timesteps, plain.timesteps)
    torch.testing.assert_close(ours.sigmas, plain.sigmas, rtol=1e-6, atol=0)
    torch.testing.assert_close(solve(ours, eps, x), expected, rtol=1e-5, atol=1e-6)


def test_rounding_that_merges_steps_fails_loudly(vp):
    t = np.array([1.0, 0.5, 0.0042, 0.0038, 1e-3])  # 0.0042 and 0.0038 both round to timestep 3
    with pytest.raises(ValueError, match="round_timesteps"):
        set_grid(make_solver("dpmsolver++", make_scheduler().config), t, vp)


def test_optimised_grid_beats_uniform_logsnr_on_the_exact_mixture(vp):
    from workers.aux.timestep_opt.problems import gmm_vp_eps_fn

    base = make_scheduler()
    eps = gmm_vp_eps_fn(GaussianMixture2D.ring(), vp)
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(1))

    def run(t: np.ndarray) -> torch.Tensor:
        solver = make_solver("dpmsolver++", base.config)
        set_grid(solver, t, vp, round_timesteps=False)
        return solve(solver, eps, x)

    ref = run(vp.t_of_lambda(baseline_lambdas(vp, 150, "unif")))
    unif = run(vp.t_of_lambda(baseline_lambdas(vp, 5, "unif")))
    opt = run(optimize_time_steps(vp, 5).t)
    assert (opt - ref).norm(dim=1).mean() < (unif - ref).norm(dim=1).mean()


# ---- flow matching: the RL sampler's option -----------------------------------------------------------
def test_optimized_flow_sigmas_plug_into_the_project_sampler():
    from workers.sampling import flow_sigmas, sample

    sigmas = optimized_flow_sigmas(6, "dpm2")
    assert sigmas.dtype == torch.float32 and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    assert not torch.allclose(sigmas, flow_sigmas(6))
    assert sampler_order_pattern(6, "dpm2") == [1, 1, 2, 2, 2, 1]
    gmm = GaussianMixture2D.ring()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(gmm_flow_velocity_fn(gmm), x, sigmas.double(), solver="dpm2").x0
    assert torch.isfinite(out).all()
    assert optimized_flow_sigmas(1).tolist() == [1.0, 0.0]


def test_posterior_mean_matches_the_eps_formula_and_is_finite_at_pure_noise():
    gmm = GaussianMixture2D.ring()
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, s = torch.full((16,), 0.6, dtype=torch.float64), torch.full((16,), 0.4, dtype=torch.float64)
    via_eps = (x - 0.4 * gmm.eps(x, 0.6, 0.4)) / 0.6
    torch.testing.assert_close(gmm_posterior_mean(gmm, x, a, s), via_eps)
    at_noise = gmm_posterior_mean(gmm, x, torch.zeros(16, dtype=torch.float64), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(at_noise, gmm.means.mean(0).expand(16, 2), atol=1e-12, rtol=0)


# ---- loader -----------------------------------------------------------------------------------------
def _tiny_unet():
    from workers.aux.common.nets import small_unet

    torch.manual_seed(0)
    return small_unet(8, channels=(8, 16)).eval()


@pytest.mark.parametrize("layout", ["pipeline", "flat"])
def test_loader_reads_a_saved_ddpm(tmp_path, layout):
    unet, sched = _tiny_unet(), make_scheduler()
    unet_dir, sched_dir = (tmp_path / "unet", tmp_path / "scheduler") if layout == "pipeline" else (tmp_path, tmp_path)
    unet.save_pretrained(unet_dir)
    sched.save_pretrained(sched_dir)
    loaded, scheduler, schedule = load_vp_model(tmp_path)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.tensor([3, 700])).sample, unet(x, torch.tensor([3, 700])).sample)
    assert type(loaded).__name__ == "UNet2DModel" and type(scheduler).__name__ == "DDPMScheduler"
    assert schedule.num_train_timesteps == 1000


def test_loader_names_the_path_and_the_fix(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"unet/config\.json.*scheduler_config\.json") as err:
        load_vp_model(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_vp_model(tmp_path / "missing")


# ---- config -----------------------------------------------------------------------------------------
def test_defaults_equal_the_quick_preset_and_presets_validate():
    assert TimestepOptConfig() == TimestepOptConfig(preset="quick")
    for preset in ("smoke", "quick", "full"):
        TimestepOptConfig(preset=preset)
    full = TimestepOptConfig(preset="full", digits={"num_samples": 8})
    assert full.digits.num_samples == 8 and full.digits.reference_steps == 150


@pytest.mark.parametrize("data,match", [
    ({"eval": {"nfes": [2, 5]}}, "eval.nfes must be in 3..14"),
    ({"eval": {"nfes": [5, 5]}}, "eval.nfes must not repeat"),
    ({"toy": {"enabled": False}, "flow": {"enabled": False}, "digits": {"enabled": False}}, "toy.enabled"),
    ({"toy": {"reference_steps": 20}}, "toy.reference_steps"),
    ({"optimizer": {"weight": "sigma"}}, "sigma2_over_alpha"),
    ({"optimizer": {"max_order": 4}}, "less than or equal to 3"),
    ({"flow": {"clip": 0.7}}, "less than 0.5"),
    ({"optimizer": {"bogus": 1}}, "Extra inputs"),
])
def test_bad_config_values_fail_with_the_field(data, match):
    with pytest.raises(ValidationError, match=match):
        TimestepOptConfig(**data)


@pytest.mark.parametrize("kind", ["dpmsolver++", "unipc"])
def test_nfe_accounting_one_model_call_per_step(kind, vp):
    calls = []

    def eps(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        calls.append(float(timestep))
        return torch.zeros_like(x)

    solver = make_solver(kind, make_scheduler().config)
    res = optimize_time_steps(vp, 5)
    set_grid(solver, res.t, vp)
    solve(solver, eps, torch.zeros(3, 2))
    assert len(calls) == 5 and calls == sorted(calls, reverse=True) and calls[0] == 999.0
