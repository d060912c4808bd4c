"""Compute helpers for the explorer: numbers in, numpy arrays out (no Streamlit, no Plotly).

Everything here is called on a frozen model and returns plain arrays that the app
caches and `iclebm.ui.figures` draws:

- `compute_landscape`: E(x | context) on a grid, the grid-normalised log density, and
  the -grad E arrow field on a coarser grid (one context pass + query tokens).
- `compute_film_strip`: the landscape after n = 0, 1, 2, 4, ... points, all prefixes in
  one `energy_at_prefixes` call.
- `langevin_animation`: particle trajectories under the current context, thinned to
  a frame budget for the browser.
- `draw_mixture`, `probe_points`, `true_log_density`, `sample_report`: task helpers.

Grid convention (same as `iclebm.grid.grid_points`): cell centres, rows = y,
columns = x, so an (R, R) array is directly a Plotly heatmap `z`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from iclebm.dynamics.langevin import langevin
from iclebm.grid import Box, grid_axis, grid_points, log_normalise
from iclebm.models.energy import EnergyTransformer
from iclebm.tasks import PROBE_FAMILIES, GaussianMixture, MixturePrior


@dataclass(frozen=True)
class Landscape:
    xs: np.ndarray  # (R,) cell centres along x (and y: the box is square)
    energy: np.ndarray  # (R, R) E(x | context), rows = y
    log_density: np.ndarray  # (R, R) log p(x | context), normalised over the box grid
    arrow_xy: np.ndarray | None  # (K, 2) arrow tails
    arrow_uv: np.ndarray | None  # (K, 2) -grad E at the tails
    n_context: int
    seconds: float


@dataclass(frozen=True)
class FilmStrip:
    xs: np.ndarray  # (R,)
    lengths: list[int]  # prefix lengths shown
    energy: np.ndarray  # (P, R, R)
    log_density: np.ndarray  # (P, R, R)
    seconds: float


@dataclass(frozen=True)
class Trajectory:
    steps: np.ndarray  # (F,) Langevin step index of each frame
    positions: np.ndarray  # (F, M, 2) particle positions per frame
    seconds: float


def as_context(points: np.ndarray | list | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 2) points -> (1, N, 2) tensor of dtype (N may be 0); pass the model's dtype, so a float64
    model reads its points unrounded."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return torch.from_numpy(arr.copy()).to(dtype)[None]




def _grid_query(box: Box, resolution: int, model: EnergyTransformer) -> tuple[torch.Tensor, float]:
    grid, area = grid_points(box, resolution)
    return grid.to(device=model.device, dtype=model.dtype)[None], area  # the query path reads it as is


# Queries per pass: the 64x256 MLP activations of 2,500 tokens stay in cache, so the elementwise ops
# (GELU, LayerNorm) do not stream 10 MB arrays; 100x100 grids take ~160 instead of ~190 ms on one
# core here. Queries are independent tokens, so the split changes no value.
QUERY_CHUNK = 2500
# Passes run on QUERY_THREADS threads (torch ops release the GIL); each pass is computed as it would
# be alone, so the result equals the one-thread result exactly (tests/test_landscape.py). Two by
# default: since a click redraws only the canvas first (iclebm/ui/click_fragment.py) the other core
# is free while the landscape is computed, and clicks got faster on the 2-core machine (A/B of
# benchmarks/browser_bench.py, two runs each, 2026-12-02: Density 231/229 -> 212/219 ms, Regression
# 444/451 -> 367/361 ms). (Before that change the other core was busy and two threads were slower.)
# ICLEBM_QUERY_THREADS=N sets another number.
QUERY_THREADS = max(1, int(os.environ.get("ICLEBM_QUERY_THREADS", str(min(2, os.cpu_count() or 1)))))
_pool: ThreadPoolExecutor | None = None


def map_passes(fn: Callable[[torch.Tensor], torch.Tensor], passes: Sequence[torch.Tensor],
               threads: int | None = None, device: torch.device | None = None) -> list[torch.Tensor]:
    """[fn(p) for p in passes], on `threads` (default QUERY_THREADS) CPU threads; a model `device`
    (default: the passes') other than the CPU, a single pass or one thread runs them in order. The
    caller's grad mode holds in the workers too."""
    global _pool
    threads = QUERY_THREADS if threads is None else threads
    device = passes[0].device if device is None and len(passes) else device
    if threads <= 1 or len(passes) <= 1 or device is None or torch.device(device).type != "cpu":
        return [fn(q) for q in passes]
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="iclebm-query")
    grad = torch.is_grad_enabled()  # thread-local in torch: carry it into the workers

    def run(q: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return fn(q)

    return list(_pool.map(run, passes))


def compute_landscape(
    model: EnergyTransformer,
    points: np.ndarray | list,
    box: Box,
    resolution: int = 100,
    arrow_resolution: int = 0,
    orders: int = 1,
    seed: int = 0,
) -> Landscape:
    """Energy, normalised log density and (if arrow_resolution > 0) the -grad E field.
    orders > 1: the order ensemble's energy (`EnergyTransformer.energy`), orderings drawn from `seed`."""
    if int(orders) != 1:
        return _ensemble_landscape(model, points, box, resolution, arrow_resolution, int(orders), int(seed))
    t0 = time.perf_counter()
    context = as_context(points, model.dtype)
    query, area = _grid_query(box, resolution, model)
    with torch.no_grad():
        cache = model.encode_context(context)
        passes = query.split(QUERY_CHUNK, dim=1)
        energy = torch.cat(map_passes(lambda q: model.energy_cached(q[:, None], cache)[0, 0], passes))
    energy_np = energy.reshape(resolution, resolution).cpu().numpy().astype(np.float32)
    arrow_xy = arrow_uv = None
    if arrow_resolution > 0:
        # Arrows sit on a coarser grid: a field of 100x100 arrows would be unreadable.
        tails = grid_points(box, arrow_resolution)[0].to(model.dtype)
        with torch.enable_grad():
            q = tails[None, None].to(model.device).clone().requires_grad_(True)
            e = model.energy_cached(q, cache.detach())
            (grad,) = torch.autograd.grad(e.sum(), q)
        arrow_xy = tails.numpy()
        arrow_uv = (-grad[0, 0]).cpu().numpy()
    return Landscape(
        xs=grid_axis(box, resolution).astype(np.float32),
        energy=energy_np,
        log_density=log_normalise(energy_np, area),
        arrow_xy=arrow_xy,
        arrow_uv=arrow_uv,
        n_context=int(context.shape[1]),
        seconds=time.perf_counter() - t0,
    )


def _ensemble_landscape(
    model: EnergyTransformer, points: np.ndarray | list, box: Box, resolution: int, arrow_resolution: int,
    orders: int, seed: int,
) -> Landscape:
    """`compute_landscape` for the order ensemble; the map and the arrows share one seed's orderings."""
    t0 = time.perf_counter()
    context = as_context(points, model.dtype)
    query, area = _grid_query(box, resolution, model)
    with torch.no_grad():
        energy = model.energy(query, context, orders=orders, generator=torch.Generator().manual_seed(seed))[0]
    energy_np = energy.reshape(resolution, resolution).cpu().numpy().astype(np.float32)
    arrow_xy = arrow_uv = None
    if arrow_resolution > 0:
        tails = grid_points(box, arrow_resolution)[0].to(model.dtype)
        with torch.enable_grad():
            q = tails[None].to(model.device).clone().requires_grad_(True)
            e = model.energy(q, context, orders=orders, generator=torch.Generator().manual_seed(seed))
            (grad,) = torch.autograd.grad(e.sum(), q)
        arrow_xy, arrow_uv = tails.numpy(), (-grad[0]).cpu().numpy()
    return Landscape(xs=grid_axis(box, resolution).astype(np.float32), energy=energy_np,
                     log_density=log_normalise(energy_np, area), arrow_xy=arrow_xy, arrow_uv=arrow_uv,
                     n_context=int(context.shape[1]), seconds=time.perf_counter() - t0)


def film_strip_lengths(n: int) -> list[int]:
    """0, 1, 2, 4, 8, ... below n, then n itself (the paper's Figure 1 layout)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    out = [0]
    k = 1
    while k < n:
        out.append(k)
        k *= 2
    if n > 0:
        out.append(n)
    return out


def compute_film_strip(
    model: EnergyTransformer, points: np.ndarray | list, box: Box, resolution: int = 48,
    lengths: list[int] | None = None, orders: int = 1, seed: int = 0,
) -> FilmStrip:
    """The landscape after each prefix length, in one batched `energy_at_prefixes` call
    (orders > 1: each prefix's order ensemble, orderings drawn from `seed`)."""
    t0 = time.perf_counter()
    context = as_context(points, model.dtype)
    n = int(context.shape[1])
    lengths = film_strip_lengths(n) if lengths is None else [int(v) for v in lengths]
    query, area = _grid_query(box, resolution, model)
    with torch.no_grad():
        energy = model.energy_at_prefixes(query, context, lengths, orders=int(orders),
                                          generator=torch.Generator().manual_seed(int(seed)))[0]  # (P, R*R)
    energy_np = energy.reshape(len(lengths), resolution, resolution).cpu().numpy().astype(np.float32)
    return FilmStrip(
        xs=grid_axis(box, resolution).astype(np.float32),
        lengths=lengths,
        energy=energy_np,
        log_density=log_normalise(energy_np, area),
        seconds=time.perf_counter() - t0,
    )


INIT_KINDS = ("uniform", "gaussian", "context")


def particle_init(
    kind: str, n: int, box: Box, points: np.ndarray | list, generator: torch.Generator,
    gaussian_std: float = 3.0,
) -> torch.Tensor:
    """Starting particles (n, 2): uniform over the box, N(0, std^2 I), or context points + N(0, 1)."""
    lo, hi = box
    ctx = as_context(points)[0]
    if kind == "uniform":
        x = lo + (hi - lo) * torch.rand(n, 2, generator=generator)
    elif kind == "gaussian":
        x = gaussian_std * torch.randn(n, 2, generator=generator)
    elif kind == "context":
        if ctx.shape[0] == 0:  # nothing to start from: fall back to the box
            x = lo + (hi - lo) * torch.rand(n, 2, generator=generator)
        else:
            idx = torch.randint(ctx.shape[0], (n,), generator=generator)
            x = ctx[idx] + torch.randn(n, 2, generator=generator)
    else:
        raise ValueError(f"unknown init {kind!r}; choose from {INIT_KINDS}")
    return x.clamp(lo, hi)


def frame_indices(steps: int, max_frames: int) -> np.ndarray:
    """Evenly spread step indices 0..steps (both ends kept), at most max_frames of them."""
    if steps < 0 or max_frames < 2:
        raise ValueError("steps must be >= 0 and max_frames >= 2")
    count = min(steps + 1, max_frames)
    return np.unique(np.round(np.linspace(0, steps, count)).astype(int))


def langevin_animation(
    model: EnergyTransformer, points: np.ndarray | list, box: Box, *, n_particles: int, steps: int,
    step_size: float, noise_std: float, grad_clip: float | None = None, init: str = "uniform",
    seed: int = 0, max_frames: int = 60,
) -> Trajectory:
    """Langevin trajectories under the context, thinned to at most max_frames frames."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(int(seed))
    x0 = particle_init(init, int(n_particles), box, points, g).to(model.dtype)
    traj = langevin(
        model, as_context(points, model.dtype), x0, int(steps), float(step_size), float(noise_std),
        grad_clip=grad_clip, return_trajectory=True, box=box, generator=g,
    )  # (T+1, M, 2)
    idx = frame_indices(int(steps), max_frames)
    return Trajectory(steps=idx, positions=traj[idx].detach().cpu().numpy().astype(np.float32),
                      seconds=time.perf_counter() - t0)


def _range(value: float | int | tuple | list, cast: type = float) -> float | int | tuple:
    """A number, or a [lo, hi] range that collapses to a number when lo == hi (as priors store them)."""
    if not isinstance(value, (tuple, list)):
        return cast(value)
    lo, hi = sorted((cast(value[0]), cast(value[1])))
    return (lo, hi) if hi > lo else lo


def mixture_prior(
    n_components: int | tuple[int, int], mean_std: float, component_std: float | tuple[float, float],
    mean_limit: float = 8.0, aspect_ratio: float | tuple[float, float] = 1.0,
) -> MixturePrior:
    """The Gaussian-mixture prior with these settings (ranges as [lo, hi]; lo == hi is a fixed value).
    A card's own prior rebuilt from its settings compares equal to `MixturePrior.from_card`."""
    return MixturePrior(n_components=_range(n_components, int), mean_std=float(mean_std),
                        component_std=_range(component_std), mean_limit=float(mean_limit),
                        aspect_ratio=_range(aspect_ratio))


def mixture_settings(prior: MixturePrior) -> dict:
    """The settings of a prior as the app stores them: {"k", "spread", "width", "limit"} (+ "ratio" when
    anisotropic); k is a number or [lo, hi]. Inverse of `mixture_prior`."""
    def pair(v: float | tuple) -> list[float]:
        return [float(v[0]), float(v[1])] if isinstance(v, tuple) else [float(v), float(v)]

    k = prior.n_components
    spread = prior.mean_std if not isinstance(prior.mean_std, tuple) else sum(prior.mean_std) / 2
    out = {"k": list(k) if isinstance(k, tuple) else int(k), "spread": float(spread),
           "width": pair(prior.component_std), "limit": float(prior.mean_limit)}
    if prior.anisotropic:
        out["ratio"] = pair(prior.aspect_ratio)
    return out


def draw_mixture(
    n_components: int | tuple[int, int], mean_std: float, component_std: float | tuple[float, float],
    seed: int, n_points: int, mean_limit: float = 8.0, aspect_ratio: float | tuple[float, float] = 1.0,
) -> tuple[GaussianMixture, np.ndarray]:
    """A task from the mixture prior with these settings, and n_points from it (seeded)."""
    prior = mixture_prior(n_components, mean_std, component_std, mean_limit, aspect_ratio)
    g = torch.Generator().manual_seed(int(seed))
    task = prior.sample_task(g)
    return task, task.sample(int(n_points), g).numpy().astype(np.float64)


def probe_points(family: str, n_points: int, seed: int) -> np.ndarray:
    if family not in PROBE_FAMILIES:
        raise ValueError(f"unknown probe {family!r}; choose from {sorted(PROBE_FAMILIES)}")
    g = torch.Generator().manual_seed(int(seed))
    return PROBE_FAMILIES[family].sample(int(n_points), g).numpy().astype(np.float64)


def mixture_from_params(means: list | np.ndarray, stds: list | np.ndarray) -> GaussianMixture:
    return GaussianMixture(torch.as_tensor(np.asarray(means, dtype=np.float64).reshape(-1, 2)),
                           torch.as_tensor(np.asarray(stds, dtype=np.float64).reshape(-1)))


def true_log_density(mixture: GaussianMixture, box: Box, resolution: int) -> np.ndarray:
    """(R, R) exact log density of the mixture on the same grid as the landscape."""
    grid, _ = grid_points(box, resolution)
    return mixture.log_prob(grid).reshape(resolution, resolution).numpy().astype(np.float32)


def sample_report(mixture: GaussianMixture, samples: np.ndarray, seed: int = 0) -> dict[str, float]:
    """How well particles match the true mixture: mean true log p of the particles vs of
    exact samples, and the share of particles within 3 std (Mahalanobis) of some component."""
    x = torch.as_tensor(np.asarray(samples, dtype=np.float64).reshape(-1, 2))
    g = torch.Generator().manual_seed(int(seed))
    exact = mixture.sample(max(1, x.shape[0]), g).double()
    diff = x[:, None, :] - mixture.means.double()[None]  # (M, K, 2)
    prec = torch.linalg.inv(mixture.covariances())  # (K, 2, 2): isotropic ones are I / std^2
    d = torch.einsum("mki,kij,mkj->mk", diff, prec, diff).clamp_min(0).sqrt()
    return {
        "particles_mean_log_p": float(mixture.log_prob(x).mean()),
        "exact_mean_log_p": float(mixture.log_prob(exact).mean()),
        "share_near_a_component": float((d.min(dim=1).values <= 3.0).double().mean()),
    }


def finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default
