"""What the Regression page draws for one context: p(y | x, D) per column and the thinking curves."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from iclebm.dynamics.thinking import predict
from iclebm.grid import log_z_on_grid, y_axis
from iclebm.models.energy import EnergyTransformer
from iclebm.models.regression import column_energies
from iclebm.probes.landscape import QUERY_THREADS, map_passes


def _x_parts(xs: torch.Tensor) -> list[torch.Tensor]:
    """The x columns (B, M) in QUERY_THREADS parts: every column's numbers are its own (its y grid, its
    thinking), so the parts run on separate cores and concatenate to the whole."""
    return list(xs.split(max(1, math.ceil(xs.shape[1] / QUERY_THREADS)), dim=1))


@dataclass
class RegressionView:
    """What the Regression page draws for one context.

    xs (R,), ys (R,) cell centres; energy and log_density (R_y, R_x) with the density
    normalised per column (x); steps (F,) thinking steps shown; curves (F, R_x): y_hat(x)
    after each of them; seconds: compute time."""

    xs: np.ndarray
    ys: np.ndarray
    energy: np.ndarray
    log_density: np.ndarray
    steps: list[int]
    curves: np.ndarray
    seconds: float


def curve_frames(max_steps: int) -> list[int]:
    """Thinking steps shown as animation frames: every step up to 10, then sparser, ending at max_steps."""
    frames = sorted({*range(min(max_steps, 10) + 1), *np.unique(np.geomspace(10, max(max_steps, 10), 25)
                                                                .round().astype(int)).tolist()})
    return [s for s in frames if s <= max_steps]


def regression_grid(
    model: EnergyTransformer, points: np.ndarray | list, box: tuple[float, float], resolution: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, energy, log_density) of `RegressionView`: per-column p(y | x, D) on a resolution^2 grid."""
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 2))[None]  # (1, N, 2)
    ys, h = y_axis(box, resolution)
    xs = ys.clone()
    parts = map_passes(lambda xp: column_energies(model, xp, pts, ys)[0, 0], _x_parts(xs[None]),
                       device=model.device)
    energy = torch.cat(parts)  # (R_x, R_y)
    log_p = -energy - log_z_on_grid(energy, h, keepdim=True)
    energy, log_p = energy.cpu(), log_p.cpu()
    return xs.numpy(), ys.numpy(), energy.T.numpy(), log_p.T.numpy()


def thinking_curves(
    model: EnergyTransformer, points: np.ndarray | list, xs: np.ndarray, max_steps: int = 100,
    step_size: float | None = None, starts: int | None = None, schedule: int | None = None,
) -> tuple[list[int], np.ndarray]:
    """(steps, curves) of `RegressionView`: y_hat(x) after each step of `curve_frames(schedule)`
    (default: max_steps) up to max_steps.

    Thinking is a recurrence, so the curves of a shorter run are exactly the first ones of a longer
    run with the same schedule: the app computes only the steps it shows and the rest when the
    animation is asked for."""
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 2))[None]  # (1, N, 2)
    x = torch.as_tensor(np.asarray(xs, dtype=np.float64))[None]
    ctx = pts.to(model.dtype)
    parts = map_passes(lambda xp: predict(model, xp, ctx, steps=max_steps, step_size=step_size, starts=starts,
                                          return_trajectory=True), _x_parts(x.to(model.dtype)),
                       device=model.device)
    traj = torch.cat(parts, dim=-1)  # (steps + 1, B, M)
    steps = [s for s in curve_frames(max_steps if schedule is None else schedule) if s <= max_steps]
    return steps, traj.cpu()[steps, 0].double().numpy()  # (F, R_x)


def compute_regression_view(
    model: EnergyTransformer, points: np.ndarray | list, box: tuple[float, float], resolution: int = 100,
    max_steps: int = 100, step_size: float | None = None, starts: int | None = None,
) -> RegressionView:
    """Per-column p(y | x, D) on a resolution^2 grid and y_hat(x) after 0..max_steps thinking steps."""

    t0 = time.perf_counter()
    xs, ys, energy, log_p = regression_grid(model, points, box, resolution)
    steps, curves = thinking_curves(model, points, xs, max_steps, step_size, starts)
    return RegressionView(xs, ys, energy, log_p, steps, curves, time.perf_counter() - t0)
