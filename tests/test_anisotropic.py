"""Anisotropic mixture components and the generalist prior (K range, rotation, aspect ratio)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from iclebm.errors import CapabilityError
from iclebm.evaluation import bayes
from iclebm.evaluation.baselines import _anisotropic_prior_predictive, prior_predictive_log_prob
from iclebm.evaluation.bayes import GibbsConfig, mixture_log_predictive, mixture_log_predictive_batch
from iclebm.grid import grid_points
from iclebm.tasks import GaussianMixture, MixturePrior

WIDE = MixturePrior(n_components=(1, 6), mean_std=3.0, component_std=(0.2, 1.5), aspect_ratio=(1.0, 4.0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ellipses() -> GaussianMixture:
    means = torch.tensor([[1.0, -2.0], [-3.0, 0.5]], dtype=torch.float64)
    return GaussianMixture.anisotropic(
        means, torch.tensor([1.2, 0.8]), torch.tensor([0.3, 0.4]), torch.tensor([0.4, 2.0])
    )


def test_full_covariance_log_prob_matches_scipy_and_integrates_to_one():
    task = ellipses()
    x = 3 * torch.randn(64, 2, generator=gen(0), dtype=torch.float64)
    dens = sum(
        multivariate_normal(mean=m, cov=c).pdf(x.numpy()) / 2
        for m, c in zip(task.means.numpy(), task.covs.numpy(), strict=True)
    )
    assert np.allclose(task.log_prob(x).numpy(), np.log(dens), atol=1e-10)
    assert task.log_prob(x.reshape(8, 8, 2)).shape == (8, 8)
    grid, area = grid_points((-12.0, 12.0), 400)
    assert abs(float(task.log_prob(grid).exp().sum() * area) - 1.0) < 1e-6
    # stds holds the geometric-mean std det(cov)^(1/4)
    assert torch.allclose(task.stds, torch.tensor([1.2 * 0.3, 0.8 * 0.4], dtype=torch.float64).sqrt())


def test_full_covariance_sampling_has_the_covariance():
    task = GaussianMixture(torch.tensor([[2.0, -1.0]]), covs=torch.tensor([[[1.0, 0.6], [0.6, 0.5]]]))
    x = task.sample(40000, gen(1)).double()
    assert torch.equal(x.float(), task.sample(40000, gen(1)))
    assert torch.allclose(x.mean(0), torch.tensor([2.0, -1.0], dtype=torch.float64), atol=0.02)
    assert torch.allclose(torch.cov(x.T), task.covs[0], atol=0.02)


def test_isotropic_constructor_is_unchanged_and_equals_diagonal_covs():
    means = torch.tensor([[0.0, 1.0], [2.0, -2.0]], dtype=torch.float64)
    stds = torch.tensor([0.5, 0.9], dtype=torch.float64)
    iso = GaussianMixture(means, stds)
    assert iso.isotropic and iso.covs is None
    full = GaussianMixture(means, covs=stds[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64))
    x = 2 * torch.randn(50, 2, generator=gen(2), dtype=torch.float64)
    assert torch.allclose(iso.log_prob(x), full.log_prob(x), atol=1e-12)
    assert torch.allclose(iso.covariances(), full.covariances())
    # same generator draws -> the same points (the Cholesky factor of s^2 I is s I)
    assert torch.allclose(iso.sample(100, gen(3)), full.sample(100, gen(3)), atol=1e-6)


def test_covariance_validation():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, 0.5], [0.1, 1.0]]]))
    with pytest.raises(ValueError, match="shape"):
        GaussianMixture(torch.zeros(2, 2), covs=torch.eye(2)[None])
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="aspect_ratio"):
        MixturePrior(aspect_ratio=0.5)
    with pytest.raises(ValueError, match="n_components"):
        MixturePrior(n_components=(0, 3))


def test_isotropic_prior_draws_exactly_what_it_always_drew():
    # Values recorded from the isotropic-only implementation: old seeds give the same tasks.
    t = MixturePrior(n_components=(1, 6), component_std=(0.2, 1.5)).sample_task(gen(11))
    assert t.isotropic and t.n_components == 4
    first = torch.tensor([2.1615594950480927, -1.733407182283658], dtype=torch.float64)
    assert torch.allclose(t.means[0], first)
    assert torch.allclose(t.stds[-1], torch.tensor(1.05304682830592, dtype=torch.float64))
    x, _ = MixturePrior().sample_batch(2, 3, gen(5))
    assert torch.allclose(x[1, 2], torch.tensor([0.5732842683792114, 1.2913111448287964]))


def test_wide_prior_respects_its_ranges():
    g = gen(0)
    ks, ratios, angles = set(), [], []
    for _ in range(300):
        t = WIDE.sample_task(g)
        ks.add(t.n_components)
        assert not t.isotropic
        assert bool((t.means.abs() <= WIDE.mean_limit).all())
        var, vec = torch.linalg.eigh(t.covs)  # ascending eigenvalues
        geo = (var[:, 0] * var[:, 1]) ** 0.25
        assert bool(((geo >= 0.2 - 1e-9) & (geo <= 1.5 + 1e-9)).all())
        r = (var[:, 1] / var[:, 0]).sqrt()
        assert bool(((r >= 1 - 1e-9) & (r <= 4 + 1e-9)).all())
        ratios += r.tolist()
        angles += torch.atan2(vec[:, 1, 1], vec[:, 0, 1]).remainder(math.pi).tolist()
    assert ks == {1, 2, 3, 4, 5, 6}
    assert max(ratios) > 3.8 and min(ratios) < 1.2
    hist = np.histogram(angles, bins=4, range=(0, math.pi))[0]
    assert hist.min() > 0.15 * len(angles)  # rotations cover every direction


def test_prior_card_round_trip_and_old_cards():
    card = WIDE.to_card()
    assert card["aspect_ratio"] == [1.0, 4.0] and card["n_components"] == [1, 6]
    assert MixturePrior.from_card(card) == WIDE
    assert "aspect_ratio" not in MixturePrior().to_card()  # isotropic cards keep their old form
    old = {"family": "gaussian_mixture", "n_components": 3, "mean_std": 3.0, "component_std": [0.33, 0.5],
           "mean_limit": 8.0}
    assert MixturePrior.from_card(old) == MixturePrior()
    assert not MixturePrior.from_card(old).anisotropic


def test_anisotropic_prior_predictive_reduces_to_the_closed_form():
    iso = MixturePrior(component_std=(0.2, 1.5), mean_std=3.0)
    x = 4 * torch.randn(100, 2, generator=gen(4), dtype=torch.float64).numpy()
    x[0] = [7.9, -7.5]
    closed = prior_predictive_log_prob(iso, x)
    assert np.allclose(_anisotropic_prior_predictive(iso, x, 12), closed, atol=1e-6)


def test_anisotropic_prior_predictive_is_normalised_and_matches_monte_carlo():
    # Every quadrature node is itself a normalised density, so a coarse rule checks the formula.
    grid, area = grid_points((-20.0, 20.0), 80)
    assert abs(float(np.exp(prior_predictive_log_prob(WIDE, grid.numpy(), n_quad=5)).sum() * area) - 1) < 2e-3
    # Monte Carlo: the mean over many prior draws of one component's density at fixed points.
    rng = np.random.default_rng(0)
    m = 400_000
    mu = rng.normal(0, 3.0, size=(3 * m, 2))
    mu = mu[(np.abs(mu) <= 8.0).all(1)][:m]
    s, r, th = rng.uniform(0.2, 1.5, m), rng.uniform(1, 4, m), rng.uniform(0, math.pi, m)
    u2, v2 = s * s * r, s * s / r
    c, sn = np.cos(th), np.sin(th)
    a, b, d = c * c * u2 + sn * sn * v2, c * sn * (u2 - v2), sn * sn * u2 + c * c * v2
    x = np.array([[0.0, 0.0], [2.0, -1.0], [6.0, 5.0], [8.5, 0.0]])
    dx, dy = x[:, None, 0] - mu[None, :, 0], x[:, None, 1] - mu[None, :, 1]
    det = a * d - b * b
    dens = np.exp(-0.5 * (d * dx * dx - 2 * b * dx * dy + a * dy * dy) / det) / (2 * math.pi * np.sqrt(det))
    mc = dens.mean(1)
    se = dens.std(1) / math.sqrt(m)
    exact = np.exp(prior_predictive_log_prob(WIDE, x))
    assert np.all(np.abs(exact - mc) < 4 * se + 1e-4 * exact), (exact, mc, se)


# ---- the Bayes posterior predictive for anisotropic priors ------------------------------------------

SMALL = MixturePrior(n_components=(1, 2), mean_std=3.0, component_std=(0.5, 1.0), aspect_ratio=(1.0, 4.0))


def test_rect_log_mass_matches_scipy_and_the_product_when_uncorrelated():
    rng = np.random.default_rng(0)
    for _ in range(6):
        m = rng.uniform(-10, 10, 2)
        th, v = rng.uniform(0, math.pi), rng.uniform(0.05, 4, 2)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        cov = rot @ np.diag(v) @ rot.T
        ours = float(bayes.rect_log_mass(m[0], m[1], cov[0, 0], cov[0, 1], cov[1, 1], 8.0))
        mvn = multivariate_normal(m, cov, abseps=1e-12, releps=1e-10, maxpts=10**6)
        ref = mvn.cdf([8, 8], lower_limit=[-8, -8])
        assert abs(math.exp(ours) - ref) < 1e-4, (ours, ref)  # the stated accuracy (3e-5)
    # far from the edges: exactly 0; uncorrelated: the product of the 1-D masses
    assert float(bayes.rect_log_mass(0.0, 0.0, 0.1, 0.05, 0.1, 8.0)) == 0.0
    one = float(bayes.log_diff_ndtr(np.array(-13.0), np.array(3.0)))
    assert abs(float(bayes.rect_log_mass(5.0, 5.0, 1.0, 0.0, 1.0, 8.0)) - 2 * one) < 1e-12


@pytest.mark.parametrize("k", [3, (1, 4)])
def test_aspect_one_reproduces_the_isotropic_code(k):
    prior = MixturePrior(n_components=k, component_std=(0.33, 0.5))
    rng = np.random.default_rng(1)
    ctx, q = rng.normal(0, 3, (2, 4, 2)), rng.normal(0, 3, (2, 6, 2))
    ctx[0, 0] = [7.8, -7.9]  # near the corner: the truncation matters
    q[0, 0] = [-8.1, -5.7]  # outside the box, far from every point: an empty component's p0 dominates
    iso = mixture_log_predictive_batch(ctx, q, prior)
    aniso = bayes.aniso_log_predictive_batch(ctx, q, prior, rule=bayes.ShapeRule(n_std=16))
    assert np.abs(iso - aniso).max() < 1e-9


def test_empty_context_is_the_anisotropic_prior_predictive():
    x = np.array([[0.0, 0.0], [2.0, -1.0], [6.0, 5.0], [8.5, 0.0], [11.0, -11.0]])
    ours = mixture_log_predictive(np.zeros((0, 2)), x, WIDE, shape=bayes.ShapeRule(24, 24, 24, rect_nodes=48))
    err = np.abs(ours - prior_predictive_log_prob(WIDE, x, n_quad=24))
    # two quadratures of the same integral: 1e-5 nats inside the box, 1e-4 at the far corner
    # (the mean's posterior there is in both tails, where the rectangle quadrature is ~1e-4 relative)
    assert err[:4].max() < 1e-5 and err[4] < 1e-4, err


def _brute_force(ctx: np.ndarray, q: np.ndarray, prior: MixturePrior, m: int, seed: int):
    """log p(q | D) by Monte Carlo over whole tasks from the prior, weighted by p(D | task), and its SE."""
    rng = np.random.default_rng(seed)
    kmax = prior.n_components[1]
    k = rng.integers(prior.n_components[0], kmax + 1, m)
    mu = rng.normal(0, prior.mean_std, (4 * m, kmax, 2))
    mu = mu[(np.abs(mu) <= prior.mean_limit).all((1, 2))][:m]  # rejection, as sample_task
    s = rng.uniform(*prior.component_std, (m, kmax))
    r, th = rng.uniform(*prior.aspect_ratio, (m, kmax)), rng.uniform(0, math.pi, (m, kmax))
    l1, l2, c, sn = s * s * r, s * s / r, np.cos(th), np.sin(th)

    def log_p(x: np.ndarray) -> np.ndarray:  # (M, 2) -> (m, M)
        d = x[None, None] - mu[:, :, None]
        p1 = d[..., 0] * c[..., None] + d[..., 1] * sn[..., None]
        p2 = -d[..., 0] * sn[..., None] + d[..., 1] * c[..., None]
        quad = p1**2 / l1[..., None] + p2**2 / l2[..., None]
        lc = -math.log(2 * math.pi) - 0.5 * (np.log(l1 * l2)[..., None] + quad)
        lc = np.where((np.arange(kmax) < k[:, None])[..., None], lc, -np.inf)
        return np.logaddexp.reduce(lc, axis=1) - np.log(k)[:, None]

    w = np.exp(log_p(ctx).sum(1))
    pq = np.exp(log_p(q))
    est = (w[:, None] * pq).sum(0) / w.sum()
    se = np.sqrt(((w[:, None] * (pq - est)) ** 2).sum(0)) / w.sum()  # delta method for the ratio
    return np.log(est), se / est


def test_agrees_with_brute_force_monte_carlo_over_the_prior():
    """Tolerance: 4 Monte Carlo standard errors (about 0.01-0.03 nats here) plus 1e-3 nats."""
    ctx = np.array([[0.5, 1.0], [1.5, 1.8]])
    q = np.array([[1.0, 1.4], [0.0, 0.0], [3.0, -1.0], [2.2, 2.5]])
    mc, se = _brute_force(ctx, q, SMALL, 150_000, seed=0)
    ours = mixture_log_predictive(ctx, q, SMALL)
    assert np.all(np.abs(ours - mc) < 4 * se + 1e-3), (ours, mc, se)


def test_normalised_and_gibbs_agrees_with_exact():
    task = SMALL.sample_task(gen(5))
    ctx = task.sample(9, gen(6)).double().numpy()
    grid, area = grid_points((-14.0, 14.0), 64)
    lp = mixture_log_predictive(ctx[:3], grid.numpy(), SMALL, shape=bayes.GRID_SHAPE)
    assert abs(float(np.exp(lp).sum() * area) - 1) < 5e-3
    q = task.sample(6, gen(7)).double().numpy()
    coarse = bayes.ShapeRule(4, 3, 8, rect_nodes=12)  # the sampler is under test, not the rule
    exact = mixture_log_predictive(ctx, q, SMALL, method="exact", shape=coarse)
    gibbs = mixture_log_predictive(ctx, q, SMALL, method="gibbs", gibbs=GibbsConfig(chains=4, sweeps=20),
                                   shape=coarse)
    assert np.abs(exact - gibbs).max() < 0.05, (exact, gibbs)


def test_capabilities_and_the_partition_prior():
    assert WIDE.capabilities.bayes and WIDE.capabilities.why_no_bayes is None
    ranged = MixturePrior(mean_std=(2.0, 3.0), aspect_ratio=(1.0, 2.0))
    assert not ranged.capabilities.bayes and "mean_std" in ranged.capabilities.why_no_bayes
    with pytest.raises(CapabilityError, match="mean_std"):
        mixture_log_predictive(np.zeros((1, 2)), np.zeros((1, 2)), ranged)
    # fixed K: every partition with b <= K blocks has probability K!/(K-b)!/K^n; they sum to 1
    lp, log_a, log_b = bayes.partition_prior(3, 3, 4)
    stirling = [0, 1, 7, 6]  # S(4, b)
    assert abs(sum(s * math.exp(v) for s, v in zip(stirling, lp[:4], strict=True)) - 1) < 1e-12
    assert np.allclose(np.exp(log_a[1:4]), 1 / 3) and np.isclose(math.exp(log_b[1]), 2 / 3)
    lp, _, _ = bayes.partition_prior(1, 6, 5)
    counts = [int(bayes.set_partitions(5, 6).max(1).__eq__(b - 1).sum()) for b in range(1, 6)]
    assert abs(sum(c * math.exp(v) for c, v in zip(counts, lp[1:6], strict=True)) - 1) < 1e-12


def test_the_default_rectangle_rule_matches_the_fine_one_near_the_edges():
    """ShapeRule's 16-node rectangle quadrature (the truncation at mean_limit) against 48 nodes, on a
    context and queries near the box edge where the truncation matters most."""
    ctx = np.array([[[6.5, 6.0], [7.2, -5.5], [-6.8, 6.9], [5.0, 5.5]]])
    query = np.array([[[7.5, 7.5], [6.0, -7.0], [-7.9, 7.0], [0.0, 0.0], [7.0, 5.0]]])
    for n in (0, 1, 4):
        fine = bayes.aniso_log_predictive_batch(ctx[:, :n], query, WIDE, rule=bayes.ShapeRule(rect_nodes=48))
        default = bayes.aniso_log_predictive_batch(ctx[:, :n], query, WIDE)
        assert np.abs(default - fine).max() < 1e-3
        assert np.abs(default - fine).max() > 0  # the two rules do differ: the test compares something
