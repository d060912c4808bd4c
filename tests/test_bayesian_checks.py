"""Order ensembles, order sensitivity, the martingale check, the trajectory map, the Bayes-gap split."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from iclebm.errors import CapabilityError
from iclebm.evaluation.bayes_gap import bayes_gap_decomposition
from iclebm.evaluation.grid_learners import BayesGrid, GridSpec, LastPointHeavy, ModelGrid, ShrinkingKde
from iclebm.evaluation.martingale import martingale_check, martingale_gap
from iclebm.evaluation.order import order_sensitivity, permutation_kl
from iclebm.evaluation.trajectory import classical_mds, hellinger_matrix, trajectory_map
from iclebm.grid import grid_points, log_z_on_grid
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.models.order import ORDER_Z_RESOLUTION, orderings
from iclebm.tasks import MixturePrior

PRIOR = MixturePrior(n_components=3, mean_std=3.0, component_std=(0.33, 0.5), mean_limit=8.0)


@pytest.fixture(scope="module")
def model() -> EnergyTransformer:
    torch.manual_seed(0)
    m = EnergyTransformer(EnergyConfig(n_layer=2, n_head=2, d_model=16, max_context=16)).double().eval()
    m.card = {"box": [-6.0, 6.0]}
    return m


def _ctx(seed: int, b: int, n: int) -> torch.Tensor:
    return 2 * torch.randn(b, n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_orders_one_is_todays_energy(model: EnergyTransformer) -> None:
    ctx, q = _ctx(1, 2, 5), _ctx(2, 2, 7)
    with torch.no_grad():
        assert torch.equal(model.energy(q, ctx, orders=1), model.energy(q, ctx))
        pre = model.energy_at_prefixes(q, ctx, [0, 2, 5], orders=1)
        assert torch.equal(pre, model.energy_at_prefixes(q, ctx, [0, 2, 5]))
        # and the plain causal forward: q appended to the context
        seq = torch.cat([ctx[:, None].expand(2, 7, 5, 2), q[:, :, None]], 2).reshape(14, 6, 2)
        ref = model.energies(seq)[:, -1].reshape(2, 7)
        torch.testing.assert_close(model.energy(q, ctx, orders=1), ref, rtol=0, atol=1e-10)


def test_ensemble_equals_one_call_per_ordering(model: EnergyTransformer) -> None:
    """The batched ensemble against the simple loop: each ordering alone, normalised on the same grid."""
    ctx, q = _ctx(3, 2, 6), _ctx(4, 2, 9)
    order = orderings(6, 5, torch.Generator().manual_seed(7))
    assert torch.equal(order[0], torch.arange(6))
    grid, area = grid_points((-6.0, 6.0), ORDER_Z_RESOLUTION)
    with torch.no_grad():
        fast = model.energy(q, ctx, orders=5, generator=torch.Generator().manual_seed(7))
        terms = []
        for perm in order:
            c = ctx[:, perm]
            e = model.energy(q, c)
            log_z = log_z_on_grid(model.energy(grid[None].expand(2, -1, -1), c), area)
            terms.append(-e - log_z[:, None])
        slow = -(torch.logsumexp(torch.stack(terms), 0) - math.log(5))
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-10)


def test_ensemble_over_all_orderings_ignores_the_order(model: EnergyTransformer) -> None:
    ctx, q = _ctx(5, 1, 3), _ctx(6, 1, 11)
    assert orderings(3, 6).shape == (6, 3) and orderings(3, 100).shape == (6, 3)
    with torch.no_grad():
        a = model.energy(q, ctx, orders=6)
        diffs = [(model.energy(q, ctx[:, list(p)], orders=6) - a).abs().max().item()
                 for p in itertools.permutations(range(3))]
        single = (model.energy(q, ctx[:, [2, 0, 1]]) - model.energy(q, ctx)).abs().max().item()
    assert max(diffs) < 1e-10
    assert single > 1e-6  # the model alone is order-dependent, so the test above can fail


def test_prefix_ensembles_match_energy_on_each_prefix(model: EnergyTransformer) -> None:
    ctx, q = _ctx(8, 2, 3), _ctx(9, 2, 4)
    with torch.no_grad():
        pre = model.energy_at_prefixes(q, ctx, [0, 1, 3], orders=6)
        ref = torch.stack([model.energy(q, ctx[:, :n], orders=6) for n in (0, 1, 3)], 1)
        allp = model.energy_all_prefixes(q, ctx, orders=6)
    torch.testing.assert_close(pre, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(allp[:, [0, 1, 3]], ref, rtol=0, atol=1e-12)


def test_permutation_kl_by_hand() -> None:
    area = 0.5
    p = np.array([[0.5, 1.0, 0.5], [1.0, 0.5, 0.5]])  # each sums to 2 -> normalised with area 0.5
    kl, integrand, std = permutation_kl(np.log(p), area)
    ens = p.mean(0)
    by_hand = np.mean([(pk * np.log(pk / ens)).sum() * area for pk in p])
    assert kl == pytest.approx(by_hand, rel=1e-12) and kl > 0
    assert permutation_kl(np.log(p[:1]), area)[0] == 0.0
    assert permutation_kl(np.log(np.stack([p[0], p[0]])), area)[0] == pytest.approx(0.0, abs=1e-15)


def test_bayes_is_order_invariant_and_the_model_is_not(model: EnergyTransformer) -> None:
    grid = GridSpec((-6.0, 6.0), 12)
    ctx = _ctx(10, 1, 4)[0].numpy()
    bayes = order_sensitivity(BayesGrid(PRIOR), ctx, grid, orders=24)  # exact enumeration, all 24 orders
    assert bayes.orders == 24
    assert abs(bayes.kl) < 1e-12 and float(bayes.energy_std.max()) < 1e-9
    mine = order_sensitivity(ModelGrid(model), ctx, grid, orders=24)
    assert mine.kl > 1e-9 and mine.energy_std.shape  # an untrained model: small, yet far above rounding
    assert mine.energy_std.shape == (12, 12)


def test_martingale_gap_by_hand() -> None:
    before = np.array([1.0, 0.5, 0.5])
    assert martingale_gap(before, np.stack([before] * 4), 1.0) == (0.0, 0.0, 0.0)
    gap, tv, _ = martingale_gap(before, np.stack([before + [0.2, -0.1, -0.1]] * 4), 1.0)
    assert gap == pytest.approx(math.sqrt(0.06) / math.sqrt(1.5)) and tv == pytest.approx(0.2)


def test_martingale_check_bayes_passes_non_bayesian_fails() -> None:
    grid = GridSpec((-12.0, 12.0), 24)
    task = PRIOR.sample_task(torch.Generator().manual_seed(3))
    ctx = task.sample(2, torch.Generator().manual_seed(4)).double().numpy()
    kw = {"continuations": 32, "steps": 4, "seed": 1}
    bayes = martingale_check(BayesGrid(PRIOR), ctx, grid, **kw)  # n + 4 <= 8: exact enumeration
    heavy = martingale_check(LastPointHeavy(prior=PRIOR), ctx, grid, **kw)
    shrink = martingale_check(ShrinkingKde(prior=PRIOR), ctx, grid, **kw)
    assert abs(bayes.gap) < 0.15  # Monte Carlo noise at J = 32 scatters it around 0 by about 0.1
    assert heavy.gap > 0.3 and heavy.tv > 2 * heavy.tv_noise
    assert shrink.gap > 0.1
    assert len(bayes.gap_by_step) == 4 and bayes.after.shape == (24, 24)
    assert (bayes.after.sum() * grid.area) == pytest.approx(1.0)


def test_hellinger_of_known_gaussians_and_mds_reproduces_them() -> None:
    grid = GridSpec((-10.0, 10.0), 200)
    pts = grid.points
    centres, s = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.5, 1.5]]), 0.7
    log_p = np.stack([-((pts - c) ** 2).sum(1) / (2 * s * s) - math.log(2 * math.pi * s * s)
                      for c in centres])
    h = hellinger_matrix(log_p, grid.area)
    d2 = ((centres[:, None] - centres[None]) ** 2).sum(-1)
    exact = np.sqrt(1 - np.exp(-d2 / (8 * s * s)))  # closed form for equal isotropic Gaussians
    np.testing.assert_allclose(h, exact, atol=1e-9)
    three = h[:3, :3]  # any three points of a metric embed exactly in the plane
    xy = classical_mds(three)
    np.testing.assert_allclose(np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)), three, atol=1e-10)


def test_mds_reproduces_planar_points() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 2))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    y = classical_mds(d)
    np.testing.assert_allclose(np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1)), d, atol=1e-10)


def test_trajectory_map_shapes(model: EnergyTransformer) -> None:
    grid = GridSpec((-6.0, 6.0), 10)
    ctx = _ctx(11, 1, 3)[0].numpy()
    seen: list[str] = []
    fractions: list[float] = []
    tm = trajectory_map([ModelGrid(model), BayesGrid(PRIOR)], ctx, grid,
                        progress=lambda f, name: (seen.append(name), fractions.append(f)))
    assert tm.coords.shape == (2, 4, 2) and tm.log_density.shape == (2, 4, 10, 10) and tm.ns == [0, 1, 2, 3]
    # the model has a batched prefix path (one report); Bayes reports each n, so a progress bar moves
    assert seen == ["model", "bayes"] + [f"bayes, n = {n}" for n in range(4)] + ["embedding"]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] < 1.0
    # Bayes moves away from the prior as points arrive, and the map shows the move
    h = hellinger_matrix(tm.log_density[1].reshape(4, -1).astype(np.float64), grid.area)
    assert h[0, 3] > 0.1
    assert np.linalg.norm(tm.coords[1, 3] - tm.coords[1, 0]) > 0.5 * h[0, 3]


def test_bayes_gap_decomposition() -> None:
    nll = {"model": [5.0, 3.0], "bayes": [4.5, 2.5], "oracle": [2.0, 2.0], "kde": [9.0, 4.0]}
    table = {"ns": [0, 4], "nll": nll}
    d = bayes_gap_decomposition(table)
    assert d["posterior_variance"] == [2.5, 0.5]
    assert d["bayes_gap"] == {"model": [0.5, 0.5], "kde": [4.5, 1.5]}
    with pytest.raises(CapabilityError):
        bayes_gap_decomposition({"ns": [0], "nll": {"model": [1.0]}})


def test_landscape_paths_take_orders(model: EnergyTransformer) -> None:
    from iclebm.probes.landscape import compute_film_strip, compute_landscape

    pts = _ctx(12, 1, 3)[0].numpy()
    one = compute_landscape(model, pts, (-6.0, 6.0), 8, arrow_resolution=3)
    assert np.array_equal(one.energy, compute_landscape(model, pts, (-6.0, 6.0), 8, orders=1).energy)
    ens = compute_landscape(model, pts, (-6.0, 6.0), 8, arrow_resolution=3, orders=6)
    q = torch.as_tensor(grid_points((-6.0, 6.0), 8)[0])[None]
    with torch.no_grad():
        ref = model.energy(q, torch.as_tensor(pts)[None], orders=6)[0].reshape(8, 8).numpy()
    np.testing.assert_allclose(ens.energy, ref.astype(np.float32))
    assert ens.arrow_uv is not None and ens.arrow_uv.shape == (9, 2)
    strip = compute_film_strip(model, pts, (-6.0, 6.0), 8, lengths=[0, 3], orders=6)
    np.testing.assert_allclose(strip.energy[1], ens.energy)
