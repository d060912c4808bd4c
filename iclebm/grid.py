"""The box and its grids, defined once.

Every grid in iclebm is R equal cells per axis over the box [lo, hi] (the same box on both axes),
points at lo + h (i + offset), h = (hi - lo) / R; 2-D grids are row-major with x fastest, so
`.reshape(R, R)` gives rows = y, columns = x. Offset 0.5 is the cell centres (evaluation, the app);
the exact objective shifts the whole grid by a random offset per task (`jittered_grid`), the
contexts-to-weights fine-tune jitters every cell independently (`stratified_grid`). A normaliser
on a grid is `log_z_on_grid`: log sum_g exp(-E_g) + log(cell area).
"""

from __future__ import annotations

import math

import numpy as np
import torch

Box = tuple[float, float]  # [lo, hi] on both axes of the plane (regression: x and y)


def cell_width(box: Box, resolution: int) -> float:
    return (box[1] - box[0]) / resolution


def cell_area(box: Box, resolution: int) -> float:
    return cell_width(box, resolution) ** 2


def _axis(box: Box, resolution: int, offset: float | torch.Tensor = 0.5,
          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """lo + h (k + offset), k = 0..R-1 (broadcast against a tensor offset)."""
    return box[0] + cell_width(box, resolution) * (torch.arange(int(resolution), dtype=dtype) + offset)


def grid_axis(box: Box, resolution: int) -> np.ndarray:
    """Cell centres along one axis (R,) float64: the midpoints of R equal cells over [lo, hi]."""
    return _axis(box, resolution).numpy()


def y_axis(box: Box, resolution: int, offset: float = 0.5) -> tuple[torch.Tensor, float]:
    """Nodes y_k = lo + h (k + offset), k = 0..K-1, float64 (K,), and the cell width h (regression
    columns are normalised over y by this 1-D midpoint sum)."""
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    return _axis(box, resolution, offset), cell_width(box, resolution)


def _cells(resolution: int, dtype: torch.dtype) -> torch.Tensor:
    """(R*R, 2) integer cell coordinates (i, j) as floats, row-major with x fastest."""
    idx = torch.arange(int(resolution), dtype=dtype)
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)


def grid_points(box: Box, resolution: int) -> tuple[torch.Tensor, float]:
    """Cell centres (R*R, 2) float64, row-major with x fastest, and the cell area."""
    c = _axis(box, resolution)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1), cell_area(box, resolution)


def jittered_grid(box: Box, resolution: int, offset: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Grid points (B, R*R, 2), row-major with x fastest, and the cell area.

    offset: (B, 2) in cell units, in [0, 1): point (i, j) of task b is lo + h * ((i, j) + offset[b]).
    offset = 0.5 gives the cell centres of `grid_points`.
    """
    h = cell_width(box, resolution)
    return box[0] + h * (_cells(resolution, offset.dtype)[None] + offset[:, None, :]), h * h


def stratified_grid(box: Box, resolution: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """One uniform point in every cell (R*R, 2) float64, and the cell area: the grid sum is then an
    unbiased estimate of the integral, and nothing can hide between fixed nodes."""
    grid, area = grid_points(box, resolution)
    h = cell_width(box, resolution)
    return grid + h * (torch.rand(grid.shape, generator=generator, dtype=grid.dtype) - 0.5), area


def log_z_on_grid(energy: torch.Tensor, cell: float, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """log of the Riemann sum of exp(-E) over a grid along `dim`: logsumexp(-E) + log(cell), where
    cell is the cell's area (2-D grids) or width (1-D regression columns)."""
    return torch.logsumexp(-energy, dim=dim, keepdim=keepdim) + math.log(cell)


def log_normalise(energy: np.ndarray, cell_area: float) -> np.ndarray:
    """log p = -E - log Z with Z = sum exp(-E) * cell area over the last two axes (float32 out)."""
    neg = -energy.astype(np.float64)
    peak = neg.max(axis=(-2, -1), keepdims=True)
    log_z = peak + np.log(np.exp(neg - peak).sum(axis=(-2, -1), keepdims=True) * cell_area)
    return (neg - log_z).astype(np.float32)
