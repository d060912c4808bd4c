"""The Bayes predictive of a finite task pool: the best a learner trained on M known tasks can do.

A model trained on a pool of M tasks (`iclebm.tasks.TaskPool`, each drawn uniformly) sees a task
prior that is uniform over those M tasks, so its Bayes posterior predictive is exact and cheap:

    p(x | D) = sum_m w_m(D) p_m(x),   w_m(D) ∝ prod_i p_m(x_i)     (density tasks)
    p(y | x, D) = sum_m w_m(D) p_m(y | x),   w_m(D) ∝ prod_i p_m(y_i | x_i)   (regression)

(for regression every pool task shares the x-distribution, so it cancels from w). Everything is
float64 in log space: log w = cumulative log-likelihoods minus their log-sum-exp over m.
A model that memorises the pool tracks this row; one that learned to learn tracks the prior's
`bayes` row instead (Raventós et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from iclebm.tasks import REGRESSION, TaskPool


def _task_log_lik(pool: TaskPool, points: np.ndarray) -> np.ndarray:
    """(M, ...) log p_m of every point (..., 2) under every pool task: log density for density
    tasks, log p(y | x) for regression."""
    pts = torch.from_numpy(np.asarray(points, dtype=np.float64))
    if pool.capabilities.kind == REGRESSION:
        rows = [t.log_prob_y(pts[..., 1], pts[..., 0]) for t in pool.tasks]  # type: ignore[union-attr]
    else:
        rows = [t.log_prob(pts) for t in pool.tasks]  # type: ignore[union-attr]
    return torch.stack(rows).numpy()


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def pool_log_weights(pool: TaskPool, context: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """(T, P, M) log posterior weights log w_m of each pool task after the first n context points
    of each of T contexts (T, N, 2), for every n in ns (n = 0: uniform, log 1/M)."""
    ll = _task_log_lik(pool, context)  # (M, T, N)
    cum = np.concatenate([np.zeros(ll.shape[:2] + (1,)), np.cumsum(ll, axis=-1)], axis=-1)  # (M, T, N + 1)
    log_joint = np.moveaxis(cum[..., list(ns)], 0, -1)  # (T, P, M), uniform prior 1/M cancels
    return log_joint - _lse(log_joint, -1)[..., None]


def pool_log_predictive(pool: TaskPool, context: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(S,) log p(query | context) under the pool for one context (n, 2) and queries (S, 2)."""
    context = np.asarray(context, dtype=np.float64).reshape(1, -1, 2)
    log_w = pool_log_weights(pool, context, [context.shape[1]])[0, 0]  # (M,)
    ll = _task_log_lik(pool, np.asarray(query, dtype=np.float64))  # (M, S)
    return _lse(log_w[:, None] + ll, 0)


def pool_point_nll(pool: TaskPool, context: np.ndarray, test: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """(T, P, S) per-point NLL of test points (T, S, 2) under the pool's Bayes predictive given the
    first n points of each context (T, N, 2), for every n in ns."""
    log_w = pool_log_weights(pool, context, ns)  # (T, P, M)
    ll = np.moveaxis(_task_log_lik(pool, test), 0, -1)  # (T, S, M)
    # one n at a time: (T, S, M) per n instead of (T, P, S, M) at once
    return np.stack([-_lse(log_w[:, j, None, :] + ll, -1) for j in range(log_w.shape[1])], 1)


def pool_mean_y(pool: TaskPool, context: np.ndarray, x: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """(T, P, S) posterior mean of y at test inputs x (T, S) under the pool (regression pools):
    sum_m w_m(D) f_m(x), the squared-error-optimal prediction."""
    log_w = pool_log_weights(pool, context, ns)  # (T, P, M)
    xs = torch.from_numpy(np.asarray(x, dtype=np.float64))
    f = np.stack([t.mean(xs).numpy() for t in pool.tasks], -1)  # type: ignore[union-attr]  (T, S, M)
    return np.einsum("tpm,tsm->tps", np.exp(log_w), f)


@dataclass(frozen=True)
class PoolBayes:
    """The pool's Bayes predictive as a table learner (`iclebm.evaluation.tables`): per-point NLL,
    and for regression pools the squared error of the posterior-mean prediction."""

    pool: TaskPool
    name: str = "bayes_pool"

    def losses(self, held, ns: Sequence[int]) -> dict[str, np.ndarray]:
        context, test = held.arrays
        out = {"nll": pool_point_nll(self.pool, context, test, ns)}
        if self.pool.capabilities.kind == REGRESSION:
            out["se"] = (pool_mean_y(self.pool, context, test[..., 0], ns) - test[:, None, :, 1]) ** 2
        return out
