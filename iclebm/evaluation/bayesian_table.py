"""The "is it Bayesian?" numbers of a density model next to Bayes: permutation KL and martingale gap vs n
(what `evaluate` and `compare` print with --bayes-checks).

- `iclebm.evaluation.density.OrderEnsembleDensity`: the order ensemble as a column of the NLL table
  (`evaluate --orders K`).
- `bayesian_checks`: for a few held-out tasks from the prior and each n, the permutation KL
  (`iclebm.evaluation.order`) and the martingale gap (`iclebm.evaluation.martingale`) of the model, of the
  Bayes predictive (the reference: 0 by construction) and of Scott's KDE (exchangeable, so KL 0, but its
  bandwidth shrinks with n: not a martingale), all on one coarse grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from iclebm.evaluation.baselines import density_baselines
from iclebm.evaluation.density import eval_mode, resolve_prior_and_box
from iclebm.evaluation.grid_learners import BaselineGrid, BayesGrid, GridLearner, GridSpec, ModelGrid
from iclebm.evaluation.martingale import DEFAULT_CONTINUATIONS, DEFAULT_STEPS, martingale_check
from iclebm.evaluation.order import DEFAULT_ORDERS, order_sensitivity
from iclebm.evaluation.tables import HeldOut
from iclebm.models.energy import EnergyTransformer
from iclebm.tasks import MixturePrior

CHECK_NS = (0, 1, 2, 4)  # n + steps <= 8: the Bayes reference stays exact (K = 3); Gibbs costs minutes
CHECK_RESOLUTION = 32  # cells per axis of the checks' grid (the Bayes predictive on J contexts per step)


def bayesian_checks(
    model: EnergyTransformer, prior: MixturePrior | None = None, box: tuple[float, float] | None = None,
    ns: Sequence[int] = CHECK_NS, n_tasks: int = 4, seed: int = 12345, orders: int = DEFAULT_ORDERS,
    resolution: int = CHECK_RESOLUTION, continuations: int = DEFAULT_CONTINUATIONS,
    steps: int = DEFAULT_STEPS, bayes: bool = True, progress: Callable[[str], None] | None = None,
) -> dict:
    """Permutation KL and martingale gap vs n for the model, Bayes and Scott's KDE (module docstring).
    Returns a JSON-able dict: ns, order_kl[learner], martingale_gap[learner] (means over tasks), settings.
    bayes=False (or a prior whose Bayes predictive is too slow here: anisotropic) leaves Bayes out."""
    prior, box = resolve_prior_and_box(model, prior, box)
    ns = [int(n) for n in ns]
    held = HeldOut.draw(prior.sample_task, n_tasks, max(ns), 1, seed)
    grid = GridSpec(box, int(resolution))
    learners: list[GridLearner] = [ModelGrid(model)]
    if bayes and prior.capabilities.bayes and not prior.anisotropic:
        learners.append(BayesGrid(prior))
    learners.append(BaselineGrid(density_baselines(prior, ("kde_scott",))["kde_scott"], "kde_scott"))
    kl = {lr.name: np.zeros((n_tasks, len(ns))) for lr in learners}
    gap = {lr.name: np.zeros((n_tasks, len(ns))) for lr in learners}
    ctx = held.context.double().numpy()
    with eval_mode(model):
        for lr in learners:
            if progress is not None:
                progress(lr.name)
            for t in range(n_tasks):
                for p, n in enumerate(ns):
                    s = seed + 1000 * t + p
                    kl[lr.name][t, p] = order_sensitivity(lr, ctx[t, :n], grid, orders, s).kl
                    gap[lr.name][t, p] = martingale_check(lr, ctx[t, :n], grid, continuations, steps, s).gap
    return {
        "ns": ns,
        "order_kl": {k: v.mean(0).tolist() for k, v in kl.items()},
        "martingale_gap": {k: v.mean(0).tolist() for k, v in gap.items()},
        "n_tasks": int(n_tasks), "orders": int(orders), "resolution": int(resolution),
        "continuations": int(continuations), "steps": int(steps), "seed": int(seed),
    }


def format_bayesian_checks(result: dict) -> str:
    """Markdown: one row per n, permutation KL then martingale gap per learner."""
    names = list(result["order_kl"])
    head = ["n", *[f"KL_perm {n}" for n in names], *[f"mart. gap {n}" for n in names]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, n in enumerate(result["ns"]):
        row = [str(n)] + [f"{result['order_kl'][k][i]:.2e}" for k in names]
        row += [f"{result['martingale_gap'][k][i]:.3f}" for k in names]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        f"KL_perm: nats, mean over tasks of (1/K) sum_k KL(p_k || p_ens), K = {result['orders']} orderings "
        f"(all n! when fewer); mart. gap: noise-corrected relative L2 gap between the predictive and "
        f"its mean after {result['steps']} self-sampled points, {result['continuations']} continuations "
        f"(0 for a martingale); n_tasks={result['n_tasks']}, grid {result['resolution']}^2, "
        f"seed={result['seed']}"
    )
    return "\n".join(lines)
