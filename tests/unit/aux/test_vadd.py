"""aux.vadd: the objective against float64 references, the sampler and the posterior-collapse guards, the
MDLM-identity guard, data and config errors."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from pydantic import ValidationError

from workers.aux.vadd.config import VaddConfig
from workers.aux.vadd.data import checkerboard_histogram, checkerboard_tokens, digits_tokens, token_histogram
from workers.aux.vadd.guards import active_units, z_sensitivity
from workers.aux.vadd.model import Denoiser, VaddSpec, build_models
from workers.aux.vadd.objective import gaussian_kl, gaussian_log_prob, log_mean_exp, nelbo_estimate
from workers.aux.vadd.sampler import sample
from workers.aux.vadd.train import kl_weight, train

SPEC = VaddSpec(vocab_size=4, seq_len=2, dim=16, n_layers=1, n_heads=2, latent_dim=3)


def test_gaussian_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g,
                                                                                        dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), ref)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gaussian_log_prob(z, mean, logvar),
                               torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(-1))


def test_importance_weighted_bound_on_a_conjugate_gaussian() -> None:
    """p(z) = N(0,1), p(x|z) = N(z,1): log p(x) = log N(x; 0, 2) exactly; r = N(0.3, 0.8^2) is off the posterior."""
    x = 1.3
    exact = -0.5 * (x * x / 2 + math.log(2 * math.pi * 2))
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.tensor([0.3], dtype=torch.float64), torch.tensor([2 * math.log(0.8)], dtype=torch.float64)

    def log_w(n: int) -> torch.Tensor:
        z = mean + (0.5 * logvar).exp() * torch.randn(n, 1, generator=g, dtype=torch.float64)
        lik = -0.5 * ((x - z[:, 0]) ** 2 + math.log(2 * math.pi))
        return lik + gaussian_log_prob(z, torch.zeros(1), torch.zeros(1)) - gaussian_log_prob(z, mean, logvar)

    elbo = float(log_w(200_000).mean())
    iw_8 = float(torch.stack([log_mean_exp(log_w(8)) for _ in range(4000)]).mean())
    iw_big = float(log_mean_exp(log_w(200_000)))
    assert elbo < iw_8 < exact + 1e-3
    assert iw_big == pytest.approx(exact, abs=2e-3)


class _Oracle(Denoiser):
    """A denoiser that returns the exact conditionals of a 2-token joint (MDLM's optimal mu)."""

    def __init__(self, joint: torch.Tensor) -> None:
        super().__init__(VaddSpec(vocab_size=joint.shape[0], seq_len=2, dim=8, n_layers=1, n_heads=2, latent_dim=0))
        self.joint = joint

    def forward(self, x_t, t, z=None):
        m = self.spec.mask_id
        p1, p2 = self.joint.sum(1), self.joint.sum(0)
        out = torch.empty(x_t.shape[0], 2, self.joint.shape[0], dtype=torch.float64)
        for b, (a, c) in enumerate(x_t.tolist()):
            out[b, 0] = p1 if c == m else self.joint[:, c] / self.joint[:, c].sum()
            out[b, 1] = p2 if a == m else self.joint[a] / self.joint[a].sum()
        return out.log()


def test_mdlm_nelbo_with_the_exact_denoiser_equals_the_negative_log_likelihood() -> None:
    """With mu = the true conditionals, int_0^1 (1/t) E sum_masked -log mu dt = -log p(x0) (N = 2, float64
    check: 1/2 [-log p(x1) - log p(x2)] + 1/2 [-log p(x1|x2) - log p(x2|x1)])."""
    joint = torch.tensor([[0.4, 0.1], [0.05, 0.45]], dtype=torch.float64)
    oracle = _Oracle(joint)
    x0 = torch.tensor([[0, 0]] * 4000 + [[1, 0]] * 4000)
    est = nelbo_estimate(oracle, None, x0, torch.Generator().manual_seed(0), n_times=4)["nelbo"]
    for row, (a, b) in ((slice(0, 4000), (0, 0)), (slice(4000, None), (1, 0))):
        exact = -math.log(joint[a, b])
        assert float(est[row].mean()) == pytest.approx(exact, rel=0.03)


def test_vadd_with_a_dead_z_is_mdlm_bit_for_bit() -> None:
    """The identity setting: VADD's denoiser with W_z = 0 computes exactly MDLM's function (same seed)."""
    mdlm, _ = build_models(VaddSpec(**{**SPEC.__dict__, "latent_dim": 0}), seed=5)
    vadd, _ = build_models(SPEC, seed=5)
    for den in (mdlm, vadd):  # AdaLN starts at zero: give it weights so the condition matters
        torch.manual_seed(1)
        for block in den.backbone.blocks:
            torch.nn.init.normal_(block.attn_ada.proj.weight, std=0.3)
    with torch.no_grad():
        vadd.z_proj.weight.zero_()
        vadd.z_proj.bias.zero_()
    x = torch.tensor([[4, 1], [4, 4]])
    t = torch.tensor([0.5, 1.0])
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mdlm(x, t), vadd(x, t, z))


def test_sampler_takes_no_data_and_fills_every_token() -> None:
    params = inspect.signature(sample).parameters
    assert not {"x0", "data", "recognition", "rec"} & set(params)
    den, _ = build_models(SPEC, seed=0)
    for k in (1, 3):
        out = sample(den, 50, k, torch.Generator().manual_seed(0))
        assert out.shape == (50, 2) and int(out.max()) < 4 and int(out.min()) >= 0


def test_one_step_factorised_sampler_gives_the_product_of_marginals() -> None:
    """MDLM at K = 1 draws each token from its own marginal: a perfectly correlated joint comes out independent."""
    joint = torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    oracle = _Oracle(joint)
    out = sample(oracle, 4000, 1, torch.Generator().manual_seed(0))
    assert 0.4 < float((out[:, 0] != out[:, 1]).float().mean()) < 0.6  # half the samples are off-support
    out = sample(oracle, 2000, 2, torch.Generator().manual_seed(0))
    assert float((out[:, 0] != out[:, 1]).float().mean()) < 0.4  # more steps recover some correlation


def test_recognition_model_reads_the_mask_pattern() -> None:
    _, rec = build_models(SPEC, seed=0)
    x0 = torch.tensor([[1, 2], [1, 2]])
    mean, _ = rec(x0, torch.tensor([[True, False], [False, True]]))
    assert not torch.allclose(mean[0], mean[1])


def test_guards_detect_a_live_latent_after_training() -> None:
    den, rec = build_models(SPEC, seed=0)
    g = torch.Generator().manual_seed(0)
    assert z_sensitivity(den, 64, g) == 0.0  # AdaLN is zero-initialised: z is ignored at init
    train(den, rec, lambda n, gen: checkerboard_tokens(n, gen, 4, 2), steps=12, batch_size=32, lr=1e-2,
          anneal_fraction=0.5, generator=g, desc="t", show_progress=False)
    assert z_sensitivity(den, 64, g) > 0.0
    count, per_dim = active_units(rec, checkerboard_tokens(256, g, 4, 2), g)
    assert per_dim.shape == (3,) and 0 <= count <= 3


def test_iw_estimate_is_below_the_single_sample_delbo() -> None:
    den, rec = build_models(SPEC, seed=0)
    x0 = checkerboard_tokens(256, torch.Generator().manual_seed(0), 4, 2)
    est = nelbo_estimate(den, rec, x0, torch.Generator().manual_seed(1), n_times=2, iw_samples=8)
    assert float(est["iw"].mean()) <= float(est["delbo"].mean()) + 1e-6


def test_kl_annealing_schedule() -> None:
    assert [kl_weight(s, 100, 0.5) for s in (0, 25, 50, 99)] == [0.0, 0.5, 1.0, 1.0]
    assert kl_weight(0, 100, 0.0) == 1.0


def test_data_sets() -> None:
    hist = checkerboard_histogram(8, 4)
    assert float(hist.sum()) == pytest.approx(1.0) and int((hist > 0).sum()) == 32
    toks = checkerboard_tokens(2000, torch.Generator().manual_seed(0), 8, 4)
    assert float((token_histogram(toks, 8) * (hist == 0)).sum()) == 0.0  # samples only on dark cells
    train_tokens, _ = digits_tokens("train")
    test_tokens, _ = digits_tokens("test")
    assert train_tokens.shape[1] == 64 and int(train_tokens.max()) == 16 and int(train_tokens.min()) == 0
    assert len(train_tokens) + len(test_tokens) == 1797


def test_config_presets_and_errors() -> None:
    assert VaddConfig() == VaddConfig(preset="quick")
    with pytest.raises(ValidationError, match="checkerboard.bins=10 must be a multiple"):
        VaddConfig(checkerboard={"bins": 10})
    with pytest.raises(ValidationError, match="model.n_heads=3 must divide"):
        VaddConfig(model={"n_heads": 3})
    with pytest.raises(ValidationError, match="checkerboard.steps must be >= 1"):
        VaddConfig(checkerboard={"steps": [0, 1]})
    with pytest.raises(ValidationError, match="nothing to run"):
        VaddConfig(checkerboard={"enabled": False}, digits={"enabled": False})
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        VaddConfig(train={"kl_anneal_fraction": 2})
    with pytest.raises(ValidationError, match="Extra inputs"):
        VaddConfig(model={"latent": 4})
