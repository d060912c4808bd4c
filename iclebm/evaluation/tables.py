"""The one table loop: every learner on the same held-out tasks at every prefix length n.

A table is: held-out tasks (`HeldOut`: each task's context and its fresh test points), prefix
lengths ns, and learners (the model, the Bayes predictive, the oracle, the baselines). Each
`Learner` returns per-point losses (T, P, S) by metric ("nll", and "se" for regression);
`loss_table` runs them all, `task_means` averages over each task's test points, and `summarize`
gives the mean and standard error over tasks. `in_context_nll`, `nll_curve_for_task`, `compare`,
the live ICL curve (`ValidationSet`) and `regression_table` are all this loop with different
learners and summaries.

A baseline (`iclebm.evaluation.baselines`) becomes a learner through `DensityLearner` or
`RegressionLearner`, which refit it on every task's first n context points (`each_task`).

Losses stay in the library that computed them (a model's in torch, a baseline's in numpy), and
`task_means` averages each with its own library: torch's and numpy's sums round differently, and
the tables keep the exact numbers they had before this loop replaced their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from iclebm.evaluation.baselines import DensityBaseline, RegressionBaseline

Points = np.ndarray | torch.Tensor  # per-point losses (T, P, S)


@dataclass(frozen=True)
class HeldOut:
    """Held-out tasks with a context (T, N, 2) and test points (T, S, 2) each."""

    tasks: Sequence[Any]
    context: torch.Tensor
    test: torch.Tensor

    @classmethod
    def draw(
        cls, draw_task: Callable[[torch.Generator], Any], n_tasks: int, n_context: int, n_test: int,
        seed: int, dtype: torch.dtype | None = None,
    ) -> HeldOut:
        """Tasks, then every context, then every test set, from one generator seeded with `seed`
        (the order every table has always drawn in, so a seed still means the same data)."""
        g = torch.Generator().manual_seed(int(seed))
        tasks = [draw_task(g) for _ in range(n_tasks)]
        context = torch.stack([t.sample(n_context, g) for t in tasks])
        test = torch.stack([t.sample(n_test, g) for t in tasks])
        if dtype is not None:
            context, test = context.to(dtype), test.to(dtype)
        return cls(tasks, context, test)

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(context, test) as float64 numpy, what the baselines fit and score."""
        return self.context.double().numpy(), self.test.double().numpy()

    @property
    def shape(self) -> tuple[int, int]:
        """(tasks, test points per task)."""
        return self.test.shape[0], self.test.shape[1]


@runtime_checkable
class Learner(Protocol):
    name: str  # the table row or column

    def losses(self, held: HeldOut, ns: Sequence[int]) -> Mapping[str, Points]:
        """Per-point losses (T, P, S) by metric: "nll" (nats), and "se" (squared error) for regression."""
        ...


TaskLosses = Callable[[int, np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


def each_task(held: HeldOut, ns: Sequence[int], losses: TaskLosses) -> dict[str, np.ndarray]:
    """The per-task loop of every fitted learner: losses(i, context_i[:n], test_i) -> metric -> (S,)
    for each task i (outer) and each n (inner), stacked to (T, P, S)."""
    context, test = held.arrays
    out: dict[str, np.ndarray] = {}
    for i in range(context.shape[0]):
        for j, n in enumerate(ns):
            for metric, v in losses(i, context[i, :n], test[i]).items():
                if metric not in out:
                    out[metric] = np.empty((context.shape[0], len(ns), test.shape[1]))
                out[metric][i, j] = v
    return out


@dataclass(frozen=True)
class DensityLearner:
    """A density baseline refitted on each task's first n points; fits of task i get seed + i."""

    baseline: DensityBaseline
    seed: int = 0

    @property
    def name(self) -> str:
        return self.baseline.name

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, np.ndarray]:
        def nll(i: int, context: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
            return {"nll": -self.baseline.fit(context, self.seed + i).log_prob(test)}

        return each_task(held, ns, nll)


@dataclass(frozen=True)
class RegressionLearner:
    """A regression baseline refitted on each task's first n (x, y) pairs: NLL of y and squared error."""

    baseline: RegressionBaseline
    seed: int = 0

    @property
    def name(self) -> str:
        return self.baseline.name

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, np.ndarray]:
        def score(i: int, context: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
            x, y = test[:, 0], test[:, 1]
            fit = self.baseline.fit(context, self.seed + i)
            return {"nll": -fit.log_prob(x, y), "se": (fit.predict(x) - y) ** 2}

        return each_task(held, ns, score)


def loss_table(learners: Sequence[Learner], held: HeldOut, ns: Sequence[int]) -> dict[str, dict[str, Points]]:
    """The one table loop: learner name -> metric -> per-point losses (T, P, S), in learner order."""
    ns = [int(n) for n in ns]
    if not ns or min(ns) < 0 or max(ns) > held.context.shape[1]:
        raise ValueError(f"ns must be non-empty, non-negative and at most the context length, got {ns}")
    n_tasks, n_test = held.shape
    want = (n_tasks, len(ns), n_test)
    out: dict[str, dict[str, Points]] = {}
    for learner in learners:
        if learner.name in out:
            raise ValueError(f"two learners are called {learner.name!r}")
        losses = dict(learner.losses(held, ns))
        for metric, v in losses.items():
            if tuple(v.shape) != want:
                raise ValueError(f"{learner.name} gave {metric} of shape {tuple(v.shape)}, expected {want}")
        out[learner.name] = losses
    return out


def _mean_last(v: Points) -> np.ndarray:
    """Mean over the last axis in the array's own library (see the module docstring), as float64 numpy."""
    if isinstance(v, torch.Tensor):
        return v.mean(-1).double().cpu().numpy()
    return np.asarray(v, dtype=np.float64).mean(-1)


def task_means(table: Mapping[str, Mapping[str, Points]], metric: str = "nll") -> dict[str, np.ndarray]:
    """Each learner's mean loss per task and n (T, P); learners without `metric` are left out."""
    return {name: _mean_last(losses[metric]) for name, losses in table.items() if metric in losses}


def summarize(
    per_task: Mapping[str, np.ndarray], digits: int | None = None, one_task_se: float = 0.0
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(mean, standard error) over tasks of per-task values (T, P), as lists over n; rounded to
    `digits` if given. With one task the standard error is `one_task_se`."""

    def out(v: np.ndarray) -> list[float]:
        return [float(x) if digits is None else round(float(x), digits) for x in v]

    mean, se = {}, {}
    for name, v in per_task.items():
        t = v.shape[0]
        mean[name] = out(v.mean(0))
        se[name] = out(v.std(0, ddof=1) / math.sqrt(t) if t > 1 else np.full(v.shape[1], one_task_se))
    return mean, se


def nll_summary(
    learners: Sequence[Learner], held: HeldOut, ns: Sequence[int]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Mean NLL per n and its standard error over tasks, for every learner: the usual table."""
    return summarize(task_means(loss_table(learners, held, ns)))
