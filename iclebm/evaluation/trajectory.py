"""The trajectory map: how each learner's predictive moves as its context grows.

Every learner (model, Bayes, KDE, EM, oracle, ...) gives a grid density p(. | first n points) for
n = 0..N. All these densities are embedded together in the plane by classical multidimensional
scaling of their pairwise Hellinger distances

    H(p, q) = sqrt(1 - sum_g sqrt(p_g q_g) * area)      (0 <= H <= 1, a metric),

so each learner draws a path through n; a model whose path hugs the Bayes path learns like Bayes,
one that hugs the KDE's learns like a KDE, and every path starts near the prior predictive (n = 0)
and the Bayes path ends near the oracle (the task). Classical MDS: double-centre B = -1/2 J D^2 J and
take the top two eigenvectors scaled by sqrt(eigenvalue); a set of points that lies in a plane is
reproduced exactly (up to rotation, reflection and translation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from iclebm.evaluation.grid_learners import GridLearner, GridSpec, prefix_log_densities

TRAJECTORY_RESOLUTION = 32  # the map's grid: the Bayes predictive for n = 0..32 in about 10 s here


@dataclass(frozen=True)
class TrajectoryMap:
    names: list[str]  # learners, in order
    ns: list[int]  # context lengths 0..N
    coords: np.ndarray  # (L, P, 2) MDS coordinates of each learner's density at each n
    log_density: np.ndarray  # (L, P, R, R) the embedded densities (rows = y), for hover previews
    xs: np.ndarray  # (R,) cell centres
    seconds: dict[str, float]  # time per learner, and "mds"
    stress: float  # relative error of the 2-D distances: ||D_2d - D|| / ||D||


def hellinger_matrix(log_p: np.ndarray, area: float) -> np.ndarray:
    """Pairwise Hellinger distances (L, L) of L grid-normalised log densities (L, G), float64."""
    root = np.exp(0.5 * np.asarray(log_p, dtype=np.float64))
    bc = (root @ root.T) * area  # Bhattacharyya coefficients
    d = np.sqrt(np.clip(1.0 - bc, 0.0, None))
    np.fill_diagonal(d, 0.0)
    return 0.5 * (d + d.T)


def classical_mds(dist: np.ndarray, dims: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS: (L, L) distances -> (L, dims) coordinates (negative eigenvalues
    clipped to 0: the non-Euclidean part of the distances is dropped)."""
    d2 = np.asarray(dist, dtype=np.float64) ** 2
    n = d2.shape[0]
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ d2 @ j
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:dims]
    return vecs[:, top] * np.sqrt(np.clip(vals[top], 0.0, None))[None]


def _pairwise(x: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))


def trajectory_map(
    learners: Sequence[GridLearner], context: np.ndarray, grid: GridSpec,
    progress: Callable[[float, str], None] | None = None, ns: Sequence[int] | None = None,
) -> TrajectoryMap:
    """Every learner's density for n = 0..N (or the given ns) on the grid, and their joint 2-D MDS
    embedding. progress(fraction done, what) is called before each learner and, for a learner without a
    batched prefix path, after each n (for a progress bar; it may raise to cancel)."""
    ctx = np.asarray(context, dtype=np.float64).reshape(-1, 2)
    ns = list(range(ctx.shape[0] + 1)) if ns is None else [int(n) for n in ns]
    logs, seconds = [], {}
    steps = len(learners) + 1  # each learner, then the embedding

    def report(i: int, done: float, name: str) -> None:
        if progress is not None:
            progress((i + done) / steps, name)

    for i, learner in enumerate(learners):
        report(i, 0.0, learner.name)
        t0 = time.perf_counter()
        if hasattr(learner, "prefix_log_densities"):  # one batched call for every n
            logs.append(prefix_log_densities(learner, ctx, ns, grid))
        else:  # one n at a time, reporting each (Bayes takes seconds at large n)
            rows = []
            for j, n in enumerate(ns):
                rows.append(prefix_log_densities(learner, ctx, [n], grid)[0])
                report(i, (j + 1) / len(ns), f"{learner.name}, n = {n}")
            logs.append(np.stack(rows))
        seconds[learner.name] = time.perf_counter() - t0
    report(len(learners), 0.0, "embedding")
    t0 = time.perf_counter()
    flat = np.concatenate(logs)  # (L * P, G)
    dist = hellinger_matrix(flat, grid.area)
    coords = classical_mds(dist)
    stress = float(np.linalg.norm(_pairwise(coords) - dist) / max(np.linalg.norm(dist), 1e-300))
    seconds["mds"] = time.perf_counter() - t0
    r = grid.resolution
    return TrajectoryMap(
        names=[learner.name for learner in learners], ns=ns,
        coords=coords.reshape(len(learners), len(ns), 2),
        log_density=flat.reshape(len(learners), len(ns), r, r).astype(np.float32),
        xs=grid.points[:r, 0], seconds=seconds, stress=stress,
    )
