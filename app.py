"""iclebm explorer: click points onto the plane and watch a frozen transformer's energy
landscape E(x | context) reshape itself around them.

    streamlit run app.py

UI only: layout, widgets, session state and wiring. The numbers come from
`iclebm.landscape` (compute), the figures from `iclebm.plots`, state updates from
`iclebm.app_state`, background training from `iclebm.live_training`, and clicks from
the `iclebm.click_canvas` component.

Speed: the main canvas is computed and sent first in every run (the browser redraws
it while the rest of the page is still being built), and every landscape is memoised
by (model, context, settings), so a widget that does not touch the landscape never
recomputes it.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from iclebm import app_state as S
from iclebm import landscape as L
from iclebm import plots as P
from iclebm.checkpoints import (
    CHECKPOINT_DIR,
    DEFAULT_CHECKPOINT,
    box_of,
    checkpoint_bytes,
    list_checkpoints,
    load_checkpoint,
    load_checkpoint_bytes,
    read_card,
    save_checkpoint,
)
from iclebm.click_canvas import clicked_point, figure_payload, plotly_canvas
from iclebm.errors import CheckpointError, IclebmError
from iclebm.evaluate import nll_curve_for_task
from iclebm.live_training import BOUNDS, FAST_DEFAULTS, LiveTrainer
from iclebm.model import EnergyTransformer
from iclebm.sampling import SamplerConfig
from iclebm.tasks import PROBE_FAMILIES, GaussianMixture, MixturePrior

st.set_page_config(page_title="iclebm explorer", page_icon="⚡", layout="wide")

# One intra-op thread: the UI and a live-training thread then each get a core on a
# 2-core machine; two oversubscribed OpenMP pools spin and slow both down several-fold.
if not st.session_state.get("_threads_set"):
    torch.set_num_threads(int(os.environ.get("ICLEBM_TORCH_THREADS", "1")))
    st.session_state["_threads_set"] = True

CHECKPOINTS = Path(os.environ.get("ICLEBM_CHECKPOINT_DIR", str(CHECKPOINT_DIR)))
DEFAULT_PATH = Path(os.environ.get("ICLEBM_CHECKPOINT", str(CHECKPOINTS / DEFAULT_CHECKPOINT.name)))
CANVAS_KEY = "canvas"
FEED_TICK_S = 0.8
TRAIN_REFRESH_S = 2.0


# ---- errors never reach the user as tracebacks ------------------------------------------


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn any failure inside a panel into an st.error message (reruns/stops pass through)."""
    try:
        yield
    except ScriptControlException:
        raise
    except IclebmError as e:
        st.error(f"{what}: {e}")
    except Exception as e:  # noqa: BLE001 - the user must never see a traceback
        st.error(f"{what} failed: {type(e).__name__}: {e}")
        print(traceback.format_exc())  # for the server log, not the page


def flash(level: str, text: str) -> None:
    """Queue a message to show once, next to the canvas (callbacks run before the page)."""
    st.session_state.setdefault("flash", []).append((level, text))


def show_flash() -> None:
    for level, text in st.session_state.pop("flash", []):
        {"error": st.error, "warning": st.warning, "success": st.success}.get(level, st.info)(text)


# ---- models -------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=8)
def _file_model(path: str, mtime: float) -> EnergyTransformer:
    """A checkpoint from disk, shared read-only by all sessions (never trained in place)."""
    model = load_checkpoint(path)
    for p in model.parameters():  # inference only: gradients flow to queries, not weights
        p.requires_grad_(False)
    return model


def file_options() -> dict[str, Path]:
    paths = {p.stem: p for p in list_checkpoints(CHECKPOINTS)}
    if DEFAULT_PATH.exists():
        paths.setdefault(DEFAULT_PATH.stem, DEFAULT_PATH)
    return paths


def model_options() -> list[str]:
    files = [f"file:{name}" for name in sorted(file_options(), key=lambda n: (n != DEFAULT_PATH.stem, n))]
    return files + [f"session:{name}" for name in st.session_state.get("session_models", {})]


def option_label(option: str) -> str:
    kind, name = option.split(":", 1)
    return f"{name}  (checkpoints/)" if kind == "file" else f"{name}  (this session)"


def resolve_model(option: str) -> tuple[EnergyTransformer, str]:
    """(model, cache key) for a selector option; raises CheckpointError with the reason."""
    kind, name = option.split(":", 1)
    if kind == "session":
        entry = st.session_state.get("session_models", {}).get(name)
        if entry is None:
            raise CheckpointError(f"the session model {name!r} is gone")
        return entry["model"], entry["key"]
    path = file_options().get(name)
    if path is None:
        raise CheckpointError(f"no checkpoint named {name!r} in {CHECKPOINTS}")
    mtime = path.stat().st_mtime
    return _file_model(str(path), mtime), f"file:{path}:{mtime}"


def switch_model(option: str) -> None:
    """Select a model for all views. The selector widget already exists in this run, so the
    choice is applied at the top of the next run."""
    st.session_state["_pending_model"] = option
    st.rerun()


def add_session_model(name: str, model: EnergyTransformer) -> str:
    models = st.session_state.setdefault("session_models", {})
    base, i = name, 2
    while name in models:
        name, i = f"{base} ({i})", i + 1
    models[name] = {"model": model.eval(), "key": f"session:{uuid.uuid4().hex}"}
    return f"session:{name}"


# ---- memoised computations (keyed by model key + context + settings) ---------------------


@st.cache_data(show_spinner=False, max_entries=256)
def landscape_cached(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple, res: int,
                     arrow_res: int) -> L.Landscape:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return L.compute_landscape(_model, pts, box, res, arrow_res)


@st.cache_data(show_spinner=False, max_entries=64)
def film_strip_cached(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple,
                      res: int) -> L.FilmStrip:
    return L.compute_film_strip(_model, np.asarray(points, dtype=np.float64).reshape(-1, 2), box, res)


@st.cache_data(show_spinner=False, max_entries=32)
def true_density_cached(means: tuple, stds: tuple, box: tuple, res: int) -> np.ndarray:
    return L.true_log_density(L.mixture_from_params(means, stds), box, res)


def session_memo(name: str, key: Any, build: Callable[[], Any]) -> Any:
    """One-entry memo in session state: rebuild only when `key` changes (figures, per session)."""
    ss = st.session_state
    entry = ss.get(f"_memo_{name}")
    if entry is None or entry[0] != key:
        entry = (key, build())
        ss[f"_memo_{name}"] = entry
    return entry[1]


# ---- session state ---------------------------------------------------------------------------


def init_state() -> None:
    ss = st.session_state
    ss.setdefault("points", [])
    ss.setdefault("pts_version", 0)
    ss.setdefault("scrub_all", True)
    ss.setdefault("mixture", None)  # {"k", "spread", "width", "seed"} of the drawn mixture
    ss.setdefault("feed_queue", [])
    ss.setdefault("feeding", False)
    ss.setdefault("session_models", {})
    ss.setdefault("view", "energy")
    ss.setdefault("log_scale", False)
    ss.setdefault("contours", True)
    ss.setdefault("arrows", True)
    ss.setdefault("resolution", 100)


def set_points(points: list, note: str | None = None, level: str = "info") -> None:
    """Replace the context; bumps the version that keys the table and canvas revision."""
    ss = st.session_state
    ss["points"] = [(float(x), float(y)) for x, y in points]
    ss["pts_version"] += 1
    ss["scrub_all"] = True
    if note:
        flash(level, note)


def current_mixture() -> GaussianMixture | None:
    mix = st.session_state.get("mixture")
    if not mix:
        return None
    task, _ = L.draw_mixture(mix["k"], mix["spread"], tuple(mix["width"]), mix["seed"], 0,
                             mix.get("limit", 8.0))
    return task


def true_density_grid(box: tuple[float, float], res: int) -> np.ndarray | None:
    """The drawn mixture's exact log density on the landscape grid (None without a mixture)."""
    mix = current_mixture()
    if mix is None:
        return None
    means = tuple(map(tuple, mix.means.tolist()))
    return true_density_cached(means, tuple(mix.stds.tolist()), box, res)


def apply_share_link(box: tuple[float, float], max_context: int) -> None:
    """Once per session: restore the context and settings from the URL."""
    ss = st.session_state
    if ss.get("_share_loaded"):
        return
    ss["_share_loaded"] = True
    params = st.query_params.to_dict()
    if not params:
        return
    share, warnings = S.decode_share(params, box, max_context)
    for w in warnings:
        flash("warning", w)
    ss["points"] = share.points
    ss["view"], ss["log_scale"] = share.view, share.log
    ss["contours"], ss["arrows"] = share.contours, share.arrows
    if share.n_shown is not None and share.n_shown < len(share.points):
        ss["scrub_all"], ss["n_scrub"] = False, share.n_shown
    if share.mixture:
        ss["mixture"] = share.mixture
    if share.model:
        option = f"file:{share.model}"
        if option in model_options():
            if ss.get("model_choice") != option:
                switch_model(option)
        else:
            flash("warning", f"The link names the model {share.model!r}, which is not in checkpoints/; "
                             "showing the shipped model.")


def write_share_link(model_option: str) -> None:
    ss = st.session_state
    kind, name = model_option.split(":", 1)
    share = S.ShareState(
        points=list(ss["points"]), view=ss["view"], log=bool(ss["log_scale"]), contours=bool(ss["contours"]),
        arrows=bool(ss["arrows"]), model=name if kind == "file" else None,
        n_shown=None if ss["scrub_all"] else int(ss.get("n_scrub", len(ss["points"]))),
        mixture=ss.get("mixture"),
    )
    q = S.encode_share(share)
    if q != st.query_params.to_dict():
        st.query_params.from_dict(q)


# ---- callbacks (run before the script, so the page drawn next already shows the change) ----


def on_canvas_click() -> None:
    ss = st.session_state
    box, cap = ss["_box"], ss["_max_context"]
    point, problem = S.click_to_point(clicked_point(CANVAS_KEY), box)
    if problem:
        flash("warning", problem)
        return
    assert point is not None
    pts, msg = S.add_point(ss["points"], point[0], point[1], box, cap)
    set_points(pts, msg, "warning")
    ss["last_added"] = point


def on_undo() -> None:
    set_points(S.undo_point(st.session_state["points"]))


def on_clear() -> None:
    st.session_state["feed_queue"], st.session_state["feeding"] = [], False
    st.session_state["mixture"] = None
    set_points([])


def table_key() -> str:
    # The version in the key gives a fresh editor whenever the context changes elsewhere.
    return f"table-{st.session_state['pts_version']}"


def apply_table_edits() -> None:
    """Apply the points table's pending edits before anything is drawn.

    Done in the script body rather than an on_change callback so that edits seeded
    through session state (AppTest) take the same path as edits from the browser.
    """
    ss = st.session_state
    changes = ss.get(table_key())
    if not isinstance(changes, dict) or not any(changes.get(k) for k in ("edited_rows", "added_rows",
                                                                           "deleted_rows")):
        return
    result = S.apply_editor_changes(ss["points"], changes, ss["_box"], ss["_max_context"])
    for m in result.messages:
        flash("warning", m)
    if result.changed:
        set_points(result.points)
    elif not result.pending:
        ss["pts_version"] += 1  # redraw the table from the (unchanged) valid context


def on_scrub() -> None:
    ss = st.session_state
    ss["scrub_all"] = int(ss.get("n_scrub", 0)) >= len(ss["points"])


# ---- panels ---------------------------------------------------------------------------------


def model_sidebar() -> tuple[EnergyTransformer | None, str | None, str | None]:
    """Model selector, card, upload. Returns (model, cache key, option) or Nones if none loads."""
    ss = st.session_state
    st.sidebar.header("Model")
    options = model_options()
    if "_pending_model" in ss:  # set by switch_model() in the previous run
        ss["model_choice"] = ss.pop("_pending_model")
    if not options:
        st.sidebar.error(f"No checkpoints in {CHECKPOINTS}.")
    if ss.get("model_choice") not in options and options:
        preferred = f"file:{DEFAULT_PATH.stem}"
        ss["model_choice"] = preferred if preferred in options else options[0]
    if options:
        st.sidebar.selectbox("Checkpoint", options, key="model_choice", format_func=option_label,
                             help="Shipped checkpoints from checkpoints/, plus models uploaded or trained "
                                  "in this browser session.")
    upload_box()
    model = key = option = None
    if options:
        option = ss["model_choice"]
        try:
            model, key = resolve_model(option)
        except CheckpointError as e:
            st.sidebar.error(f"Could not load {option_label(option)}: {e}")
            ss["model_error"] = str(e)
    if model is not None:
        with st.sidebar.expander("Model card", expanded=False):
            card_summary(model.card, model)
    with st.sidebar.expander("All checkpoints in checkpoints/", expanded=False):
        for name, path in file_options().items():
            try:
                card = read_card(path)
                cfg = card.get("model", {})
                st.markdown(f"**{name}** — {cfg.get('n_layer', '?')} layers × d={cfg.get('d_model', '?')}, "
                            f"max context {cfg.get('max_context', '?')}")
                if card.get("evaluation"):
                    st.json(card["evaluation"], expanded=False)
            except (CheckpointError, OSError) as e:
                st.markdown(f"**{name}** — unreadable card: {e}")
    return model, key, option


def card_summary(card: dict, model: EnergyTransformer) -> None:
    cfg = model.config
    st.markdown(f"**{card.get('name', '?')}** · {cfg.n_layer} layers · d={cfg.d_model} · {cfg.n_head} heads"
                f" · max context {cfg.max_context} · energy scale {cfg.energy_scale:g}")
    training = card.get("training") or {}
    if training:
        st.caption("Training")
        st.json(training, expanded=False)
    if card.get("evaluation"):
        st.caption("Evaluation")
        st.json(card["evaluation"], expanded=False)
    st.caption("Task prior / sampler")
    st.json({"task": card.get("task"), "box": card.get("box"), "sampler": card.get("sampler")},
            expanded=False)


def upload_box() -> None:
    ss = st.session_state
    up = st.sidebar.file_uploader("Upload a checkpoint (.safetensors)", type=None, key="upload",
                                  help="Only safetensors files with an iclebm card are accepted; "
                                       "pickles are refused.")
    if up is None:
        ss.pop("upload_error", None)
        return
    if ss.get("_upload_seen") != up.file_id:
        ss["_upload_seen"] = up.file_id
        try:
            model = load_checkpoint_bytes(up.getvalue(), name=up.name)
        except CheckpointError as e:
            ss["upload_error"] = f"Upload rejected, the current model stays loaded: {e}"
        else:
            ss.pop("upload_error", None)
            for p in model.parameters():
                p.requires_grad_(False)
            flash("success", f"Loaded {up.name}; all views now use it.")
            switch_model(add_session_model(Path(up.name).stem or "upload", model))
    if ss.get("upload_error"):
        st.sidebar.error(ss["upload_error"])


def view_controls() -> None:
    ss = st.session_state
    c1, c2, c3, c4, c5, c6, _ = st.columns([1.3, 0.9, 0.9, 1.1, 1.3, 1.1, 2.2], vertical_alignment="center")
    c1.segmented_control("Show", list(S.VIEWS), key="view", label_visibility="collapsed", required=True)
    c2.toggle("log scale", key="log_scale")
    c3.toggle("contours", key="contours")
    c4.toggle("−∇E arrows", key="arrows")
    c5.toggle("true density", key="show_true", value=True, disabled=ss.get("mixture") is None)
    c6.selectbox("grid", [60, 80, 100, 140, 200], key="resolution", label_visibility="collapsed",
                 format_func=lambda r: f"{r}×{r}")


def canvas_panel(model: EnergyTransformer, model_key: str, box: tuple[float, float]) -> None:
    ss = st.session_state
    pts = list(ss["points"])
    n = len(pts)
    n_shown = n if ss["scrub_all"] else max(0, min(int(ss.get("n_scrub", n)), n))
    shown = tuple(pts[:n_shown])
    res = int(ss["resolution"])
    land = landscape_cached(model_key, model, tuple(map(tuple, shown)), box, res, 20 if ss["arrows"] else 0)
    true_lp = true_density_grid(box, res) if ss.get("show_true", True) else None
    title = f"{'E' if ss['view'] == 'energy' else 'p'}(x | {n_shown} of {n} points)"
    fig = P.landscape_figure(
        land.xs, land.energy, land.log_density, box, kind=ss["view"], log=bool(ss["log_scale"]),
        contours=bool(ss["contours"]), arrows=(land.arrow_xy, land.arrow_uv) if ss["arrows"] else None,
        points=np.asarray(pts, dtype=np.float64).reshape(-1, 2) if pts else None, n_shown=n_shown,
        true_log_density=true_lp, title=title, height=640,
    )
    plotly_canvas(fig, key=CANVAS_KEY, height=640, clickable=True, revision=int(ss["pts_version"]),
                  on_click=on_canvas_click)
    last = ss.get("last_added")
    info = f"{n} context point{'s' if n != 1 else ''} (max {model.config.max_context})"
    if last is not None:
        info += f" · last click added ({last[0]:.3f}, {last[1]:.3f})"
    info += f" · landscape {res}×{res} computed in {land.seconds * 1000:.0f} ms"
    st.caption(info, help="Click anywhere on the picture to add a context point there.")


def context_panel(box: tuple[float, float], max_context: int) -> None:
    ss = st.session_state
    c1, c2 = st.columns(2)
    c1.button("↶ Undo", on_click=on_undo, disabled=not ss["points"], width="stretch", key="undo")
    c2.button("✕ Clear", on_click=on_clear, width="stretch", key="clear",
              disabled=not ss["points"] and not ss["feed_queue"])
    key = table_key()
    pts = ss["points"]
    df = pd.DataFrame({"#": pd.Series(range(1, len(pts) + 1), dtype="Int64"),
                       "x": pd.Series([p[0] for p in pts], dtype=float),
                       "y": pd.Series([p[1] for p in pts], dtype=float)})
    lo, hi = box
    st.data_editor(
        df, key=key, num_rows="dynamic", height=230, width="stretch", hide_index=True, disabled=["#"],
        column_config={
            "#": st.column_config.NumberColumn("#", width="small", help="order in the context"),
            "x": st.column_config.NumberColumn("x", format="%.3f", help=f"in [{lo:g}, {hi:g}]"),
            "y": st.column_config.NumberColumn("y", format="%.3f", help=f"in [{lo:g}, {hi:g}]"),
        },
    )
    st.caption(f"Edit, add or delete rows; values must be finite numbers inside [{lo:g}, {hi:g}]. "
               f"The model reads at most {max_context} points: beyond that the oldest are dropped.")


def mixture_panel(model: EnergyTransformer, max_context: int) -> None:
    ss = st.session_state
    prior = MixturePrior.from_card((model.card or {}).get("task") or {})
    ss["_prior_limit"] = prior.mean_limit
    k_default = prior.n_components if isinstance(prior.n_components, int) else prior.n_components[0]
    spread_default = prior.mean_std if isinstance(prior.mean_std, float) else float(np.mean(prior.mean_std))
    width_default = prior.component_std if isinstance(prior.component_std, tuple) else \
        (prior.component_std, prior.component_std)
    st.markdown("**Random Gaussian mixture** · defaults = the model's training prior")
    c1, c2 = st.columns(2)
    c1.number_input("components", 1, 8, int(k_default), key="mix_k")
    c2.number_input("seed", 0, 10**6, 0, key="mix_seed")
    c1.slider("spread of the means", 0.5, 6.0, float(spread_default), 0.1, key="mix_spread")
    c2.slider("component width", 0.1, 2.0, (float(width_default[0]), float(width_default[1])), 0.01,
              key="mix_width")
    c1.slider("points", 1, max_context, min(32, max_context), key="mix_n")
    c2.radio("feed", ["all at once", "one at a time"], key="mix_mode", horizontal=True)
    queue = ss["feed_queue"]
    b1, b2, b3, b4 = st.columns(4)
    b1.button("Draw", type="primary", width="stretch", on_click=on_draw_mixture, key="mix_draw",
              help="Sample a task from these settings and feed its points into the context")
    b2.button("▶ Play", width="stretch", disabled=not queue or ss["feeding"], key="mix_play",
              on_click=on_feed_play)
    b3.button("Pause", width="stretch", disabled=not ss["feeding"], key="mix_pause",
              on_click=on_feed_pause)
    b4.button("Step ▸", width="stretch", disabled=not queue, key="mix_step", on_click=feed_one)
    if queue:
        st.caption(f"{len(queue)} point(s) still to feed" + (" · playing" if ss["feeding"] else " · paused"))
    if ss["feeding"] and queue:
        feed_ticker()
    elif ss["feeding"]:
        ss["feeding"] = False


def on_draw_mixture() -> None:
    ss = st.session_state
    box = ss["_box"]
    width = ss.get("mix_width", (0.33, 0.5))
    mix = {"k": int(ss.get("mix_k", 3)), "spread": float(ss.get("mix_spread", 3.0)),
           "width": [float(width[0]), float(width[1])], "seed": int(ss.get("mix_seed", 0)),
           "limit": float(ss.get("_prior_limit", 8.0))}
    _, pts = L.draw_mixture(mix["k"], mix["spread"], tuple(mix["width"]), mix["seed"],
                            int(ss.get("mix_n", 32)), mix["limit"])
    pts = np.clip(pts, box[0], box[1])  # the prior keeps means inside; a far tail point is clamped
    ss["mixture"] = mix
    if ss.get("mix_mode", "all at once") == "all at once":
        ss["feed_queue"], ss["feeding"] = [], False
        set_points(pts.tolist())
    else:
        set_points([])
        ss["feed_queue"], ss["feeding"] = pts.tolist(), True
        ss["_last_feed"] = time.monotonic()


def on_feed_play() -> None:
    st.session_state["feeding"] = True


def on_feed_pause() -> None:
    st.session_state["feeding"] = False


def feed_one() -> None:
    ss = st.session_state
    if not ss["feed_queue"]:
        return
    x, y = ss["feed_queue"].pop(0)
    pts, msg = S.add_point(ss["points"], x, y, ss["_box"], ss["_max_context"])
    set_points(pts, msg, "warning")
    ss["_last_feed"] = time.monotonic()


@st.fragment(run_every=FEED_TICK_S)
def feed_ticker() -> None:
    """Feeds one point per tick while playing; a full rerun then redraws the canvas.

    The fragment also runs inside every full run; the clock check keeps those runs
    (including the one each feed triggers) from feeding a second point at once.
    """
    ss = st.session_state
    if not ss.get("feeding") or not ss.get("feed_queue"):
        return
    if time.monotonic() - ss.get("_last_feed", 0.0) < 0.9 * FEED_TICK_S:
        return
    feed_one()
    st.rerun()


def probe_panel(max_context: int) -> None:
    st.markdown("**Probe shapes** (never seen in training)")
    c1, c2, c3 = st.columns([1.6, 1, 1])
    c1.selectbox("shape", sorted(PROBE_FAMILIES), key="probe_family", label_visibility="collapsed")
    c2.number_input("points", 1, max_context, min(48, max_context), key="probe_n",
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
    strip = film_strip_cached(model_key, model, tuple(map(tuple, pts)), box, 36)
    if n > 0:
        if ss["scrub_all"] or int(ss.get("n_scrub", n)) > n:
            ss["n_scrub"] = n
        st.slider("scrub n on the main canvas", 0, n, key="n_scrub", on_change=on_scrub,
                  help="Show the landscape after the first n points; the rest fade out on the canvas.")
    selected = n if ss["scrub_all"] else int(ss.get("n_scrub", n))
    fig = session_memo("film_strip_fig", (model_key, tuple(pts), selected), lambda: P.film_strip_figure(
        strip.xs, strip.log_density, strip.lengths, box, np.asarray(pts).reshape(-1, 2) if pts else None,
        selected=selected))
    st.plotly_chart(fig, width="stretch", config={"displayModeBar": False}, key="film_strip")
    st.caption(f"log p(x | first n points) for n = {', '.join(map(str, strip.lengths))}: one batched "
               f"all-prefix call, {strip.seconds * 1000:.0f} ms.")


def langevin_panel(model: EnergyTransformer, model_key: str, box: tuple[float, float]) -> None:
    ss = st.session_state
    st.subheader("Langevin sampler")
    sampler = SamplerConfig.from_dict((model.card or {}).get("sampler") or {})
    c1, c2, c3 = st.columns(3)
    n_part = c1.number_input("particles", 10, 2000, 300, step=50, key="lv_n")
    steps = c2.number_input("steps", 1, 1000, int(min(max(sampler.steps, 1), 1000)), step=10, key="lv_steps")
    seed = c3.number_input("seed", 0, 10**6, 0, key="lv_seed")
    step_size = c1.number_input("step size", 0.001, 1.0, float(min(max(sampler.step_size, 0.001), 1.0)),
                                format="%.3f", key="lv_step")
    noise = c2.number_input("noise std", 0.0, 2.0, float(min(max(sampler.noise_std, 0.0), 2.0)),
                            format="%.3f", key="lv_noise")
    init = c3.selectbox("start", L.INIT_KINDS, key="lv_init",
                        help="uniform over the box, N(0, 3²), or at context points + N(0, 1)")
    trails = c1.toggle("trails", key="lv_trails", value=False, help="Draw each particle's recent path")
    pts = list(ss["points"])
    n_shown = len(pts) if ss["scrub_all"] else int(ss.get("n_scrub", len(pts)))
    context = pts[:n_shown]
    if c2.button("▶ Run sampler", type="primary", key="lv_run", width="stretch"):
        with st.spinner("Running Langevin chains…"):
            traj = L.langevin_animation(
                model, context, box, n_particles=int(n_part), steps=int(steps), step_size=float(step_size),
                noise_std=float(noise), grad_clip=sampler.grad_clip, init=init, seed=int(seed), max_frames=60)
        ss["lv_result"] = {"traj": traj, "context": context, "model_key": model_key, "trails": bool(trails)}
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
        land = landscape_cached(res["model_key"], model, tuple(map(tuple, rctx)), box, 80, 0)
        true_lp = true_density_grid(box, 240)  # finer than the landscape: thin contour lines in the image
        fig = P.langevin_figure(
            land.xs, land.energy, land.log_density, box, traj.positions, traj.steps.tolist(), kind="density",
            log=True, points=np.asarray(rctx).reshape(-1, 2) if rctx else None, true_log_density=true_lp,
            trails=6 if res["trails"] else 0, height=560)
        return figure_payload(fig)

    # Built once per run of the sampler: an identical payload is also what lets Streamlit's
    # message cache send later reruns as a hash reference instead of ~2 MB of frames.
    payload = session_memo("langevin_fig", (id(traj), json.dumps(ss.get("mixture"))), figure_json)
    plotly_canvas(payload, key="langevin", height=560, clickable=False, revision=0)
    st.caption(f"{traj.positions.shape[1]} particles × {int(traj.steps[-1])} steps in {traj.seconds:.1f} s; "
               f"{len(traj.steps)} frames animate in the browser.")
    if mix is not None:
        rep = L.sample_report(mix, traj.positions[-1])
        st.markdown(
            f"Final particles vs the true mixture: mean true log p **{rep['particles_mean_log_p']:.2f}** "
            f"(exact samples: {rep['exact_mean_log_p']:.2f}); "
            f"{100 * rep['share_near_a_component']:.0f}% within 3σ of a component.")


def icl_panel(model: EnergyTransformer, model_key: str, box: tuple[float, float]) -> None:
    ss = st.session_state
    st.subheader("ICL curve")
    mix = current_mixture()
    pts = list(ss["points"])
    if mix is None or not pts:
        st.caption("Draw a random mixture to compare the model's in-context NLL with the oracle, KDE and "
                   "EM baselines as n grows.")
        return
    st.caption("NLL of 500 fresh points from the drawn mixture, given the first n context points.")
    sig = (model_key, json.dumps(ss["mixture"], sort_keys=True), tuple(map(tuple, pts)))
    if st.button("Compute ICL curve", key="icl_run"):
        with st.spinner("Evaluating the model and baselines…"):
            ns = L.film_strip_lengths(len(pts))
            curve = nll_curve_for_task(model, mix, torch.tensor(pts, dtype=torch.float32), ns, n_test=500,
                                       box=box, resolution=120, seed=0)
        ss["icl_result"] = {"sig": sig, "curve": curve}
    res = ss.get("icl_result")
    if res:
        if res["sig"] != sig:
            st.caption("The context or model changed since this curve was computed.")
        st.plotly_chart(P.icl_curve_figure(res["curve"]), width="stretch", key="icl_chart")


def training_panel(model: EnergyTransformer | None, box: tuple[float, float]) -> None:
    ss = st.session_state
    st.subheader("Live training")
    c = st.columns([1.3, 1, 1, 1, 1, 1])
    mode = c[0].radio("start from", ["scratch (small preset)", "fine-tune the loaded model"], key="tr_mode",
                      disabled=False)
    lr = c[1].select_slider("learning rate", [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2],
                            value=FAST_DEFAULTS["lr"], key="tr_lr", format_func=lambda v: f"{v:g}")
    batch = c[1].number_input("batch (tasks)", *map(int, BOUNDS["batch_size"]), FAST_DEFAULTS["batch_size"],
                              key="tr_batch")
    chains = c[2].number_input("chains / position", *map(int, BOUNDS["chains"]), FAST_DEFAULTS["chains"],
                               key="tr_chains")
    lsteps = c[2].number_input("Langevin steps", *map(int, BOUNDS["langevin_steps"]),
                               FAST_DEFAULTS["langevin_steps"], key="tr_lsteps")
    lstep = c[3].number_input("Langevin step size", *BOUNDS["step_size"], FAST_DEFAULTS["step_size"],
                              format="%.3f", key="tr_lstep")
    lnoise = c[3].number_input("Langevin noise", *BOUNDS["noise_std"], FAST_DEFAULTS["noise_std"],
                               format="%.3f", key="tr_lnoise")
    scratch = mode.startswith("scratch")
    n_layer = c[4].number_input("layers", *map(int, BOUNDS["n_layer"]), FAST_DEFAULTS["n_layer"],
                                key="tr_layers", disabled=not scratch)
    d_model = c[4].select_slider("width d", [8, 16, 32, 48, 64, 96, 128], value=FAST_DEFAULTS["d_model"],
                                 key="tr_d", disabled=not scratch)
    settings = {"lr": lr, "batch_size": batch, "chains": chains, "langevin_steps": lsteps, "step_size": lstep,
                "noise_std": lnoise, "n_layer": n_layer, "d_model": d_model}
    trainer: LiveTrainer | None = ss.get("trainer")
    with c[5]:
        label = "New run" if trainer is None else "Reset (apply settings)"
        if st.button(label, key="tr_new", width="stretch"):
            if trainer is not None:
                trainer.close()
            if not scratch and model is None:
                st.error("Load a model first to fine-tune it.")
            else:
                ss["trainer"] = LiveTrainer("scratch" if scratch else "finetune", settings,
                                            base_model=None if scratch else model)
                st.rerun()
        running = trainer is not None and trainer.running
        if st.button("▶ Play", key="tr_play", width="stretch", disabled=trainer is None or running):
            trainer.play()  # type: ignore[union-attr]
            st.rerun()
        if st.button("❚❚ Pause", key="tr_pause", width="stretch", disabled=not running):
            trainer.pause()  # type: ignore[union-attr]
            st.rerun()
        if st.button("Step ▸", key="tr_step", width="stretch", disabled=trainer is None or running):
            trainer.step(1)  # type: ignore[union-attr]
            trainer.wait_idle(60)  # type: ignore[union-attr]
    if trainer is None:
        st.caption("Press New run to create a trainer; it trains in a background thread of this browser "
                   "session while the rest of the page stays usable.")
        return
    if trainer.running:
        training_live(box)
    else:
        training_static(box)
    training_actions(trainer)


def _training_view(box: tuple[float, float]) -> None:
    ss = st.session_state
    trainer: LiveTrainer | None = ss.get("trainer")
    if trainer is None:
        return
    snap = trainer.poll(with_model=False)
    if snap.message:
        (st.error if snap.status in ("diverged", "error") else st.info)(snap.message)
    left, right = st.columns([1.6, 1])
    with left:
        st.markdown(f"**{snap.status}** · step {snap.step} · {snap.steps_per_s:.1f} steps/s · "
                    f"{trainer.mode} · {'running' if trainer.running else 'paused'}")
        if snap.history:
            st.plotly_chart(P.loss_figure(snap.history), width="stretch", key="loss_chart")
        else:
            st.caption("No steps yet: press Play or Step.")
    with right:
        # The trained model's landscape on the current context, refreshed with the chart.
        memo = ss.get("_train_land")
        stale = memo is None or (memo["step"], memo["points"], memo["run"]) != (snap.step, ss["points"],
                                                                                  id(trainer))
        if stale:
            tmodel = trainer.poll(with_model=True).model
            assert tmodel is not None
            land = L.compute_landscape(tmodel, ss["points"], box, 60, 0)
            memo = {"step": snap.step, "points": list(ss["points"]), "land": land, "run": id(trainer)}
            ss["_train_land"] = memo
        land = memo["land"]
        pts = np.asarray(ss["points"]).reshape(-1, 2) if ss["points"] else None
        fig = P.landscape_figure(land.xs, land.energy, land.log_density, box, kind="density", log=True,
                                 contours=False, points=pts, title=f"trained model at step {memo['step']}",
                                 height=330)
        st.plotly_chart(fig, width="stretch", key="train_landscape", config={"displayModeBar": False})
    if not trainer.running and snap.status == "running":
        st.rerun()


@st.fragment(run_every=TRAIN_REFRESH_S)
def training_live(box: tuple[float, float]) -> None:
    _training_view(box)
    trainer: LiveTrainer | None = st.session_state.get("trainer")
    if trainer is not None and not trainer.running:
        st.rerun()  # stopped (diverged or idle): switch to the static view


@st.fragment
def training_static(box: tuple[float, float]) -> None:
    _training_view(box)


def training_actions(trainer: LiveTrainer) -> None:
    c1, c2, c3, c4 = st.columns([1, 1.3, 1, 1])
    if c1.button("Use for all views", key="tr_use", width="stretch",
                 help="Switch the canvas, film strip, sampler and ICL curve to a snapshot of this model"):
        snap = trainer.poll(with_model=True)
        assert snap.model is not None
        for p in snap.model.parameters():
            p.requires_grad_(False)
        flash("success", f"All views now use the trained model (step {snap.step}).")
        switch_model(add_session_model(f"trained-{trainer.mode}-step{snap.step}", snap.model))
    name = c2.text_input("checkpoint name", value=f"live-{trainer.mode}", key="tr_name",
                         label_visibility="collapsed", placeholder="new checkpoint name")
    if c3.button("Save to checkpoints/", key="tr_save", width="stretch"):
        save_trained(trainer, name)
    stem = _safe_name(name) or "live"

    def weights() -> bytes:  # runs on click, in another thread (no st.* calls)
        snap = trainer.poll(with_model=True)
        assert snap.model is not None
        return checkpoint_bytes(snap.model, trainer.card())

    c4.download_button("Download .safetensors", data=weights,
                       file_name=f"{stem}.safetensors", key="tr_download", width="stretch",
                       mime="application/octet-stream", on_click="ignore")
    c4.download_button("Download card .json", data=lambda: json.dumps(trainer.card(), indent=2),
                       file_name=f"{stem}.json", key="tr_download_card", width="stretch",
                       mime="application/json", on_click="ignore")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip())[:60].strip("._")


def save_trained(trainer: LiveTrainer, name: str) -> None:
    clean = _safe_name(name)
    if not clean:
        st.error("Give the checkpoint a name (letters, digits, - or _).")
        return
    target = CHECKPOINTS / f"{clean}.safetensors"
    if clean == DEFAULT_PATH.stem or target.resolve() == DEFAULT_PATH.resolve():
        st.error(f"{clean} is the shipped checkpoint; it is never overwritten. Pick another name.")
        return
    if target.exists():
        st.error(f"checkpoints/{clean}.safetensors exists already; pick another name.")
        return
    snap = trainer.poll(with_model=True)
    assert snap.model is not None
    card = trainer.card()
    card["name"] = clean
    path = save_checkpoint(snap.model, target, card)
    st.success(f"Saved {path.name} (step {snap.step}) to {CHECKPOINTS}; it is now in the model selector.")


def missing_model_page() -> None:
    st.error(
        f"Could not load a model. The shipped checkpoint is expected at {DEFAULT_PATH}"
        + (f" ({st.session_state['model_error']})" if st.session_state.get("model_error") else "")
        + ". Pick another checkpoint or upload one in the sidebar; or restore the shipped file "
          "(e.g. `git checkout checkpoints/`) and press Retry."
    )
    if st.button("Retry", key="retry_load"):
        st.cache_resource.clear()
        st.rerun()


# ---- page -------------------------------------------------------------------------------------


def main() -> None:
    init_state()
    ss = st.session_state
    model = model_key = option = None
    with guarded("Loading the model"):
        model, model_key, option = model_sidebar()
    if model is None or model_key is None or option is None:
        missing_model_page()
        return
    box = tuple(float(v) for v in box_of(model))
    max_context = int(model.config.max_context)
    ss["_box"], ss["_max_context"] = box, max_context
    apply_share_link(box, max_context)  # type: ignore[arg-type]
    apply_table_edits()
    if len(ss["points"]) > max_context:  # e.g. a smaller model was selected
        pts, msg = S.cap_context(ss["points"], max_context)
        set_points(pts, msg, "warning")

    st.markdown("### ⚡ In-context energy landscapes")
    st.caption("A frozen transformer reads your points as its context and outputs an energy E(x | context); "
               "exp(−E) is a density that adapts to them. **Click the picture to add a point.**")
    view_controls()
    main_col, side_col = st.columns([1.55, 1], gap="medium")
    with main_col:
        show_flash()
        with guarded("Drawing the landscape"):
            canvas_panel(model, model_key, box)  # type: ignore[arg-type]
    with side_col:
        with guarded("Context"):
            context_panel(box, max_context)  # type: ignore[arg-type]
        with guarded("Random mixture"):
            mixture_panel(model, max_context)
        with guarded("Probe shapes"):
            probe_panel(max_context)
    with guarded("Film strip"):
        film_strip_panel(model, model_key, box)  # type: ignore[arg-type]
    lcol, rcol = st.columns([1.3, 1], gap="medium")
    with lcol, guarded("Langevin sampler"):
        langevin_panel(model, model_key, box)  # type: ignore[arg-type]
    with rcol, guarded("ICL curve"):
        icl_panel(model, model_key, box)  # type: ignore[arg-type]
    with guarded("Live training"):
        training_panel(model, box)  # type: ignore[arg-type]
    with guarded("Share link"):
        write_share_link(option)  # type: ignore[arg-type]
        st.sidebar.caption("Share: the address bar always holds a link to this view (points + settings).")


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except ScriptControlException:
        raise
    except Exception as e:  # noqa: BLE001 - last line of defence: never a traceback on the page
        st.error(f"Something went wrong: {type(e).__name__}: {e}")
        print(traceback.format_exc())


_run(main)
