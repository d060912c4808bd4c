"""Side by side: NLL vs n for in-context learners, on the training prior and on data they never saw.

Rows: every model given (energy transformers and the parametric MixtureDensityTransformer
alike, through the energy contract E = -log p + const), each normalised on the same grid over
the box; `bayes`, the posterior predictive under the training prior (the best any learner
trained on that prior can do on its own tasks; on other data it is just one more learner);
`kde_scott`; `em_bic` (scikit-learn EM, full covariances, K = 1..6 by BIC) and `em_mixture`
(isotropic, the prior's K); and `oracle`, the exact density, where the family has one.

Families (each task is drawn fresh per seed):
- ``training prior``: held-out tasks of the models' training prior.
- ``5 components``: the same prior with 5 components instead of its K.
- ``anisotropic``: the training prior's means and scale with 3 components stretched along a
  uniform random direction, major/minor std ratio 2-3 (`MixturePrior(aspect_ratio=(4, 9))`,
  geometric-mean std as the training prior's), exact density.
- ``two moons``, ``rings``, ``swiss roll``: the probe shapes, each task randomly rotated and
  shifted by N(0, 1) per axis; no known density, so NLL is on held-out samples only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from iclebm.evaluation.baselines import density_baselines
from iclebm.evaluation.density import BayesDensity, DensityOracle, ModelDensity
from iclebm.evaluation.tables import DensityLearner, HeldOut, Learner, nll_summary
from iclebm.tasks import PROBE_FAMILIES, MixturePrior, Task

QUICK = {"ns": (0, 2, 8), "n_tasks": 2, "n_test": 20, "resolution": 40}
COMPARE_NS = (0, 1, 2, 4, 8, 16, 32)
ANISOTROPIC_RATIO = (4.0, 9.0)  # major / minor std: 2-3x longer than wide


@dataclass(frozen=True)
class Moved:
    """A sample-only shape, rotated by `angle` and shifted by `shift`."""

    shape: Task
    angle: float
    shift: tuple[float, float]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.shape.sample(n, generator).double()
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        return (x @ rot.T + torch.tensor(self.shift, dtype=torch.float64)).float()


def _moved(name: str) -> Callable[[torch.Generator], Task]:
    def draw(g: torch.Generator) -> Task:
        u = torch.rand(3, generator=g, dtype=torch.float64)
        shift = torch.randn(2, generator=g, dtype=torch.float64)
        return Moved(PROBE_FAMILIES[name], 2 * math.pi * float(u[0]), (float(shift[0]), float(shift[1])))

    return draw


def families(prior: MixturePrior) -> dict[str, Callable[[torch.Generator], Task]]:
    """Name -> task sampler (a function of a torch.Generator)."""
    five = MixturePrior(5, prior.mean_std, prior.component_std, prior.mean_limit, prior.aspect_ratio)
    anisotropic = MixturePrior(3, prior.mean_std, prior.component_std, prior.mean_limit, ANISOTROPIC_RATIO)
    return {
        "training prior": prior.sample_task,
        "5 components": five.sample_task,
        "anisotropic": anisotropic.sample_task,
        "two moons": _moved("two moons"),
        "rings": _moved("concentric rings"),
        "swiss roll": _moved("swiss roll"),
    }


def compare_family(
    models: dict[str, torch.nn.Module],
    draw: Callable[[torch.Generator], Task],
    prior: MixturePrior,
    box: tuple[float, float],
    ns: Sequence[int],
    n_tasks: int,
    n_test: int,
    resolution: int,
    seed: int,
) -> dict:
    """NLL table (ns, nll, stderr over tasks) of every row on n_tasks tasks of one family."""
    held = HeldOut.draw(draw, n_tasks, max(ns), n_test, seed)
    learners: list[Learner] = [ModelDensity(m, box, resolution, name=name) for name, m in models.items()]
    if prior.capabilities.bayes:
        learners.append(BayesDensity(prior))
    baselines = density_baselines(prior, ("kde_scott", "em_bic", "em_mixture"))
    learners += [DensityLearner(b, seed) for b in baselines.values()]
    if all(hasattr(t, "log_prob") for t in held.tasks):
        learners.append(DensityOracle())
    nll, se = nll_summary(learners, held, ns)
    return {"ns": list(ns), "nll": nll, "stderr": se}


def compare(
    models: dict[str, torch.nn.Module],
    prior: MixturePrior,
    box: tuple[float, float],
    ns: Sequence[int] = COMPARE_NS,
    n_tasks: int = 32,
    n_test: int = 200,
    resolution: int = 200,
    seed: int = 2024,
    only: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """One NLL table per family (see the module docstring); JSON-able."""
    ns = [int(n) for n in ns]
    if not ns or min(ns) < 0:
        raise ValueError("ns must be a non-empty list of non-negative ints")
    if n_tasks < 1 or n_test < 1:
        raise ValueError("n_tasks and n_test must be >= 1")
    if not models:
        raise ValueError("compare needs at least one model")
    for name, model in models.items():
        if max(ns) > model.config.max_context:
            raise ValueError(f"{name} reads at most {model.config.max_context} points, ns go to {max(ns)}")
    fams = families(prior)
    chosen = list(fams) if only is None else list(only)
    unknown = [f for f in chosen if f not in fams]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {list(fams)}")
    out = {}
    for j, name in enumerate(chosen):
        if progress:
            progress(name)
        out[name] = compare_family(models, fams[name], prior, box, ns, n_tasks, n_test, resolution,
                                   seed + 1000 * j)
    return {"ns": ns, "families": out, "models": list(models), "n_tasks": n_tasks, "n_test": n_test,
            "resolution": resolution, "seed": seed, "box": list(box), "prior": prior.to_card()}


def format_compare(result: dict) -> str:
    """Markdown: one table per family, rows = learners, columns = n; the best learner per n in bold
    (the oracle excluded, it is not a learner)."""
    ns = result["ns"]
    parts = []
    for fam, table in result["families"].items():
        nll = table["nll"]
        learners = [r for r in nll if r != "oracle"]
        best = [min(learners, key=lambda r: nll[r][i]) for i in range(len(ns))]
        lines = [f"**{fam}**", "", "| learner | " + " | ".join(f"n={n}" for n in ns) + " |",
                 "|---|" + "---|" * len(ns)]
        for row in [*learners, *(["oracle"] if "oracle" in nll else [])]:
            cells = [f"**{v:.3f}**" if best[i] == row else f"{v:.3f}" for i, v in enumerate(nll[row])]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    meta = ", ".join(f"{k}={result[k]}" for k in ("n_tasks", "n_test", "resolution", "seed"))
    return "\n\n".join(parts) + f"\n\nNLL in nats/point (lower is better); {meta}"
