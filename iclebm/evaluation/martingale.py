"""The martingale check (Falck, Wang and Holmes, ICML 2024): does the learner's predictive agree, on
average, with itself after it continues its own context?

A Bayesian predictive is a martingale: if x_{n+1} ~ p(. | D) and the context grows to D + x_{n+1},
then E[p(x | D, x_{n+1})] = p(x | D) for every x, and the same holds after m steps. The check:

1. p_0 = p(. | D) on the grid.
2. J continuations: m times, draw the next point from the learner's own current grid predictive (a cell
   with probability p_g * area, then uniformly inside the cell), append it, recompute the predictive.
3. p_bar = (1/J) sum_j p(. | D + continuation_j); the statistic compares p_bar with p_0.

Statistic: the noise-corrected relative L2 gap
    gap = sign(D2) sqrt(|D2|) / ||p_0||,  D2 = sum_g [(p_bar_g - p0_g)^2 - s_g^2 / J] * area,
with s_g^2 the sample variance over continuations of p_j(g): E[(p_bar - p_0)^2] = bias^2 + var / J,
so D2 estimates the squared bias alone; gap scatters around 0 for a martingale (its Bayes value; the
sign is kept so that noise averages out over tasks) and is the relative L2 size of the drift otherwise.
The raw total variation TV = 0.5 sum |p_bar - p_0| area and its noise level under the null
(sqrt(2/pi) * 0.5 sum s_g / sqrt(J) * area, the mean absolute value of a normal error per cell) are
reported beside it.

Assumptions: the predictive is the learner's density renormalised on the box grid (mass outside the
box is dropped); the sampled points come from that piecewise-constant density, which blurs each draw
by the cell width (a cell of 0.5 adds variance 0.02 to components of std 0.33-0.5): a bias that is
second order and below the Monte Carlo noise at the default J; the Bayes predictive beyond exact
enumeration is itself a short Gibbs estimate, so its gap there includes the sampler's error. The
statistic tests the mean only (the first-moment martingale property), not calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iclebm.evaluation.grid_learners import GridLearner, GridSpec

DEFAULT_CONTINUATIONS = 32
DEFAULT_STEPS = 4


@dataclass(frozen=True)
class MartingaleResult:
    xs: np.ndarray  # (R,) cell centres
    before: np.ndarray  # (R, R) p(x | D), rows = y
    after: np.ndarray  # (R, R) mean over continuations of p(x | D + continuation)
    gap: float  # noise-corrected relative L2 gap after all steps (0 for a martingale)
    tv: float  # total variation between after and before
    tv_noise: float  # TV's expected size from Monte Carlo noise alone
    gap_by_step: list[float]  # the gap after 1..m continuation steps
    continuations: int
    steps: int


def sample_grid(log_p: np.ndarray, grid: GridSpec, rng: np.random.Generator) -> np.ndarray:
    """One point (T, 2) from each of T grid densities (T, G): a cell by its mass, uniform inside it."""
    p = np.exp(log_p - log_p.max(1, keepdims=True))
    cdf = np.cumsum(p, 1)
    u = rng.random(log_p.shape[0]) * cdf[:, -1]
    idx = np.minimum((cdf < u[:, None]).sum(1), log_p.shape[1] - 1)
    h = (grid.box[1] - grid.box[0]) / grid.resolution
    return grid.points[idx] + h * (rng.random((log_p.shape[0], 2)) - 0.5)


def martingale_gap(before: np.ndarray, afters: np.ndarray, area: float) -> tuple[float, float, float]:
    """before (G,) and J continued densities afters (J, G) (densities, not logs) -> (gap, TV, TV noise)."""
    j = afters.shape[0]
    mean = afters.mean(0)
    var = afters.var(0, ddof=1) if j > 1 else np.zeros_like(mean)
    d2 = float((((mean - before) ** 2) - var / j).sum() * area)
    norm = math.sqrt(float((before**2).sum() * area))
    gap = math.copysign(math.sqrt(abs(d2)), d2) / norm  # signed: noise scatters it on both sides of 0
    tv = 0.5 * float(np.abs(mean - before).sum() * area)
    noise = 0.5 * math.sqrt(2 / math.pi) * float(np.sqrt(var / j).sum() * area)
    return gap, tv, noise


def martingale_check(
    learner: GridLearner, context: np.ndarray, grid: GridSpec, continuations: int = DEFAULT_CONTINUATIONS,
    steps: int = DEFAULT_STEPS, seed: int = 0,
) -> MartingaleResult:
    """Continue one context (N, 2) `steps` times from the learner's own predictive, `continuations` times
    over (all continuations batched through `log_densities`), and compare (module docstring)."""
    if int(continuations) < 2 or int(steps) < 1:
        raise ValueError("the martingale check needs continuations >= 2 and steps >= 1")
    rng = np.random.default_rng(int(seed))
    ctx = np.asarray(context, dtype=np.float64).reshape(1, -1, 2)
    lp0 = learner.log_densities(ctx, grid)[0]
    before = np.exp(lp0)
    ctxs = np.repeat(ctx, int(continuations), 0)
    lp = np.repeat(lp0[None], int(continuations), 0)
    by_step = []
    for _ in range(int(steps)):
        ctxs = np.concatenate([ctxs, sample_grid(lp, grid, rng)[:, None]], 1)
        lp = learner.log_densities(ctxs, grid)
        by_step.append(martingale_gap(before, np.exp(lp), grid.area)[0])
    gap, tv, noise = martingale_gap(before, np.exp(lp), grid.area)
    r = grid.resolution
    after = np.exp(lp).mean(0).reshape(r, r)
    return MartingaleResult(grid.points[:r, 0], before.reshape(r, r), after, gap, tv, noise, by_step,
                            int(continuations), int(steps))
