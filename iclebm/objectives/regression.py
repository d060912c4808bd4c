"""Regression objectives: the 1-D quadrature likelihood of y given x and the prefix, and the y-only
negatives of contrastive divergence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from iclebm.dynamics.langevin import langevin_y
from iclebm.grid import log_z_on_grid, y_axis
from iclebm.models.energy import EnergyTransformer
from iclebm.models.regression import column_queries

if TYPE_CHECKING:
    from iclebm.training.config import TrainConfig


@dataclass
class RegressionExactBatch:
    """One update's data for the regression exact objective: sequences only (the y grid's offset is
    drawn inside the loss, from the trainer's step stream, as before)."""

    seq: torch.Tensor  # (B, N, 2) of (x, y)


def regression_nll_loss(
    model: EnergyTransformer, seq: torch.Tensor, box: tuple[float, float], n_grid: int,
    alpha: float, generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean NLL of y_n given x_n and D_<n over all B x N positions (1-D quadrature over y).

    seq: (B, N, 2). The grid offset is one uniform draw per step. alpha penalises the learned
    part at the real points only, to pin its free additive constant."""
    n = seq.shape[1]
    cache = model.encode_context(seq)
    f_real = cache.learned  # (B, N) = f(y_n | x_n, D_<n)
    e_real = f_real + model.base_energy(seq)
    offset = float(torch.rand((), generator=generator, dtype=torch.float64))
    ys, h = y_axis(box, n_grid, offset)
    q = column_queries(seq[..., 0], ys)  # (B, N, K, 2)
    e_grid = model.learned_energy_cached(q, cache, torch.arange(n)) + model.base_energy(q)  # (B, N, K)
    log_z = log_z_on_grid(e_grid, h)
    nll = (e_real + log_z).mean()
    loss = nll + alpha * (f_real**2).mean()
    return loss, {"nll": nll.item(), "e_real": e_real.mean().item(), "e_neg": e_grid.mean().item()}


def y_negatives(
    model: EnergyTransformer, seq: torch.Tensor, cfg: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """Negatives (B, N, C, 2) for every position and chain: (x_n, y') with only y' sampled."""
    b, n, _ = seq.shape
    c = cfg.chains
    lo, hi = cfg.box
    x = seq[:, :, None, 0].expand(b, n, c)
    # drawn on the CPU (the step stream's generator), then moved: the same draws on every device
    uniform = (lo + (hi - lo) * torch.rand(b, n, c, generator=generator, dtype=seq.dtype)).to(seq.device)
    data = (torch.rand(b, n, c, generator=generator) < cfg.data_init_frac).to(seq.device)
    y0 = torch.where(data, seq[:, :, None, 1].expand(b, n, c), uniform)
    with torch.no_grad():
        cache = model.encode_context(seq)
    y = langevin_y(model, cache, x, y0, cfg.langevin_steps, cfg.step_size, cfg.noise_std, cfg.grad_clip_x,
                   torch.arange(n), cfg.box, generator)
    return torch.stack([x, y], -1)
