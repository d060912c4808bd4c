"""The exact-likelihood objective for densities: the grid-normalised NLL of every next point, with
optional importance points around the prefix (multiple importance sampling with the grid)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iclebm.grid import log_z_on_grid
from iclebm.models.energy import EnergyTransformer


@dataclass
class KernelDraws:
    """Importance points around each prefix for the exact objective (see `proposal_points`)."""

    points: torch.Tensor  # (B, P, M, 2): M draws for each of the P positions
    box: tuple[float, float]
    kernel_std: float
    broad_std: float


@dataclass
class ExactBatch:
    """One update's data for the density exact objective: the arguments of `exact_nll_loss`."""

    seq: torch.Tensor  # (B, N, 2)
    grid: torch.Tensor  # (B, G, 2) this step's jittered grid, one offset per task
    cell_area: float
    positions: torch.Tensor | None = None  # (P,) positions to average over; None: all N
    kernel: KernelDraws | None = None  # importance points; None: the plain grid


def draw_positions(n: int, k: int, short_bias: float, generator: torch.Generator) -> torch.Tensor:
    """k distinct sorted positions of 0..n-1 for one exact-objective step.

    short_bias 0: uniform (the plain permutation, so old runs replay draw for draw). short_bias b > 0:
    position p with probability ~ (p + 1)^-b, without replacement: the loss then weights short
    prefixes more, where a learner has the most to gain per point (the models lag Bayes most at n <= 8).
    """
    if not 0 < k <= n:
        raise ValueError(f"need 0 < positions <= context length, got {k} of {n}")
    if short_bias == 0:
        return torch.randperm(n, generator=generator)[:k].sort().values
    weights = (torch.arange(n, dtype=torch.float64) + 1.0) ** -float(short_bias)
    return torch.multinomial(weights, k, replacement=False, generator=generator).sort().values


def exact_nll_loss(
    model: EnergyTransformer, seq: torch.Tensor, grid: torch.Tensor, cell_area: float,
    positions: torch.Tensor | None = None, kernel: KernelDraws | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Grid-normalised NLL, averaged over tasks and positions. seq (B, N, 2), grid (B, G, 2).

    NLL_n = E(x_n | x_<n) + log(sum_g exp(-E(g | x_<n)) * cell_area); the grid goes through the
    cached query path once, shared by all prefix groups (query token (n, g) sees x_<n).
    positions: (P,) distinct positions to average over (default all N); a uniformly random
    subset gives an unbiased estimate of the all-position mean at P/N of the grid cost.
    kernel: importance points around each prefix; Z_n then comes from the grid and those points
    together (`importance_log_z`), so the grid only has to catch mass far from the data.
    """
    n = seq.shape[1]
    cache = model.encode_context(seq)
    pos = torch.arange(n, device=seq.device) if positions is None else positions.to(seq.device)
    x = seq[:, pos]  # (B, P, 2)
    e_real = model._total(cache.learned[:, pos], x, pos[None, :])  # (B, P)
    e_grid = model.energy_cached(grid[:, None], cache, pos)  # (B, P, G)
    if kernel is None:
        log_z = log_z_on_grid(e_grid, cell_area)  # (B, P)
    else:
        e_kern = model.energy_cached(kernel.points, cache, pos)  # (B, P, M)
        log_z = importance_log_z(e_grid, grid, e_kern, kernel.points, seq, pos, kernel.box,
                                 kernel.kernel_std, kernel.broad_std)
    loss = (e_real + log_z).mean()
    return loss, {"nll": loss.item(), "e_real": e_real.mean().item(), "log_z": log_z.mean().item()}


def kernel_log_density(
    x: torch.Tensor, seq: torch.Tensor, positions: torch.Tensor, kernel_std: float, broad_std: float
) -> torch.Tensor:
    """log q_p(x) of the kernel proposal of each position: x (B, P, M, 2) -> (B, P, M).

    q_p = (N(0, broad_std^2 I) + sum_{i < n_p} N(x_i, kernel_std^2 I)) / (n_p + 1), n_p = positions[p]:
    a kernel density of the prefix plus one broad Gaussian, so every point of the plane is covered.
    """
    n = seq.shape[1]
    d2 = ((x[:, :, :, None, :] - seq[:, None, None, :, :]) ** 2).sum(-1)  # (B, P, M, N)
    log_k = -0.5 * d2 / kernel_std**2 - math.log(2 * math.pi * kernel_std**2)
    hidden = torch.arange(n, device=x.device)[None, :] >= positions[:, None]  # (P, N): not in the prefix
    log_k = log_k.masked_fill(hidden[None, :, None, :], float("-inf"))
    log_b = -0.5 * (x * x).sum(-1) / broad_std**2 - math.log(2 * math.pi * broad_std**2)  # (B, P, M)
    log_sum = torch.logsumexp(torch.cat([log_b[..., None], log_k], -1), -1)
    return log_sum - torch.log1p(positions.to(x.dtype))[None, :, None]


def proposal_points(
    seq: torch.Tensor, positions: torch.Tensor, m: int, kernel_std: float, broad_std: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """m draws from each position's kernel proposal (see `kernel_log_density`) for one task.

    seq: (1, N, 2) on the CPU; returns (1, P, m, 2). A draw picks one of the n_p + 1 kernels
    uniformly (index 0: the broad one) and adds its Gaussian noise.
    """
    p = positions.shape[0]
    u = torch.rand(p, m, generator=generator, dtype=seq.dtype)
    pick = (u * (positions[:, None] + 1).to(seq.dtype)).long().clamp_max(positions[:, None])  # (P, m)
    centre = seq[0][(pick - 1).clamp_min(0)]  # (P, m, 2); pick 0 -> the broad kernel at the origin
    broad = (pick == 0)[..., None]
    centre = torch.where(broad, torch.zeros_like(centre), centre)
    std = torch.where(broad, torch.full_like(centre, broad_std), torch.full_like(centre, kernel_std))
    return (centre + std * torch.randn(p, m, 2, generator=generator, dtype=seq.dtype))[None]


def importance_log_z(
    e_grid: torch.Tensor, grid: torch.Tensor, e_kern: torch.Tensor, kern: torch.Tensor, seq: torch.Tensor,
    positions: torch.Tensor, box: tuple[float, float], kernel_std: float, broad_std: float,
) -> torch.Tensor:
    """Unbiased-in-Z estimate of log Z_p = log of the integral over the box of exp(-E(x | x_<n_p)).

    e_grid (B, P, G) at the jittered grid (B, G, 2), one point per cell; e_kern (B, P, M) at the
    kernel draws kern (B, P, M, 2). Multiple importance sampling with the balance heuristic: each
    grid cell is a technique with one uniform draw (density 1/cell area inside its cell), the kernel
    mixture one technique with M draws, so every point x is weighed by
        1 / (G / |box| + M q_p(x)),
    and the sum of exp(-E) times these weights is an unbiased estimate of Z_p. Kernel draws that
    fall outside the box contribute 0. With M = 0 this is the plain grid sum times the cell area.
    """
    lo, hi = box
    g, m = grid.shape[1], kern.shape[2]
    log_g = math.log(g / (hi - lo) ** 2)
    if m == 0:
        return torch.logsumexp(-e_grid, dim=-1) - log_g
    log_m = math.log(m)
    grid_p = grid[:, None].expand(-1, positions.shape[0], -1, -1)
    den_grid = torch.logaddexp(torch.full_like(e_grid, log_g),
                               log_m + kernel_log_density(grid_p, seq, positions, kernel_std, broad_std))
    den_kern = torch.logaddexp(torch.full_like(e_kern, log_g),
                               log_m + kernel_log_density(kern, seq, positions, kernel_std, broad_std))
    inside = ((kern >= lo) & (kern < hi)).all(-1)  # (B, P, M)
    terms_kern = (-e_kern - den_kern).masked_fill(~inside, float("-inf"))
    return torch.logsumexp(torch.cat([-e_grid - den_grid, terms_kern], -1), dim=-1)
