"""The box and its grids, defined once: cell-centre axes and 2-D grids (x fastest), the jittered grid of
the exact objective, the 1-D y-axis of regression columns, and normalisation of energies on a grid."""

from __future__ import annotations

import numpy as np
import torch

Box = tuple[float, float]  # [lo, hi] on both axes of the plane (regression: x and y)


def jittered_grid(
    box: tuple[float, float], resolution: int, offset: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Grid points (B, R*R, 2), row-major with x fastest, and the cell area.

    offset: (B, 2) in cell units, in [0, 1): point (i, j) of task b is lo + h * ((i, j) + offset[b]).
    offset = 0.5 gives the cell centres of `evaluate.grid_points`.
    """
    lo, hi = box
    h = (hi - lo) / resolution
    idx = torch.arange(resolution, dtype=offset.dtype)
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    cells = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)  # (G, 2)
    return lo + h * (cells[None] + offset[:, None, :]), h * h


def y_axis(box: tuple[float, float], resolution: int, offset: float = 0.5) -> tuple[torch.Tensor, float]:
    """Nodes y_k = lo + h (k + offset), k = 0..K-1, float64 (K,), and the cell width h."""
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    lo, hi = box
    h = (hi - lo) / resolution
    return lo + h * (torch.arange(int(resolution), dtype=torch.float64) + offset), h


def grid_axis(box: tuple[float, float], resolution: int) -> np.ndarray:
    """Cell centres along one axis (R,): the midpoints of R equal cells over [lo, hi]."""
    lo, hi = box
    h = (hi - lo) / resolution
    return lo + h * (np.arange(resolution) + 0.5)


def cell_area(box: tuple[float, float], resolution: int) -> float:
    h = (box[1] - box[0]) / resolution
    return h * h


def grid_points(box: tuple[float, float], resolution: int) -> tuple[torch.Tensor, float]:
    """Cell centres (R*R, 2), row-major with x fastest, and the cell area."""
    c = torch.from_numpy(grid_axis(box, resolution))
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1), cell_area(box, resolution)


def log_normalise(energy: np.ndarray, cell_area: float) -> np.ndarray:
    """log p = -E - log Z with Z = sum exp(-E) * cell area over the last two axes."""
    e = energy.astype(np.float64)
    neg = -e
    peak = neg.max(axis=(-2, -1), keepdims=True)
    log_z = peak + np.log(np.exp(neg - peak).sum(axis=(-2, -1), keepdims=True) * cell_area)
    return (neg - log_z).astype(np.float32)
