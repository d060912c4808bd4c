"""The README's "Is it Bayesian?" figures and numbers, from the shipped mog2d (isotropic prior: the Bayes
predictive is exact for small contexts). Run from the repository root:

    OMP_NUM_THREADS=1 python docs/bayesian_figures.py

Writes docs/bayes-order.png, docs/bayes-martingale.png, docs/bayes-gap.png, docs/bayes-trajectory.png
and prints the measured numbers (times on this machine, one thread).
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from iclebm.card import prior_of  # noqa: E402
from iclebm.checkpoints import load_checkpoint  # noqa: E402
from iclebm.evaluation.baselines import density_baselines  # noqa: E402
from iclebm.evaluation.bayes_gap import bayes_gap_decomposition  # noqa: E402
from iclebm.evaluation.grid_learners import (  # noqa: E402
    BaselineGrid,
    BayesGrid,
    GridSpec,
    LastPointHeavy,
    ModelGrid,
    OracleGrid,
    ShrinkingKde,
)
from iclebm.evaluation.martingale import martingale_check  # noqa: E402
from iclebm.evaluation.order import order_sensitivity  # noqa: E402
from iclebm.evaluation.trajectory import TRAJECTORY_RESOLUTION, trajectory_map  # noqa: E402

DOCS = Path(__file__).resolve().parent
COLORS = {"model": "#d62728", "bayes": "#1f77b4", "kde_scott": "#2ca02c", "em_mixture": "#9467bd",
          "oracle": "#7f7f7f", "last-point-heavy KDE": "#ff7f0e", "shrinking KDE": "#8c564b"}


def main() -> None:
    model = load_checkpoint("checkpoints/mog2d.safetensors").eval()
    prior = prior_of(model)
    box = (-12.0, 12.0)
    g = torch.Generator().manual_seed(7)
    task = prior.sample_task(g)
    ctx = task.sample(32, g).double().numpy()
    ext = [box[0], box[1], box[0], box[1]]

    # 1. order sensitivity at n = 6 (Bayes exact: all 720 orderings would be 0 too; 8 drawn here)
    grid = GridSpec(box, 48)
    t0 = time.perf_counter()
    mine = order_sensitivity(ModelGrid(model), ctx[:6], grid, orders=8)
    t_model = time.perf_counter() - t0
    ref = order_sensitivity(BayesGrid(prior), ctx[:6], grid, orders=8)
    print(f"order sensitivity n=6, K=8: model KL {mine.kl:.3e} nats ({t_model:.2f} s), Bayes KL {ref.kl:.1e}")
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    for a, z, title in ((ax[0], mine.energy_std, "model: std over 8 orderings of -log p"),
                        (ax[1], ref.energy_std, "Bayes: the same (0 to rounding)")):
        im = a.imshow(z, origin="lower", extent=ext, cmap="magma", vmin=0, vmax=float(mine.energy_std.max()))
        a.plot(ctx[:6, 0], ctx[:6, 1], "o", ms=4, mfc="#00e5ff", mec="k")
        a.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Order sensitivity, n = 6: permutation KL {mine.kl:.2e} nats (model) vs "
                 f"{abs(ref.kl):.0e} (Bayes)", fontsize=10)
    fig.savefig(DOCS / "bayes-order.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    # 2. martingale check at n = 4, m = 4 continued points, J = 32 (Bayes exact up to n + m = 8)
    grid = GridSpec(box, 32)
    learners = [ModelGrid(model), BayesGrid(prior), ShrinkingKde(prior=prior), LastPointHeavy(prior=prior)]
    res = {}
    for lr in learners:
        t0 = time.perf_counter()
        res[lr.name] = martingale_check(lr, ctx[:4], grid, continuations=32, steps=4, seed=1)
        print(f"martingale n=4 m=4 J=32 {lr.name}: gap {res[lr.name].gap:+.3f} TV {res[lr.name].tv:.3f} "
              f"(noise {res[lr.name].tv_noise:.3f}), {time.perf_counter() - t0:.1f} s")
    m = res["model"]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    ax[0].imshow(m.before, origin="lower", extent=ext, cmap="viridis")
    ax[0].set_title("model: p(x | D), n = 4", fontsize=10)
    d = m.after - m.before
    lim = float(np.abs(d).max())
    ax[1].imshow(d, origin="lower", extent=ext, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[1].set_title("mean after 4 own points - before", fontsize=10)
    for a in ax[:2]:
        a.plot(ctx[:4, 0], ctx[:4, 1], "o", ms=4, mfc="#00e5ff", mec="k")
    for name, r in res.items():
        ax[2].plot(range(1, 5), r.gap_by_step, "o-", color=COLORS[name], label=name)
    ax[2].axhline(0, color="k", lw=0.5)
    ax[2].set_xlabel("points sampled from the learner's own predictive")
    ax[2].set_ylabel("martingale gap (relative L2)")
    ax[2].legend(fontsize=8)
    fig.savefig(DOCS / "bayes-martingale.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    # 3. the Bayes-gap decomposition of the card's held-out table
    table = model.card["evaluation"]
    dec = bayes_gap_decomposition(table)
    x = np.log2(1 + np.asarray(dec["ns"]))
    oracle = np.asarray(table["nll"]["oracle"])
    bayes = oracle + np.asarray(dec["posterior_variance"])
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for a, learner in zip(ax, ("model", "em_mixture"), strict=True):
        top = bayes + np.asarray(dec["bayes_gap"][learner])
        a.fill_between(x, oracle, bayes, color=COLORS["bayes"], alpha=0.3,
                       label="posterior variance (Bayes - oracle)")
        a.fill_between(x, bayes, top, color=COLORS[learner], alpha=0.35,
                       label=f"Bayes gap ({learner} - Bayes)")
        a.plot(x, top, "o-", color=COLORS[learner], ms=3)
        a.plot(x, oracle, ":", color="k", label="oracle")
        a.set_xticks(x, [str(n) for n in dec["ns"]])
        a.set_xlabel("context points n")
        a.set_ylim(oracle.min() - 0.2, 5.5)
        a.legend(fontsize=8)
    ax[0].set_ylabel("NLL (nats/point)")
    fig.savefig(DOCS / "bayes-gap.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    print("bayes gap (model):", [round(v, 3) for v in dec["bayes_gap"]["model"]])
    print("posterior variance:", [round(v, 3) for v in dec["posterior_variance"]])

    # 4. the trajectory map, N = 32
    base = density_baselines(prior, ("kde_scott", "em_mixture"))
    learners = [ModelGrid(model), BayesGrid(prior), BaselineGrid(base["kde_scott"], "kde_scott"),
                BaselineGrid(base["em_mixture"], "em_mixture"), OracleGrid(task)]
    t0 = time.perf_counter()
    tm = trajectory_map(learners, ctx, GridSpec(box, TRAJECTORY_RESOLUTION))
    total = time.perf_counter() - t0
    print(f"trajectory map N=32 grid {TRAJECTORY_RESOLUTION}: {total:.1f} s",
          {k: round(v, 2) for k, v in tm.seconds.items()}, f"stress {tm.stress:.3f}")
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for i, name in enumerate(tm.names):
        c = tm.coords[i]
        ax.plot(c[:, 0], c[:, 1], "o-", ms=3, color=COLORS[name], label=name)
        for n in (0, 4, 32):
            ax.annotate(str(n), c[n], fontsize=7, color=COLORS[name])
    ax.set_aspect("equal")
    ax.set_title("Trajectory map: each learner's predictive for n = 0..32 (classical MDS of Hellinger)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(DOCS / "bayes-trajectory.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    # the order ensemble's cost: one batched call against K single (normalised) calls
    q = torch.as_tensor(ctx[16:32], dtype=torch.float32)[None]
    c = torch.as_tensor(ctx[:16], dtype=torch.float32)[None]
    from iclebm.models.order import ordering_energies, orderings
    with torch.no_grad():
        for k in (1, 4, 8):
            t0 = time.perf_counter()
            model.energy(q, c, orders=k, generator=torch.Generator().manual_seed(0))
            batched = time.perf_counter() - t0
            order = orderings(16, k, torch.Generator().manual_seed(0))
            t0 = time.perf_counter()
            for perm in order:
                ordering_energies(model, q, c, perm[None], box)
            single = time.perf_counter() - t0
            print(f"order ensemble K={k}, N=16, 16 queries + 100^2 grid: batched {batched:.3f} s, "
                  f"{k} single normalised calls {single:.3f} s")


if __name__ == "__main__":
    main()
