"""The shipped models on real data: the bundled example data sets beside the baselines.

A real data set is one task with no known density, so the table resamples it: each of `splits`
random permutations puts its first n points (n = 4, 8, ... up to the model's context) in the
context and scores every point after the largest n. Each learner refits on every split's first n
points (the model reads them in context); the table gives the mean held-out NLL per point and its
standard error over splits. There is no oracle, and the Bayes predictive under the model's own
training prior is one learner among others, not a floor: real data need not come from that prior.
NLL is in the box's coordinates (the data standardised into the model's box,
`iclebm.data.examples`); a change of units shifts every learner by the same constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from iclebm.card import box_of, is_regression, prior_of
from iclebm.data.examples import EXAMPLES, load_example
from iclebm.evaluation.baselines import POINT_METHODS, REGRESSION_BASELINES, BayesRegression
from iclebm.evaluation.density import density_learners
from iclebm.evaluation.regression import ModelRegression
from iclebm.evaluation.tables import HeldOut, Learner, RegressionLearner, loss_table, summarize, task_means
from iclebm.models.energy import EnergyTransformer

EXAMPLE_NS = (4, 8, 16, 32, 64)


def resampled(points: np.ndarray, n_context: int, splits: int, seed: int) -> HeldOut:
    """`splits` random permutations of `points`: the first n_context are the context, the rest the
    test points (the same count in every split)."""
    if not 0 < n_context < len(points):
        raise ValueError(f"a context of {n_context} needs more than {n_context} points; have {len(points)}")
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(points)) for _ in range(splits)]
    context = torch.tensor(np.stack([points[p[:n_context]] for p in perms]), dtype=torch.float32)
    test = torch.tensor(np.stack([points[p[n_context:]] for p in perms]), dtype=torch.float32)
    return HeldOut([None] * splits, context, test)


def example_learners(model: EnergyTransformer, seed: int) -> list[Learner]:
    """The model, the Bayes predictive under its training prior (regression), and the baselines."""
    box, prior = box_of(model), prior_of(model)
    if is_regression((model.card or {}).get("task")):
        return [ModelRegression(model, box),
                RegressionLearner(BayesRegression(prior, np.random.default_rng(seed), 30000)),
                *(RegressionLearner(REGRESSION_BASELINES[name](prior)) for name in POINT_METHODS)]
    return density_learners(model, prior, box, 200, seed, bayes=False, oracle=False)


def example_table(model: EnergyTransformer, name: str, splits: int = 20, seed: int = 0,
                  ns: Sequence[int] = EXAMPLE_NS) -> dict:
    """{"example", "source", "ns", "nll", "nll_se"[, "mse", "mse_se"], "splits", "n_test"} for the
    example data set `name` (its kind must match the model's: density or regression)."""
    kind = "regression" if is_regression((model.card or {}).get("task")) else "density"
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    if EXAMPLES[name].kind != kind:
        raise ValueError(f"{name} is a {EXAMPLES[name].kind} data set; this is a {kind} model")
    data = load_example(name, box_of(model))
    ns = [int(n) for n in ns if n <= min(model.config.max_context, len(data.points) - 1)]
    held = resampled(data.points, max(ns), splits, seed)
    table = loss_table(example_learners(model, seed), held, ns)
    out = {"example": name, "source": EXAMPLES[name].source, "ns": ns, "splits": splits,
           "n_test": held.shape[1], "seed": seed}
    out["nll"], out["nll_se"] = summarize(task_means(table, "nll"), digits=4, one_task_se=math.nan)
    if kind == "regression":
        out["mse"], out["mse_se"] = summarize(task_means(table, "se"), digits=4, one_task_se=math.nan)
    return out


def example_markdown(table: dict, metric: str = "nll") -> str:
    """One markdown table: a row per n, a column per learner, mean ± standard error."""
    names = list(table[metric])
    lines = ["| n | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for j, n in enumerate(table["ns"]):
        cells = [f"{table[metric][k][j]:.3f} ± {table[metric + '_se'][k][j]:.3f}" for k in names]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
