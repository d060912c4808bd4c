"""Contexts to weights: in-context learning side by side with gradient descent on the weights.

The frozen model conditioned on a context D gives the in-context density p(x | D). The
"contexts-to-weights" question asks whether the same density can be reached by moving the
weights instead: fine-tune a copy of the model on D, with an empty (or short) context S, for
k Adam steps, and compare p_k(x | S) with p(x | D).

Objective (default "exact"; "nll" is read as its old name): the grid-normalised NLL of D (in 2-D
the normaliser is a grid sum),

    L(w) = mean_{x in D} E_w(x | S) + log sum_cells exp(-E_w(u_cell | S)) * cell area,

one differentiable query batch [D, grid] through the cached path, with u_cell a fresh uniform
point in each cell every step (stratified sampling; fixed cell centres let the fine-tune hide
mass between them). Reported NLLs use the fixed display grid, as everywhere else in iclebm.
"cd" is contrastive divergence instead: mean E(D | S) - mean E(negatives | S), negatives from Langevin chains
on the current weights started uniformly over the box.

Snapshots at chosen k keep the grid log density (and, optionally, the weights); `distances`
compares them with the in-context density: symmetric KL (Jeffreys, KL(p||q) + KL(q||p)) and
Hellinger distance on the display grid. With held-out points of the same task, both
densities' NLL on them is recorded too.

A run is cancellable (`should_stop` callback, or `iclebm.ui.jobs.finetune.FineTuneJob.stop()` from
another thread) and stops at a non-finite loss or gradient, or a loss more than `diverge_margin`
nats above the start, with a message; the snapshots taken so far stay.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from iclebm.dynamics.langevin import langevin, uniform_init
from iclebm.grid import Box, grid_points, log_z_on_grid, stratified_grid
from iclebm.models.energy import EnergyTransformer
from iclebm.objectives import resolve_objective

# Widget bounds: the UI cannot enter values outside these, and FineTuneConfig rejects them.
BOUNDS: dict[str, tuple[float, float]] = {"steps": (1, 500), "lr": (1e-5, 1e-1), "short": (0, 16)}


@dataclass(frozen=True)
class FineTuneConfig:
    steps: int = 100  # k, Adam steps on D
    lr: float = 1e-3
    objective: str = "exact"  # iclebm.objectives: "exact" (grid-normalised NLL; alias "nll") or "cd"
    resolution: int = 32  # grid cells per axis for log Z inside the objective (jittered each step)
    snapshots: tuple[int, ...] | None = None  # steps to keep (default: 0, 1, 2, 5, 10, 20, 50, ... and steps)
    grad_clip: float = 1.0  # parameter-gradient norm clip
    diverge_margin: float = 25.0  # a loss this many nats above the starting loss counts as diverged
    # CD only
    chains: int = 128
    langevin_steps: int = 30
    step_size: float = 0.1
    noise_std: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = BOUNDS["steps"]
        if not lo <= int(self.steps) <= hi:
            raise ValueError(f"steps must lie in [{lo:g}, {hi:g}], got {self.steps}")
        lo, hi = BOUNDS["lr"]
        if not (math.isfinite(self.lr) and lo <= self.lr <= hi):
            raise ValueError(f"learning rate must lie in [{lo:g}, {hi:g}], got {self.lr}")
        # the canonical name, so old configs and links with "nll" fine-tune by the exact objective
        object.__setattr__(self, "objective", resolve_objective(self.objective))
        if int(self.resolution) < 4:
            raise ValueError("resolution must be >= 4")

    def snapshot_steps(self) -> list[int]:
        if self.snapshots is not None:
            steps = {int(k) for k in self.snapshots if 0 <= int(k) <= self.steps}
        else:
            steps = {k * 10**e for e in range(4) for k in (1, 2, 5) if k * 10**e <= self.steps}
        return sorted(steps | {0, int(self.steps)})


@dataclass(frozen=True)
class FineTuneSnapshot:
    """One kept step k of the contexts-to-weights fine-tune: the density p_k(x | S) and its NLLs."""

    step: int
    log_density: np.ndarray  # (R, R) grid-normalised log p_k(x | S) on the display grid, rows = y
    loss: float  # the objective at this step
    nll_context: float | None  # NLL of D under p_k (display grid), nats/point
    nll_heldout: float | None  # NLL of held-out points under p_k, if given
    state: dict[str, torch.Tensor] | None = None  # the weights, if kept


@dataclass
class FineTuneResult:
    snapshots: list[FineTuneSnapshot] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # the objective before each step
    status: str = "running"  # running | done | cancelled | diverged
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Reference:
    """The in-context side: p(x | D) from the frozen model with D in context."""

    log_density: np.ndarray  # (R, R)
    nll_context: float | None
    nll_heldout: float | None


# ---- densities and distances ---------------------------------------------------------------


def _as_points(points: np.ndarray | list | torch.Tensor, model: EnergyTransformer) -> torch.Tensor:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return torch.as_tensor(pts, dtype=model.dtype, device=model.device)[None]  # beside the model's tensors


def grid_nll(
    model: EnergyTransformer, points: torch.Tensor, context: torch.Tensor, box: Box, resolution: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean NLL of points (1, N, 2) under p(x | context) normalised on the grid; differentiable.

    With a generator, every cell is evaluated at a uniformly jittered point instead of its
    centre (stratified sampling: an unbiased estimate of Z). A fine-tune on the fixed centres
    learns to put mass between them, where Z does not see it; fresh jitter each step prevents it.
    """
    if generator is None:
        grid, area = grid_points(box, resolution)
    else:
        grid, area = stratified_grid(box, resolution, generator)
    n = points.shape[1]
    grid = grid.to(device=points.device, dtype=model.dtype)  # drawn on the CPU (the generator's device)
    query = torch.cat([points, grid[None]], dim=1)  # (1, N + G, 2): one batch
    energy = model.energy(query, context)
    log_z = log_z_on_grid(energy[:, n:].double(), area)
    return (energy[:, :n].double().mean(-1) + log_z)[0]


@torch.no_grad()
def density_report(
    model: EnergyTransformer, context: torch.Tensor, points: torch.Tensor, heldout: torch.Tensor | None,
    box: Box, resolution: int,
) -> tuple[np.ndarray, float, float | None]:
    """(log p(x | context) on the display grid (R, R), mean NLL of points, of held-out points or None)."""
    grid, area = grid_points(box, resolution)
    energy = model.energy(grid.to(model.dtype)[None], context)[0].double()  # (R*R,)
    log_z = float(log_z_on_grid(energy, area, dim=0))
    log_density = (-energy - log_z).reshape(resolution, resolution).cpu().numpy()

    def nll(x: torch.Tensor | None) -> float | None:
        if x is None or x.shape[1] == 0:
            return None
        return float(model.energy(x, context).double().mean()) + log_z

    return log_density, nll(points), nll(heldout)


def _cell_probs(log_density: np.ndarray) -> np.ndarray:
    """Grid log densities -> cell probabilities summing to 1 (the cell area cancels)."""
    w = np.exp(log_density.astype(np.float64) - log_density.max())
    return w / w.sum()


def symmetric_kl(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """KL(p || q) + KL(q || p) between two densities given as log densities on the same grid."""
    p, q = _cell_probs(log_p), _cell_probs(log_q)
    lp, lq = np.log(np.maximum(p, 1e-300)), np.log(np.maximum(q, 1e-300))
    return float(np.sum((p - q) * (lp - lq)))


def hellinger(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """Hellinger distance sqrt(1 - sum sqrt(p q)) in [0, 1] on the grid."""
    p, q = _cell_probs(log_p), _cell_probs(log_q)
    return float(math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(p * q))))))


def distances(reference: Reference, snapshots: list[FineTuneSnapshot]) -> dict[str, list[float]]:
    """Per snapshot: step, symmetric KL and Hellinger to the in-context density."""
    return {
        "step": [s.step for s in snapshots],
        "sym_kl": [symmetric_kl(reference.log_density, s.log_density) for s in snapshots],
        "hellinger": [hellinger(reference.log_density, s.log_density) for s in snapshots],
    }


def in_context_reference(
    model: EnergyTransformer, points: np.ndarray | list, box: Box, resolution: int,
    heldout: np.ndarray | None = None,
) -> Reference:
    pts = _as_points(points, model)
    held = None if heldout is None else _as_points(heldout, model)
    log_density, nll_ctx, nll_held = density_report(model, pts, pts, held, box, resolution)
    return Reference(log_density, nll_ctx, nll_held)


# ---- the fine-tune -------------------------------------------------------------------------


def _cd_loss(
    model: EnergyTransformer, points: torch.Tensor, short: torch.Tensor, cfg: FineTuneConfig, box: Box,
    generator: torch.Generator,
) -> torch.Tensor:
    init = uniform_init(cfg.chains, box, generator=generator, batch=1)  # drawn on the CPU
    init = init.to(device=model.device, dtype=model.dtype)
    negatives = langevin(model, short, init, cfg.langevin_steps, cfg.step_size, cfg.noise_std, 10.0,
                         box=box, generator=generator)
    energy = model.energy(torch.cat([points, negatives], dim=1), short)[0]
    n = points.shape[1]
    return energy[:n].mean() - energy[n:].mean()


def fine_tune(
    model: EnergyTransformer,
    points: np.ndarray | list,
    config: FineTuneConfig,
    box: Box,
    short_context: np.ndarray | list | None = None,
    heldout: np.ndarray | None = None,
    display_resolution: int = 60,
    keep_weights: bool = False,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[FineTuneResult], object] | None = None,
) -> FineTuneResult:
    """Fine-tune a copy of `model` on the context points D for config.steps Adam steps, reading
    only `short_context` (default: empty). The model passed in is never modified.

    should_stop is asked after every step (True cancels); on_progress(result) is called after
    every step with the growing result (the caller copies what it keeps)."""
    t0 = time.perf_counter()
    pts = _as_points(points, model)
    if pts.shape[1] == 0:
        raise ValueError("the context is empty: there is nothing to fine-tune on")
    short = _as_points([] if short_context is None else short_context, model)
    if short.shape[1] > model.config.max_context:
        raise ValueError(f"the short context has {short.shape[1]} points; the model reads at most "
                         f"{model.config.max_context}")
    held = None if heldout is None else _as_points(heldout, model)
    tuned = copy.deepcopy(model).train()
    for p in tuned.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    keep = set(config.snapshot_steps())
    result = FineTuneResult()

    def objective() -> torch.Tensor:
        if config.objective == "exact":
            return grid_nll(tuned, pts, short, box, config.resolution, generator)
        return _cd_loss(tuned, pts, short, config, box, generator)

    def snapshot(step: int, loss: float) -> None:
        log_density, nll_ctx, nll_held = density_report(tuned, short, pts, held, box, display_resolution)
        state = {k: v.detach().clone() for k, v in tuned.state_dict().items()} if keep_weights else None
        result.snapshots.append(FineTuneSnapshot(step, log_density, loss, nll_ctx, nll_held, state))

    start_loss: float | None = None
    for step in range(config.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = objective()
        value = float(loss.detach())
        start_loss = value if start_loss is None else start_loss
        bad = not math.isfinite(value) or (
            config.objective == "exact" and value > start_loss + config.diverge_margin
        )
        if not bad:
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(tuned.parameters(), config.grad_clip)
            bad = not math.isfinite(float(grad_norm))
        if bad:
            last = result.snapshots[-1].step if result.snapshots else 0
            result.status = "diverged"
            result.message = (
                f"the fine-tune diverged at step {step} (loss {value:.4g}, started at {start_loss:.4g}); "
                f"stopped, the snapshots up to step {last} are kept. Lower the learning rate."
            )
            break
        result.losses.append(value)
        if step in keep:
            snapshot(step, value)
        if on_progress is not None:
            on_progress(result)
        if step == config.steps:
            result.status = "done"
            break
        if should_stop is not None and should_stop():
            result.status, result.message = "cancelled", f"cancelled after {step} steps"
            break
        optimizer.step()
    result.seconds = time.perf_counter() - t0
    return result

