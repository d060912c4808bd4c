"""Density: click points onto the plane and watch the frozen model's energy landscape
E(x | context) reshape itself around them; film strip, Langevin sampler and ICL curve.

Speed: the main canvas is computed and sent first in every run (the browser redraws it
while the rest of the page is still being built), and every landscape is memoised by
(model, context, settings), so a widget that does not touch the landscape never
recomputes it.

URL (share link): every property of `iclebm.ui.page_tables.DENSITY` that differs from its
default (the view, overlays, grid, scrubbed prefix, the drawn mixture and the mixture panel's
inputs), plus the model.
"""

from __future__ import annotations

import json

import numpy as np
import streamlit as st
import torch

from iclebm.card import capabilities_of, is_regression, pool_of, prior_of, task_family
from iclebm.dynamics.langevin import SamplerConfig, noise_for_temperature, temperature_of
from iclebm.errors import TaskPoolError
from iclebm.evaluation.bayes import GRID_SHAPE, predictive_grid
from iclebm.evaluation.density import nll_curve_for_task
from iclebm.models.energy import EnergyTransformer
from iclebm.models.mixture import MixtureDensityTransformer
from iclebm.probes import landscape as L
from iclebm.tasks import DENSITY, PROBE_FAMILIES, TaskPool
from iclebm.ui import click_fragment, compute, share
from iclebm.ui import figures as P
from iclebm.ui import page_tables as T
from iclebm.ui import state as S
from iclebm.ui.canvas import chart, figure_payload, plotly_canvas
from iclebm.ui.context import POINTS, current_mixture, set_points, true_density_grid
from iclebm.ui.data_panel import animation_buttons, data_panel, gif_bytes
from iclebm.ui.guard import flash, guarded, show_flash
from iclebm.ui.models import AppContext
from iclebm.ui.page_state import Table

PAGE = "density"
FEED_TICK_S = 0.8
# Widgets keep their values while another page is shown.
KEEP = "session"
# The Langevin sampler's temperature input: noise = sqrt(2 step T) samples exp(-E / T).
TEMP_MIN, TEMP_MAX = 0.05, 5.0
STEP_HELP = ("How far each step moves along −∇E. Smaller steps follow p more faithfully but need more "
             "steps to mix; the default is the checkpoint card's step size.")
TEMP_HELP = ("The noise is set to √(2·step·T), so the particles sample exp(−E/T). T = 1 samples the "
             "model's p(x) itself; T < 1 samples the sharpened p^(1/T) and particles crowd onto the "
             "modes (mode seeking); T > 1 spreads them out.")
REPORT_HELP = ("Mean true log p: the drawn mixture's log-density averaged over the final particles. Exact "
               "samples from the mixture score the value in brackets. Much higher means the particles "
               "crowd the modes (T < 1); much lower means they are spread too wide or have not mixed yet.")


def render(ctx: AppContext) -> None:
    if is_regression((ctx.model.card or {}).get("task")):
        st.warning(f"The selected model ({ctx.option.split(':', 1)[1]}) is a regression model "
                   f"(E(y | x, D), family {task_family(ctx.model.card.get('task'))}); the Density page "
                   "needs a density model. Pick one in the sidebar (e.g. mog2d), or open the Regression "
                   "page.")
        return
    model, model_key, box, max_context = ctx.model, ctx.model_key, ctx.box, ctx.max_context
    table = page_table(model, box, max_context)
    init_state(table)
    follow_model_prior(table, model_key, max_context)
    POINTS.remember(box, max_context)
    restore_link(table)
    POINTS.apply_table_edits()
    POINTS.enforce_cap()
    publish_link(table)  # before drawing: the address bar never lags behind a slow or interrupted run

    st.markdown("### ⚡ In-context energy landscapes")
    st.caption("A frozen transformer reads your points as its context and outputs an energy E(x | context); "
               "exp(−E) is a density that adapts to them. **Click the picture to add a point.**")
    if isinstance(model, MixtureDensityTransformer):
        k = model.config.n_components
        st.caption(f"This model is the parametric peer: its output is a {k}-component Gaussian mixture, "
                   "so E = −log p exactly (no grid normalisation, no temperature); "
                   "the sampler and arrows use the same −∇E.")
    view_controls()
    main_col, side_col = st.columns([1.55, 1], gap="medium")
    with main_col:
        share.show_link_warnings(PAGE)
        show_flash()
        click_fragment.page_run_started()
        click_fragment.canvas_fragment(lambda: canvas_panel(model, model_key, box), "Drawing the landscape",
                                       publish=lambda: publish_link(table))
    with side_col:
        with guarded("Context"):
            context_panel(box, max_context)
        with guarded("Random mixture"):
            mixture_panel(model, max_context)
        with guarded("Probe shapes"):
            probe_panel(max_context)
        with guarded("Your data"):
            data_panel(POINTS, box, max_context, "density", PAGE, model)
    with guarded("Film strip"):
        film_strip_panel(model, model_key, box)
    lcol, rcol = st.columns([1.3, 1], gap="medium")
    with lcol, guarded("Langevin sampler"):
        langevin_panel(model, model_key, box)
    with rcol, guarded("ICL curve"):
        icl_panel(model, model_key, box)
    st.caption("Train a model live, save it or switch to it on the **Train** page.")
    with guarded("Share link"):
        publish_link(table)


# ---- page state and its share link ---------------------------------------------------------


def page_table(model: EnergyTransformer, box: tuple[float, float], max_context: int) -> Table:
    """The page's property table for this model: its box and context cap, and the mixture panel's
    defaults = the model's own training prior (stored for the Draw callback)."""
    prior = prior_mixture_settings(model)
    st.session_state["_prior_mixture"] = prior
    table = T.DENSITY
    defaults = {name: {"default": _slider_value(prior[setting], table[name].lo, table[name].hi,
                                                1 if name == "mix_k" else 0.01)}
                for name, setting in T.MIX_INPUTS.items()}
    return table.bind(points={"lo": box[0], "hi": box[1], "size": max_context}, n_shown={"hi": max_context},
                      mix_n={"hi": max_context, "default": min(32, max_context)}, **defaults)


def init_state(table: Table) -> None:
    ss = st.session_state
    ss.setdefault("feed_queue", [])
    ss.setdefault("feeding", False)
    for p in table.props:
        if p.name not in ("points", "mixture", "n_shown"):  # the context's own (iclebm.ui.context)
            ss.setdefault(p.name, p.default)


def follow_model_prior(table: Table, model_key: str, max_context: int) -> None:
    """A new model: the mixture panel's inputs go back to its training prior (they are its defaults)."""
    ss = st.session_state
    if ss.get("_mix_prior_of") == model_key:
        return
    ss["_mix_prior_of"] = model_key
    for name in T.MIX_INPUTS:
        ss[name] = table[name].default
    ss["mix_n"] = min(int(ss.get("mix_n", table["mix_n"].default)), max_context)


def restore_link(table: Table) -> None:
    """The first time the page runs in a session: its state from the URL (defaults where it is silent)."""
    values = share.restore_once(table)
    if values is None:
        return
    ss = st.session_state
    share.apply(table, values, skip=("points", "n_shown"))
    set_points(values["points"])
    n = values["n_shown"]
    if n is not None and n < len(values["points"]):
        ss["scrub_all"], ss["n_scrub"] = False, n


def page_values() -> dict:
    """The page's state (the property table's values); the model is added by `share.publish`."""
    ss = st.session_state
    n_shown = None if ss["scrub_all"] else int(ss.get("n_scrub", len(ss["points"])))
    return share.session_values(T.DENSITY, n_shown=n_shown)


def publish_link(table: Table) -> None:
    share.publish(table, page_values())


# ---- callbacks (run before the script, so the page drawn next already shows the change) ----
# Clicks, undo / clear, the points table and feeding are `POINTS`'s (iclebm.ui.point_editor).


def on_scrub() -> None:
    ss = st.session_state
    ss["scrub_all"] = int(ss.get("n_scrub", 0)) >= len(ss["points"])


def view_controls() -> None:
    """Two rows, so that every label fits at 1280 px with the sidebar open: the view, grid and Bayes
    overlay, then the four layer toggles."""
    ss = st.session_state
    c1, c2, c3 = st.columns([1.4, 1.0, 2.0], vertical_alignment="center")
    c1.segmented_control("Show", list(T.VIEWS), key="view", persist_state=KEEP, label_visibility="collapsed",
                         required=True)
    c2.selectbox("grid", list(T.RESOLUTIONS), key="resolution", persist_state=KEEP,
                 label_visibility="collapsed",
                 format_func=lambda r: f"{r}×{r}")
    c3.toggle("Bayes-optimal", key="show_bayes", persist_state=KEEP,
              help="Dotted cyan contours: the Bayes posterior predictive p(x | context) under the model's "
                   "training prior, the best any in-context learner trained on it can do.")
    c4, c5, c6, c7 = st.columns(4, vertical_alignment="center")
    c4.toggle("log scale", key="log_scale", persist_state=KEEP)
    c5.toggle("contours", key="contours", persist_state=KEEP)
    c6.toggle("−∇E arrows", key="arrows", persist_state=KEEP)
    c7.toggle("true density", key="show_true", persist_state=KEEP, disabled=ss.get("mixture") is None)


def canvas_panel(model: EnergyTransformer, model_key: str, box: tuple[float, float]) -> None:
    ss = st.session_state
    pts = list(ss["points"])
    n = len(pts)
    n_shown = n if ss["scrub_all"] else max(0, min(int(ss.get("n_scrub", n)), n))
    shown = tuple(pts[:n_shown])
    res = int(ss["resolution"])
    land = compute.landscape(model_key, model, tuple(map(tuple, shown)), box, res, 20 if ss["arrows"] else 0)
    true_lp = true_density_grid(box, res) if ss.get("show_true", True) else None
    bayes = bayes_overlay(model, shown, box) if ss.get("show_bayes") else None
    title = f"{'E' if ss['view'] == 'energy' else 'p'}(x | {n_shown} of {n} points)"
    fig = P.landscape_spec(
        land.xs, land.energy, land.log_density, box, kind=ss["view"], log=bool(ss["log_scale"]),
        contours=bool(ss["contours"]), arrows=(land.arrow_xy, land.arrow_uv) if ss["arrows"] else None,
        points=np.asarray(pts, dtype=np.float64).reshape(-1, 2) if pts else None, n_shown=n_shown,
        true_log_density=true_lp, bayes=bayes, title=title, height=640,
    )
    plotly_canvas(fig, key=POINTS.canvas, height=640, clickable=True, revision=int(ss["pts_version"]),
                  on_click=click_fragment.on_click(POINTS.on_canvas_click), on_drawn=click_fragment.on_drawn)
    info = f"{n} context point{'s' if n != 1 else ''} (max {model.config.max_context})"
    info += POINTS.last_click_note()
    info += f" · landscape {res}×{res} computed in {land.seconds * 1000:.0f} ms"
    st.caption(info, help="Click anywhere on the picture to add a context point there.")


def bayes_overlay(model: EnergyTransformer, shown: tuple, box: tuple[float, float]):
    """(cell centres, log density) of the Bayes predictive under the model's training prior, or None
    with a one-line caption saying why it is not available for this model."""
    caps = capabilities_of(model)
    if not caps.bayes:
        st.caption(f"Bayes-optimal overlay: not available for this model: {caps.why_no_bayes}.")
        return None
    task = (model.card or {}).get("task") or {}
    return predictive_grid(np.asarray(shown, dtype=np.float64).reshape(-1, 2), task, box, resolution=60)


def context_panel(box: tuple[float, float], max_context: int) -> None:
    lo, hi = box
    POINTS.context_panel(box, f"Edit, add or delete rows; values must be finite numbers inside "
                              f"[{lo:g}, {hi:g}]. The model reads at most {max_context} points: beyond that "
                              "the oldest are dropped.")


# The mixture sliders: (key, label, lo, hi, step, setting); a setting is a number or [lo, hi]. Their
# bounds are the property table's.
MIX_SLIDERS = tuple(
    (key, label, int(T.DENSITY[key].lo) if step == 1 else T.DENSITY[key].lo,
     int(T.DENSITY[key].hi) if step == 1 else T.DENSITY[key].hi, step, T.MIX_INPUTS[key])
    for key, label, step in (("mix_k", "components", 1), ("mix_spread", "spread of the means", 0.1),
                             ("mix_width", "component width", 0.01),
                             ("mix_ratio", "aspect ratio (major / minor std)", 0.1)))


def _slider_value(setting: float | int | list, lo: float, hi: float, step: float) -> float | tuple:
    """A setting as its slider shows it, clipped to the slider's range (k and width are ranges)."""
    cast = int if isinstance(step, int) else float
    if isinstance(setting, list):
        return tuple(cast(min(max(v, lo), hi)) for v in setting)
    return cast(min(max(setting, lo), hi))


def prior_mixture_settings(model: EnergyTransformer) -> dict:
    """The model's own training prior as mixture settings (anisotropic priors keep their aspect ratio)."""
    s = L.mixture_settings(prior_of(model, DENSITY, "the random mixture"))
    s.setdefault("ratio", [1.0, 1.0])
    if not isinstance(s["k"], list):
        s["k"] = [s["k"], s["k"]]
    return s


def mixture_panel(model: EnergyTransformer, max_context: int) -> None:
    ss = st.session_state
    prior_settings = ss["_prior_mixture"]
    st.markdown("**Random Gaussian mixture**")
    from_prior = st.toggle("from the model's training prior", key="mix_from_prior",
                           persist_state=KEEP,
                           help="On: tasks are drawn exactly as in training (for mog2d-wide: 1–6 rotated, "
                                "elongated components). Off: set your own prior with the sliders.")
    c1, c2 = st.columns(2)
    for i, (key, label, lo, hi, step, name) in enumerate(MIX_SLIDERS):
        if from_prior:  # the sliders show the model's prior until you take over
            ss[key] = _slider_value(prior_settings[name], lo, hi, step)
        (c1, c2)[i % 2].slider(label, lo, hi, step=step, key=key, disabled=from_prior, persist_state=KEEP)
    c1.number_input("seed", 0, T.SEED_MAX, key="mix_seed", persist_state=KEEP)
    c2.slider("points", 1, max_context, key="mix_n", persist_state=KEEP)
    c2.radio("feed", list(T.FEED_MODES), key="mix_mode", persist_state=KEEP, horizontal=True)
    queue = ss["feed_queue"]
    b1, b2, b3, b4 = st.columns(4)
    b1.button("Draw", type="primary", width="stretch", on_click=on_draw_mixture, key="mix_draw",
              help="Sample a task from these settings and feed its points into the context")
    b2.button("▶ Play", width="stretch", disabled=not queue or ss["feeding"], key="mix_play",
              on_click=on_feed_play)
    b3.button("Pause", width="stretch", disabled=not ss["feeding"], key="mix_pause",
              on_click=on_feed_pause)
    b4.button("Step ▸", width="stretch", disabled=not queue, key="mix_step", on_click=POINTS.feed_one)
    pool = _model_pool(model)
    if pool is not None:  # a pool-trained model: its own training tasks as well as the prior's
        st.button(f"Draw from the training pool (M = {pool.size})", width="stretch", key="mix_draw_pool",
                  on_click=on_draw_pool, args=(pool,),
                  help="Feed points of one of the tasks this model was trained on (task number seed mod M), "
                       "to compare with a fresh task from the prior: memorised or learned to learn?")
    POINTS.feed_status("point", feed_ticker)


def _model_pool(model: EnergyTransformer) -> TaskPool | None:
    """The model's task pool from its card (None for the full prior or a pool that cannot be read)."""
    try:
        return compute.session_memo("density_pool", id(model), lambda: pool_of(model))
    except TaskPoolError:
        return None


def on_draw_pool(pool: TaskPool) -> None:
    ss = st.session_state
    box = ss["_box"]
    index, pts = pool.context(int(ss.get("mix_seed", 0)), int(ss.get("mix_n", 32)))
    ss["mixture"] = None  # not a draw from the mixture settings: no settings to show or share
    flash("info", f"Drew {len(pts)} points of pool task {index + 1} of {pool.size}.")
    at_once = ss.get("mix_mode", "all at once") == "all at once"
    POINTS.feed(np.clip(pts.numpy(), box[0], box[1]).tolist(), at_once)


def drawn_mixture_settings() -> dict:
    """The settings of the next draw: the model's prior, or the sliders when the user took over.
    k is a number when fixed and [lo, hi] when drawn; "ratio" appears only for anisotropic draws."""
    ss = st.session_state
    prior = ss.get("_prior_mixture") or {"k": [3, 3], "spread": 3.0, "width": [0.33, 0.5], "limit": 8.0,
                                         "ratio": [1.0, 1.0]}
    if ss.get("mix_from_prior", True):
        chosen = {name: prior[name] for *_, name in MIX_SLIDERS}
    else:
        chosen = {name: ss.get(key, prior[name]) for key, *_, name in MIX_SLIDERS}
    k = [int(v) for v in chosen["k"]] if isinstance(chosen["k"], (list, tuple)) else [int(chosen["k"])] * 2
    ratio = [float(v) for v in chosen["ratio"]]
    mix = {"k": k[0] if k[0] == k[1] else k, "spread": float(chosen["spread"]),
           "width": [float(v) for v in chosen["width"]], "seed": int(ss.get("mix_seed", 0)),
           "limit": float(prior["limit"])}
    if ratio[1] > 1.0:
        mix["ratio"] = ratio
    return mix


def on_draw_mixture() -> None:
    ss = st.session_state
    box = ss["_box"]
    mix = drawn_mixture_settings()
    _, pts = L.draw_mixture(mix["k"], mix["spread"], tuple(mix["width"]), mix["seed"],
                            int(ss.get("mix_n", 32)), mix["limit"], tuple(mix.get("ratio", (1.0, 1.0))))
    pts = np.clip(pts, box[0], box[1])  # the prior keeps means inside; a far tail point is clamped
    ss["mixture"] = mix
    POINTS.feed(pts.tolist(), ss.get("mix_mode", "all at once") == "all at once")


def on_feed_play() -> None:
    st.session_state["feeding"] = True


def on_feed_pause() -> None:
    st.session_state["feeding"] = False


@st.fragment(run_every=FEED_TICK_S)
def feed_ticker() -> None:
    """Feeds one point per tick while playing; a full rerun then redraws the canvas."""
    POINTS.feed_tick(FEED_TICK_S)


def probe_panel(max_context: int) -> None:
    st.markdown("**Probe shapes** (never seen in training)")
    # The shape's name on a row of its own: in a third of the side column "concentric rings" was cut.
    st.selectbox("shape", sorted(PROBE_FAMILIES), key="probe_family", persist_state=KEEP,
                 label_visibility="collapsed")
    c2, c3 = st.columns(2)
    c2.number_input("points", 1, max_context, min(48, max_context), key="probe_n", persist_state=KEEP,
                    label_visibility="collapsed")
    c3.button("Load", width="stretch", key="probe_load", on_click=on_load_probe)


def on_load_probe() -> None:
    ss = st.session_state
    family = ss.get("probe_family") or sorted(PROBE_FAMILIES)[0]
    pts = L.probe_points(family, int(ss.get("probe_n", 48)), int(ss.get("mix_seed", 0)))
    ss["mixture"], ss["feed_queue"], ss["feeding"] = None, [], False
    kept, msgs = S.add_points([], pts.tolist(), ss["_box"], ss["_max_context"])
    for m in msgs:
        flash("warning", m)
    set_points(kept)


def film_strip_panel(model: EnergyTransformer, model_key: str, box: tuple[float, float]) -> None:
    ss = st.session_state
    pts = list(ss["points"])
    n = len(pts)
    st.subheader("Film strip: the landscape sharpening as points arrive")
    # 36 x 36 panels: small multiples need little resolution, and this run's leftover
    # work delays the next click's redraw.
    strip = compute.film_strip(model_key, model, tuple(map(tuple, pts)), box, 36)
    if n > 0:
        if ss["scrub_all"] or int(ss.get("n_scrub", n)) > n:
            ss["n_scrub"] = n
        st.slider("scrub n on the main canvas", 0, n, key="n_scrub", persist_state=KEEP, on_change=on_scrub,
                  help="Show the landscape after the first n points; the rest fade out on the canvas.")
    selected = n if ss["scrub_all"] else int(ss.get("n_scrub", n))
    context = np.asarray(pts).reshape(-1, 2) if pts else None
    fig = compute.session_memo(
        "film_strip_fig", (model_key, tuple(pts), selected),
        lambda: P.film_strip_figure(strip.xs, strip.log_density, strip.lengths, box, context,
                                    selected=selected))
    chart(fig, key="film_strip")  # the canvas, not st.plotly_chart: see `chart`
    st.caption(f"log p(x | first n points) for n = {', '.join(map(str, strip.lengths))}: one batched "
               f"all-prefix call, {strip.seconds * 1000:.0f} ms.")


def langevin_panel(model: EnergyTransformer, model_key: str, box: tuple[float, float]) -> None:
    ss = st.session_state
    st.subheader("Langevin sampler")
    sampler = SamplerConfig.from_dict((model.card or {}).get("sampler") or {})
    card_step = float(min(max(sampler.step_size, 0.001), 1.0))
    c1, c2, c3 = st.columns(3)
    n_part = c1.number_input("particles", 10, 2000, 300, step=50, key="lv_n", persist_state=KEEP)
    steps = c2.number_input("steps", 1, 1000, int(min(max(sampler.steps, 1), 1000)), step=10, key="lv_steps",
                            persist_state=KEEP)
    seed = c3.number_input("seed", 0, 10**6, 0, key="lv_seed", persist_state=KEEP)
    step_size = c1.number_input("step size", 0.001, 1.0, card_step, format="%.3f", key="lv_step",
                                persist_state=KEEP, help=STEP_HELP)
    temperature = c2.number_input("temperature T", TEMP_MIN, TEMP_MAX, 1.0, step=0.1, format="%.2f",
                                  key="lv_temp", persist_state=KEEP, help=TEMP_HELP)
    init = c3.selectbox("start", L.INIT_KINDS, key="lv_init", persist_state=KEEP,
                        help="uniform over the box, N(0, 3²), or at context points + N(0, 1)")
    noise = noise_for_temperature(float(step_size), float(temperature))
    card_t = temperature_of(card_step, sampler.noise_std)
    c3.button("Card's sampler", key="lv_card_preset", width="stretch", on_click=use_card_sampler,
              args=(card_step, card_t),
              help=f"The checkpoint card's calibrated sampler: step {sampler.step_size:g}, noise "
                   f"{sampler.noise_std:g}, i.e. T = {card_t:.2g}: {temperature_words(card_t)}.")
    trails = c1.toggle("trails", key="lv_trails", persist_state=KEEP, value=False,
                       help="Draw each particle's recent path")
    st.caption(f"noise std = √(2·step·T) = **{noise:.3f}**: T = {temperature:g} "
               f"{temperature_words(float(temperature))}.")
    pts = list(ss["points"])
    n_shown = len(pts) if ss["scrub_all"] else int(ss.get("n_scrub", len(pts)))
    context = pts[:n_shown]
    if c2.button("▶ Run sampler", type="primary", key="lv_run", width="stretch"):
        with st.spinner("Running Langevin chains…"):
            traj = L.langevin_animation(
                model, context, box, n_particles=int(n_part), steps=int(steps), step_size=float(step_size),
                noise_std=noise, grad_clip=sampler.grad_clip, init=init, seed=int(seed), max_frames=60)
        ss["lv_result"] = {"traj": traj, "context": context, "model_key": model_key, "trails": bool(trails),
                           "noise_std": noise}
    res = ss.get("lv_result")
    if not res:
        st.caption("Particles follow x ← x − step·∇E + noise·ε under the current context; press Run, then ▶ "
                   "play in the figure.")
        return
    if res["model_key"] != model_key or res["context"] != context:
        st.caption("The context or model changed since this run: press Run to sample again.")
    traj: L.Trajectory = res["traj"]
    rctx = res["context"]
    mix = current_mixture()

    def figure_json() -> str:
        land = compute.landscape(res["model_key"], model, tuple(map(tuple, rctx)), box, 80, 0)
        true_lp = true_density_grid(box, 240)  # finer than the landscape: thin contour lines in the image
        fig = P.langevin_figure(
            land.xs, land.energy, land.log_density, box, traj.positions, traj.steps.tolist(), kind="density",
            log=True, points=np.asarray(rctx).reshape(-1, 2) if rctx else None, true_log_density=true_lp,
            trails=6 if res["trails"] else 0, height=560)
        return figure_payload(fig)

    # Built once per run of the sampler: an identical payload is also what lets Streamlit's
    # message cache send later reruns as a hash reference instead of ~2 MB of frames.
    payload = compute.session_memo("langevin_fig", (id(traj), json.dumps(ss.get("mixture"))), figure_json)
    plotly_canvas(payload, key="langevin", height=560, clickable=False, revision=0)
    c1, c2 = st.columns([3, 2], vertical_alignment="center")
    c1.caption(f"{traj.positions.shape[1]} particles × {int(traj.steps[-1])} steps in {traj.seconds:.1f} s; "
               f"{len(traj.steps)} frames animate in the browser.")
    stale = res["model_key"] != model_key  # another model's particles over this model's landscape: no GIF
    with c2:
        animation_buttons("Langevin", "langevin", lambda sfx: gif_bytes(model, rctx, "langevin", traj, sfx),
                          "lv", stale,
                          "The model changed since this run: press Run sampler first" if stale else
                          "This run as the figure animates it, drawn on the server (a few seconds)")
    if mix is not None:
        rep = L.sample_report(mix, traj.positions[-1])
        st.markdown(
            f"Final particles vs the true mixture: mean true log p **{rep['particles_mean_log_p']:.2f}** "
            f"(exact samples: {rep['exact_mean_log_p']:.2f}); "
            f"{100 * rep['share_near_a_component']:.0f}% within 3σ of a component.",
            help=REPORT_HELP)


def temperature_words(temperature: float) -> str:
    """What Langevin at temperature T samples, in words (exp(-E/T) = p^(1/T))."""
    if temperature <= 0:
        return "has no noise: plain gradient descent onto the modes"
    if abs(temperature - 1) < 0.005:
        return "samples p(x) itself"
    shape = "sharpened towards the modes (mode seeking)" if temperature < 1 else "flatter than p"
    return f"samples exp(−E/T) = p^{1 / temperature:.3g}, {shape}"


def use_card_sampler(step_size: float, temperature: float) -> None:
    """The preset button: the card's calibrated (step, noise) as (step, T), T clipped to the input's range."""
    st.session_state["lv_step"] = step_size
    st.session_state["lv_temp"] = min(max(round(temperature, 2), TEMP_MIN), TEMP_MAX)


ANISO_CHART_TEST_POINTS = 150


def icl_panel(model: EnergyTransformer, model_key: str, box: tuple[float, float]) -> None:
    ss = st.session_state
    st.subheader("ICL curve")
    mix = current_mixture()
    pts = list(ss["points"])
    if mix is None or not pts:
        st.caption("Draw a random mixture to compare the model's in-context NLL with the Bayes-optimal "
                   "learner, the oracle, KDE and EM baselines as n grows.")
        return
    caps = capabilities_of(model)
    # The anisotropic Bayes predictive integrates shape and rotation per query: there the chart uses
    # fewer test points and the overlay's coarser shape rule (about 15 s at n = 0...64), and says so.
    n_test = ANISO_CHART_TEST_POINTS if caps.bayes and caps.anisotropic else 500
    st.caption(f"NLL of {n_test} fresh points from the drawn mixture, given the first n context points.")
    if not caps.bayes:
        st.caption(f"No Bayes-optimal line for this model: {caps.why_no_bayes}.")
    elif caps.anisotropic:
        st.caption(f"Bayes-optimal for this anisotropic prior integrates every component's shape and "
                   f"rotation: {n_test} test points and a coarser shape rule (about 0.01 nats) keep the "
                   "chart to seconds; `python -m iclebm evaluate` uses the fine rule.")
    sig = (model_key, json.dumps(ss["mixture"], sort_keys=True), tuple(map(tuple, pts)))
    if st.button("Compute ICL curve", key="icl_run"):
        with st.spinner("Evaluating the model and baselines…"):
            ns = L.film_strip_lengths(len(pts))
            curve = nll_curve_for_task(model, mix, torch.tensor(pts, dtype=torch.float32), ns, n_test=n_test,
                                       box=box, resolution=120, seed=0, bayes=caps.bayes,
                                       bayes_shape=GRID_SHAPE)
        ss["icl_result"] = {"sig": sig, "curve": curve}
    res = ss.get("icl_result")
    if res:
        if res["sig"] != sig:
            st.caption("The context or model changed since this curve was computed.")
        chart(P.icl_curve_figure(res["curve"]), key="icl_chart")


