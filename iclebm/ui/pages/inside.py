"""Inside: what the model does with the context. Click a query location; see how it attends to
each context point in every layer and head, how much each point moves its energy (leave one
out), a map of the plane by the point that dominates; then compare in-context learning with
gradient descent on the weights ("contexts to weights").

The context is the one the Density page edits (shared). URL (share link): the properties of
`iclebm.ui.page_tables.INSIDE` that differ from their defaults (pts, mix, q, mode, layer, head,
k, lr, short, obj), plus the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from iclebm.card import is_regression
from iclebm.grid import grid_axis
from iclebm.models.energy import EnergyTransformer
from iclebm.objectives import OBJECTIVES, objective_label
from iclebm.probes import ctx2weights as C
from iclebm.probes import inspector as I
from iclebm.ui import compute, share
from iclebm.ui import inside_figures as F
from iclebm.ui import page_tables as T
from iclebm.ui import state as S
from iclebm.ui.canvas import chart, fragment_body, new_clicks, plotly_canvas
from iclebm.ui.context import context_for_model, current_mixture, restore_link
from iclebm.ui.guard import flash, guarded, show_flash
from iclebm.ui.jobs.finetune import FineTuneJob
from iclebm.ui.models import AppContext
from iclebm.ui.page_state import MEAN, Table

PAGE = "inside"
CANVAS_KEY = "inside_canvas"
KEEP = "session"
MAP_RES = 60  # attention-map grid (about 0.1 s for 32 points, one thread)
INFLUENCE_RES = 40  # influence-map grid: N leave-one-out contexts x R^2 queries (60x60: about 6 s)
CANVAS_RES = 80
C2W_RES = 60  # display grid of the contexts-to-weights densities (and their distances)
HELDOUT_N = 500
HELDOUT_SEED = 2024
REFRESH_S = 1.0
MODE_LABELS = {"query": "one query", "attention": "attention map", "influence": "influence map"}


def render(ctx: AppContext) -> None:
    if is_regression((ctx.model.card or {}).get("task")):
        st.warning("The selected model is a regression model (E(y | x, D)); the Inside page explores density "
                   "models. Pick one in the sidebar (e.g. mog2d), or open the Regression page.")
        return
    table = page_table(ctx)
    init_state(table)
    restore_link(table)
    ss = st.session_state
    pts = context_for_model(ctx.max_context)
    if ss.get("in_query") is None:
        ss["in_query"] = _default_query(pts)
    share.publish(table, page_values())  # before drawing: the address bar never lags behind the page
    st.markdown("### Inside the model")
    st.caption("Click the plane to place a **query** q. Each small panel is one attention head: the context "
               "points are sized and coloured by the attention q pays them when the model computes E(q | D). "
               "The context is the Density page's.")
    share.show_link_warnings(PAGE)
    show_flash()
    if not isinstance(ctx.model, EnergyTransformer):
        kind = type(ctx.model).__name__
        st.info(f"This page inspects energy transformers. The selected model is a {kind}: its queries "
                "never enter the transformer (their density is read out in closed form), so there is no "
                "query attention to show. Choose an energy model in the sidebar.")
        return
    with guarded("The attention inspector"):
        inspector_panel(ctx, pts)
    with guarded("Contexts to weights"):
        c2w_panel(ctx, pts)
    with guarded("Share link"):
        share.publish(table, page_values())


# ---- state and link --------------------------------------------------------------------------


def page_table(ctx: AppContext) -> Table:
    """The page's property table for this model (its box, context cap, layers and heads)."""
    cfg = ctx.model.config
    lo, hi = ctx.box
    return T.INSIDE.bind(points={"lo": lo, "hi": hi, "size": ctx.max_context},
                         in_query={"lo": lo, "hi": hi}, in_layer={"hi": getattr(cfg, "n_layer", 1)},
                         in_head={"hi": getattr(cfg, "n_head", 1)})


def init_state(table: Table) -> None:
    """Widget defaults live in session state (a widget never gets both a default and a state value)."""
    ss = st.session_state
    for p in table.props:
        if p.name not in ("points", "mixture"):  # the context's own (iclebm.ui.context)
            ss.setdefault(p.name, p.default)


def _default_query(pts: list) -> tuple[float, float]:
    if not pts:
        return (0.0, 0.0)
    c = np.asarray(pts, dtype=np.float64).mean(0)
    return (round(float(c[0]), 3), round(float(c[1]), 3))


def _mode() -> str:
    mode = st.session_state.get("in_mode", "query")
    return mode if mode in MODE_LABELS else "query"


def _index(key: str) -> int | None:
    v = st.session_state.get(key, MEAN)
    return None if v == MEAN else int(v) - 1


def page_values() -> dict:
    """The page's state (the property table's values); the model is added by `share.publish`."""
    q = st.session_state.get("in_query")
    return share.session_values(T.INSIDE, in_query=None if q is None else tuple(q))


def on_click() -> None:
    """The newest click becomes the query (several clicks during a busy run: the last one wins)."""
    ss = st.session_state
    for click in new_clicks(CANVAS_KEY):
        point, problem = S.click_to_point(click, ss["_in_box"])
        if problem:
            flash("warning", problem.replace("Click ignored", "Query not moved"))
        else:
            ss["in_query"] = point


# ---- memoised computations ---------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=128)
def _inspection(model_key: str, _model: EnergyTransformer, points: tuple, query: tuple) -> I.Inspection:
    return I.inspect_query(_model, np.asarray(points).reshape(-1, 2), query)


@st.cache_data(show_spinner=False, max_entries=16)
def _attention_map(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple,
                   res: int) -> np.ndarray:
    return I.grid_attention(_model, np.asarray(points).reshape(-1, 2), box, res)


@st.cache_data(show_spinner=False, max_entries=16)
def _influence_map(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple,
                   res: int) -> np.ndarray:
    return I.grid_influence(_model, np.asarray(points).reshape(-1, 2), box, res)


@st.cache_data(show_spinner=False, max_entries=32)
def _reference(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple, res: int,
               heldout: tuple | None) -> C.Reference:
    held = None if heldout is None else np.asarray(heldout).reshape(-1, 2)
    return C.in_context_reference(_model, np.asarray(points).reshape(-1, 2), box, res, held)


# ---- the inspector -----------------------------------------------------------------------------


def inspector_panel(ctx: AppContext, pts: list) -> None:
    ss = st.session_state
    ss["_in_box"] = ctx.box
    cfg = ctx.model.config
    # The mode control needs ~330 px for its three options: at 1280 px with the sidebar open the
    # main column is ~820 px, so its share must stay above 0.4 or "influence map" is cut off.
    c = st.columns([3.4, 0.8, 0.8, 2.0], vertical_alignment="bottom")
    c[0].segmented_control("mode", list(T.MODES), key="in_mode", persist_state=KEEP,
                           format_func=MODE_LABELS.get, required=True, label_visibility="collapsed")
    mode = _mode()
    heat = mode != "query"
    c[1].selectbox("layer", [MEAN, *range(1, cfg.n_layer + 1)], key="in_layer", persist_state=KEEP,
                   disabled=mode != "attention", help="which layer's attention colours the map (or the mean)")
    c[2].selectbox("head", [MEAN, *range(1, cfg.n_head + 1)], key="in_head", persist_state=KEEP,
                   disabled=mode != "attention", help="which head's attention colours the map (or the mean)")
    query = tuple(ss["in_query"])
    c[3].caption(f"query q = ({query[0]:.2f}, {query[1]:.2f}) · {len(pts)} context points · click to move q")
    key_pts = tuple(map(tuple, pts))
    left, right = st.columns([1, 1.25], gap="medium")
    with left:
        if heat and not pts:
            st.info("The context is empty: there is no point to colour the plane by. Add points on the "
                    "Density page.")
        if heat and pts:
            fig, note = _map_figure(ctx, key_pts, query, mode)
        else:
            land = compute.landscape(ctx.model_key, ctx.model, key_pts, ctx.box, CANVAS_RES, 0)
            fig = F.query_canvas_figure(land.xs, land.energy, land.log_density, ctx.box,
                                        np.asarray(pts).reshape(-1, 2), query, height=480)
            note = "log p(x | D) of the context; the cross is the query."
        plotly_canvas(fig, key=CANVAS_KEY, height=480, on_click=on_click,
                      revision=hash((key_pts, query, mode)))
        st.caption(note)
    with right:
        insp = _inspection(ctx.model_key, ctx.model, key_pts, query)
        if not pts:
            st.info("The context is empty: the query can only attend to itself (weight 1 in every head), "
                    "and there is no point to remove.")
        chart(F.attention_grid_figure(insp.points, query, insp.weights, ctx.box, cell=130), key="in_grid")
        st.caption(f"Rows: layers 1–{cfg.n_layer}; columns: heads 1–{cfg.n_head}. Marker area ∝ attention "
                   "weight; the panel title gives the weight of q on itself. E(q | D) = "
                   f"{insp.energy:.3f}; computed in {1000 * insp.seconds:.0f} ms.")
    if pts:
        chart(F.influence_figure(insp.influence), key="in_influence")
        st.caption("Red: removing x_j raises the energy at q (x_j makes q more likely); blue: the reverse. "
                   "All N leave-one-out contexts run as one batch.")


def _map_figure(ctx: AppContext, key_pts: tuple, query: tuple, mode: str):
    res = MAP_RES if mode == "attention" else INFLUENCE_RES
    busy = ("Computing the map…" if mode == "attention" else
            f"Computing the influence map ({len(key_pts)} leave-one-out contexts × {res}×{res} queries)…")
    with st.spinner(busy):
        if mode == "attention":
            weights = _attention_map(ctx.model_key, ctx.model, key_pts, ctx.box, res)
            layer, head = _index("in_layer"), _index("in_head")
            owner = I.dominant_point(I.reduce_heads(weights, layer, head))
            which = (f"layer {layer + 1}" if layer is not None else "mean over layers") + ", " + (
                f"head {head + 1}" if head is not None else "mean over heads")
            note = (f"Each cell is coloured by the context point a query there attends to most ({which}); "
                    "grey: the query attends most to itself.")
            self_index = True
        else:
            infl = _influence_map(ctx.model_key, ctx.model, key_pts, ctx.box, res)
            owner = I.dominant_point(infl)
            note = ("Each cell is coloured by the context point whose removal raises the energy there the "
                    f"most: the point a query there leans on ({res}×{res} grid).")
            self_index = False
    xs = grid_axis(ctx.box, res).astype(np.float32)
    fig = F.dominant_map_figure(xs, owner, ctx.box, np.asarray(key_pts).reshape(-1, 2), query,
                                "most attention" if mode == "attention" else "most influence", self_index,
                                height=480)
    return fig, note


# ---- contexts to weights -------------------------------------------------------------------------


def _heldout() -> tuple[np.ndarray | None, float | None]:
    """Held-out points of the drawn mixture (and their oracle NLL), or (None, None)."""
    mix = current_mixture()
    if mix is None:
        return None, None
    g = torch.Generator().manual_seed(HELDOUT_SEED)
    x = mix.sample(HELDOUT_N, g)
    return x.numpy().astype(np.float64), float(-mix.log_prob(x.double()).mean())


def c2w_panel(ctx: AppContext, pts: list) -> None:
    ss = st.session_state
    st.subheader("Contexts to weights")
    st.caption("Is reading a context like training on it? Left: the frozen model's density p(x | D) with the "
               "context in view. Right: a copy of the same model fine-tuned on D for k Adam steps while it "
               "reads only a short context (by default none). The chart follows their distance as k grows.")
    lo, hi = C.BOUNDS["steps"]
    # Two rows: the objective's name ("exact likelihood (normalised NLL)") needs ~250 px, which a
    # sixth of the ~820 px main column at 1280 px with the sidebar open does not give it.
    c = st.columns([2.2, 1.4, 1.4], vertical_alignment="bottom")
    c += st.columns([1.4, 1, 1, 1.6], vertical_alignment="bottom")
    c[0].selectbox("objective", list(OBJECTIVES), key="in_obj", format_func=objective_label,
                   persist_state=KEEP)
    c[1].slider("steps k", int(lo), int(hi), step=1, key="in_k", persist_state=KEEP)
    c[2].select_slider("learning rate", T.LR_CHOICES, key="in_lr", format_func=lambda v: f"{v:g}",
                       persist_state=KEEP)
    max_short = int(min(C.BOUNDS["short"][1], max(0, len(pts) - 1)))
    if int(ss.get("in_short", 0)) > max_short:
        ss["in_short"] = max_short
    c[3].number_input("short context s", 0, max_short, key="in_short", disabled=max_short == 0,
                      help="while it is fine-tuned (and after) the copy reads the first s points of D as its "
                           "context (0 = an empty context)")
    job: FineTuneJob | None = ss.get("in_job")
    running = job is not None and job.running
    if c[4].button("Run", key="in_run", width="stretch", disabled=not pts or running):
        start_job(ctx, pts)
        st.rerun()
    if c[5].button("Cancel", key="in_cancel", width="stretch", disabled=not running):
        job.stop()  # type: ignore[union-attr]
    if not pts:
        st.info("The context is empty: add points on the Density page (or draw a mixture) to fine-tune on "
                "them.")
        return
    if job is None:
        st.caption("Press Run: the fine-tune runs in the background of this session (about a quarter of a "
                   "second per step for the shipped model); you can cancel it.")
        return
    if running:
        st.fragment(c2w_live, run_every=REFRESH_S)(ctx)
    else:
        c2w_results(ctx)


def c2w_live(ctx: AppContext) -> None:
    """The results, refreshed every REFRESH_S while the job runs; one full rerun when it ends."""
    with fragment_body():
        c2w_results(ctx)
    job: FineTuneJob | None = st.session_state.get("in_job")
    if job is not None and not job.running:
        st.rerun()


def start_job(ctx: AppContext, pts: list) -> None:
    ss = st.session_state
    old: FineTuneJob | None = ss.get("in_job")
    if old is not None:
        old.stop()
    ss.pop("in_snap", None)  # the snapshot slider starts over, following the new run
    ss.pop("_in_snap_newest", None)
    k, lr, objective = int(ss["in_k"]), float(ss["in_lr"]), str(ss["in_obj"])
    cfg = C.FineTuneConfig(steps=k, lr=lr, objective=objective)
    heldout, oracle = _heldout()
    short = [tuple(p) for p in pts[: int(ss["in_short"])]]
    ss["in_job"] = FineTuneJob(ctx.model, np.asarray(pts).reshape(-1, 2), cfg, ctx.box,
                                 short_context=np.asarray(short).reshape(-1, 2), heldout=heldout,
                                 display_resolution=C2W_RES)
    ss["in_job_info"] = {"points": [tuple(p) for p in pts], "short": short, "model_key": ctx.model_key,
                         "heldout": None if heldout is None else tuple(map(tuple, heldout)), "oracle": oracle,
                         "k": k, "lr": lr, "objective": objective}


def c2w_results(ctx: AppContext) -> None:
    ss = st.session_state
    job: FineTuneJob | None = ss.get("in_job")
    info = ss.get("in_job_info")
    if job is None or info is None:
        return
    res = job.poll()
    done_steps = max(0, len(res.losses) - 1)
    if job.running:
        st.progress(min(1.0, done_steps / max(1, info["k"])),
                    text=f"fine-tuning: step {done_steps} of {info['k']}")
    elif res.status == "done":
        st.success(f"Fine-tuned for k = {info['k']} steps in {res.seconds:.1f} s.")
    if res.status in ("diverged", "error"):
        st.error(res.message + " The in-context view is unaffected.")
    elif res.status == "cancelled":
        st.info(res.message)
    if info["points"] != [tuple(p) for p in ss["points"]] or info["model_key"] != ctx.model_key:
        st.warning("The context or the model changed since this run: the comparison below is for the old "
                   "context. Press Run again.")
    pts = np.asarray(info["points"]).reshape(-1, 2)
    ref = _reference(info["model_key"], ctx.model, tuple(info["points"]), ctx.box, C2W_RES, info["heldout"])
    if not res.snapshots:
        st.caption("Waiting for the first snapshot…")
        return
    steps = [s.step for s in res.snapshots]
    # The slider follows the newest snapshot while the run goes on, unless the user moved it back.
    if ss.get("in_snap") not in steps or ss.get("in_snap") == ss.get("_in_snap_newest"):
        ss["in_snap"] = steps[-1]
    ss["_in_snap_newest"] = steps[-1]
    if len(steps) > 1:
        st.select_slider("snapshot k", steps, key="in_snap")
    snap = res.snapshots[steps.index(ss["in_snap"])]
    xs = grid_axis(ctx.box, C2W_RES).astype(np.float32)
    left, right = st.columns([1.6, 1], gap="medium")
    with left:
        chart(F.side_by_side_figure(xs, ref.log_density, snap.log_density, ctx.box, pts,
                                    np.asarray(info["short"]).reshape(-1, 2), snap.step), key="in_side")
    d = C.distances(ref, res.snapshots)
    with right:
        chart(F.distance_figure(d["step"], d["sym_kl"], d["hellinger"], selected=snap.step), key="in_dist")
    def num(v: float | None) -> float:
        return float("nan") if v is None else float(v)

    rows = {"in context p(x | D)": [num(ref.nll_context), num(ref.nll_heldout)],
            f"in weights, k = {snap.step}": [num(snap.nll_context), num(snap.nll_heldout)]}
    if info["oracle"] is not None:
        rows["true mixture"] = [float("nan"), info["oracle"]]  # the truth has no NLL-of-D entry here
    table = pd.DataFrame(rows, index=["NLL of D (nats/pt)", f"NLL of {HELDOUT_N} held-out points"]).T
    if info["heldout"] is None:
        table = table.iloc[:, :1]
    # Written out as text: st.dataframe ignores a Styler's na_rep and shows a missing number as a
    # grey "None" (the true mixture has no NLL-of-D entry), so each cell is its own string.
    st.dataframe(table.map(lambda v: "–" if np.isnan(v) else f"{v:.3f}"), width="stretch",
                 column_config={c: st.column_config.Column(alignment="right") for c in table.columns})
    i = steps.index(snap.step)
    st.caption(
        f"At k = {snap.step}: symmetric KL {d['sym_kl'][i]:.3f} nats, Hellinger {d['hellinger'][i]:.3f} "
        f"(grid {C2W_RES}×{C2W_RES} over the box)."
        + ("" if info["heldout"] is not None else " Held-out NLL needs a context drawn from a mixture "
                                                   "(Density page → Random Gaussian mixture).")
    )
    st.markdown(EXPLAIN)


EXPLAIN = (
    "**What this shows.** Whether, and how fast, gradient steps on D move the weights to a point where "
    "the model *without* D draws the density it draws *with* D in context: one concrete reading of the "
    "contexts-to-weights hypothesis (symmetric KL and Hellinger on the grid, NLL of D and of fresh "
    "points from the same task). **What it does not prove.** A small distance says the two *densities* "
    "agree for this context, not that the network computes them the same way, nor that the weights found "
    "are the w′ of the hypothesis (many weights give one density). k, the learning rate and the "
    "objective change the path. Fine-tuning on |D| points can fit D better than the in-context model "
    "while generalising worse (compare the held-out column). One context is one example, not a law."
)
