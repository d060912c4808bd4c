"""The ICL curve of changing weights on a fixed validation set, and the training-curve bench.

`ValidationSet` draws held-out tasks once (contexts, test points) and computes the
reference lines once: the prior predictive (what a learner that ignores its context can
do) and the oracle (the true task density). `model_curve` then gives the model's NLL vs n
for any weights, e.g. every few seconds during live training, and `gap_closed` the share
of the prior-predictive -> oracle gap that the model has closed at a given n.

`training_curve` trains from scratch for a wall-clock budget and records NLL(n) at fixed
training-clock times; evaluation pauses the clock (`python -m iclebm bench --training-curve`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from iclebm.card import prior_of
from iclebm.evaluation.baselines import PriorPredictive
from iclebm.evaluation.density import BayesDensity, DensityOracle, ModelDensity, eval_mode
from iclebm.evaluation.pool_bayes import PoolBayes
from iclebm.evaluation.tables import DensityLearner, HeldOut, loss_table
from iclebm.grid import grid_points
from iclebm.models.energy import EnergyTransformer
from iclebm.tasks import DENSITY, GaussianMixture, MixturePrior, TaskPool
from iclebm.training.presets import get_preset
from iclebm.training.trainer import Trainer

CURVE_NS = (0, 1, 2, 4, 8, 16, 32)


@dataclass
class ValidationSet:
    tasks: list[GaussianMixture]
    context: torch.Tensor  # (T, N, 2)
    test: torch.Tensor  # (T, S, 2)
    ns: list[int]
    prior_predictive: float  # mean NLL (nats/point), the same for every n
    oracle: float  # mean NLL of the true densities
    box: tuple[float, float]

    @classmethod
    def draw(cls, prior: MixturePrior, box: tuple[float, float], n_tasks: int = 16, n_test: int = 100,
             ns: Sequence[int] = CURVE_NS, seed: int = 2024, draws: TaskPool | None = None) -> ValidationSet:
        """Held-out tasks from the prior, or from `draws` (a model's task pool); the reference lines
        are the prior's either way."""
        if n_tasks < 1 or n_test < 1 or not ns or min(ns) < 0:
            raise ValueError("n_tasks and n_test must be >= 1 and ns non-negative")
        held = HeldOut.draw((draws or prior).sample_task, n_tasks, max(ns), n_test, seed)
        refs = loss_table([DensityLearner(PriorPredictive(prior)), DensityOracle()], held, [0])
        # Means over every task's points, reduced as the curve always was (numpy over all points
        # for the prior predictive; torch per task, then numpy over tasks, for the oracle).
        pp = float(np.mean(refs["prior_predictive"]["nll"]))
        oracle = float(np.mean([torch.from_numpy(v).mean().item() for v in refs["oracle"]["nll"][:, 0]]))
        return cls(held.tasks, held.context, held.test, sorted(int(n) for n in ns), pp, oracle, box)

    def model_curve(self, model: EnergyTransformer, resolution: int = 100) -> list[float]:
        """Mean NLL (nats/point) at each n in self.ns under the model, grid-normalised."""
        held = HeldOut(self.tasks, self.context, self.test)
        nll = loss_table([ModelDensity(model, self.box, resolution)], held, self.ns)["model"]["nll"]
        return [float(v) for v in nll.mean(dim=(0, 2))]  # torch (T, P, S): over tasks and points at once

    def yardsticks(self, prior: MixturePrior, pool: TaskPool | None = None) -> dict[str, list[float]]:
        """Mean NLL at each n of the Bayes predictives on these tasks: the prior's ("bayes", when the
        prior has one) and the pool's ("bayes_pool", given a pool). Exact, so computed once per set."""
        learners: list = [BayesDensity(prior)] if prior.capabilities.bayes else []
        learners += [PoolBayes(pool)] if pool is not None else []
        if not learners:
            return {}
        table = loss_table(learners, HeldOut(self.tasks, self.context, self.test), self.ns)
        return {name: [float(v) for v in np.asarray(t["nll"]).mean(axis=(0, 2))] for name, t in table.items()}

    def gap_closed(self, nll: float) -> float:
        """Share of the prior-predictive -> oracle gap closed: 0 = ignores the context, 1 = oracle."""
        return (self.prior_predictive - nll) / (self.prior_predictive - self.oracle)


def training_curve(
    trainer, vset: ValidationSet, seconds: float = 60.0, eval_at: Sequence[float] = (15, 30, 45, 60),
    resolution: int = 100, n: int = 32,
) -> list[dict]:
    """Train a fresh Trainer for `seconds` of training time; at each time in eval_at, stop
    the clock, evaluate NLL at n on vset, restart the clock. Returns rows {seconds, steps, nll, gap}."""
    if n not in vset.ns:
        raise ValueError(f"n = {n} is not in the validation set's ns {vset.ns}")
    rows = []
    clock = 0.0
    marks = sorted(float(t) for t in eval_at if t <= seconds)
    for mark in marks:
        while clock < mark:
            t0 = time.perf_counter()
            trainer.step()
            clock += time.perf_counter() - t0
        model = trainer.model
        curve = vset.model_curve(model, resolution)
        nll = curve[vset.ns.index(n)]
        rows.append({"seconds": round(clock, 1), "steps": trainer.step_count, "nll": nll,
                     "gap_closed": vset.gap_closed(nll), "curve": curve})
        trainer.model.train()
    return rows


def count_separate_modes(
    model: EnergyTransformer, task: GaussianMixture, context: torch.Tensor, box: tuple[float, float],
    resolution: int = 120, radius: float = 1.0, rel_height: float = 0.05,
) -> int:
    """How many true component means have a local maximum of the model's density within `radius`.

    A local maximum: a grid cell whose density is the largest in its 3 x 3 neighbourhood and at
    least rel_height of the global maximum. Each true mean counts once. context: (N, 2).
    """
    grid = grid_points(box, resolution)[0].float()
    with torch.no_grad(), eval_mode(model):
        e = model.energy(grid[None], context[None].float())[0].reshape(resolution, resolution)
    dens = torch.exp(-(e - e.min()))
    pooled = torch.nn.functional.max_pool2d(dens[None, None], 3, stride=1, padding=1)[0, 0]
    peaks = (dens >= pooled) & (dens >= rel_height * dens.max())
    where = grid.reshape(resolution, resolution, 2)[peaks]  # (Q, 2) cell centres of the peaks
    if where.numel() == 0:
        return 0
    d = torch.cdist(task.means.float(), where)  # (K, Q)
    return int((d.min(dim=1).values <= radius).sum())


def modes_found(
    model: EnergyTransformer, vset: ValidationSet, n: int = 32, min_sep: float = 2.0
) -> tuple[int, int]:
    """(tasks where every component got its own mode, tasks counted): only tasks whose means are
    at least min_sep apart (closer ones are not separate modes even in the truth)."""
    hit = total = 0
    for i, task in enumerate(vset.tasks):
        if task.n_components > 1 and float(torch.pdist(task.means).min()) < min_sep:
            continue
        total += 1
        hit += count_separate_modes(model, task, vset.context[i, :n], vset.box) == task.n_components
    return hit, total


def run_training_curves(
    presets: Sequence[str] = ("small", "fast"), objectives: Sequence[str] = ("cd", "exact"),
    seconds: float = 60.0, eval_every: float = 15.0, n_tasks: int = 32, seed: int = 0, quick: bool = False,
) -> list[dict]:
    """Print NLL at n = 32 against training-clock seconds for each preset and objective (from scratch),
    the share of the prior-predictive -> oracle gap closed, and the 3-separate-modes count at the end."""

    first = get_preset(presets[0])
    vset = ValidationSet.draw(prior_of({"task": first.train.task}, DENSITY, "the ICL curve"), first.box,
                              n_tasks=4 if quick else n_tasks, n_test=20 if quick else 100)
    print(f"validation: {len(vset.tasks)} held-out tasks; NLL at n = 32: prior predictive "
          f"{vset.prior_predictive:.3f}, oracle {vset.oracle:.3f}; torch threads {torch.get_num_threads()}",
          flush=True)
    marks = [eval_every * (i + 1) for i in range(int(seconds // eval_every))] or [seconds]
    results = []
    print("| preset | objective | train s | steps | NLL n=32 | gap closed | all 3 modes found |", flush=True)
    print("|---|---|---|---|---|---|---|", flush=True)
    for name in presets:
        preset = get_preset(name)
        for objective in objectives:
            cfg = replace(preset.train, objective=objective, seed=seed)

            def make(cfg=cfg, preset=preset):  # type: ignore[no-untyped-def]
                if quick:
                    small = replace(cfg, batch_size=2, context_len=8, langevin_steps=2, grid_resolution=8)
                    return Trainer(config=small, model_config=replace(preset.model, n_layer=1, d_model=8))
                return Trainer(config=cfg, model_config=preset.model)

            trainer = make()
            rows = training_curve(trainer, vset, seconds, marks, resolution=40 if quick else 100,
                                  n=32 if 32 in vset.ns else vset.ns[-1])
            hit, total = modes_found(trainer.model, vset)
            for i, r in enumerate(rows):
                modes = f"{hit}/{total}" if i == len(rows) - 1 else ""
                print(f"| {name} | {objective} | {r['seconds']:.1f} | {r['steps']} | {r['nll']:.3f} | "
                      f"{100 * r['gap_closed']:.0f} % | {modes} |", flush=True)
            results.append({"preset": name, "objective": objective, "rows": rows, "modes": [hit, total]})
    return results
