"""Order sensitivity: how much a learner's predictive depends on the order of its context.

For K orderings pi_1..pi_K of a context D (`iclebm.models.order.orderings`: the given order first; all
n! of them when K >= n!), each learner gives a grid density p_k = p(. | pi_k(D)). The order ensemble
is p_ens = (1/K) sum_k p_k, and the permutation KL (the "implicit Bayesianness" gap of incremental
neural processes) is

    KL_perm(D) = (1/K) sum_k KL(p_k || p_ens)     (nats; >= 0, 0 iff every ordering agrees).

A Bayesian learner on exchangeable data has KL_perm = 0 by construction (p(x | D) is a function of the
set D), so the Bayes predictive is the reference; where it is computed exactly (small contexts) its
value is 0 to rounding. The per-point map is the standard deviation over orderings of -log p_k
(normalised energies, so an ordering's arbitrary energy offset does not count) and the KL's
integrand (1/K) sum_k p_k log(p_k / p_ens) per unit area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp

from iclebm.evaluation.grid_learners import GridLearner, GridSpec
from iclebm.models.order import orderings

DEFAULT_ORDERS = 8


@dataclass(frozen=True)
class OrderSensitivity:
    xs: np.ndarray  # (R,) cell centres
    energy_std: np.ndarray  # (R, R) std over orderings of -log p_k, rows = y
    kl_map: np.ndarray  # (R, R) the permutation KL's integrand (nats per unit area)
    kl: float  # the permutation KL (nats)
    orders: int  # orderings used


def permutation_kl(log_p: np.ndarray, area: float) -> tuple[float, np.ndarray, np.ndarray]:
    """log_p (K, G) grid-normalised log densities, one per ordering -> (KL_perm, integrand (G,), std (G,)).
    Float64 throughout; K = 1 gives 0 exactly."""
    log_p = np.asarray(log_p, dtype=np.float64)
    k = log_p.shape[0]
    log_ens = logsumexp(log_p, axis=0) - math.log(k)
    integrand = (np.exp(log_p) * (log_p - log_ens[None])).mean(0)
    std = log_p.std(0) if k > 1 else np.zeros(log_p.shape[1])
    return float(integrand.sum() * area), integrand, std


def order_sensitivity(
    learner: GridLearner, context: np.ndarray, grid: GridSpec, orders: int = DEFAULT_ORDERS, seed: int = 0,
) -> OrderSensitivity:
    """The learner's order sensitivity for one context (N, 2) on the grid (module docstring)."""
    ctx = np.asarray(context, dtype=np.float64).reshape(-1, 2)
    order = orderings(ctx.shape[0], int(orders), torch.Generator().manual_seed(int(seed))).numpy()
    log_p = learner.log_densities(ctx[order], grid)  # (K, G): one context per ordering
    kl, integrand, std = permutation_kl(log_p, grid.area)
    r = grid.resolution
    xs = grid.points[:r, 0]
    return OrderSensitivity(xs, std.reshape(r, r), integrand.reshape(r, r), kl, int(order.shape[0]))


def order_kl_curve(
    learner: GridLearner, contexts: np.ndarray, ns: Sequence[int], grid: GridSpec,
    orders: int = DEFAULT_ORDERS, seed: int = 0,
) -> np.ndarray:
    """Permutation KL (T, P) of T contexts (T, N, 2) cut to each n in ns (n <= N)."""
    out = np.zeros((contexts.shape[0], len(ns)))
    for t, ctx in enumerate(contexts):
        for p, n in enumerate(ns):
            out[t, p] = order_sensitivity(learner, ctx[: int(n)], grid, orders, seed + 7919 * t + p).kl
    return out
