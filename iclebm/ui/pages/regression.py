"""Regression: click (x, y) pairs and watch a frozen transformer's energy over y, E(y | x, D),
reshape into a line or a sine wave; predictions come from minimising it ("thinking").

The canvas shows p(y | x, D) normalised per column (or E), the prediction y_hat(x) after k
thinking steps (a slider for k; the figure's play button animates the curve settling),
the OLS line and the Bayes posterior mean +- 2 sd. A random linear or sinusoid task can be
fed all at once or point by point. Below: the card's held-out NLL/MSE-vs-n tables with the
baselines, and the thinking curve.

The sidebar offers regression checkpoints here (linear, sinusoid), remembered apart from the
density pages' model.

URL (share link): the properties of `iclebm.ui.page_tables.REGRESSION` that differ from their
defaults (pts, view, k, ols, bayes, task and the random-task panel), plus the model.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st
import torch

from iclebm.card import is_regression, prior_from_card, task_family
from iclebm.dynamics.thinking import ThinkingConfig
from iclebm.evaluation.baselines import linear_predictive, ols_predict, sinusoid_posterior
from iclebm.grid import Box
from iclebm.models.energy import EnergyTransformer
from iclebm.probes.regression_view import curve_frames, regression_grid, thinking_curves
from iclebm.tasks import FAMILIES, REGRESSION, LinearPrior, RegressionTask
from iclebm.ui import click_fragment, share
from iclebm.ui import page_tables as T
from iclebm.ui.canvas import chart, plotly_canvas
from iclebm.ui.data_panel import data_panel
from iclebm.ui.guard import guarded, show_flash
from iclebm.ui.models import AppContext
from iclebm.ui.page_state import Table
from iclebm.ui.page_tables import MAX_STEPS, REG_VIEWS
from iclebm.ui.point_editor import PointEditor
from iclebm.ui.regression_figures import method_curves_figure, regression_spec, thinking_curve_figure

PAGE = "regression"
FEED_TICK_S = 0.8
KEEP = "session"
# The random-task families: every registered regression family, with its default prior.
DEFAULT_PRIORS = {name: f.prior() for name, f in FAMILIES.items() if f.kind == REGRESSION}
# The page's own context of (x, y) pairs, apart from the Density page's points.
POINTS = PointEditor(
    points="reg_points", version="reg_pts_version", box="_reg_box", cap="_reg_cap", canvas="reg_canvas",
    table="reg-table", undo="reg_undo", clear="reg_clear", last_added="reg_last_added", source="reg_task",
    queue="reg_feed_queue", feeding="reg_feeding", last_feed="_reg_last_feed",
)


Point = tuple[float, float]


def render(ctx: AppContext) -> None:
    st.markdown("### Regression in context: prediction by energy minimisation")
    st.caption("Tokens are (x, y) pairs; a frozen transformer gives E(y | x, D). **Click the picture to add "
               "a pair**; the heatmap is p(y | x, D) per column, the yellow curve is ŷ(x) after k steps of "
               "gradient descent on E over y (thinking).")
    if not is_regression((ctx.model.card or {}).get("task")):  # the sidebar offers regression models only
        st.info("This page needs a regression model (E(y | x, D)); pick one in the sidebar.")
        return
    rctx = ctx
    ss = st.session_state
    model, box, cap = rctx.model, rctx.box, rctx.max_context
    table = page_table(model, box, cap)
    init_state(table)
    POINTS.remember(box, cap)
    ss["_reg_task_card"] = dict(model.card.get("task") or {})
    restore_link(table)
    POINTS.apply_table_edits()
    POINTS.enforce_cap()
    share.publish(table, share.session_values(table))  # before drawing: the address bar never lags
    controls(model)
    main_col, side_col = st.columns([1.55, 1], gap="medium")
    with main_col:
        share.show_link_warnings(PAGE)
        show_flash()
        click_fragment.page_run_started()
        click_fragment.canvas_fragment(lambda: canvas_panel(rctx), "Drawing the regression canvas",
                                       publish=lambda: share.publish(table, share.session_values(table)))
    with side_col:
        with guarded("Context"):
            context_panel(box, cap)
        with guarded("Random task"):
            task_panel(model, cap)
        with guarded("Your data"):
            data_panel(POINTS, box, cap, "regression", PAGE, model)
    with guarded("Evaluation charts"):
        charts_panel(model)
    with guarded("Share link"):
        share.publish(table, share.session_values(table))


# ---- state, link, callbacks -------------------------------------------------------------


def page_table(model: EnergyTransformer, box: tuple[float, float], cap: int) -> Table:
    """The page's property table for this model: its box and context cap; the random task's family
    defaults to the model's own."""
    family = task_family(model.card.get("task"))
    return T.REGRESSION.bind(
        reg_points={"lo": box[0], "hi": box[1], "size": cap}, reg_task={"size": cap},
        reg_n={"hi": cap, "default": min(16, cap)},
        reg_family={"default": family if family in DEFAULT_PRIORS else "linear"})


def init_state(table: Table) -> None:
    ss = st.session_state
    ss.setdefault("reg_pts_version", 0)
    ss.setdefault("reg_feed_queue", [])
    ss.setdefault("reg_feeding", False)
    for p in table.props:
        ss.setdefault(p.name, p.default)
    if int(ss["reg_n"]) > int(table["reg_n"].hi):  # a model with a smaller context
        ss["reg_n"] = int(table["reg_n"].hi)


def restore_link(table: Table) -> None:
    """The first time the page runs in a session: its state from the URL (defaults where it is silent)."""
    values = share.restore_once(table)
    if values is None:
        return
    share.apply(table, values, skip=("reg_points",))
    POINTS.set_points(values["reg_points"])


def draw_task(task_card: dict, seed: int, n: int, box: Box) -> tuple[RegressionTask, list[Point]]:
    """A task from the prior in `task_card` and n of its points (y clamped into the box)."""
    prior = prior_from_card(task_card)
    g = torch.Generator().manual_seed(int(seed))
    task = prior.sample_task(g)
    pts = task.sample(int(n), g).double().numpy()
    pts = np.clip(pts, box[0], box[1])
    return task, [(float(x), float(y)) for x, y in pts]


# ---- panels --------------------------------------------------------------------------------


def controls(model: EnergyTransformer) -> None:
    c1, c2, c3, c4 = st.columns([1.3, 2.4, 1, 1.3], vertical_alignment="center")
    c1.segmented_control("Show", list(REG_VIEWS), key="reg_view", persist_state=KEEP, required=True,
                         label_visibility="collapsed",
                         format_func=lambda v: "p(y | x, D)" if v == "density" else "E(y | x, D)")
    c2.slider("thinking steps k", 0, MAX_STEPS, key="reg_k", persist_state=KEEP,
              help="ŷ(x) after k gradient steps on E(y | x, D) over y, from the card's default start.")
    c3.toggle("OLS", key="reg_ols", persist_state=KEEP)
    family = task_family(model.card.get("task"))
    c4.toggle("Bayes ±2σ", key="reg_bayes", persist_state=KEEP,
              help="The posterior predictive under the model's training prior "
                   + ("(exact, Gaussian-conjugate)." if family == "linear" else "(importance sampling)."))


@st.cache_data(show_spinner=False, max_entries=64)
def _grid(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple, res: int):
    return regression_grid(_model, list(points), box, res)


@st.cache_data(show_spinner=False, max_entries=64)
def _curves(model_key: str, _model: EnergyTransformer, points: tuple, xs: tuple, steps: int):
    return thinking_curves(_model, list(points), np.asarray(xs), max_steps=steps, schedule=MAX_STEPS)


def thinking_steps_needed(k: int, animation_asked: bool) -> int:
    """How many thinking steps this run computes: the curve shown is the last animation frame at or
    before k; the figure's animation (up to MAX_STEPS) only once its play button or slider was
    pressed for this context. Most of a click's time went into the 100-step trajectory nobody played."""
    if animation_asked:
        return MAX_STEPS
    return max(s for s in curve_frames(MAX_STEPS) if s <= int(k))


@st.cache_data(show_spinner=False, max_entries=64)
def _bayes_band(task: dict, points: tuple, xs: tuple) -> tuple[np.ndarray, np.ndarray]:
    prior = prior_from_card(task)
    ctx = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x = np.asarray(xs)
    if isinstance(prior, LinearPrior):
        mean, var = linear_predictive(ctx, x, prior)
        return mean, np.sqrt(var)
    post = sinusoid_posterior(ctx, prior, np.random.default_rng(0), n_samples=20000, n_prior_samples=50000)
    curves = post.curves(x)
    w = np.exp(post.log_w)
    mean = w @ curves
    return mean, np.sqrt(w @ (curves - mean) ** 2 + prior.noise_std**2)


def canvas_panel(rctx: AppContext) -> None:
    ss = st.session_state
    model, box = rctx.model, rctx.box
    pts = list(ss["reg_points"])
    key_pts = tuple(map(tuple, pts))
    t0 = time.perf_counter()
    xs, _, energy, log_density = _grid(rctx.model_key, model, key_pts, box, 100)
    asked = ss.get("_reg_frames_for") == (rctx.model_key, key_pts)
    n_steps = thinking_steps_needed(ss["reg_k"], asked)
    steps, curves = _curves(rctx.model_key, model, key_pts, tuple(xs), n_steps)
    seconds = time.perf_counter() - t0
    kind = ss["reg_view"]
    z = np.exp(log_density) if kind == "density" else energy
    label = "p(y | x, D)" if kind == "density" else "E(y | x, D)"
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    ols = ols_predict(arr, xs) if ss["reg_ols"] else None
    task_card = dict(model.card.get("task") or {})
    bayes = _bayes_band(task_card, key_pts, tuple(xs)) if ss["reg_bayes"] else None
    truth = None
    if ss.get("reg_task"):
        t = ss["reg_task"]
        task, _ = draw_task(_task_prior_card(task_card, t["family"]), t["seed"], 0, box)
        truth = task.mean(xs).numpy()
    all_steps = curve_frames(MAX_STEPS)
    fig = regression_spec(xs, z, label, kind, box, steps, curves, int(ss["reg_k"]),
                            points=arr if pts else None, ols=ols, bayes=bayes, truth=truth,
                            slider_steps=all_steps)

    def on_frames() -> None:  # the play button or the slider was pressed: the whole animation
        ss["_reg_frames_for"] = (rctx.model_key, key_pts)

    plotly_canvas(fig, key=POINTS.canvas, height=620, clickable=True, revision=int(ss["reg_pts_version"]),
                  on_click=click_fragment.on_click(POINTS.on_canvas_click), on_drawn=click_fragment.on_drawn,
                  more_frames=len(steps) < len(all_steps), on_frames=on_frames)
    thinking = ThinkingConfig.from_dict(model.card.get("thinking"))
    info = f"{len(pts)} pair{'s' if len(pts) != 1 else ''} (max {rctx.max_context})"
    info += POINTS.last_click_note()
    info += (f" · thinking: start {thinking.start}, step size {thinking.step_size:g} (card default "
             f"{thinking.steps} steps) · computed in {seconds * 1000:.0f} ms")
    st.caption(info)


def _task_prior_card(model_task: dict, family: str) -> dict:
    """The prior for drawing a task of `family`: the model's own if it matches, else the default."""
    if task_family(model_task) == family:
        return model_task
    return DEFAULT_PRIORS[family].to_card()


def context_panel(box: tuple[float, float], cap: int) -> None:
    lo, hi = box
    POINTS.context_panel(box, f"Values must be finite numbers inside [{lo:g}, {hi:g}]; the model reads "
                              f"at most {cap} pairs.")


def task_panel(model: EnergyTransformer, cap: int) -> None:
    ss = st.session_state
    st.markdown("**Random task** · from the model's training prior when the family matches")
    c1, c2, c3 = st.columns([1.4, 1, 1])
    c1.selectbox("family", list(DEFAULT_PRIORS), key="reg_family", persist_state=KEEP)
    c2.number_input("seed", 0, T.SEED_MAX, key="reg_seed", persist_state=KEEP)
    c3.number_input("points", 1, cap, key="reg_n", persist_state=KEEP)
    st.radio("feed", list(T.REG_FEED_MODES), key="reg_mode", horizontal=True, persist_state=KEEP,
             label_visibility="collapsed")
    d1, d2, d3 = st.columns(3)
    d1.button("Draw", on_click=on_draw_task, key="reg_draw", type="primary", width="stretch")
    queue = ss["reg_feed_queue"]
    if ss["reg_feeding"]:
        d2.button("❚❚ Pause", on_click=lambda: ss.update(reg_feeding=False), key="reg_pause", width="stretch")
    else:
        d2.button("▶ Play", on_click=lambda: ss.update(reg_feeding=True), key="reg_play", width="stretch",
                  disabled=not queue)
    d3.button("Step", on_click=POINTS.feed_one, key="reg_step", width="stretch", disabled=not queue)
    POINTS.feed_status("pair", feed_ticker)


def on_draw_task() -> None:
    ss = st.session_state
    fam = ss.get("reg_family", "linear")
    t = {"family": fam, "seed": int(ss.get("reg_seed", 0)), "n": int(ss.get("reg_n", 16))}
    _, pts = draw_task(_task_prior_card(ss["_reg_task_card"], fam), t["seed"], t["n"], ss["_reg_box"])
    ss["reg_task"] = t
    POINTS.feed(pts, ss.get("reg_mode", "all at once") == "all at once")


@st.fragment(run_every=FEED_TICK_S)
def feed_ticker() -> None:
    POINTS.feed_tick(FEED_TICK_S)


def charts_panel(model: EnergyTransformer) -> None:
    card = model.card or {}
    table, curve = card.get("evaluation"), card.get("thinking_curve")
    if not table or "mse" not in table:
        st.caption("This checkpoint's card has no regression evaluation yet: run "
                   "`python -m iclebm evaluate --checkpoint PATH --update-card`.")
        return
    st.caption(f"Held-out evaluation from the card: {table.get('n_tasks')} tasks from the training prior "
               f"({table.get('family')}); {table.get('notes', '')}.")
    c1, c2, c3 = st.columns(3)
    with c1:
        chart(method_curves_figure(table["ns"], table["nll"], "NLL (nats / point)", "NLL of y given x"),
              key="reg_nll_chart")
    with c2:
        chart(method_curves_figure(table["ns"], table["mse"], "MSE", "MSE of ŷ"), key="reg_mse_chart")
    if curve:
        with c3:
            chart(thinking_curve_figure(curve), key="reg_think_chart")
