"""Evaluation: grid-normalised densities and the in-context NLL curve.

In 2-D the partition function is a grid sum: Z = sum_cells exp(-E(cell centre)) * cell area
over the plotting box (midpoint rule). NLL(x | D) = E(x | D) + log Z(D), in nats.
"""

from __future__ import annotations

import math

import torch

from .model import EnergyTransformer

DEFAULT_NS = (0, 1, 2, 4, 8, 16, 32)


def grid_points(box: tuple[float, float], resolution: int) -> tuple[torch.Tensor, float]:
    """Cell centres (R*R, 2), row-major with x fastest, and the cell area."""
    lo, hi = box
    h = (hi - lo) / resolution
    c = lo + h * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1), h * h


@torch.no_grad()
def model_log_z(
    model: EnergyTransformer, context: torch.Tensor, lengths: list[int] | torch.Tensor,
    box: tuple[float, float], resolution: int = 200,
) -> torch.Tensor:
    """log Z for each task and prefix length: (T, N, 2) -> (T, P)."""
    grid, area = grid_points(box, resolution)
    grid = grid.to(model.dtype)[None].expand(context.shape[0], -1, -1)
    energy = model.energy_at_prefixes(grid, context.to(model.dtype), lengths)  # (T, P, G)
    return torch.logsumexp(-energy.double(), dim=-1) + math.log(area)


@torch.no_grad()
def model_nll(
    model: EnergyTransformer, context: torch.Tensor, test: torch.Tensor,
    lengths: list[int] | torch.Tensor, box: tuple[float, float], resolution: int = 200,
) -> torch.Tensor:
    """Mean NLL (nats/point) of test points (T, S, 2) under p(x | context[:, :n]): -> (T, P)."""
    log_z = model_log_z(model, context, lengths, box, resolution)
    energy = model.energy_at_prefixes(test.to(model.dtype), context.to(model.dtype), lengths)
    return (energy.double() + log_z[..., None]).mean(-1)
