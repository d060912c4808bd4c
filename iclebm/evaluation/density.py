"""Evaluation of density models: grid-normalised NLL, the in-context NLL table, sampler guidance.

In 2-D the partition function is a grid sum: Z = sum_cells exp(-E(cell centre)) * cell area
over the plotting box (midpoint rule). NLL(x | D) = E(x | D) + log Z(D), in nats.

The table's columns are learners of `iclebm.evaluation.tables`, each fitted on the first n
context points of every held-out task:

- ``model``: the energy model, grid-normalised (`ModelDensity`).
- ``bayes``: the posterior predictive under the task prior (`iclebm.evaluation.bayes`): the best any
  in-context learner trained on that prior can do, and the headline comparison (`BayesDensity`).
- ``oracle``: the task's exact log density (needs ``task.log_prob``; `DensityOracle`).
- ``kde_scott``, ``kde_scipy``, ``em_mixture``, ``em_bic``, ``gaussian``, ``prior_predictive``:
  the density baselines of `iclebm.evaluation.baselines` (normalised densities on R^2, evaluated
  at the test points directly, in float64 numpy). For n = 0 every data-fitted baseline reports the
  prior predictive, the only sensible density with no data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iclebm.card import box_of, prior_of
from iclebm.dynamics.langevin import SamplerConfig, langevin, uniform_init
from iclebm.evaluation.baselines import BASELINES, density_baselines
from iclebm.evaluation.bayes import ShapeRule, bayes_point_nll
from iclebm.evaluation.tables import DensityLearner, HeldOut, Learner, each_task, loss_table, nll_summary
from iclebm.grid import grid_points, log_z_on_grid
from iclebm.models.energy import EnergyTransformer
from iclebm.models.order import ordering_energies, orderings
from iclebm.tasks import DENSITY, MixturePrior

DEFAULT_NS = (0, 1, 2, 4, 8, 16, 32)


@contextmanager
def eval_mode(model: EnergyTransformer) -> Iterator[None]:
    """Eval mode for the duration, touching the model only if it is training: the app shares
    one model across sessions, and flipping its mode from a reader would race with others."""
    if not model.training:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()


COLUMNS = ("model", "bayes", "bayes_pool", "oracle", *BASELINES, "prior_predictive")


def _cpu64(x: torch.Tensor) -> torch.Tensor:
    """Model outputs back on the CPU in float64 for the tables (no copy on CPU; MPS has no float64)."""
    return x.to("cpu").double()


@torch.no_grad()
def model_log_z(
    model: EnergyTransformer,
    context: torch.Tensor,
    lengths: list[int] | torch.Tensor,
    box: tuple[float, float],
    resolution: int = 200,
) -> torch.Tensor:
    """log Z for each task and prefix length: (T, N, 2) -> (T, P)."""
    grid, area = grid_points(box, resolution)
    grid = grid.to(model.dtype)[None].expand(context.shape[0], -1, -1)
    energy = model.energy_at_prefixes(grid, context.to(model.dtype), lengths)  # (T, P, G)
    return log_z_on_grid(_cpu64(energy), area)


@torch.no_grad()
def model_nll(
    model: EnergyTransformer,
    context: torch.Tensor,
    test: torch.Tensor,
    lengths: list[int] | torch.Tensor,
    box: tuple[float, float],
    resolution: int = 200,
) -> torch.Tensor:
    """Mean NLL (nats/point) of test points (T, S, 2) under p(x | context[:, :n]): -> (T, P)."""
    log_z = model_log_z(model, context, lengths, box, resolution)
    energy = model.energy_at_prefixes(test.to(model.dtype), context.to(model.dtype), lengths)
    return (_cpu64(energy) + log_z[..., None]).mean(-1)


@torch.no_grad()
def model_point_nll(
    model: EnergyTransformer,
    context: torch.Tensor,
    test: torch.Tensor,
    lengths: Sequence[int],
    box: tuple[float, float],
    resolution: int = 200,
    task_batch: int = 8,
) -> torch.Tensor:
    """Per-point NLL (T, P, S) of test points (T, S, 2) under p(x | context[:, :n]), float64.

    Tasks are processed `task_batch` at a time to bound memory.
    """
    out = []
    for i in range(0, context.shape[0], task_batch):
        ctx, tst = context[i : i + task_batch], test[i : i + task_batch]
        log_z = model_log_z(model, ctx, list(lengths), box, resolution)
        energy = model.energy_at_prefixes(tst.to(model.dtype), ctx.to(model.dtype), list(lengths))
        out.append(_cpu64(energy) + log_z[..., None])
    return torch.cat(out, 0)


# ---- NLL tables --------------------------------------------------------------------------


def resolve_prior_and_box(
    model: EnergyTransformer, prior: MixturePrior | None, box: tuple[float, float] | None
) -> tuple[MixturePrior, tuple[float, float]]:
    """The given prior and box, or the model card's (the card must name a density family)."""
    if prior is None:
        prior = prior_of(model, DENSITY, "the density NLL table")
    return prior, (box_of(model) if box is None else (float(box[0]), float(box[1])))


@dataclass(frozen=True)
class ModelDensity:
    """An energy model (or anything with the energy contract) as a learner: per-point NLL under
    its density normalised on a resolution x resolution grid over the box."""

    model: EnergyTransformer
    box: tuple[float, float]
    resolution: int = 200
    task_batch: int = 8
    name: str = "model"

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, torch.Tensor]:
        with eval_mode(self.model):
            nll = model_point_nll(self.model, held.context, held.test, list(ns), self.box, self.resolution,
                                  self.task_batch)
        return {"nll": nll}


@dataclass(frozen=True)
class OrderEnsembleDensity:
    """The order ensemble of `orders` orderings as a learner of the NLL table (per-point NLL, nats)."""

    model: EnergyTransformer
    box: tuple[float, float]
    orders: int
    resolution: int = 200
    seed: int = 0
    name: str = "model_orders"

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(self.seed))
        ctx, test = held.context.to(self.model.dtype), held.test.to(self.model.dtype)
        out = []
        with eval_mode(self.model), torch.no_grad():
            for n in ns:
                order = orderings(int(n), self.orders, g)
                rows = []
                for i in range(ctx.shape[0]):  # one task at a time: K * (S + R^2) queries each
                    e, log_z = ordering_energies(self.model, test[i : i + 1], ctx[i : i + 1, : int(n)], order,
                                                 self.box, self.resolution)
                    log_p = -(e.double().cpu() + log_z.double().cpu()[..., None])  # (1, K, S)
                    rows.append(-(torch.logsumexp(log_p, 1) - math.log(order.shape[0])))
                out.append(torch.cat(rows))
        return {"nll": torch.stack(out, 1)}  # (T, P, S)


@dataclass(frozen=True)
class BayesDensity:
    """The posterior predictive under `prior`, all tasks at once (isotropic priors only)."""

    prior: MixturePrior
    name: str = "bayes"
    shape: ShapeRule | None = None  # anisotropic priors: the shape rule (None: the default)

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, np.ndarray]:
        return {"nll": bayes_point_nll(held.context, held.test, list(ns), self.prior, shape=self.shape)}


@dataclass(frozen=True)
class DensityOracle:
    """Each task's own density (needs `task.log_prob`): it ignores the context."""

    name: str = "oracle"

    def losses(self, held: HeldOut, ns: Sequence[int]) -> dict[str, np.ndarray]:
        def nll(i: int, context: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
            return {"nll": -held.tasks[i].log_prob(torch.from_numpy(test)).numpy()}

        return each_task(held, ns, nll)


def density_learners(
    model: EnergyTransformer, prior: MixturePrior, box: tuple[float, float], resolution: int,
    seed: int, bayes: bool = True, oracle: bool = True, k: int | None = None, task_batch: int = 8,
    bayes_shape: ShapeRule | None = None,
) -> list[Learner]:
    """Every column of the NLL table: the model, Bayes, every baseline, the oracle."""
    learners: list[Learner] = [ModelDensity(model, box, resolution, task_batch)]
    if bayes and prior.capabilities.bayes:
        learners.append(BayesDensity(prior, shape=bayes_shape))
    names = (*BASELINES, "prior_predictive")
    learners += [DensityLearner(b, seed) for b in density_baselines(prior, names, k).values()]
    if oracle:
        learners.append(DensityOracle())
    return learners


def in_context_nll(
    model: EnergyTransformer,
    n_tasks: int = 64,
    seed: int = 12345,
    ns: Sequence[int] = DEFAULT_NS,
    n_test: int = 200,
    resolution: int = 200,
    prior: MixturePrior | None = None,
    box: tuple[float, float] | None = None,
    task_batch: int = 8,
    bayes: bool = True,
    orders: int = 1,
    extra: Sequence[Learner] = (),
    draws: Any = None,
) -> dict:
    """Mean NLL (nats/point) of fresh task samples under p(x | first n context points).

    Held-out tasks come from the model's training prior (its card's "task", unless `prior`
    is given); each gets a context of max(ns) points and n_test fresh test points, all
    from one torch.Generator seeded with `seed`. The model's density is normalised on a
    resolution x resolution grid over the box; baselines are exact densities on R^2.
    `bayes` is the Bayes posterior predictive under the prior (`iclebm.evaluation.bayes`), the best any
    in-context learner trained on it can do; bayes=False (or a prior whose capabilities say
    bayes=False) leaves that column out. orders = K > 1 adds the column "model_orders": the model's order
    ensemble over K orderings (`OrderEnsembleDensity`, each ordering normalised on the same grid).
    `extra` learners add columns (a pool-trained model's `bayes_pool`); `draws` (anything with
    `sample_task`, such as the model's TaskPool) draws the held-out tasks instead of the prior, which
    still sets the Bayes column and the baselines.
    Returns a JSON-able dict: ns, nll[column] and stderr[column] (lists over ns; standard
    error over tasks), n_tasks, n_test, resolution, seed, box.
    """
    ns = [int(n) for n in ns]
    if not ns or min(ns) < 0:
        raise ValueError("ns must be a non-empty list of non-negative ints")
    if n_tasks < 1 or n_test < 1:
        raise ValueError("n_tasks and n_test must be >= 1")
    prior, box = resolve_prior_and_box(model, prior, box)
    held = HeldOut.draw((draws or prior).sample_task, n_tasks, max(ns), n_test, seed)
    learners = density_learners(model, prior, box, resolution, seed, bayes, task_batch=task_batch)
    if int(orders) > 1:
        learners.insert(1, OrderEnsembleDensity(model, box, int(orders), resolution, seed))
    nll, se = nll_summary([*learners, *extra], held, ns)
    order = [c for c in COLUMNS if c in nll] + [c for c in nll if c not in COLUMNS]
    return {
        "ns": ns,
        "nll": {c: nll[c] for c in order},
        "stderr": {c: se[c] for c in order},
        "n_tasks": int(n_tasks),
        "n_test": int(n_test),
        "resolution": int(resolution),
        "seed": int(seed),
        "box": list(box),
    }


def nll_curve_for_task(
    model: EnergyTransformer,
    task,
    context: torch.Tensor,
    ns: Sequence[int] | None = None,
    n_test: int = 500,
    box: tuple[float, float] | None = None,
    resolution: int = 200,
    seed: int = 0,
    prior: MixturePrior | None = None,
    bayes: bool = True,
    bayes_shape: ShapeRule | None = None,
) -> dict:
    """The NLL curve of ONE task (the app's chart): same structure as in_context_nll.

    context: (N, 2) points of the task; ns defaults to DEFAULT_NS and is cut to n <= N.
    n_test fresh points come from task.sample with a generator seeded by `seed`; stderr is
    over those points. The oracle column appears only when the task has `log_prob`; K for EM
    is the task's n_components when it has one, else the prior's. `bayes` is the posterior
    predictive under the prior (the training prior unless `prior` is given), whatever the task;
    bayes=False leaves it out; `bayes_shape` is the shape rule for anisotropic priors (the app's chart
    passes the coarser GRID_SHAPE: seconds instead of a minute).
    """
    context = torch.as_tensor(context, dtype=torch.float32)
    if context.ndim != 2 or context.shape[1] != 2:
        raise ValueError(f"context must have shape (N, 2), got {tuple(context.shape)}")
    ns = [int(n) for n in (DEFAULT_NS if ns is None else ns) if int(n) <= context.shape[0]]
    if not ns:
        raise ValueError("no n in ns fits the context length")
    prior, box = resolve_prior_and_box(model, prior, box)
    test = task.sample(int(n_test), torch.Generator().manual_seed(int(seed))).float()
    k = getattr(task, "n_components", None)
    learners = density_learners(model, prior, box, resolution, seed, bayes=bayes,
                                oracle=hasattr(task, "log_prob"), k=None if k is None else int(k),
                                bayes_shape=bayes_shape)
    table = loss_table(learners, HeldOut([task], context[None], test[None]), ns)
    res = {name: np.asarray(losses["nll"])[0] for name, losses in table.items()}  # (P, S) each
    s = int(n_test)
    order = [c for c in COLUMNS if c in res]
    return {
        "ns": ns,
        "nll": {c: [float(x) for x in res[c].mean(-1)] for c in order},
        "stderr": {
            c: [float(x) for x in res[c].std(-1, ddof=1) / math.sqrt(s)] if s > 1 else [0.0] * len(ns)
            for c in order
        },
        "n_tasks": 1,
        "n_test": s,
        "resolution": int(resolution),
        "seed": int(seed),
        "box": list(box),
    }


def format_nll_table(table: dict) -> str:
    """Markdown table: one row per n, columns model / bayes / oracle / baselines, then the model's
    gaps to Bayes and to the oracle."""
    ns, nll = table["ns"], table["nll"]
    cols = [c for c in COLUMNS if c in nll] + [c for c in nll if c not in COLUMNS]
    gaps = [ref for ref in ("bayes", "bayes_pool", "oracle") if "model" in nll and ref in nll]
    head = ["n", *cols] + [f"model - {ref}" for ref in gaps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, n in enumerate(ns):
        row = [str(n)] + [f"{nll[c][i]:.3f}" for c in cols]
        row += [f"{nll['model'][i] - nll[ref][i]:+.3f}" for ref in gaps]
        lines.append("| " + " | ".join(row) + " |")
    meta = [f"{key}={table[key]}" for key in ("n_tasks", "n_test", "resolution", "seed") if key in table]
    if meta:
        lines.append("")
        lines.append("NLL in nats/point (lower is better); " + ", ".join(meta))
    return "\n".join(lines)


# ---- sampler guidance (temperature fits live in iclebm.evaluation.calibration) -----------------------


def guidance_fraction(
    model: EnergyTransformer,
    n_tasks: int = 8,
    n_particles: int = 1000,
    context_len: int = 32,
    radius: float = 1.5,
    sampler=None,
    seed: int = 4242,
    prior: MixturePrior | None = None,
    box: tuple[float, float] | None = None,
) -> float:
    """Share of particles, started uniformly over the box, that end within `radius` of a true mean.

    For n_tasks held-out tasks with a context_len-point context, run `sampling.langevin` with
    the card's sampler settings (or `sampler`, a SamplerConfig), clamped to the box; average
    the per-task fractions.
    """

    prior, box = resolve_prior_and_box(model, prior, box)
    if sampler is None:
        sampler = SamplerConfig.from_dict(model.card.get("sampler", {}))
    g = torch.Generator().manual_seed(int(seed))
    tasks = [prior.sample_task(g) for _ in range(n_tasks)]
    context = torch.stack([t.sample(context_len, g) for t in tasks])
    init = uniform_init(n_particles, box, generator=g, batch=n_tasks)
    with eval_mode(model):
        final = langevin(
            model,
            context,
            init,
            sampler.steps,
            sampler.step_size,
            sampler.noise_std,
            sampler.grad_clip,
            box=box,
            generator=g,
        )
    final = final.cpu()
    fracs = []
    for i, t in enumerate(tasks):
        d = torch.cdist(final[i].double(), t.means.double()).min(-1).values
        fracs.append(float((d <= radius).double().mean()))
    return float(np.mean(fracs))
