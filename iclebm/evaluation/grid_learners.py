"""Learners as densities on one grid: the common currency of the Bayesian diagnostics.

Order sensitivity, the martingale check and the trajectory map compare whole predictive densities,
so every learner here answers `log_densities(contexts)`: for T contexts (T, N, 2) of equal length,
log p(cell | context) (T, G) on the cell centres of a `GridSpec`, normalised on that grid
(sum_g exp(log p_g) * cell area = 1; `iclebm.grid` conventions, row-major with x fastest).
Renormalising on the box drops the mass outside it, which is negligible for the shipped priors
(means within +-8, box +-12).

Learners: the energy model (`ModelGrid`), the Bayes predictive (`BayesGrid`), any density baseline
(`BaselineGrid`), a task's own density (`OracleGrid`), and two deliberately non-Bayesian learners
that the martingale check must catch (`ShrinkingKde`, `LastPointHeavy`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from scipy.special import logsumexp

from iclebm.evaluation.baselines import DensityBaseline, PriorPredictive
from iclebm.evaluation.bayes import (
    GRID_GIBBS,
    GRID_SHAPE,
    GibbsConfig,
    ShapeRule,
    mixture_log_predictive_batch,
)
from iclebm.grid import Box, grid_points
from iclebm.models.energy import EnergyTransformer
from iclebm.tasks import MixturePrior

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class GridSpec:
    """resolution x resolution cell centres over the box [lo, hi]^2."""

    box: Box
    resolution: int

    @property
    def points(self) -> np.ndarray:
        return grid_points(self.box, self.resolution)[0].numpy()

    @property
    def area(self) -> float:
        return grid_points(self.box, self.resolution)[1]


def normalise(log_p: np.ndarray, area: float) -> np.ndarray:
    """log densities (..., G) renormalised on the grid: sum exp(log p) * area = 1 along the last axis."""
    return log_p - (logsumexp(log_p, axis=-1, keepdims=True) + math.log(area))


class GridLearner(Protocol):
    name: str

    def log_densities(self, contexts: np.ndarray, grid: GridSpec) -> np.ndarray: ...


def prefix_log_densities(
    learner: GridLearner, context: np.ndarray, ns: Sequence[int], grid: GridSpec,
) -> np.ndarray:
    """(P, G): the learner's grid density after the first n points of one context (N, 2), for n in ns."""
    fast = getattr(learner, "prefix_log_densities", None)
    if fast is not None:
        return fast(context, ns, grid)
    return np.stack([learner.log_densities(context[None, : int(n)], grid)[0] for n in ns])


@dataclass(frozen=True)
class ModelGrid:
    """An energy model (or the mixture-density peer): exp(-E) normalised on the grid."""

    model: EnergyTransformer
    name: str = "model"

    def log_densities(self, contexts: np.ndarray, grid: GridSpec) -> np.ndarray:
        q = torch.as_tensor(grid.points, dtype=self.model.dtype)[None].expand(contexts.shape[0], -1, -1)
        with torch.no_grad():
            e = self.model.energy(q, torch.as_tensor(contexts, dtype=self.model.dtype))
        return normalise(-e.cpu().double().numpy(), grid.area)

    def prefix_log_densities(self, context: np.ndarray, ns: Sequence[int], grid: GridSpec) -> np.ndarray:
        q = torch.as_tensor(grid.points, dtype=self.model.dtype)[None]
        with torch.no_grad():
            e = self.model.energy_at_prefixes(q, torch.as_tensor(context, dtype=self.model.dtype)[None],
                                              [int(n) for n in ns])[0]
        return normalise(-e.cpu().double().numpy(), grid.area)


@dataclass(frozen=True)
class BayesGrid:
    """The posterior predictive under the prior (`iclebm.evaluation.bayes`): exact enumeration for small
    contexts, the app's short collapsed-Gibbs run beyond, the coarse shape rule for anisotropic priors."""

    prior: MixturePrior
    gibbs: GibbsConfig = GRID_GIBBS
    shape: ShapeRule = GRID_SHAPE
    name: str = "bayes"
    method: str = "auto"  # "gibbs" skips exact enumeration (costly for anisotropic priors at n = 6..12)

    def log_densities(self, contexts: np.ndarray, grid: GridSpec) -> np.ndarray:
        q = np.repeat(grid.points[None], contexts.shape[0], 0)
        method = self.method if contexts.shape[1] > 0 else "auto"
        ctx = np.asarray(contexts, dtype=np.float64)
        lp = mixture_log_predictive_batch(ctx, q, self.prior, method, self.gibbs, shape=self.shape)
        return normalise(lp, grid.area)


@dataclass(frozen=True)
class BaselineGrid:
    """A density baseline of `iclebm.evaluation.baselines`, refitted on every context."""

    baseline: DensityBaseline
    name: str
    seed: int = 0

    def log_densities(self, contexts: np.ndarray, grid: GridSpec) -> np.ndarray:
        pts = grid.points
        lp = np.stack([self.baseline.fit(c, self.seed).log_prob(pts) for c in contexts])
        return normalise(lp, grid.area)


@dataclass(frozen=True)
class OracleGrid:
    """The task's own density: it ignores the context."""

    task: object  # anything with log_prob((S, 2) tensor) -> (S,)
    name: str = "oracle"

    def log_densities(self, contexts: np.ndarray, grid: GridSpec) -> np.ndarray:
        lp = self.task.log_prob(torch.as_tensor(grid.points)).double().numpy()  # type: ignore[attr-defined]
        return normalise(np.repeat(lp[None], contexts.shape[0], 0), grid.area)


def _gauss_kernel_log(points: np.ndarray, x: np.ndarray, h: float, log_w: np.ndarray) -> np.ndarray:
    """log sum_i w_i N(x; points_i, h^2 I) for x (G, 2) -> (G,)."""
    d2 = ((x[:, None, :] - points[None]) ** 2).sum(-1)
    return logsumexp(log_w[None] - 0.5 * d2 / h**2, axis=1) - LOG_2PI - 2 * math.log(h)


@dataclass(frozen=True)
class ShrinkingKde:
    """A deliberately non-Bayesian learner: a Gaussian KDE whose bandwidth h0 * (n + 1)^-power shrinks with
    n. Order-invariant (exchangeable) but not a martingale: continuing the context with its own samples
    sharpens the mean predictive. With no points it is the prior predictive (or N(0, 4^2 I))."""

    h0: float = 2.0
    power: float = 0.5
    prior: MixturePrior | None = None
    name: str = "shrinking KDE"
    _zero: dict = field(default_factory=dict, compare=False, repr=False)

    def _empty(self, grid: GridSpec) -> np.ndarray:
        if grid not in self._zero:
            pts = grid.points
            lp = (PriorPredictive(self.prior).log_prob(pts) if self.prior is not None
                  else _gauss_kernel_log(np.zeros((1, 2)), pts, 4.0, np.zeros(1)))
            self._zero[grid] = normalise(lp, grid.area)
        return self._zero[grid]

    def log_densities(self, contexts: np.ndarray, grid: GridSpec) -> np.ndarray:
        n = contexts.shape[1]
        if n == 0:
            return np.repeat(self._empty(grid)[None], contexts.shape[0], 0)
        h = self.h0 * (n + 1) ** (-self.power)
        w = np.full(n, -math.log(n))
        return normalise(np.stack([_gauss_kernel_log(c, grid.points, h, w) for c in contexts]), grid.area)


@dataclass(frozen=True)
class LastPointHeavy:
    """A deliberately non-Bayesian learner: a fixed-bandwidth Gaussian KDE that gives the most recent point
    the weight `last` (the others share 1 - last). Order-dependent and not a martingale."""

    bandwidth: float = 0.6
    last: float = 0.5
    prior: MixturePrior | None = None
    name: str = "last-point-heavy KDE"
    _kde: ShrinkingKde = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_kde", ShrinkingKde(prior=self.prior))

    def log_densities(self, contexts: np.ndarray, grid: GridSpec) -> np.ndarray:
        n = contexts.shape[1]
        if n == 0:
            return self._kde.log_densities(contexts, grid)
        w = np.full(n, 1.0 / n) if n == 1 else np.r_[np.full(n - 1, (1 - self.last) / (n - 1)), self.last]
        log_w = np.log(w)
        lp = np.stack([_gauss_kernel_log(c, grid.points, self.bandwidth, log_w) for c in contexts])
        return normalise(lp, grid.area)
