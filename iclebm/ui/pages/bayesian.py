"""Is it Bayesian? Four views of whether the density model learns in context like the Bayes predictive:
order sensitivity, the martingale check, the Bayes-gap decomposition of the ICL curve, and the
trajectory map of every learner's predictive as n grows.

The context is the one the Density page edits (shared). URL (share link): the properties of
`iclebm.ui.page_tables.BAYESIAN` that differ from their defaults (pts, mix, orders, steps, paths,
learner, n), plus the model.
"""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from iclebm.card import is_regression, prior_of
from iclebm.errors import CapabilityError
from iclebm.evaluation.baselines import density_baselines
from iclebm.evaluation.bayes_gap import bayes_gap_decomposition
from iclebm.evaluation.grid_learners import (
    BaselineGrid,
    BayesGrid,
    GridLearner,
    GridSpec,
    LastPointHeavy,
    ModelGrid,
    OracleGrid,
)
from iclebm.evaluation.martingale import MartingaleResult, martingale_check
from iclebm.evaluation.order import OrderSensitivity, order_sensitivity
from iclebm.evaluation.trajectory import TRAJECTORY_RESOLUTION, TrajectoryMap, trajectory_map
from iclebm.tasks import DENSITY
from iclebm.ui import bayesian_figures as F
from iclebm.ui import page_tables as T
from iclebm.ui import share
from iclebm.ui.canvas import chart
from iclebm.ui.context import context_for_model, current_mixture, restore_link
from iclebm.ui.curve_figures import display_name, line_style
from iclebm.ui.guard import guarded, show_flash
from iclebm.ui.jobs.background import BackgroundJob
from iclebm.ui.models import AppContext
from iclebm.ui.page_state import Table

PAGE = "bayesian"
KEEP = "session"
ORDER_RES = 48  # order-sensitivity maps: K orderings x 48^2 queries (model: well under a second)
MARTINGALE_RES = 32  # J continuations x m steps x 32^2 queries per learner
BAYES_EXACT_MAX = 8  # the Bayes reference in the live views only while it is exact (K = 3: n <= 8)
TRAJ_JOB, TRAJ_DONE = "_by_traj_job", "_by_traj_done"  # session keys: the running job, finished maps
TRAJ_KEEP = 8  # finished maps kept per session (one per context)
TRAJ_POLL_S = 0.5


def render(ctx: AppContext) -> None:
    if is_regression((ctx.model.card or {}).get("task")):
        st.warning("The selected model is a regression model; this page checks density models. Pick one in "
                   "the sidebar (e.g. mog2d).")
        return
    table = page_table(ctx)
    init_state(table)
    restore_link(table)
    pts = context_for_model(ctx.max_context)
    share.publish(table, page_values())
    st.markdown("### Is it Bayesian?")
    st.caption("A Bayesian learner's prediction ignores the order of the context (exchangeability) and "
               "agrees "
               "on average with itself after it continues the context with its own samples (the martingale "
               "property). Each view measures the model against the Bayes predictive of its training prior. "
               "The context is the Density page's.")
    share.show_link_warnings(PAGE)
    show_flash()
    prior = prior_of(ctx.model, DENSITY, "this page")
    if not pts:
        st.info("The context is empty. Add points on the Density page (or draw a random task there); the "
                "views compare predictions given those points.")
    with guarded("Order sensitivity"):
        order_panel(ctx, pts, prior)
    with guarded("The martingale check"):
        martingale_panel(ctx, pts, prior)
    with guarded("The Bayes-gap decomposition"):
        gap_panel(ctx)
    with guarded("The trajectory map"):
        trajectory_panel(ctx, pts, prior)
    with guarded("Share link"):
        share.publish(table, page_values())


# ---- state and link --------------------------------------------------------------------------


def page_table(ctx: AppContext) -> Table:
    lo, hi = ctx.box
    return T.BAYESIAN.bind(points={"lo": lo, "hi": hi, "size": ctx.max_context}, by_n={"hi": ctx.max_context})


def init_state(table: Table) -> None:
    ss = st.session_state
    for p in table.props:
        if p.name not in ("points", "mixture"):  # the context's own (iclebm.ui.context)
            ss.setdefault(p.name, p.default)


def page_values() -> dict:
    return share.session_values(T.BAYESIAN)


def _bayes_live(prior, n: int) -> bool:
    """The Bayes reference is drawn live while it is exact and quick (isotropic prior, n <= 8)."""
    return prior.capabilities.bayes and not prior.anisotropic and n <= BAYES_EXACT_MAX


# ---- memoised computations (keyed by the model key and the context) -------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def _order(model_key: str, _learner: GridLearner, name: str, points: tuple, box: tuple, orders: int
           ) -> OrderSensitivity:
    return order_sensitivity(_learner, np.asarray(points).reshape(-1, 2), GridSpec(box, ORDER_RES), orders)


@st.cache_data(show_spinner=False, max_entries=32)
def _martingale(model_key: str, _learner: GridLearner, name: str, points: tuple, box: tuple, paths: int,
                steps: int) -> MartingaleResult:
    return martingale_check(_learner, np.asarray(points).reshape(-1, 2), GridSpec(box, MARTINGALE_RES), paths,
                            steps)


# ---- the four views ------------------------------------------------------------------------------


def order_panel(ctx: AppContext, pts: list, prior) -> None:
    st.markdown("#### 1 · Order sensitivity")
    st.caption("The model's predictive for K orderings of the same points. Left: the spread (std over "
               "orderings) "
               "of its normalised energy -log p at every point; right: the integrand of the permutation KL, "
               "(1/K) Σ p_k log(p_k / p_ens). The number is the permutation KL in nats; the Bayes "
               "predictive's "
               "is 0 by construction.")
    ss = st.session_state
    cols = st.columns([1.2, 1, 1], vertical_alignment="bottom")
    cols[0].slider("orderings K", 2, 24, key="by_orders", persist_state=KEEP,
                   help="K orderings of the context: the given one and K - 1 random ones (all n! when fewer)")
    key = tuple(map(tuple, pts))
    mine = _order(ctx.model_key, ModelGrid(ctx.model), "model", key, ctx.box, int(ss["by_orders"]))
    cols = cols[1:]
    cols[0].metric("permutation KL, model", f"{mine.kl:.2e} nats", help=f"{mine.orders} orderings")
    if _bayes_live(prior, len(pts)):
        ref = _order(ctx.model_key, BayesGrid(prior), "bayes", key, ctx.box, int(ss["by_orders"]))
        cols[1].metric("permutation KL, Bayes", f"{ref.kl:.1e} nats", help="0 by construction (exact here)")
    else:
        cols[1].metric("permutation KL, Bayes", "0", help="0 by construction (not computed live here: an "
                       "anisotropic prior or more than 8 points make the Bayes predictive slow)")
    chart(F.heatmap_row_figure(mine.xs, [mine.energy_std, mine.kl_map],
                               ["std over orderings of -log p", "permutation KL integrand"], pts,
                               ["Magma", "Magma"]), key="by_order_chart")


def martingale_panel(ctx: AppContext, pts: list, prior) -> None:
    st.markdown("#### 2 · The martingale check")
    st.caption("Continue the context with points drawn from the learner's own predictive, many times over, "
               "and average the predictives after the continuation. A Bayesian learner's average equals its "
               "prediction before (Falck, Wang & Holmes 2024): the gap is 0 up to Monte Carlo noise. A KDE "
               "that overweights its last point fails by design (a check that the test has power).")
    ss = st.session_state
    c = st.columns(2)
    c[0].slider("continued points m", 1, 8, key="by_steps", persist_state=KEEP)
    c[1].slider("continuations J", 8, 64, key="by_paths", persist_state=KEEP, step=8)
    key = tuple(map(tuple, pts))
    steps, paths = int(ss["by_steps"]), int(ss["by_paths"])
    learners: list[GridLearner] = [ModelGrid(ctx.model)]
    if _bayes_live(prior, len(pts) + steps):
        learners.append(BayesGrid(prior))
    learners.append(LastPointHeavy(prior=prior))
    results = {lr.name: _martingale(ctx.model_key, lr, lr.name, key, ctx.box, paths, steps)
               for lr in learners}
    cols = st.columns(len(results))
    for col, (name, r) in zip(cols, results.items(), strict=True):
        col.metric(f"martingale gap, {name}", f"{r.gap:.3f}",
                   help=f"TV {r.tv:.3f} (noise level {r.tv_noise:.3f})")
    if "bayes" not in results:
        st.caption("Bayes reference: 0 by construction (not drawn live past n + m = "
                   f"{BAYES_EXACT_MAX} points, "
                   "or for an anisotropic prior, where it takes minutes).")
    m = results["model"]
    chart(F.heatmap_row_figure(m.xs, [m.before, m.after, m.after - m.before],
                               ["model: p(x | D)", f"mean after {steps} own points", "after - before"], pts,
                               ["Viridis", "Viridis", "RdBu_r"]), key="by_mart_maps")
    chart(F.martingale_steps_figure({k: r.gap_by_step for k, r in results.items()}), key="by_mart_steps")


def gap_panel(ctx: AppContext) -> None:
    st.markdown("#### 3 · The Bayes-gap decomposition")
    st.caption("The model card's held-out ICL curve split in two: the posterior variance (Bayes - oracle), "
               "which no learner can avoid with n points, and the learner's Bayes gap (learner - Bayes), "
               "what it loses to the best in-context learner for the prior.")
    table = (ctx.model.card or {}).get("evaluation")
    if not table or "nll" not in table:
        st.info("This model's card has no evaluation table (python -m iclebm evaluate --update-card).")
        return
    try:
        decomp = bayes_gap_decomposition(table)
    except CapabilityError as e:
        st.info(str(e))
        return
    learners = [k for k in T.GAP_LEARNERS if k in decomp["bayes_gap"]]
    st.segmented_control("learner", learners, key="by_learner", persist_state=KEEP, required=True,
                         format_func=lambda k: line_style(k).short)
    learner = st.session_state.get("by_learner") or "model"
    learner = learner if learner in learners else learners[0]
    chart(F.bayes_gap_figure(decomp, learner, table["nll"]["oracle"]), key="by_gap_chart")
    rows = {"n": decomp["ns"], "posterior variance": decomp["posterior_variance"],
            f"Bayes gap ({learner})": decomp["bayes_gap"][learner]}
    st.dataframe({k: [round(v, 3) if isinstance(v, float) else v for v in vals] for k, vals in rows.items()},
                 hide_index=True)


def trajectory_panel(ctx: AppContext, pts: list, prior) -> None:
    st.markdown("#### 4 · The trajectory map")
    st.caption("Every learner's predictive after n = 0, 1, …, N points, embedded in the plane by classical "
               "MDS of their Hellinger distances: does the model's path follow Bayes, the KDE or EM? "
               f"Grid {TRAJECTORY_RESOLUTION}²; computed once per context, in the background.")
    if not pts:
        return
    if not (prior.capabilities.bayes and not prior.anisotropic):
        st.caption("Bayes is left out of the map for an anisotropic prior (minutes per context).")
    key = (ctx.model_key, tuple(map(tuple, pts)), tuple(ctx.box),
           json.dumps(st.session_state.get("mixture"), sort_keys=True))  # the mixture: the oracle's task
    done: dict = st.session_state.setdefault(TRAJ_DONE, {})
    if key in done:
        trajectory_view(done[key], pts)
        return
    job: BackgroundJob | None = st.session_state.get(TRAJ_JOB)
    if job is None or job.key != key or job.status().cancelled:
        if job is not None:
            job.stop()  # its context is stale
        job = start_trajectory_job(key, ctx, pts, prior)
    st.fragment(trajectory_progress, run_every=TRAJ_POLL_S)()


def start_trajectory_job(key: tuple, ctx: AppContext, pts: list, prior) -> BackgroundJob:
    """The map in a daemon thread (seconds at N = 32), so the other views are usable meanwhile."""
    base = density_baselines(prior, ("kde_scott", "em_mixture"))
    learners: list[GridLearner] = [ModelGrid(ctx.model)]
    if prior.capabilities.bayes and not prior.anisotropic:
        learners.append(BayesGrid(prior))
    learners += [BaselineGrid(base["kde_scott"], "kde_scott"), BaselineGrid(base["em_mixture"], "em_mixture")]
    mixture = current_mixture()
    if mixture is not None:
        learners.append(OracleGrid(mixture))
    context = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    grid = GridSpec(ctx.box, TRAJECTORY_RESOLUTION)
    job = BackgroundJob(key, lambda progress: trajectory_map(learners, context, grid, progress=progress))
    st.session_state[TRAJ_JOB] = job
    return job


def trajectory_progress() -> None:
    """Polled every TRAJ_POLL_S while the job runs; when it ends, keep the map and redraw the page."""
    job: BackgroundJob | None = st.session_state.get(TRAJ_JOB)
    if job is None:
        return
    status = job.status()
    if status.running:
        name, sep, rest = status.label.partition(", ")  # e.g. "bayes, n = 12"
        st.progress(status.fraction, text=f"computing the trajectory map in the background: "
                                          f"{display_name(name)}{sep}{rest} ({status.seconds:.0f} s)")
        return
    if status.error is not None:
        st.error(f"The trajectory map could not be computed: {status.error}")
        return
    if status.cancelled:
        return
    done: dict = st.session_state.setdefault(TRAJ_DONE, {})
    done[job.key] = job.result()
    while len(done) > TRAJ_KEEP:  # oldest first (dicts keep insertion order)
        done.pop(next(iter(done)))
    st.session_state.pop(TRAJ_JOB, None)
    st.rerun()


def trajectory_view(tm: TrajectoryMap, pts: list) -> None:
    ss = st.session_state
    n_max = len(pts)
    if ss.get("by_n") is None or int(ss["by_n"]) > n_max:
        ss["by_n"] = n_max
    st.slider("highlight n", 0, n_max, key="by_n", persist_state=KEEP)
    n = int(ss["by_n"])
    chart(F.trajectory_figure(tm.names, tm.ns, tm.coords, n), key="by_map")
    total = sum(tm.seconds.values())
    st.caption(f"{len(tm.names)} learners × {len(tm.ns)} densities in {total:.1f} s; 2-D distances are off "
               "the "
               f"Hellinger distances by {100 * tm.stress:.0f}% (relative).")
    chart(F.density_strip_figure(tm.xs, tm.log_density[:, tm.ns.index(n)], tm.names, pts[:n]),
          key="by_strip")
