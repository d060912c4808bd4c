"""Regression tables: the model vs OLS, ridge, kNN, the Bayes predictive and the oracle; thinking curves.

For held-out tasks from the training prior and n = 0, 1, 2, 4, 8, 16, 32 context pairs,
each method predicts y at fresh test x from the task (`iclebm.evaluation.tables`, one loop):

- ``model``: NLL of y under p(y | x, D) (1-D quadrature normalisation, `iclebm.models.regression`)
  and the MSE of y_hat after the card's default thinking steps (`iclebm.dynamics.thinking.predict`).
- ``oracle``: the task's true conditional N(f(x), noise^2): NLL exact, prediction f(x).
- ``bayes``, ``ols``, ``ridge``, ``knn``: the regression baselines of `iclebm.evaluation.baselines`
  (the Bayes posterior predictive; plug-in N(y_hat, noise^2) NLL for the point predictors).

MSE is against the observed (noisy) test y, so the oracle's MSE is the noise variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iclebm.card import box_of, prior_of
from iclebm.dynamics.thinking import ThinkingConfig, predict
from iclebm.errors import TaskFamilyError
from iclebm.evaluation.baselines import POINT_METHODS, REGRESSION_BASELINES, BayesRegression, PointFit
from iclebm.evaluation.density import DEFAULT_NS, eval_mode
from iclebm.evaluation.tables import (
    HeldOut,
    Learner,
    RegressionLearner,
    each_task,
    loss_table,
    summarize,
    task_means,
)
from iclebm.models.energy import EnergyTransformer
from iclebm.models.regression import conditional_point_nll
from iclebm.tasks import REGRESSION, LinearPrior, SinusoidPrior

THINKING_STEPS = (0, 1, 2, 5, 10, 20, 50, 100)


# ---- tables -------------------------------------------------------------------------------


def _held_out(prior, n_tasks: int, n_ctx: int, n_test: int, seed: int) -> HeldOut:
    return HeldOut.draw(prior.sample_task, n_tasks, n_ctx, n_test, seed, dtype=torch.float64)


def _resolve(model: EnergyTransformer, prior, box):
    prior = prior if prior is not None else prior_of(model, REGRESSION, "the regression tables")
    if prior.capabilities.kind != REGRESSION:
        raise TaskFamilyError(f"the regression tables need a regression prior, got {type(prior).__name__}")
    return prior, (box if box is not None else box_of(model))


@dataclass(frozen=True)
class ModelRegression:
    """A regression energy model as a learner: NLL of y under p(y | x, D) (quadrature over the y
    axis, `chunk` tasks at a time) and the squared error of y_hat after the card's thinking steps."""

    model: EnergyTransformer
    box: tuple[float, float]
    resolution: int = 160
    chunk: int = 8
    name: str = "model"

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, torch.Tensor | np.ndarray]:
        ctx, test, ns, c = held.context, held.test, list(ns), self.chunk
        with eval_mode(self.model):
            nll = torch.cat([conditional_point_nll(self.model, ctx[i:i + c], test[i:i + c], ns, self.box,
                                                   self.resolution) for i in range(0, ctx.shape[0], c)])
            y = test[..., 1].numpy()
            se = [(predict(self.model, test[..., 0], ctx[:, :n]).double().cpu().numpy() - y) ** 2 for n in ns]
        return {"nll": nll, "se": np.stack(se, 1)}


@dataclass(frozen=True)
class RegressionOracle:
    """Each task's true conditional N(f(x), noise_std^2): the point predictor that knows f, so it
    ignores the context."""

    noise_std: float
    name: str = "oracle"

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, np.ndarray]:
        def score(i: int, context: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
            x, y = test[:, 0], test[:, 1]
            truth = PointFit(lambda x: held.tasks[i].mean(torch.from_numpy(x)).numpy(), self.noise_std)
            return {"nll": -truth.log_prob(x, y), "se": (truth.predict(x) - y) ** 2}

        return each_task(held, ns, score)


def regression_table(
    model: EnergyTransformer, n_tasks: int = 64, n_test: int = 20, seed: int = 12345,
    ns: tuple[int, ...] = DEFAULT_NS, prior: LinearPrior | SinusoidPrior | None = None,
    box: tuple[float, float] | None = None, resolution: int = 160, bayes_samples: int = 30000,
    extra: Sequence[Learner] = (), draws: Any = None,
) -> dict:
    """NLL (nats/point) and MSE vs n for the model and every baseline on held-out tasks.

    `extra` learners add rows (a pool-trained model's `bayes_pool`); `draws` (anything with
    `sample_task`, such as the model's TaskPool) draws the held-out tasks instead of the prior.

    Returns {"ns", "nll": {method: [..]}, "mse": {method: [..]}, "nll_se", "mse_se", settings}."""
    prior, box = _resolve(model, prior, box)
    ns = tuple(int(n) for n in ns)
    if max(ns) > model.config.max_context:
        raise ValueError(f"n up to {max(ns)} exceeds the model's max_context {model.config.max_context}")
    held = _held_out(draws or prior, n_tasks, max(ns), n_test, seed)
    learners: list[Learner] = [
        ModelRegression(model, box, resolution),
        RegressionLearner(BayesRegression(prior, np.random.default_rng(seed), bayes_samples)),
        RegressionOracle(prior.noise_std),
        *(RegressionLearner(REGRESSION_BASELINES[name](prior)) for name in POINT_METHODS),
        *extra,
    ]
    table = loss_table(learners, held, ns)
    # one task has no standard error: NaN, as this table has always reported it
    nll_m, nll_se = summarize(task_means(table, "nll"), digits=4, one_task_se=math.nan)
    mse_m, mse_se = summarize(task_means(table, "se"), digits=4, one_task_se=math.nan)
    return {
        "ns": list(ns), "nll": nll_m, "mse": mse_m, "nll_se": nll_se, "mse_se": mse_se,
        "family": prior.family, "n_tasks": n_tasks, "n_test": n_test, "seed": seed, "resolution": resolution,
        "thinking": dict((model.card or {}).get("thinking") or {}),
        "notes": "MSE vs observed (noisy) y; ols/ridge/knn NLL is plug-in N(y_hat, noise^2)",
    }


@torch.no_grad()
def thinking_curve(
    model: EnergyTransformer, n_values: tuple[int, ...] = (4, 16), steps: tuple[int, ...] = THINKING_STEPS,
    n_tasks: int = 64, n_test: int = 20, seed: int = 12345, starts: int | None = None,
    prior: LinearPrior | SinusoidPrior | None = None,
) -> dict:
    """MSE of y_hat after k thinking steps (card's start and step size) at each n.

    Returns {"steps", "mse": {str(n): [..]}, ...}."""
    prior, _ = _resolve(model, prior, None)
    # the same held-out contexts and test points as regression_table with the same seed
    held = _held_out(prior, n_tasks, max(*n_values, *DEFAULT_NS), n_test, seed)
    ctx, test = held.context, held.test
    out: dict[str, list[float]] = {}
    with eval_mode(model):
        for n in n_values:
            traj = predict(model, test[..., 0], ctx[:, :n], steps=max(steps), starts=starts,
                           return_trajectory=True)
            err = ((traj.double().cpu() - test[None, ..., 1]) ** 2).mean((-1, -2))  # (T+1,)
            out[str(n)] = [round(float(err[k]), 4) for k in steps]
    return {"steps": list(steps), "mse": out, "n_tasks": n_tasks, "starts": starts,
            "thinking": dict((model.card or {}).get("thinking") or {})}


def format_regression_tables(table: dict, curve: dict | None = None) -> str:
    ns = table["ns"]
    w = max(8, *(len(k) for k in table["nll"]))  # "bayes_pool" is wider than the other rows' names
    head = "  ".join(f"{'n=' + str(n):>8}" for n in ns)
    lines = [f"NLL of y given x (nats/point), {table['family']}, {table['n_tasks']} held-out tasks"
             " (ols/ridge/knn: plug-in known noise)", f"{'method':<{w}}  {head}"]
    for k, v in table["nll"].items():
        lines.append(f"{k:<{w}}  " + "  ".join(f"{x:8.3f}" for x in v))
    lines += ["", "MSE of y_hat (vs noisy y; model after the card's default thinking steps)",
              f"{'method':<{w}}  {head}"]
    for k, v in table["mse"].items():
        lines.append(f"{k:<{w}}  " + "  ".join(f"{x:8.3f}" for x in v))
    if curve is not None:
        lines += ["", "Thinking curve: MSE vs thinking steps",
                  "n    " + "  ".join(f"{s:>7}" for s in curve["steps"])]
        for n, v in curve["mse"].items():
            lines.append(f"{n:<4} " + "  ".join(f"{x:7.3f}" for x in v))
    return "\n".join(lines)


@torch.no_grad()
def tune_thinking(
    model: EnergyTransformer, step_sizes: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8),
    starts: tuple[int, ...] = (1, 8), steps: int = 30, n_values: tuple[int, ...] = (2, 8, 16),
    n_tasks: int = 32, n_test: int = 20, seed: int = 777,
) -> tuple[dict, list[dict]]:
    """Pick the default step size and number of starts: lowest validation MSE after `steps` steps,
    averaged over n_values. Validation tasks use their own seed (not the evaluation seed).
    Returns (thinking dict, rows)."""

    prior, _ = _resolve(model, None, None)
    base = ThinkingConfig.from_dict((model.card or {}).get("thinking"))
    held = _held_out(prior, n_tasks, max(n_values), n_test, seed)
    ctx, test = held.context, held.test
    rows = []
    with eval_mode(model):
        for s in step_sizes:
            for k in starts:
                errs = [float(((predict(model, test[..., 0], ctx[:, :n], steps=steps, step_size=s, starts=k)
                                .double() - test[..., 1]) ** 2).mean()) for n in n_values]
                rows.append({"step_size": s, "starts": k, "steps": steps, "mse": [round(e, 4) for e in errs],
                             "mean_mse": round(float(np.mean(errs)), 4)})
    best = min(rows, key=lambda r: r["mean_mse"])
    chosen = ThinkingConfig(start=base.start, steps=steps, step_size=best["step_size"],
                            grad_clip=base.grad_clip, starts=best["starts"])
    return chosen.to_dict(), rows
