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

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .model import ContextCache, EnergyTransformer
from .tasks import is_regression, prior_from_card
from .training import TrainConfig, Trainer, cd_loss


def y_axis(box: tuple[float, float], resolution: int, offset: float = 0.5) -> tuple[torch.Tensor, float]:
    """Nodes y_k = lo + h (k + offset), k = 0..K-1, float64 (K,), and the cell width h."""
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    lo, hi = box
    h = (hi - lo) / resolution
    return lo + h * (torch.arange(int(resolution), dtype=torch.float64) + offset), h


def column_queries(x: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Every (x_m, y_k) pair: x (..., M), ys (K,) -> (..., M, K, 2)."""
    xx = x[..., None].expand(*x.shape, ys.shape[0])
    yy = ys.to(x.dtype).expand_as(xx)
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
    return -e - (torch.logsumexp(-e, -1, keepdim=True) + math.log(h)), ys


@torch.no_grad()
def conditional_nll(
    model: EnergyTransformer, context: torch.Tensor, test: torch.Tensor, lengths: list[int] | torch.Tensor,
    box: tuple[float, float], resolution: int = 160,
) -> torch.Tensor:
    """Mean -log p(y | x, context[:, :n]) of test pairs (B, S, 2) per prefix: -> (B, P) nats/point."""
    test = torch.as_tensor(test, dtype=torch.float64)
    ys, h = y_axis(box, resolution)
    e_grid = column_energies(model, test[..., 0], context, ys, lengths)  # (B, P, S, K)
    log_z = torch.logsumexp(-e_grid, -1) + math.log(h)  # (B, P, S)
    e_test = model.energy_at_prefixes(test.to(model.dtype), torch.as_tensor(context).to(model.dtype), lengths)
    return (e_test.double() + log_z).mean(-1)


# ---- training -------------------------------------------------------------------------


def exact_nll_loss(
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
    log_z = torch.logsumexp(-e_grid, -1) + math.log(h)
    nll = (e_real + log_z).mean()
    loss = nll + alpha * (f_real**2).mean()
    return loss, {"nll": nll.item(), "e_real": e_real.mean().item(), "e_neg": e_grid.mean().item()}


def langevin_y(
    model: EnergyTransformer, cache: ContextCache, x: torch.Tensor, y: torch.Tensor, steps: int,
    step_size: float, noise_std: float, grad_clip: float | None, lengths: torch.Tensor | None,
    y_box: tuple[float, float], generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Langevin on y with x held fixed: x, y (B, P, C) -> y (B, P, C).

    y <- y - step_size * clip(dE/dy) + noise_std * eps, clamped to y_box; group p sees the
    context prefix lengths[p]."""
    cache = cache.detach()
    x = x.detach().to(model.dtype)
    y = y.detach().to(model.dtype).clone()
    with torch.enable_grad():
        for _ in range(int(steps)):
            y.requires_grad_(True)
            e = model.energy_cached(torch.stack([x, y], -1), cache, lengths)
            (g,) = torch.autograd.grad(e.sum(), y)
            with torch.no_grad():
                if grad_clip is not None:
                    g = g.clamp(-grad_clip, grad_clip)
                noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
                y = (y - step_size * g + noise_std * noise).clamp(*y_box)
    return y.detach()


def y_negatives(
    model: EnergyTransformer, seq: torch.Tensor, cfg: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """Negatives (B, N, C, 2) for every position and chain: (x_n, y') with only y' sampled."""
    b, n, _ = seq.shape
    c = cfg.chains
    lo, hi = cfg.box
    x = seq[:, :, None, 0].expand(b, n, c)
    uniform = lo + (hi - lo) * torch.rand(b, n, c, generator=generator, dtype=seq.dtype)
    data = torch.rand(b, n, c, generator=generator) < cfg.data_init_frac
    y0 = torch.where(data, seq[:, :, None, 1].expand(b, n, c), uniform)
    with torch.no_grad():
        cache = model.encode_context(seq)
    y = langevin_y(model, cache, x, y0, cfg.langevin_steps, cfg.step_size, cfg.noise_std, cfg.grad_clip_x,
                   torch.arange(n), cfg.box, generator)
    return torch.stack([x, y], -1)


class RegressionTrainer(Trainer):
    """The density Trainer (schedule, NaN guard, snapshots) with regression data and losses."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not is_regression(self.config.task):
            raise ValueError(f"RegressionTrainer needs a regression task, got {self.config.task!r}")
        self.prior = prior_from_card(self.config.task)
        if self.objective not in ("exact", "cd"):
            raise ValueError(f"unknown objective {self.objective!r} for regression; use 'exact' or 'cd'")

    @property
    def objective(self) -> str:
        return getattr(self.config, "objective", "cd")

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        """(seq,) for the exact objective; (seq, y-only negatives) for CD."""
        c = self.config
        seq, _ = self.sample_batch()  # per-task seeded draws (chain starts unused: y-negatives start at seq)
        if self.objective == "exact":
            return (seq,)
        return seq, y_negatives(self.model, seq, c, self.generator)

    def loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        if len(batch) == 1:
            return exact_nll_loss(self.model, batch[0], c.box, c.y_grid, c.alpha, self.generator)
        seq, negatives = batch
        return cd_loss(self.model, seq, negatives, c.alpha)


# ---- the app's view: per-column density and the thinking curve --------------------------------


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
    from .thinking import predict

    t0 = time.perf_counter()
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 2))[None]  # (1, N, 2)
    ys, h = y_axis(box, resolution)
    xs = ys.clone()
    energy = column_energies(model, xs[None], pts, ys)[0, 0]  # (R_x, R_y)
    log_p = -energy - (torch.logsumexp(-energy, -1, keepdim=True) + math.log(h))
    traj = predict(model, xs[None].to(model.dtype), pts.to(model.dtype), steps=max_steps, step_size=step_size,
                   starts=starts, return_trajectory=True)
    steps = curve_frames(max_steps)
    curves = traj[steps, 0].double().numpy()  # (F, R_x)
    return RegressionView(xs.numpy(), ys.numpy(), energy.T.numpy(), log_p.T.numpy(), steps, curves,
                          time.perf_counter() - t0)
