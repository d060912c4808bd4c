"""Task families: seeded reproducibility, exact mixture densities, probe shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from iclebm.grid import grid_points
from iclebm.tasks import PROBE_FAMILIES, GaussianMixture, MixturePrior


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_prior_is_reproducible_given_seed():
    prior = MixturePrior()
    a_ctx, a_tasks = prior.sample_batch(4, 10, gen(7))
    b_ctx, b_tasks = prior.sample_batch(4, 10, gen(7))
    assert torch.equal(a_ctx, b_ctx)
    for a, b in zip(a_tasks, b_tasks, strict=True):
        assert torch.equal(a.means, b.means) and torch.equal(a.stds, b.stds)
    c_ctx, _ = prior.sample_batch(4, 10, gen(8))
    assert not torch.equal(a_ctx, c_ctx)
    assert a_ctx.shape == (4, 10, 2) and a_ctx.dtype == torch.float32


def test_prior_respects_its_ranges():
    prior = MixturePrior(n_components=(1, 4), mean_std=(1.0, 5.0), component_std=(0.3, 0.6), mean_limit=6.0)
    g = gen(0)
    ks = set()
    for _ in range(200):
        t = prior.sample_task(g)
        ks.add(t.n_components)
        assert 1 <= t.n_components <= 4
        assert bool((t.means.abs() <= 6.0).all())
        assert bool(((t.stds >= 0.3) & (t.stds <= 0.6)).all())
    assert ks == {1, 2, 3, 4}


def test_prior_card_round_trip():
    prior = MixturePrior(n_components=(2, 3), mean_std=2.5, component_std=(0.2, 0.4), mean_limit=7.0)
    card = prior.to_card()
    assert card["family"] == "gaussian_mixture"
    assert MixturePrior.from_card(card) == prior
    assert (
        MixturePrior.from_card({"n_components": 3, "mean_std": 3.0, "component_std": [0.33, 0.5]})
        == MixturePrior()
    )
    with pytest.raises(ValueError):
        MixturePrior.from_card({"component_std": [0.5, 0.1]})


def test_mixture_sample_is_reproducible_and_has_right_moments():
    task = GaussianMixture(
        torch.tensor([[2.0, -1.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    )
    x = task.sample(20000, gen(0))
    assert torch.equal(x, task.sample(20000, gen(0)))
    assert x.shape == (20000, 2)
    assert torch.allclose(x.double().mean(0), torch.tensor([2.0, -1.0], dtype=torch.float64), atol=0.02)
    assert torch.allclose(x.double().std(0), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.02)


def test_log_prob_integrates_to_one():
    task = MixturePrior().sample_task(gen(3))
    grid, area = grid_points((-15.0, 15.0), 300)
    total = float(task.log_prob(grid).exp().sum() * area)
    assert abs(total - 1.0) < 1e-3


def test_log_prob_matches_scipy():
    task = MixturePrior().sample_task(gen(4))
    x = 3 * torch.randn(50, 2, generator=gen(5), dtype=torch.float64)
    dens = np.zeros(50)
    for mu, s in zip(task.means.numpy(), task.stds.numpy(), strict=True):
        dens += multivariate_normal(mean=mu, cov=s**2 * np.eye(2)).pdf(x.numpy()) / task.n_components
    assert np.allclose(task.log_prob(x).numpy(), np.log(dens), atol=1e-10)
    assert task.log_prob(x.reshape(5, 10, 2)).shape == (5, 10)


def test_mixture_validation():
    with pytest.raises(ValueError):
        GaussianMixture(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError):
        GaussianMixture(torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError):
        GaussianMixture(torch.zeros(2, 2), torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("name", sorted(PROBE_FAMILIES))
def test_probe_families_sample_right_shape(name):
    family = PROBE_FAMILIES[name]
    x = family.sample(257, gen(1))
    assert x.shape == (257, 2) and x.dtype == torch.float32
    assert bool(torch.isfinite(x).all())
    assert torch.equal(x, family.sample(257, gen(1)))
    assert not torch.equal(x, family.sample(257, gen(2)))
    assert float(x.abs().max()) < 12.0  # inside the default plotting box
    assert float(x.std()) > 0.5  # spread out, not a point


def test_probe_shapes_have_their_geometry():
    rings = PROBE_FAMILIES["concentric rings"].sample(4000, gen(0)).double()
    r = rings.norm(dim=-1)
    assert ((r - 2.0).abs() < 1.0).double().mean() > 0.4 and ((r - 5.0).abs() < 1.0).double().mean() > 0.4
    sq = PROBE_FAMILIES["uniform square"].sample(4000, gen(0))
    assert float(sq.abs().max()) <= 4.0 and float(sq.abs().max()) > 3.9
    assert abs(float(sq.double().var(0).mean()) - 16.0 / 3.0) < 0.3
    assert math.isfinite(float(PROBE_FAMILIES["two moons"].sample(10, gen(0)).sum()))
