"""A Plotly canvas that reports exact clicked data coordinates (Streamlit components v2).

Why a component: `st.plotly_chart(on_select=...)` returns nothing for clicks on a
heatmap, and a dense invisible scatter would snap clicks to its nodes. Here the
browser maps the click pixel through the axes' own pixel->data transforms
(`xaxis.p2d`, `yaxis.p2d`), so a point lands exactly where the user clicked.

plotly.js comes from the `plotly` Python package, never from the network. It is ~4.8 MB.
With Streamlit's static file serving on (`.streamlit/config.toml`), the app copies it once into
`static/` beside app.py and a tiny "loader" element adds a `<script src>` for it: the browser
caches the file (and its compiled code) across page loads, so a new tab does not receive and
parse 4.8 MB of inline JavaScript over the websocket. Where that folder cannot be written (or
static serving is off), the loader carries the bundle inline instead (`get_plotlyjs()`), a
separate constant element that Streamlit's forward-message cache sends once per session.

The canvas also renders figures with animation frames (the Langevin animation):
`Plotly.react` takes `frames`, and the figure's own play/pause buttons and slider
run in the browser without Streamlit reruns.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

from iclebm.ui.figures import CHART_CONFIG

LOADER_NAME = "iclebm.plotlyjs"
CANVAS_NAME = "iclebm.click_canvas"

_CANVAS_HTML = '<div class="iclebm-canvas"></div>'
_CANVAS_CSS = """
.iclebm-canvas { width: 100%; }
.iclebm-canvas.clickable .nsewdrag { cursor: crosshair !important; }
"""

# The canvas script. `component` is Streamlit's argument object: data (from Python),
# parentElement (the mount root), setTriggerValue (one-shot event to Python).
_CANVAS_JS = r"""
function waitForPlotly(timeoutMs) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const poll = () => {
      if (window.Plotly) return resolve(window.Plotly);
      if (performance.now() - t0 > timeoutMs) return reject(new Error("plotly.js did not load"));
      setTimeout(poll, 20);
    };
    poll();
  });
}

// Map a mouse event to data coordinates through the axes' own transforms.
function eventToData(gd, ev) {
  const fl = gd._fullLayout;
  if (!fl || !fl.xaxis || !fl.yaxis) return null;
  const xa = fl.xaxis, ya = fl.yaxis;
  const rect = gd.getBoundingClientRect();
  const px = ev.clientX - rect.left - xa._offset;
  const py = ev.clientY - rect.top - ya._offset;
  if (px < 0 || py < 0 || px > xa._length || py > ya._length) return null;  // outside the plot area
  return { x: xa.p2d(px), y: ya.p2d(py), px: px, py: py };
}

// Plotly.react keeps a figure's frames on the first draw but drops them on a redraw that replots
// the figure (new traces: a click, a drawn task), and the play button then had nothing to play.
// Put them back when the count is off.
function restoreFrames(Plotly, gd, frames) {
  const have = ((gd._transitionData && gd._transitionData._frames) || []).length;
  if (!frames.length || have === frames.length) return undefined;
  return (have ? Plotly.deleteFrames(gd) : Promise.resolve()).then(() => Plotly.addFrames(gd, frames));
}

// A colour bar's length is a share of the plot area's height, but a square plot in a narrow
// column is shorter than that area (constrain: "domain" shrinks its y domain), so the bar stood up
// to twice as tall as the picture. Fit it to the y axis's actual domain (never longer than
// COLORBAR_LEN, the figures' own length); runs after every plot, so a resize refits it too.
const COLORBAR_LEN = 0.9;
function fitColorbars(Plotly, gd) {
  const ya = gd._fullLayout && gd._fullLayout.yaxis;
  if (!ya || !ya.domain) return;
  const len = Math.min(COLORBAR_LEN, ya.domain[1] - ya.domain[0]);
  const y = (ya.domain[0] + ya.domain[1]) / 2;
  gd._iclebmColorbar = { len: len, y: y };  // the next figure starts with it (presetColorbars)
  const off = (cb) => cb && cb.orientation !== "h" && Math.abs(cb.len - len) > 0.02;
  const heat = [], marker = [];
  (gd._fullData || []).forEach((t) => {
    if (t.showscale && off(t.colorbar)) heat.push(t.index);
    else if (t.marker && t.marker.showscale && off(t.marker.colorbar)) marker.push(t.index);
  });
  if (heat.length) Plotly.restyle(gd, { "colorbar.len": len, "colorbar.y": y, "colorbar.yanchor": "middle" },
                                  heat);
  if (marker.length) Plotly.restyle(gd, { "marker.colorbar.len": len, "marker.colorbar.y": y,
                                          "marker.colorbar.yanchor": "middle" }, marker);
}

// A new figure for the same canvas (a click) comes with the figure's own colour bar length; fitting
// it after Plotly.react is a second full redraw (restyle), so give it the length fitted last time
// before drawing. fitColorbars still corrects it if the plot's domain changed.
function presetColorbars(gd, data) {
  const cb = gd._iclebmColorbar;
  if (!cb) return;
  const fit = (c) => Object.assign(c, { len: cb.len, y: cb.y, yanchor: "middle" });
  data.forEach((t) => {
    if (t.colorbar && t.colorbar.orientation !== "h") fit(t.colorbar);
    if (t.marker && t.marker.colorbar && t.marker.colorbar.orientation !== "h") fit(t.marker.colorbar);
  });
}

// A square plot (scaleanchor) in a column narrower than the figure is tall keeps its width and
// centres itself in the height it was given, leaving an empty band above and below it (130 px
// each on the Density page at 1280 px). Fit the figure's height to the plot instead: drop the
// y axis's unused pixels, or give back height (up to the requested one) when a wider column lets
// the x axis use more. Figures whose axes fill their area are left alone. Runs after every plot,
// so a resize refits it; the 2-px tolerance stops it from chasing its own rounding.
function fitHeight(Plotly, gd, root, requested) {
  const fl = gd._fullLayout, xa = fl && fl.xaxis, ya = fl && fl.yaxis;
  if (!xa || !ya || !fl._size || !ya._length || !xa._length) return undefined;
  // Small multiples (the film strip) are left alone: their square panels share the width, so
  // fitting the first one's height changes the others' and the refit never settles.
  if (((fl._subplots || {}).cartesian || []).length > 1) return undefined;
  const spareY = fl._size.h - ya._length;
  const spareX = fl._size.w - xa._length;
  let want = fl.height;
  if (ya.scaleanchor === "x" && spareY > 2) want = fl.height - spareY;
  else if (ya.scaleanchor === "x" && spareX > 2 && fl.height < requested)
    want = Math.min(requested, fl.height + spareX * (ya._length / xa._length));
  want = Math.round(want);
  if (Math.abs(want - fl.height) <= 2) return undefined;
  // The plot's width can depend on the height (a colour bar's or the legend's margin grows with it),
  // so a fit can undo itself: 517 px left 7 px of height spare, 510 px 7 px of width, and the two
  // relayouts alternated forever in promise callbacks, freezing the tab (a Regression context of two
  // points). A height already tried for this figure at this width is not tried again.
  const tried = (root._iclebmFitTried = root._iclebmFitTried || new Set());
  const key = Math.round(fl.width) + "x" + want;
  if (tried.has(key)) return undefined;
  tried.add(key);
  root._iclebmFit = { requested: requested, height: want };  // the next redraw starts at this height
  root.style.height = want + "px";
  return Plotly.relayout(gd, { height: want });
}

// Pausing an animation (or moving its slider) while it plays makes Plotly.animate reject the
// promise of the interrupted run, with no reason. The figure's own buttons and slider start that
// run inside plotly.js (Plots.executeAPICommand re-rejects it), so no caller of ours can attach a
// .catch: the rejection is caught here instead, on the window, and only when a canvas has just
// reported "plotly_animationinterrupted" (or an animation control was just pressed) and the reason
// is Plotly's empty one. Anything else still reaches the console.
const INTERRUPT_WINDOW_MS = 5000;  // a loaded machine can deliver the rejection seconds later
if (!window.__iclebmAnimationGuard) {
  window.__iclebmAnimationGuard = true;
  window.addEventListener("unhandledrejection", (ev) => {
    const at = window.__iclebmInterruptedAt;
    if (ev.reason === undefined && at !== undefined && performance.now() - at < INTERRUPT_WINDOW_MS) {
      ev.preventDefault();
      window.__iclebmInterruptionsCaught = (window.__iclebmInterruptionsCaught || 0) + 1;
    }
  });
}

export default function (component) {
  const { data, parentElement, setTriggerValue, setStateValue } = component;
  const root = parentElement.querySelector(".iclebm-canvas");
  if (!root || !data) return;
  const height = data.height || 600;
  const fit = root._iclebmFit;  // the height fitHeight chose for this requested height, if any
  const shown = fit && fit.requested === height ? fit.height : height;
  root.style.height = shown + "px";
  root.classList.toggle("clickable", !!data.clickable);
  root.dataset.revision = String(data.revision);
  // Per-canvas memory that survives re-renders even if Streamlit rebuilds the root.
  const store = (window.__iclebmCanvases = window.__iclebmCanvases || {});
  const mem = (store[data.canvas_id] = store[data.canvas_id] || {});
  let cancelled = false;

  // Clicks not yet applied by Python: each trigger carries all of them, because
  // Streamlit keeps only the newest trigger when several queue up during a busy run.
  mem.pending = (mem.pending || []).filter((c) => data.ack === undefined || data.ack === null
                                           || c.seq > data.ack);
  const tArrive = performance.now();
  if (mem.clickT !== undefined) mem.arriveMs = tArrive - mem.clickT;
  waitForPlotly(20000).then((Plotly) => {
    if (cancelled) return;
    if (root._iclebmFigureId === data.figure_id) return finish();  // unchanged: skip parse + redraw
    const spec = JSON.parse(data.figure);
    const layout = Object.assign({}, spec.layout || {}, { height: shown, autosize: true });
    const config = Object.assign({ responsive: true, scrollZoom: false }, data.config || {});
    // The camera button saves a PNG; this one the same picture as SVG (a function, so it cannot
    // travel in CHART_CONFIG's JSON).
    // One button object per canvas: Plotly.react compares the config, and a new function each time
    // counts as a changed config, which makes it redraw the whole plot (~2x a plain react here).
    root._iclebmSvgButton = root._iclebmSvgButton || { name: "toSVG", title: "Download plot as SVG",
      icon: Plotly.Icons["camera-retro"],
      click: (gd) => Plotly.downloadImage(gd, { format: "svg", filename: "iclebm" }) };
    config.modeBarButtonsToAdd = [root._iclebmSvgButton];
    const fig = { data: spec.data || [], layout: layout, frames: spec.frames || [], config: config };
    presetColorbars(root, fig.data);
    root._iclebmFitTried = new Set();  // a new figure may fit any height again (fitHeight)
    return Plotly.react(root, fig).then(() => restoreFrames(Plotly, root, fig.frames)).then(() => {
      if (!root._iclebmWatchesAnimation) {  // once per graph div: react keeps its listeners
        root._iclebmWatchesAnimation = true;
        root.on("plotly_animationinterrupted", () => { window.__iclebmInterruptedAt = performance.now(); });
        root.on("plotly_afterplot", () => {
          fitColorbars(Plotly, root);
          fitHeight(Plotly, root, root, root._iclebmHeight);
        });
      }
      root._iclebmHeight = height;
      fitColorbars(Plotly, root);
      return Promise.resolve(fitHeight(Plotly, root, root, height)).then(finish);
    });
  }).catch((err) => {
    root.textContent = "Could not draw the canvas: " + err;
    reportDrawn();  // the rest of the page still follows the click
  });

  // The answer to a click is on screen (drawn, or unchanged: a refused click): say so once per new
  // acknowledgement, so that Python runs the rest of the page now, not while the browser draws.
  function reportDrawn() {
    const ack = data.ack === undefined ? null : data.ack;
    if (mem.drawnAck === undefined) mem.drawnAck = ack;  // a new page: nothing to report
    else if (data.report_drawn && ack !== null && ack !== mem.drawnAck) {
      mem.drawnAck = ack;
      setTriggerValue("drawn", ack);
    }
  }

  function finish() {
    root._iclebmFigureId = data.figure_id;
    // The play button was pressed while the frames were still a prefix: they have arrived, play now
    // (the same command as the button's own).
    if (!data.more_frames && mem.playWhenLoaded) {
      mem.playWhenLoaded = false;
      const menus = (root.layout && root.layout.updatemenus) || [];
      const play = menus.length && menus[0].buttons && menus[0].buttons[0];
      if (play && window.Plotly) window.Plotly.animate(root, play.args[0], play.args[1]).catch(() => {});
    }
    // Python may stop sending the bundle. Only clickable canvases say so: a state change of a
    // canvas outside a fragment, batched with a click on a canvas inside one, would make
    // Streamlit drop one of the two ("multiple different fragmentIds in a single batch").
    if (!data.plotly_ready && data.clickable) setStateValue("ready", true);
    reportDrawn();
    root.dataset.renderMs = (performance.now() - tArrive).toFixed(1);
    root.dataset.rendered = String(data.revision);
    // Click -> redraw latency, read by the browser test: the click stamps a time,
    // and the first render of a newer revision reports the elapsed milliseconds.
    if (mem.clickT !== undefined && data.revision !== mem.clickRev) {
      const ms = performance.now() - mem.clickT;
      root.dataset.latencyMs = ms.toFixed(1);
      window.__iclebmLatencies = (window.__iclebmLatencies || []).concat([ms]);
      window.__iclebmTimings = (window.__iclebmTimings || []).concat([
        { total: ms, arrive: mem.arriveMs, render: performance.now() - tArrive }]);
      mem.clickT = undefined;
    }
  }

  // Clicks: the press is caught on the canvas in the capture phase (Plotly's drag
  // layer cannot swallow it); the release is caught on window, because Plotly puts a
  // full-page drag cover over everything while the button is down. A press that
  // moves more than a few pixels is a drag, not a click. Streamlit calls this
  // function again on every data change without unmounting, so the previous
  // listeners are removed first and the handlers read the latest data from `root`.
  root._iclebmData = data;
  root._iclebmSet = setTriggerValue;
  if (root._iclebmOff) root._iclebmOff();
  let down = null;
  const onUp = (ev) => {
    window.removeEventListener("pointerup", onUp, true);
    const d = root._iclebmData;
    if (!d || !d.clickable || !down || ev.button !== 0) return;
    const moved = Math.hypot(ev.clientX - down.x, ev.clientY - down.y);
    down = null;
    if (moved > 4) return;
    const p = eventToData(root, ev);
    if (!p) return;
    mem.clickT = performance.now();
    mem.clickRev = d.revision;
    mem.seq = (mem.seq || 0) + 1;
    const click = { x: p.x, y: p.y, seq: mem.seq, t: Date.now() };
    mem.pending = (mem.pending || []).concat([click]);
    root._iclebmSet("click", Object.assign({ clicks: mem.pending.slice() }, click));
  };
  const onDown = (ev) => {
    const d = root._iclebmData;
    const target = ev.target;
    if (!d || !d.clickable || ev.button !== 0) return;
    if (target && target.closest && (target.closest(".modebar") || target.closest(".updatemenu-container")
        || target.closest(".slider-container") || target.closest(".legend"))) return;
    down = { x: ev.clientX, y: ev.clientY };
    window.addEventListener("pointerup", onUp, true);
  };
  // Frames on demand: a figure sent with `more_frames` holds only the first animation frames (those
  // Python computed for the picture). Pressing its play button or slider asks Python for the rest
  // (the "frames" trigger) instead of animating the prefix; the play starts once they are drawn.
  // The press is stopped in the capture phase, before Plotly's own handlers see it.
  const onAnimControl = (ev) => {
    const d = root._iclebmData;
    const t = ev.target;
    if (!t || !t.closest) return;
    const button = t.closest(".updatemenu-button");
    if (!button && !t.closest(".slider-container")) return;
    // A press on play/pause/slider can interrupt a run (or a run not yet started while frames load)
    // before Plotly reports it: its empty rejection is Plotly's, and the guard above may drop it.
    window.__iclebmInterruptedAt = performance.now();
    if (!d || !d.more_frames) return;
    const isPause = !!button && Array.prototype.indexOf.call(root.querySelectorAll(".updatemenu-button"),
                                                              button) === 1;
    if (isPause) {  // pausing before the frames came: do not start playing when they do
      mem.playWhenLoaded = false;
      return;
    }
    ev.stopPropagation();
    ev.preventDefault();
    if (ev.type !== "pointerdown") return;
    mem.playWhenLoaded = !!button;
    if (mem.framesAskedFor !== d.figure_id) {
      mem.framesAskedFor = d.figure_id;
      mem.frameSeq = (mem.frameSeq || 0) + 1;
      root._iclebmSet("frames", { seq: mem.frameSeq });
    }
  };
  const animEvents = ["pointerdown", "mousedown", "touchstart", "click"];
  animEvents.forEach((name) => root.addEventListener(name, onAnimControl, true));
  root.addEventListener("pointerdown", onDown, true);
  root._iclebmOff = () => {
    animEvents.forEach((name) => root.removeEventListener(name, onAnimControl, true));
    root.removeEventListener("pointerdown", onDown, true);
    window.removeEventListener("pointerup", onUp, true);
  };
  return () => {
    cancelled = true;
  };
}
"""


_SCRIPT_LOADER_JS = """
export default function () {
  if (window.Plotly || window.__iclebmPlotlyScript) return;
  const s = document.createElement("script");
  s.src = new URL(%s, window.location.origin).href;
  window.__iclebmPlotlyScript = s;
  document.head.appendChild(s);  // the canvas waits for window.Plotly (waitForPlotly)
}
"""


@lru_cache(maxsize=1)
def static_plotly_url() -> str | None:
    """The URL path of plotly.js under Streamlit's static serving, copying it there once; None
    where static serving is off or the app's static/ folder cannot be written."""
    if not st.get_option("server.enableStaticServing"):
        return None
    source = plotly_bundle()
    name = source.name if source.parent == ASSETS else f"plotly-{plotly.__version__}.min.js"
    target = Path(__file__).resolve().parents[2] / "static" / name  # app.py's folder
    try:
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            target.parent.mkdir(exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)  # atomic: a browser never fetches half a file
    except OSError:
        return None
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return "/" + "/".join(p for p in (base, "app", "static", name) if p)


@lru_cache(maxsize=1)
def _plotly_loader_js() -> str:
    url = static_plotly_url()
    if url is not None:
        return _SCRIPT_LOADER_JS % json.dumps(url)
    # The bundle sets window.Plotly itself; the empty default export makes it a component.
    return plotly_bundle().read_text(encoding="utf-8") + "\nexport default function () {}\n"


ASSETS = Path(__file__).parent / "assets"


def plotly_bundle() -> Path:
    """The plotly.js file the canvases load: the shipped cartesian bundle (heatmap, contour, scatter,
    bar: every trace a canvas draws; 1.5 MB instead of 4.8 MB to fetch and compile on each page
    load) when it is the version the installed `plotly` package writes figures for, else that
    package's full bundle."""
    from plotly.offline import get_plotlyjs_version

    shipped = ASSETS / f"plotly-cartesian-{get_plotlyjs_version()}.min.js"
    return shipped if shipped.exists() else Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _components() -> tuple[Callable[..., Any], Callable[..., Any]]:
    # Registering again with identical content is a no-op, so this can run every rerun.
    loader = st.components.v2.component(LOADER_NAME, js=_plotly_loader_js())
    # Not style-isolated: plotly.js injects its CSS into document.head, which a shadow
    # root would not see (modebar, hover labels, cursors would break).
    canvas = st.components.v2.component(
        CANVAS_NAME, html=_CANVAS_HTML, css=_CANVAS_CSS, js=_CANVAS_JS, isolate_styles=False
    )
    return loader, canvas


def figure_payload(fig: go.Figure | dict) -> str:
    """The figure as JSON text (numpy arrays travel as compact base64 typed arrays). A plain dict (a
    `FigureSpec` from `iclebm.ui.figures`) goes as it is, unvalidated."""
    return pio.to_json(fig, validate=False) if isinstance(fig, dict) else fig.to_json(validate=False)


_fragment = threading.local()  # each session's script runs in a thread of its own


@contextmanager
def fragment_body() -> Iterator[None]:
    """Wrap the body of an `st.fragment` that draws canvases: until plotly.js is in the browser they
    load it in the fragment's own body, because a fragment's own rerun may not write to the sidebar
    (StreamlitInvalidLayoutContextError; e.g. the Train page opened first, its live view ticking)."""
    before = getattr(_fragment, "inside", False)
    _fragment.inside = True
    try:
        yield
    finally:
        _fragment.inside = before


def _plotly_ready() -> bool:
    """Whether a canvas in this session has already drawn, i.e. the browser holds window.Plotly."""
    if st.session_state.get("_iclebm_plotly_ready"):
        return True
    for value in st.session_state.values():
        if isinstance(value, dict) and value.get("ready") is True:
            st.session_state["_iclebm_plotly_ready"] = True
            return True
    return False


def plotly_canvas(
    fig: go.Figure | dict | str,
    *,
    key: str,
    height: int = 600,
    clickable: bool = True,
    revision: int = 0,
    figure_id: str | None = None,
    on_click: Callable[[], None] | None = None,
    more_frames: bool = False,
    on_frames: Callable[[], None] | None = None,
    on_drawn: Callable[[], None] | None = None,
) -> dict | None:
    """Render `fig`; return the last click as {"x", "y", "seq", "t"} in data coordinates, or None.

    `on_click` runs as a callback before the next script run (read the clicks with
    `new_clicks(key)`: all not applied yet, none twice), so state changes it makes are drawn
    in that same run.
    `figure_id` lets the browser skip redrawing an unchanged figure.
    `more_frames`: the figure's animation frames are only the first ones; pressing its play button or
    slider runs `on_frames` (and reruns), which should send the figure again with all of them.
    `on_drawn` runs (and reruns) once the browser has drawn the answer to a click, i.e. a render
    whose click acknowledgement is new (`iclebm.ui.click_fragment`).
    """
    loader, canvas = _components()
    ready = _plotly_ready()
    if not ready:
        # Until a canvas reports that it has drawn, the page gets the bundle (once per
        # browser thanks to the message cache; later runs skip even the hashing). It sits
        # at the end of the sidebar, so dropping it later shifts no main-area element;
        # a fragment's own rerun may not write there, so it then goes in the fragment's body.
        if getattr(_fragment, "inside", False):
            loader(key=f"{key}-plotlyjs", height=0)
        else:
            with st.sidebar:
                loader(key=f"{key}-plotlyjs", height=0)
    payload = fig if isinstance(fig, str) else figure_payload(fig)
    data = {
        "figure": payload,
        "height": int(height),
        "clickable": bool(clickable),
        "revision": int(revision),
        "figure_id": figure_id or str(hash(payload)),
        "canvas_id": key,
        "plotly_ready": ready,
        "ack": st.session_state.get(_ack_key(key)),  # the browser forgets clicks up to this seq
        "config": CHART_CONFIG,
        "more_frames": bool(more_frames),
        "report_drawn": on_drawn is not None,
    }
    result = canvas(key=key, data=data, height="content",  # the root sets its own (fitted) height
                     on_click_change=on_click or (lambda: None),
                    on_ready_change=lambda: None, on_frames_change=on_frames or (lambda: None),
                    on_drawn_change=on_drawn or (lambda: None))
    return _as_click(getattr(result, "click", None))


def chart(fig: go.Figure, *, key: str) -> None:
    """A plain (not clickable) chart through the canvas component instead of st.plotly_chart: it gets
    the canvas's SVG download beside the PNG one, and a page of canvases never makes the browser load
    Streamlit's own Plotly chunk (~3 s of its main thread here)."""
    plotly_canvas(fig, key=key, height=int(fig.layout.height or 400), clickable=False)


def clicked_point(key: str) -> dict | None:
    """The click trigger of canvas `key` inside its on_click callback (None if absent)."""
    state = st.session_state.get(key)
    value = None
    if isinstance(state, dict):
        value = state.get("click")
    else:
        value = getattr(state, "click", None)
    return _as_click(value)


def _ack_key(key: str) -> str:
    return f"_{key}_clicks_done"


def new_clicks(key: str) -> list[dict]:
    """Inside canvas `key`'s on_click callback: every click not applied yet, oldest first.

    Marks them applied (the next render tells the browser to forget them). Use this rather
    than `clicked_point`: two clicks during one busy run reach Python as one trigger.
    """
    clicks, ack = unapplied_clicks(clicked_point(key), st.session_state.get(_ack_key(key)))
    st.session_state[_ack_key(key)] = ack
    return clicks


def unapplied_clicks(payload: dict | None, ack: int | None) -> tuple[list[dict], int | None]:
    """(clicks with seq > ack in seq order, new ack) from a click payload {x, y, seq, clicks: [...]}.

    A payload whose newest seq is below `ack` comes from a browser that restarted its
    count (a new page): it is taken whole.
    """
    if payload is None:
        return [], ack
    raw = payload.get("clicks")
    items = [c for c in (raw if isinstance(raw, list) else [payload]) if _as_click(c) is not None]
    seqs = [c.get("seq") for c in items]
    if not items or not all(isinstance(q, int) and not isinstance(q, bool) for q in seqs):
        return ([payload] if _as_click(payload) else []), ack  # no sequence numbers: just this click
    if ack is not None and max(seqs) < ack:
        ack = None
    fresh = sorted((c for c in items if ack is None or c["seq"] > ack), key=lambda c: c["seq"])
    return fresh, max(seqs) if ack is None else max(ack, *seqs)


def _as_click(value: Any) -> dict | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict) or "x" not in value or "y" not in value:
        return None
    return value
