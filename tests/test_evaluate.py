"""Evaluation: grid normalisation, baselines, NLL tables, temperature calibration, sampler guidance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from lib_helpers import random_model, zero_head_model
from scipy import integrate, stats
from scipy.special import erf

from iclebm.dynamics.langevin import SamplerConfig
from iclebm.evaluation.baselines import (
    BASELINES,
    FALLBACK_BANDWIDTH,
    baseline_log_probs,
    fit_gmm,
    gaussian_log_prob,
    kde_scipy_log_prob,
    kde_scott_log_prob,
    prior_predictive_log_prob,
    scott_bandwidth,
)
from iclebm.evaluation.calibration import calibrate_temperature
from iclebm.evaluation.density import (
    format_nll_table,
    guidance_fraction,
    in_context_nll,
    model_nll,
    model_point_nll,
    nll_curve_for_task,
)
from iclebm.grid import grid_points
from iclebm.tasks import PROBE_FAMILIES, MixturePrior

PRIOR = MixturePrior()
CARD = {"task": PRIOR.to_card(), "box": [-12.0, 12.0]}


def integral(log_p_fn, box=(-16.0, 16.0), res=320) -> float:
    grid, area = grid_points(box, res)
    return float(np.exp(log_p_fn(grid.numpy())).sum() * area)


def rng_points(n: int, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, size=(n, 2))


def test_grid_points():
    grid, area = grid_points((-1.0, 3.0), 4)
    assert grid.shape == (16, 2) and area == 1.0
    assert torch.equal(grid[0], torch.tensor([-0.5, -0.5], dtype=torch.float64))
    assert torch.equal(grid[1], torch.tensor([0.5, -0.5], dtype=torch.float64))  # x fastest


# ---- prior predictive -----------------------------------------------------------------------


def test_prior_predictive_without_truncation_is_gaussian():
    prior = MixturePrior(mean_std=3.0, component_std=0.4, mean_limit=math.inf)
    x = rng_points(20, scale=4.0)
    expect = stats.multivariate_normal(np.zeros(2), (9.0 + 0.16) * np.eye(2)).logpdf(x)
    assert np.allclose(prior_predictive_log_prob(prior, x), expect, atol=1e-12)


def test_prior_predictive_truncation_matches_quadrature():
    sigma, s, limit = 3.0, 0.45, 4.0
    prior = MixturePrior(mean_std=sigma, component_std=s, mean_limit=limit)
    z = stats.norm.cdf(limit / sigma) - stats.norm.cdf(-limit / sigma)

    def axis(v: float) -> float:
        f = lambda m: stats.norm.pdf(m, 0, sigma) / z * stats.norm.pdf(v - m, 0, s)  # noqa: E731
        return integrate.quad(f, -limit, limit, points=[v], limit=200)[0]

    x = np.array([[0.0, 0.0], [3.9, -1.0], [6.0, 2.0], [-5.5, 4.4]])
    expect = np.log([axis(a) * axis(b) for a, b in x])
    assert np.allclose(prior_predictive_log_prob(prior, x), expect, atol=1e-7)


def test_prior_predictive_ranges_are_integrated():
    prior = MixturePrior(mean_std=(2.0, 4.0), component_std=(0.3, 0.6), mean_limit=8.0)
    x = rng_points(10, scale=4.0)
    # brute force: average the fixed-parameter density over a fine midpoint grid of (mean_std, std)
    sig = 2.0 + 2.0 * (np.arange(60) + 0.5) / 60
    ss = 0.3 + 0.3 * (np.arange(24) + 0.5) / 24
    dens = np.mean(
        [
            np.exp(prior_predictive_log_prob(MixturePrior(mean_std=a, component_std=b), x))
            for a in sig
            for b in ss
        ],
        axis=0,
    )
    assert np.allclose(np.exp(prior_predictive_log_prob(prior, x)), dens, rtol=1e-3, atol=0)
    assert abs(integral(lambda g: prior_predictive_log_prob(prior, g), box=(-25, 25), res=200) - 1) < 1e-4


def test_prior_predictive_rejects_other_priors():
    with pytest.raises(ValueError, match="MixturePrior"):
        prior_predictive_log_prob(object(), rng_points(3))


# ---- data-fitted baselines ------------------------------------------------------------------


def test_kde_scott_formula_and_fallback():
    p = rng_points(9, seed=1)
    h = 9 ** (-1 / 6) * math.sqrt(p.var(axis=0, ddof=1).mean())
    assert scott_bandwidth(p) == pytest.approx(h)
    x = rng_points(4, seed=2)
    manual = np.log(np.mean([stats.multivariate_normal(c, h * h * np.eye(2)).pdf(x) for c in p], axis=0))
    assert np.allclose(kde_scott_log_prob(p, x), manual, atol=1e-10)
    one = p[:1]
    assert scott_bandwidth(one) == FALLBACK_BANDWIDTH
    assert np.allclose(
        kde_scott_log_prob(one, x), stats.multivariate_normal(one[0], np.eye(2)).logpdf(x), atol=1e-10
    )
    assert scott_bandwidth(np.zeros((4, 2))) > 0  # identical points: floored, still a density


def test_kde_scipy_matches_scipy_and_falls_back():
    p, x = rng_points(12, seed=3), rng_points(5, seed=4)
    assert np.allclose(kde_scipy_log_prob(p, x), stats.gaussian_kde(p.T).logpdf(x.T))
    two = p[:2]
    assert np.allclose(kde_scipy_log_prob(two, x), kde_scott_log_prob(two, x))
    line = np.stack([np.arange(5.0), 2 * np.arange(5.0)], 1)  # collinear: singular covariance
    assert np.allclose(kde_scipy_log_prob(line, x), kde_scott_log_prob(line, x))


def test_em_recovers_well_separated_means():
    true = np.array([[-6.0, 0.0], [6.0, 1.0], [0.0, 7.0]])
    rng = np.random.default_rng(0)
    p = np.concatenate([m + 0.4 * rng.normal(size=(30, 2)) for m in true])
    for cov in ("isotropic", "diag", "full"):
        fit = fit_gmm(p, 3, covariance=cov, seed=1)
        order = np.argsort(fit.means[:, 0])
        assert np.abs(fit.means[order] - true[np.argsort(true[:, 0])]).max() < 0.25, cov
        assert np.allclose(fit.weights, 1 / 3, atol=0.02)
        assert np.all(np.abs(np.sqrt(fit.covs[:, 0, 0]) - 0.4) < 0.12)


def test_em_is_robust_for_tiny_and_degenerate_data():
    x = rng_points(6, seed=5)
    fit = fit_gmm(rng_points(2), 3)
    assert fit.means.shape == (2, 2)  # K capped at n
    same = np.ones((5, 2))
    for cov in ("isotropic", "diag", "full"):
        lp = fit_gmm(same, 3, covariance=cov).log_prob(x)
        assert np.all(np.isfinite(lp))
    with pytest.raises(ValueError):
        fit_gmm(np.zeros((0, 2)), 3)
    with pytest.raises(ValueError):
        fit_gmm(x, 3, covariance="spherical-ish")
    a = fit_gmm(rng_points(20, seed=6), 3, seed=3).log_prob(x)
    assert np.array_equal(a, fit_gmm(rng_points(20, seed=6), 3, seed=3).log_prob(x))  # seeded


def test_gaussian_fit_matches_scipy_with_floor():
    p, x = rng_points(15, seed=7), rng_points(4, seed=8)
    cov = np.cov(p.T, bias=True)
    assert np.allclose(gaussian_log_prob(p, x), stats.multivariate_normal(p.mean(0), cov).logpdf(x))
    one = gaussian_log_prob(p[:1], x, var_floor=0.5)
    assert np.allclose(one, stats.multivariate_normal(p[0], 0.5 * np.eye(2)).logpdf(x))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 20])
def test_every_baseline_is_a_normalised_density(n):
    p = rng_points(n, seed=n, scale=3.0)
    out = baseline_log_probs(p, grid_points((-16.0, 16.0), 320)[0], PRIOR, k=3)
    area = (32.0 / 320) ** 2
    for name, lp in out.items():
        assert abs(np.exp(lp).sum() * area - 1) < 2e-2, name  # tight components + grid: a loose check


def test_baselines_with_no_data_are_the_prior_predictive():
    x = rng_points(5)
    out = baseline_log_probs(np.zeros((0, 2)), x, PRIOR)
    pp = prior_predictive_log_prob(PRIOR, x)
    assert set(out) == set(BASELINES)
    assert all(np.array_equal(v, pp) for v in out.values())
    with pytest.raises(ValueError, match="prior"):
        baseline_log_probs(np.zeros((0, 2)), x, None)


# ---- model NLL and tables --------------------------------------------------------------------


def test_model_nll_grid_normalisation_is_exact_for_a_gaussian_energy():
    """Zero learned part: E = |x|^2 / (2 b^2), so p is N(0, b^2 I) truncated to the box."""
    b = 3.0
    model = zero_head_model(base_std=b)
    ctx = torch.randn(2, 5, 2, dtype=torch.float64)
    test = 2 * torch.randn(2, 30, 2, dtype=torch.float64)
    nll = model_point_nll(model, ctx, test, [0, 3, 5], (-12.0, 12.0), resolution=200)
    log_z = math.log(2 * math.pi * b * b * erf(12.0 / (b * math.sqrt(2))) ** 2)
    expect = (test**2).sum(-1) / (2 * b * b) + log_z
    assert nll.shape == (2, 3, 30)
    assert torch.allclose(nll, expect[:, None].expand(-1, 3, -1), atol=1e-4)
    assert torch.allclose(
        nll.mean(-1), model_nll(model, ctx, test, [0, 3, 5], (-12.0, 12.0), 200), atol=1e-12
    )


def small_table(model, **kw):
    args = {"n_tasks": 3, "ns": (0, 1, 4, 32), "n_test": 60, "resolution": 40}
    args.update(kw)
    return in_context_nll(model, **args)


def test_in_context_nll_structure_and_reproducibility():
    model = random_model(dtype=torch.float32, max_context=32)
    model.card = dict(CARD)
    table = small_table(model, seed=5)
    assert table["ns"] == [0, 1, 4, 32]
    assert list(table["nll"]) == ["model", "bayes", "oracle", *BASELINES, "prior_predictive"]
    assert set(table["stderr"]) == set(table["nll"])
    for v in table["nll"].values():
        assert len(v) == 4 and all(math.isfinite(x) for x in v)
    assert (
        table["n_tasks"] == 3 and table["n_test"] == 60 and table["resolution"] == 40 and table["seed"] == 5
    )
    json.dumps(table)  # JSON-able
    assert small_table(model, seed=5) == table
    assert small_table(model, seed=6) != table
    # n = 0: every data-fitted baseline is the prior predictive
    for name in BASELINES:
        assert table["nll"][name][0] == table["nll"]["prior_predictive"][0]
    assert table["nll"]["bayes"][0] == pytest.approx(table["nll"]["prior_predictive"][0], abs=1e-9)
    assert table["nll"]["bayes"][-1] < table["nll"]["bayes"][1]  # Bayes learns from the context
    assert len(set(table["nll"]["oracle"])) == 1  # the oracle ignores the context


def test_in_context_nll_model_column_for_context_free_energy():
    model = zero_head_model(base_std=3.0, dtype=torch.float32, max_context=32)
    model.card = dict(CARD)
    nll = small_table(model)["nll"]["model"]
    assert max(nll) - min(nll) < 1e-6  # the context does not matter to this model


def test_oracle_beats_kde_at_32_and_baselines_improve_with_n():
    model = random_model(dtype=torch.float32, max_context=32)
    model.card = dict(CARD)
    t = in_context_nll(model, n_tasks=12, ns=(4, 32), n_test=100, resolution=24, seed=1)["nll"]
    assert t["oracle"][1] < t["kde_scott"][1] < t["kde_scott"][0]
    assert t["oracle"][1] < t["em_mixture"][1] < t["oracle"][1] + 0.6  # EM with the prior's K is near-oracle
    assert t["em_mixture"][1] < t["gaussian"][1]
    assert t["oracle"][1] < t["bayes"][1] < t["oracle"][1] + 0.3  # n = 32: Bayes is near the oracle
    assert t["bayes"][1] <= t["em_mixture"][1] + 0.02 and t["bayes"][0] < t["kde_scott"][0]
    assert t["oracle"][1] < t["prior_predictive"][1]


def test_in_context_nll_uses_given_prior_and_box():
    model = random_model(dtype=torch.float32, max_context=32)  # no card at all
    prior = MixturePrior(n_components=1, mean_std=1.0, component_std=0.5)
    t = in_context_nll(model, n_tasks=2, ns=(0, 8), n_test=20, resolution=20, prior=prior, box=(-6.0, 6.0))
    assert t["box"] == [-6.0, 6.0]
    with pytest.raises(ValueError):
        in_context_nll(model, ns=())


def test_nll_curve_for_task():
    model = random_model(dtype=torch.float32, max_context=32)
    model.card = dict(CARD)
    task = PRIOR.sample_task(torch.Generator().manual_seed(0))
    ctx = task.sample(10, torch.Generator().manual_seed(1))
    curve = nll_curve_for_task(model, task, ctx, n_test=80, resolution=30)
    assert curve["ns"] == [0, 1, 2, 4, 8]  # cut to the context length
    assert "oracle" in curve["nll"] and curve["n_tasks"] == 1
    assert all(len(v) == 5 for v in curve["stderr"].values())
    assert curve == nll_curve_for_task(model, task, ctx, n_test=80, resolution=30)
    json.dumps(curve)
    probe = PROBE_FAMILIES["two moons"]
    pc = nll_curve_for_task(model, probe, probe.sample(6), ns=[0, 2, 6], n_test=40, resolution=20)
    assert "oracle" not in pc["nll"] and pc["ns"] == [0, 2, 6]
    assert "model - oracle" not in format_nll_table(pc)
    with pytest.raises(ValueError):
        nll_curve_for_task(model, task, ctx[:, :1])


def test_format_nll_table():
    table = {
        "ns": [0, 8],
        "nll": {"model": [5.0, 3.0], "oracle": [2.0, 2.0], "kde_scott": [5.1, 3.5], "bayes": [5.0, 2.5]},
        "n_tasks": 4,
    }
    text = format_nll_table(table)
    lines = text.splitlines()
    assert lines[0] == "| n | model | bayes | oracle | kde_scott | model - bayes | model - oracle |"
    assert lines[2] == "| 0 | 5.000 | 5.000 | 2.000 | 5.100 | +0.000 | +3.000 |"
    assert lines[3] == "| 8 | 3.000 | 2.500 | 2.000 | 3.500 | +0.500 | +1.000 |"
    assert "n_tasks=4" in text


# ---- calibration and guidance ------------------------------------------------------------------


def test_calibrate_temperature_improves_nll_and_is_absolute():
    model = zero_head_model(base_std=8.0, dtype=torch.float32, max_context=32)  # far too broad
    model.card = dict(CARD)
    kw = {"n_tasks": 4, "ns": (0, 4), "n_test": 50, "resolution": 40}
    s = calibrate_temperature(model, seed=3, **kw)
    assert s > 1.5  # it sharpens a density that is too broad
    before = np.mean(in_context_nll(model, seed=3, **kw)["nll"]["model"])
    model.config.energy_scale = s
    after = np.mean(in_context_nll(model, seed=3, **kw)["nll"]["model"])
    assert after < before
    # the answer is absolute: starting from the calibrated scale returns (about) the same scale
    assert calibrate_temperature(model, seed=3, **kw) == pytest.approx(s, rel=1e-3)


def test_guidance_fraction():
    # a quadratic bowl at the origin guides particles to tasks whose single mean is near the origin
    model = zero_head_model(base_std=0.5, dtype=torch.float32, max_context=32)
    model.card = {**CARD, "sampler": SamplerConfig(steps=60).to_dict()}
    prior = MixturePrior(n_components=1, mean_std=0.01, component_std=0.4)
    frac = guidance_fraction(model, n_tasks=2, n_particles=300, prior=prior)
    assert 0.9 < frac <= 1.0
    assert frac == guidance_fraction(model, n_tasks=2, n_particles=300, prior=prior)  # seeded
    # a flat energy guides nothing: particles random-walk
    flat = zero_head_model(base_std=0.0, dtype=torch.float32, max_context=32)
    flat.card = dict(model.card)
    assert guidance_fraction(flat, n_tasks=2, n_particles=300, prior=prior) < 0.2
