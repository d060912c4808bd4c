"""Generalist (mog2d-wide) vs specialist (mog2d): held-out tasks of the wide prior, the probe
families and four free-clicking shapes (5 clusters, a ring, a line, one wide blob).

    python benchmarks/generalist.py --json benchmarks/generalist.json \
        --models checkpoints/mog2d.safetensors checkpoints/mog2d-wide.safetensors

Every number is a mean NLL in nats/point of fresh samples of the task given its first n points;
model densities are grid-normalised over the box (evaluate.in_context_nll / nll_curve_for_task).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iclebm.checkpoints import load_checkpoint
from iclebm.evaluation.baselines import VAR_FLOOR
from iclebm.evaluation.density import format_nll_table, in_context_nll, nll_curve_for_task
from iclebm.tasks import PROBE_FAMILIES, ConcentricRings, GaussianMixture
from iclebm.training.presets import WIDE_PRIOR


@dataclass(frozen=True)
class Segment:
    """Points along a line segment from a to b with Gaussian noise across it."""

    a: tuple[float, float] = (-6.0, -3.0)
    b: tuple[float, float] = (6.0, 3.0)
    noise: float = 0.25

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        t = torch.rand(n, 1, generator=generator, dtype=torch.float64)
        a, b = torch.tensor(self.a, dtype=torch.float64), torch.tensor(self.b, dtype=torch.float64)
        pts = a + t * (b - a) + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return pts.float()


def five_clusters() -> GaussianMixture:
    ang = torch.arange(5, dtype=torch.float64) * 2 * math.pi / 5
    means = 5.0 * torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    return GaussianMixture(means, torch.full((5,), 0.5, dtype=torch.float64))


SHAPES = {
    "5 clusters": five_clusters(),
    "ring": ConcentricRings(radii=(4.0,), noise=0.3),
    "line": Segment(),
    "wide blob": GaussianMixture(torch.zeros(1, 2).double(), torch.full((1,), 2.5).double()),
}


def em_bic_log_prob(points: np.ndarray, x: np.ndarray, seed: int, max_k: int = 6) -> np.ndarray:
    """scikit-learn GaussianMixture (full covariances, reg_covar = VAR_FLOOR, 3 inits), K = 1..max_k
    (capped at the number of distinct points) chosen by BIC; log p(x) (S,)."""
    from sklearn.mixture import GaussianMixture as SkGMM

    n_distinct = len(np.unique(points, axis=0))
    best, best_bic = None, math.inf
    for k in range(1, min(max_k, n_distinct) + 1):
        gm = SkGMM(k, covariance_type="full", reg_covar=VAR_FLOOR, n_init=3, random_state=seed).fit(points)
        bic = gm.bic(points)
        if bic < best_bic:
            best, best_bic = gm, bic
    return best.score_samples(x)


def em_bic_column(table: dict, prior, n_tasks: int, seed: int, n_test: int) -> list[float]:
    """EM-with-BIC NLL per n on exactly the tasks and points of in_context_nll(seed=seed)."""
    g = torch.Generator().manual_seed(seed)
    ns = table["ns"]
    tasks = [prior.sample_task(g) for _ in range(n_tasks)]
    context = torch.stack([t.sample(max(ns), g) for t in tasks]).double().numpy()
    test = torch.stack([t.sample(n_test, g) for t in tasks]).double().numpy()
    col = []
    for n in ns:
        if n < 2:  # scikit-learn fits need two points
            col.append(table["nll"]["prior_predictive"][0] if n == 0 else math.nan)
            continue
        col.append(float(np.mean([-em_bic_log_prob(context[i, :n], test[i], seed + i).mean()
                                  for i in range(n_tasks)])))
    return col


def shape_table(model, task, ns, seeds: int, n_test: int, resolution: int) -> dict[str, list[float]]:
    """Mean over `seeds` contexts of the model's and baselines' NLL curves for one shape."""
    acc: dict[str, list[np.ndarray]] = {}
    for s in range(seeds):
        ctx = task.sample(max(ns), torch.Generator().manual_seed(1000 + s))
        t = nll_curve_for_task(model, task, ctx, ns=ns, n_test=n_test, resolution=resolution, seed=s)
        for k, v in t["nll"].items():
            acc.setdefault(k, []).append(np.asarray(v))
    return {k: [float(x) for x in np.mean(v, 0)] for k, v in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=150)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-prior", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ns = [4, 8, 16, 32, 64]
    out: dict = {}
    for path in args.models:
        model = load_checkpoint(path)
        name = Path(path).stem
        res: dict = {}
        if not args.skip_prior:
            table = in_context_nll(model, n_tasks=args.tasks, seed=777, ns=[0, 1, 2, *ns], prior=WIDE_PRIOR,
                                   resolution=args.resolution)
            table["nll"]["em_bic"] = em_bic_column(table, WIDE_PRIOR, args.tasks, 777, table["n_test"])
            res["wide_prior"] = table
            print(f"## {name} on held-out tasks of the wide prior\n")
            print(format_nll_table(table), "\n", flush=True)
        for label, task in {**SHAPES, **PROBE_FAMILIES}.items():
            res[label] = shape_table(model, task, ns, args.seeds, 300, args.resolution)
            row = " ".join(f"{v:.3f}" for v in res[label]["model"])
            print(f"{name} {label}: model NLL at n={ns}: {row}", flush=True)
        out[name] = res
    names = list(out)
    print("\n| shape | n | " + " | ".join(names) + " | KDE (scipy) |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for label in [*SHAPES, *PROBE_FAMILIES]:
        for i, n in enumerate(ns):
            vals = " | ".join(f"{out[m][label]['model'][i]:.3f}" for m in names)
            print(f"| {label} | {n} | {vals} | {out[names[0]][label]['kde_scipy'][i]:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"ns": ns, "results": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
