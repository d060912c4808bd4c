"""What the Regression page draws for one context: p(y | x, D) per column and the thinking curves."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from iclebm.dynamics.thinking import predict
from iclebm.grid import log_z_on_grid, y_axis
from iclebm.models.energy import EnergyTransformer
from iclebm.models.regression import column_energies


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


def compute_regression_view(
    model: EnergyTransformer, points: np.ndarray | list, box: tuple[float, float], resolution: int = 100,
    max_steps: int = 100, step_size: float | None = None, starts: int | None = None,
) -> RegressionView:
    """Per-column p(y | x, D) on a resolution^2 grid and y_hat(x) after 0..max_steps thinking steps."""

    t0 = time.perf_counter()
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 2))[None]  # (1, N, 2)
    ys, h = y_axis(box, resolution)
    xs = ys.clone()
    energy = column_energies(model, xs[None], pts, ys)[0, 0]  # (R_x, R_y)
    log_p = -energy - log_z_on_grid(energy, h, keepdim=True)
    traj = predict(model, xs[None].to(model.dtype), pts.to(model.dtype), steps=max_steps, step_size=step_size,
                   starts=starts, return_trajectory=True)
    steps = curve_frames(max_steps)
    curves = traj.cpu()[steps, 0].double().numpy()  # (F, R_x)
    energy, log_p = energy.cpu(), log_p.cpu()
    return RegressionView(xs.numpy(), ys.numpy(), energy.T.numpy(), log_p.T.numpy(), steps, curves,
                          time.perf_counter() - t0)
