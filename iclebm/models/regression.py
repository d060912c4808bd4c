"""Regression in context: E(y | x, D) over (x, y) tokens, normalised per column, and its training.

The EnergyTransformer reads (x, y) pairs as its 2-D tokens; a query token (x, y) gives
E(y | x, D). For a fixed x the density over y is

    p(y | x, D) = exp(-E(y | x, D)) / Z(x, D),   Z(x, D) = sum_k exp(-E(y_k | x, D)) * h,

a 1-D midpoint sum over K cells of width h covering the box's y-range. For smooth
energies the midpoint rule converges fast, and it is cheap: one column costs K query
tokens through the cached context path.

Training has two objectives, both vectorised over all B tasks x N positions at once:

- ``"exact"``: maximum likelihood, NLL_n = E(y_n | x_n, D_<n) + log Z(x_n, D_<n), with Z the
  1-D sum on a grid whose offset is redrawn every step (so the network cannot hide mass
  between fixed nodes; the estimate of Z is then unbiased-in-the-offset and still exact in
  the limit of fine grids).
- ``"cd"``: contrastive divergence as for densities, except that negatives move y only: a
  negative of position n is (x_n, y') with y' from Langevin on E(. | x_n, D_<n), started at
  the real y_n (data-started CD) or uniformly over the box's y-range.
"""

from __future__ import annotations

import torch

from iclebm.grid import log_z_on_grid, y_axis
from iclebm.models.energy import EnergyTransformer


def column_queries(x: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Every (x_m, y_k) pair: x (..., M), ys (K,) -> (..., M, K, 2)."""
    xx = x[..., None].expand(*x.shape, ys.shape[0])
    yy = ys.to(device=x.device, dtype=x.dtype).expand_as(xx)  # the grid is made on the CPU
    return torch.stack([xx, yy], -1)


def _check_x(x: torch.Tensor | list, batch: int) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim == 1:
        x = x[None].expand(batch, -1)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (M,) or (batch, M), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    return x


@torch.no_grad()
def column_energies(
    model: EnergyTransformer, x: torch.Tensor, context: torch.Tensor, ys: torch.Tensor,
    lengths: list[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """E(y_k | x_m, context prefix): x (B, M), context (B, N, 2), ys (K,) -> (B, P, M, K).

    Without lengths, P = 1 (the full context)."""
    context = torch.as_tensor(context)
    x = _check_x(x, context.shape[0])
    b, m = x.shape
    k = ys.shape[0]
    n = context.shape[1]
    lengths = [n] if lengths is None else lengths
    q = column_queries(x, ys.double()).reshape(b, m * k, 2).to(model.dtype)
    e = model.energy_at_prefixes(q, context.to(model.dtype), lengths)  # (B, P, M*K)
    return e.reshape(b, -1, m, k).double()


def conditional_log_density(
    model: EnergyTransformer, x: torch.Tensor, context: torch.Tensor, box: tuple[float, float],
    resolution: int = 160, lengths: list[int] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_k | x_m, D) on the midpoint grid, normalised per column.

    Returns (log_p (B, P, M, K), ys (K,)); exp(log_p).sum(-1) * h == 1 for every column."""
    ys, h = y_axis(box, resolution)
    e = column_energies(model, x, context, ys, lengths)
    return -e - log_z_on_grid(e, h, keepdim=True), ys


@torch.no_grad()
def conditional_point_nll(
    model: EnergyTransformer, context: torch.Tensor, test: torch.Tensor, lengths: list[int] | torch.Tensor,
    box: tuple[float, float], resolution: int = 160,
) -> torch.Tensor:
    """-log p(y | x, context[:, :n]) of each test pair (B, S, 2) per prefix: -> (B, P, S) nats, float64."""
    test = torch.as_tensor(test, dtype=torch.float64)
    ys, h = y_axis(box, resolution)
    e_grid = column_energies(model, test[..., 0], context, ys, lengths)  # (B, P, S, K)
    log_z = log_z_on_grid(e_grid, h)  # (B, P, S)
    e_test = model.energy_at_prefixes(test.to(model.dtype), torch.as_tensor(context).to(model.dtype), lengths)
    return e_test.double() + log_z


@torch.no_grad()
def conditional_nll(
    model: EnergyTransformer, context: torch.Tensor, test: torch.Tensor, lengths: list[int] | torch.Tensor,
    box: tuple[float, float], resolution: int = 160,
) -> torch.Tensor:
    """Mean -log p(y | x, context[:, :n]) of test pairs (B, S, 2) per prefix: -> (B, P) nats/point."""
    return conditional_point_nll(model, context, test, lengths, box, resolution).mean(-1)


# ---- training -------------------------------------------------------------------------










# ---- the app's view: per-column density and the thinking curve --------------------------------






