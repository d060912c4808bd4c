"""Compute helpers of the explorer, checked against direct model calls."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from iclebm.errors import ContextTooLongError
from iclebm.grid import cell_area
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.probes import landscape as L
from iclebm.tasks import PROBE_FAMILIES

BOX = (-12.0, 12.0)


@pytest.fixture(scope="module")
def model() -> EnergyTransformer:
    torch.manual_seed(0)
    m = EnergyTransformer(EnergyConfig(n_layer=2, n_head=2, d_model=16, max_context=16))
    with torch.no_grad():  # larger weights than the default init, so context matters
        for p in m.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.4)
    return m.eval()


def _points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=(n, 2))


def test_landscape_matches_the_model_and_normalises(model: EnergyTransformer) -> None:
    pts = _points(5)
    land = L.compute_landscape(model, pts, BOX, resolution=30, arrow_resolution=6)
    assert land.energy.shape == (30, 30) and land.log_density.shape == (30, 30)
    assert land.n_context == 5 and land.seconds >= 0
    # rows are y, columns x
    i, j = 7, 21
    q = torch.tensor([[[land.xs[j], land.xs[i]]]], dtype=torch.float32)
    direct = model.energy(q, torch.tensor(pts, dtype=torch.float32)[None])[0, 0].item()
    assert land.energy[i, j] == pytest.approx(direct, rel=1e-5, abs=1e-5)
    mass = np.exp(land.log_density.astype(np.float64)).sum() * cell_area(BOX, 30)
    assert mass == pytest.approx(1.0, rel=1e-5)
    # arrows are -grad E
    assert land.arrow_xy.shape == (36, 2) and land.arrow_uv.shape == (36, 2)
    x = torch.tensor(land.arrow_xy[10:11][None], requires_grad=True)
    e = model.energy(x, torch.tensor(pts, dtype=torch.float32)[None])
    (g,) = torch.autograd.grad(e.sum(), x)
    np.testing.assert_allclose(land.arrow_uv[10], -g[0, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_a_grid_larger_than_one_pass_equals_the_naive_sequences() -> None:
    """The landscape splits its queries into passes of QUERY_CHUNK; in float64 every cell equals the
    plain causal forward of the context with that cell appended as the last token."""
    torch.manual_seed(3)
    m = EnergyTransformer(EnergyConfig(n_layer=2, n_head=2, d_model=16, max_context=16)).double()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.4)
    pts = _points(6, seed=5)
    res = 60
    assert res * res > L.QUERY_CHUNK
    land = L.compute_landscape(m.eval(), pts, BOX, resolution=res)
    grid = np.stack(np.meshgrid(land.xs, land.xs), -1).reshape(-1, 2).astype(np.float64)
    ctx = torch.tensor(pts)[None].expand(len(grid), -1, -1)
    seqs = torch.cat([ctx, torch.tensor(grid)[:, None]], 1)  # (R*R, N+1, 2)
    with torch.no_grad():
        naive = m.energies(seqs)[:, -1].numpy().reshape(res, res)
    np.testing.assert_allclose(land.energy, naive.astype(np.float32), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_passes_on_two_threads_equal_one_thread_exactly(monkeypatch: pytest.MonkeyPatch,
                                                        dtype: torch.dtype) -> None:
    """The landscape's passes on a thread pool: the same numbers, bit for bit, in the grid's order."""
    torch.manual_seed(4)
    m = EnergyTransformer(EnergyConfig(n_layer=2, n_head=2, d_model=16, max_context=16)).to(dtype).eval()
    pts = _points(6, seed=7)
    monkeypatch.setattr(L, "QUERY_CHUNK", 700)  # 60x60 = 3600 queries: 6 passes, the last one short
    monkeypatch.setattr(L, "QUERY_THREADS", 1)
    one = L.compute_landscape(m, pts, BOX, resolution=60)
    monkeypatch.setattr(L, "QUERY_THREADS", 2)
    two = L.compute_landscape(m, pts, BOX, resolution=60)
    np.testing.assert_array_equal(one.energy, two.energy)
    np.testing.assert_array_equal(one.log_density, two.log_density)


def test_map_passes_keeps_order_and_the_callers_grad_mode() -> None:
    passes = [torch.full((3,), float(i)) for i in range(5)]
    with torch.no_grad():
        modes = L.map_passes(lambda q: torch.tensor(float(torch.is_grad_enabled())) + 0 * q[0], passes, 2)
    assert [float(v) for v in modes] == [0.0] * 5
    out = L.map_passes(lambda q: q.sum() + torch.is_grad_enabled(), passes, 2)
    assert [float(v) for v in out] == [3.0 * i + 1 for i in range(5)]


def test_empty_context_and_no_arrows(model: EnergyTransformer) -> None:
    land = L.compute_landscape(model, [], BOX, resolution=12)
    assert land.n_context == 0 and land.arrow_xy is None and np.isfinite(land.energy).all()


def test_context_longer_than_the_model_reads(model: EnergyTransformer) -> None:
    with pytest.raises(ContextTooLongError):
        L.compute_landscape(model, _points(17), BOX, resolution=8)


def test_film_strip_lengths() -> None:
    assert L.film_strip_lengths(0) == [0]
    assert L.film_strip_lengths(1) == [0, 1]
    assert L.film_strip_lengths(8) == [0, 1, 2, 4, 8]
    assert L.film_strip_lengths(20) == [0, 1, 2, 4, 8, 16, 20]
    assert L.film_strip_lengths(64) == [0, 1, 2, 4, 8, 16, 32, 64]
    with pytest.raises(ValueError):
        L.film_strip_lengths(-1)


def test_film_strip_equals_per_prefix_landscapes(model: EnergyTransformer) -> None:
    pts = _points(9, seed=1)
    strip = L.compute_film_strip(model, pts, BOX, resolution=16)
    assert strip.lengths == [0, 1, 2, 4, 8, 9]
    assert strip.energy.shape == (6, 16, 16)
    for k, n in enumerate(strip.lengths):
        single = L.compute_landscape(model, pts[:n], BOX, resolution=16)
        np.testing.assert_allclose(strip.energy[k], single.energy, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(strip.log_density[k], single.log_density, rtol=1e-4, atol=1e-4)


def test_frame_indices() -> None:
    assert L.frame_indices(10, 60).tolist() == list(range(11))
    idx = L.frame_indices(1000, 60)
    assert len(idx) <= 60 and idx[0] == 0 and idx[-1] == 1000 and np.all(np.diff(idx) > 0)
    assert L.frame_indices(0, 5).tolist() == [0]


@pytest.mark.parametrize("kind", L.INIT_KINDS)
def test_particle_init(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = L.particle_init(kind, 50, BOX, _points(3), g)
    assert x.shape == (50, 2) and bool((x.abs() <= 12).all())
    empty = L.particle_init(kind, 5, BOX, [], torch.Generator().manual_seed(0))
    assert empty.shape == (5, 2)
    with pytest.raises(ValueError):
        L.particle_init("everywhere", 5, BOX, [], g)


def test_langevin_animation(model: EnergyTransformer) -> None:
    pts = _points(4)
    kw = {"n_particles": 20, "steps": 30, "step_size": 0.05, "noise_std": 0.3, "grad_clip": 20.0, "seed": 3}
    traj = L.langevin_animation(model, pts, BOX, max_frames=8, **kw)
    assert traj.positions.shape[1:] == (20, 2) and len(traj.steps) == traj.positions.shape[0] <= 8
    assert traj.steps[0] == 0 and traj.steps[-1] == 30
    assert np.all(np.abs(traj.positions) <= 12.0)
    again = L.langevin_animation(model, pts, BOX, max_frames=8, **kw)
    np.testing.assert_array_equal(traj.positions, again.positions)  # the seed reproduces the run
    g = torch.Generator().manual_seed(3)
    np.testing.assert_allclose(traj.positions[0], L.particle_init("uniform", 20, BOX, pts, g).numpy())


def test_draw_mixture_is_seeded() -> None:
    task, pts = L.draw_mixture(3, 3.0, (0.33, 0.5), seed=5, n_points=40)
    task2, pts2 = L.draw_mixture(3, 3.0, (0.33, 0.5), seed=5, n_points=40)
    assert task.n_components == 3 and pts.shape == (40, 2)
    np.testing.assert_array_equal(pts, pts2)
    np.testing.assert_array_equal(task.means.numpy(), task2.means.numpy())
    other, _ = L.draw_mixture(3, 3.0, (0.33, 0.5), seed=6, n_points=1)
    assert not np.allclose(other.means.numpy(), task.means.numpy())
    fixed, _ = L.draw_mixture(2, 3.0, (0.4, 0.4), seed=0, n_points=1)
    assert np.allclose(fixed.stds.numpy(), 0.4)


def test_probe_points_and_true_density() -> None:
    for family in PROBE_FAMILIES:
        pts = L.probe_points(family, 30, seed=1)
        assert pts.shape == (30, 2) and np.isfinite(pts).all()
    with pytest.raises(ValueError):
        L.probe_points("spiral galaxy", 3, 0)
    task, _ = L.draw_mixture(3, 3.0, (0.33, 0.5), seed=2, n_points=1)
    tl = L.true_log_density(task, BOX, 120)
    assert tl.shape == (120, 120)
    assert np.exp(tl.astype(np.float64)).sum() * cell_area(BOX, 120) == pytest.approx(1.0, abs=1e-3)
    same = L.mixture_from_params(task.means.tolist(), task.stds.tolist())
    np.testing.assert_allclose(L.true_log_density(same, BOX, 10), L.true_log_density(task, BOX, 10))


def test_sample_report() -> None:
    task, pts = L.draw_mixture(3, 3.0, (0.33, 0.5), seed=2, n_points=300)
    good = L.sample_report(task, pts)
    assert good["share_near_a_component"] > 0.95
    assert good["particles_mean_log_p"] == pytest.approx(good["exact_mean_log_p"], abs=0.3)
    bad = L.sample_report(task, np.random.default_rng(0).uniform(-12, 12, size=(300, 2)))
    assert bad["particles_mean_log_p"] < good["particles_mean_log_p"] - 5
    assert bad["share_near_a_component"] < 0.2


def test_shipped_model_heatmap_at_the_apps_size() -> None:
    """The app's main landscape: 100 x 100 heatmap + 20 x 20 arrows, 64 context points, on one thread
    as in the app: finite and repeatable. Its speed is measured by benchmarks/browser_bench.py and
    `python -m iclebm bench`, not asserted here (tests check correctness, never wall-clock time)."""
    from iclebm.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint

    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip(f"no shipped checkpoint at {DEFAULT_CHECKPOINT}")
    model = load_checkpoint()
    pts = _points(model.config.max_context)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the app (see app.py)
    try:
        first = L.compute_landscape(model, pts, BOX, 100, 20)  # also the warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = L.compute_landscape(model, pts, BOX, 100, 20)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    best = min(times)
    print(f"\nshipped model, N={len(pts)}: 100x100 heatmap + 20x20 arrows in {1000 * best:.0f} ms "
          "(1 thread, as in the app)")
    e1, e2 = np.asarray(first.energy), np.asarray(again.energy)
    assert e1.shape == (100, 100) and np.isfinite(e1).all()
    np.testing.assert_array_equal(e1, e2)
