"""Plotly figure builders for the explorer: arrays in, figures out (no torch, no Streamlit).

Conventions: a square box (lo, hi) shared by both axes; grids are (R, R) arrays with
rows = y and columns = x (cell centres `xs`), as produced by `iclebm.probes.landscape`.
Heatmaps use Viridis with bright = likely: density as is, energy reversed (low energy
bright), so both views read the same way.
"""

from __future__ import annotations

import base64
import functools
import re
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from iclebm.grid import Box
from iclebm.ui.curve_figures import add_line, curve_chart, empty_chart, refit

CONTEXT_COLOR = "#ff4b4b"
LATEST_COLOR = "#ffffff"  # the ring around the newest point (on a black edge)
# Point numbers: small, white with a dark shadow, so they read on every part of a heatmap.
NUMBER_FONT = {"size": 9, "color": "white",
               "shadow": "1px 1px 1px black, -1px -1px 1px black, 1px -1px 1px black, -1px 1px 1px black"}
PARTICLE_COLOR = "#ffffff"
TRUE_COLOR = "rgba(255,255,255,0.85)"
ARROW_COLOR = "rgba(255,255,255,0.75)"
BAYES_COLOR = "rgba(0,255,255,0.9)"
# Plotly's modebar config for every chart and canvas: no "Share chart…" (it uploads the figure to
# Plotly's cloud), no Chart Studio link, no logo; the PNG download stays (at twice the size).
CHART_CONFIG: dict = {
    "displaylogo": False, "showSendToCloud": False, "showEditInChartStudio": False,
    "modeBarButtonsToRemove": ["sendChartToCloud", "editInChartStudio", "select2d", "lasso2d", "autoScale2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
# Log density is floored this far below its peak so that empty space does not stretch
# the colour scale over dozens of nats.
LOG_DENSITY_SPAN = 25.0


def heat_values(
    energy: np.ndarray, log_density: np.ndarray, kind: str = "energy", log: bool = False
) -> tuple[np.ndarray, str]:
    """The array a heatmap shows and its colour-bar title.

    energy: E; energy + log: log10(1 + E - min E) (spreads the low-energy basins);
    density: p = exp(-E)/Z; density + log: log p (floored LOG_DENSITY_SPAN below the peak).
    """
    if kind == "energy":
        e = np.asarray(energy, dtype=np.float64)
        if log:
            return (np.log10(1.0 + e - np.nanmin(e))).astype(np.float32), "log10(1+E-min E)"
        return e.astype(np.float32), "E(x | context)"
    if kind == "density":
        lp = np.asarray(log_density, dtype=np.float64)
        if log:
            return np.maximum(lp, np.nanmax(lp) - LOG_DENSITY_SPAN).astype(np.float32), "log p(x | context)"
        return np.exp(lp).astype(np.float32), "p(x | context)"
    raise ValueError(f"kind must be 'energy' or 'density', got {kind!r}")


def _colorscale(kind: str) -> str:
    return "Viridis_r" if kind == "energy" else "Viridis"


def square_axis(box: Box) -> dict:
    """One axis of a box-shaped picture: the box's range, no grid, not zoomable."""
    return {"range": list(box), "constrain": "domain", "showgrid": False, "zeroline": False,
            "fixedrange": True}


def _square_axes(fig: go.Figure, box: Box, row: int | None = None, col: int | None = None) -> None:
    kw = {"row": row, "col": col} if row is not None else {}
    fig.update_xaxes(**square_axis(box), **kw)
    fig.update_yaxes(**square_axis(box), **kw)


def arrow_segments(
    xy: np.ndarray, uv: np.ndarray, spacing: float, head: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Line coordinates (with NaN breaks) for arrows of length <= 0.9 * spacing.

    Lengths grow with |grad E| on a sqrt scale, so both steep walls and gentle
    slopes stay readable; each arrow is a shaft plus a two-stroke head.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    norm = np.linalg.norm(uv, axis=1)
    ok = np.isfinite(norm) & (norm > 0)
    if not ok.any():
        return np.empty(0), np.empty(0)
    xy, uv, norm = xy[ok], uv[ok], norm[ok]
    scale = np.sqrt(norm / norm.max())
    length = 0.9 * spacing * np.maximum(scale, 0.15)
    d = uv / norm[:, None]
    tip = xy + d * length[:, None]
    hl = head * length[:, None]
    c, s = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))
    left = tip - hl * np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], 1)
    right = tip - hl * np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], 1)
    nan = np.full_like(xy, np.nan)
    # Per arrow: tail, tip, left barb, (break), tip, right barb, (break).
    pts = np.stack([xy, tip, left, nan, tip, right, nan], 1).reshape(-1, 2)
    return pts[:, 0], pts[:, 1]


def arrow_path(xy: np.ndarray, uv: np.ndarray, spacing: float) -> str:
    """The arrows of `arrow_segments` as one SVG path in data coordinates ("M tail L tip L barb M tip
    L barb" per arrow). One layout shape draws in a fraction of the time Plotly needs for a
    line trace with 800 gaps (~40 vs ~140 ms for 400 arrows in Chromium here)."""
    x, y = arrow_segments(xy, uv, spacing)
    if not len(x):
        return ""
    strokes = np.stack([x, y], 1).reshape(-1, 7, 2)[:, [0, 1, 2, 4, 5]]  # without the NaN breaks
    # One C-level format call for all arrows (not one f-string per vertex: ~8 -> ~1 ms for 400).
    one = "M%.3f,%.3fL%.3f,%.3fL%.3f,%.3fM%.3f,%.3fL%.3f,%.3f"
    return (one * len(strokes)) % tuple(strokes.ravel().tolist())


def contour_levels(z: np.ndarray, n: int = 14) -> np.ndarray:
    """n evenly spaced levels strictly inside the finite range of z (none for a flat or empty z)."""
    finite = z[np.isfinite(z)]
    if not finite.size or float(finite.max()) <= float(finite.min()):
        return np.empty(0)
    return np.linspace(float(finite.min()), float(finite.max()), n + 2)[1:-1]


def contour_path(xs: np.ndarray, z: np.ndarray, levels: np.ndarray) -> str:
    """The contour lines of z (rows = y, columns = x, on cell centres xs) at `levels`, as one SVG path
    in data coordinates. Computed here (contourpy, matplotlib's engine) rather than by a Plotly
    contour trace, which traces the lines in the browser: ~55 of ~125 ms of a click's redraw."""
    import contourpy  # a matplotlib dependency

    zz = np.where(np.isfinite(z), z, np.nan).astype(np.float64)
    gen = contourpy.contour_generator(x=np.asarray(xs, np.float64), y=np.asarray(xs, np.float64), z=zz,
                                      line_type=contourpy.LineType.Separate)
    parts = []
    for level in levels:
        for line in gen.lines(float(level)):
            if len(line) < 2:
                continue
            # one C-level format call per line instead of one f-string per vertex (~10x faster)
            parts.append(("M%.3f,%.3f" + "L%.3f,%.3f" * (len(line) - 1)) % tuple(line.ravel().tolist()))
    return "".join(parts)


def context_trace(points: np.ndarray, n_shown: int | None = None, name: str = "context",
                  numbers: bool = True) -> go.Scatter:
    """Context points in order, numbered beside each marker (small, shadowed: readable on any part
    of the heatmap) and on hover; points not yet seen (n_shown) faded."""
    return go.Scatter(_context_dict(points, n_shown, name, numbers))


def _context_dict(points: np.ndarray, n_shown: int | None = None, name: str = "context",
                  numbers: bool = True) -> dict:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    shown = n if n_shown is None else max(0, min(int(n_shown), n))
    colors = [CONTEXT_COLOR if i < shown else "rgba(255,255,255,0.25)" for i in range(n)]
    trace = {
        "type": "scatter", "x": pts[:, 0].tolist(), "y": pts[:, 1].tolist(),
        "mode": "markers+text" if numbers else "markers", "name": name,
        "marker": {"size": 9, "color": colors, "line": {"width": 1.2, "color": "black"}},
        "customdata": list(range(1, n + 1)), "textposition": "top right", "textfont": NUMBER_FONT,
        "hovertext": [("in context" if i < shown else "not yet seen") for i in range(n)],
        "hovertemplate": "point #%{customdata}<br>(%{x:.3f}, %{y:.3f})<br>%{hovertext}<extra></extra>",
        "showlegend": False, "cliponaxis": True,
    }
    if numbers:
        trace["text"] = [str(i + 1) for i in range(n)]
    return trace


def newest_traces(points: np.ndarray, n_shown: int | None = None) -> list[go.Scatter]:
    """A ring around the newest point in view (point n_shown): white on a black edge, so it stands
    out on the dark and the bright (yellow) ends of the colour scale alike."""
    return [go.Scatter(t) for t in _newest_dicts(points, n_shown)]


def _newest_dicts(points: np.ndarray, n_shown: int | None = None) -> list[dict]:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    shown = len(pts) if n_shown is None else max(0, min(int(n_shown), len(pts)))
    if shown == 0:
        return []
    x, y = [float(pts[shown - 1, 0])], [float(pts[shown - 1, 1])]
    ring = {"symbol": "circle-open", "size": 19}
    return [
        {"type": "scatter", "x": x, "y": y, "mode": "markers", "name": "newest (edge)", "hoverinfo": "skip",
         "showlegend": False, "marker": {**ring, "color": "black", "line": {"width": 5}}},
        {"type": "scatter", "x": x, "y": y, "mode": "markers", "name": "newest point", "showlegend": False,
         "marker": {**ring, "color": LATEST_COLOR, "line": {"width": 2.5}},
         "hovertemplate": f"newest: point #{shown}<extra></extra>"},
    ]


def context_traces(
    points: np.ndarray, n_shown: int | None = None, numbers: bool = True
) -> list[go.Scatter]:
    """The context points (numbered) with the newest one ringed, in drawing order (points last)."""
    return [go.Scatter(t) for t in context_dicts(points, n_shown, numbers)]


def context_dicts(points: np.ndarray, n_shown: int | None = None, numbers: bool = True) -> list[dict]:
    """`context_traces` as plain trace dicts (for `FigureSpec` figures)."""
    return [*_newest_dicts(points, n_shown), _context_dict(points, n_shown, numbers=numbers)]


def typed_array(a: np.ndarray) -> dict:
    """A float array as a plotly.js typed-array spec {"dtype", "bdata"[, "shape"]}: what go.Figure
    makes of a numpy array when it serialises, for figures built as plain dicts."""
    a = np.ascontiguousarray(a)
    code = {np.dtype(np.float32): "f4", np.dtype(np.float64): "f8"}.get(a.dtype)
    if code is None or a.size == 0:
        raise TypeError(f"typed_array takes a non-empty float32 or float64 array, got {a.dtype} {a.shape}")
    spec = {"dtype": code, "bdata": base64.b64encode(a.tobytes()).decode()}
    if a.ndim > 1:
        spec["shape"] = ", ".join(str(d) for d in a.shape)
    return spec


def plain(obj: object) -> object:
    """A graph object, dict or list with float arrays as typed arrays and None values dropped: the
    parts of a `FigureSpec`."""
    if hasattr(obj, "to_plotly_json"):
        obj = obj.to_plotly_json()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return typed_array(obj) if obj.dtype.kind == "f" and obj.size else obj.tolist()
    return obj


@functools.lru_cache(maxsize=16)
def colorscale_stops(name: str) -> list:
    """A named colour scale as the [[position, colour], ...] list go.Figure writes (plotly.js has its
    own tables under the same names, not always the same stops)."""
    return [list(stop) for stop in go.Heatmap(colorscale=name).colorscale]


@functools.lru_cache(maxsize=4)
def _template(name: str) -> dict:
    return pio.templates[name].to_plotly_json()


class FigureSpec(dict):
    """A Plotly figure as the plain dict {"data", "layout"[, "frames"]} that go.Figure would serialise
    (the default template included, float arrays as typed arrays), built without go.Figure's
    validation pass: it took ~10 of a click's ~170 ms of server time for a landscape. The canvas sends
    it as is; `figure()` makes the validated go.Figure (tests check that the two serialise alike)."""

    def __init__(self, data: list, layout: dict, frames: list | None = None) -> None:
        layout = plain(layout)
        name = pio.templates.default
        if name and name != "none" and "template" not in layout:
            layout["template"] = _template(name)
        super().__init__(data=plain(data), layout=layout)
        if frames is not None:
            self["frames"] = plain(frames)

    def figure(self) -> go.Figure:
        return go.Figure(self)

    def to_json(self) -> str:
        return pio.to_json(self, validate=False)


def landscape_spec(
    xs: np.ndarray,
    energy: np.ndarray,
    log_density: np.ndarray,
    box: Box,
    *,
    kind: str = "energy",
    log: bool = False,
    contours: bool = True,
    arrows: tuple[np.ndarray, np.ndarray] | None = None,
    arrow_spacing: float | None = None,
    points: np.ndarray | None = None,
    n_shown: int | None = None,
    true_log_density: np.ndarray | None = None,
    bayes: tuple[np.ndarray, np.ndarray] | None = None,
    samples: np.ndarray | None = None,
    title: str | None = None,
    height: int = 620,
) -> FigureSpec:
    """The main canvas: heatmap (+ contours, -grad E arrows, context, true contours, samples), as a
    `FigureSpec` (`landscape_figure` for the go.Figure).

    bayes: (cell centres (R,), log density (R, R)) of the Bayes posterior predictive, drawn as
    dotted contours on its own (coarser) grid."""
    z, label = heat_values(energy, log_density, kind, log)
    xs = np.asarray(xs, dtype=np.float32)
    # Built as one list of traces, shapes and one layout dict: Plotly's update_* calls cost ~20 ms
    # per figure, a third of a click's server time (the figure is redrawn on every click).
    traces: list = [dict(
        type="heatmap", x=typed_array(xs), y=typed_array(xs), z=typed_array(np.asarray(z)),
        colorscale=colorscale_stops(_colorscale(kind)), name=label,
        colorbar={"title": {"text": label, "side": "right"}, "thickness": 12, "len": 0.9},
        hovertemplate="x=%{x:.2f}, y=%{y:.2f}<br>" + label + "=%{z:.3g}<extra></extra>",
    )]
    shapes: list[dict] = []
    if contours:
        path = contour_path(xs, np.asarray(z, dtype=np.float64), contour_levels(np.asarray(z, np.float64)))
        if path:
            shapes.append({"type": "path", "path": path, "xref": "x", "yref": "y", "layer": "above",
                           "name": "contours", "line": {"width": 0.8, "color": "rgba(255,255,255,0.5)"}})
    if true_log_density is not None:
        traces.append(_level_set_trace(xs, true_log_density, TRUE_COLOR, "dash", "true density"))
    if bayes is not None:
        traces.append(_level_set_trace(np.asarray(bayes[0], dtype=np.float32), bayes[1], BAYES_COLOR, "dot",
                                       "Bayes-optimal"))
    if arrows is not None and arrows[0] is not None and len(arrows[0]):
        spacing = arrow_spacing or (box[1] - box[0]) / max(2, int(np.sqrt(len(arrows[0]))))
        path = arrow_path(arrows[0], arrows[1], spacing)
        if path:
            shapes.append({"type": "path", "path": path, "xref": "x", "yref": "y", "layer": "above",
                           "name": "-grad E", "line": {"width": 1.1, "color": ARROW_COLOR}})
    if samples is not None and len(samples):
        s = np.asarray(samples, dtype=np.float32).reshape(-1, 2)
        traces.append(go.Scatter(x=s[:, 0], y=s[:, 1], mode="markers", name="samples", showlegend=False,
                                 marker={"size": 4, "color": PARTICLE_COLOR, "opacity": 0.8},
                                 hoverinfo="skip"))
    if points is not None and len(points):
        traces += context_dicts(points, n_shown)
    axis = square_axis(box)
    layout = {
        "xaxis": axis, "yaxis": {**axis, "scaleanchor": "x", "scaleratio": 1},
        "shapes": shapes or None,  # go.Figure drops an empty list too
        "height": height, "margin": {"l": 40, "r": 10, "t": 36 if title else 10, "b": 30},
        "title": {"text": title, "x": 0.01, "font": {"size": 14}} if title else None,
        "dragmode": False, "hovermode": "closest", "plot_bgcolor": "#111", "uirevision": "canvas",
        "showlegend": False,
    }
    return FigureSpec(traces, layout)


def landscape_figure(*args: Any, **kwargs: Any) -> go.Figure:
    """`landscape_spec` (same arguments) as a go.Figure."""
    return landscape_spec(*args, **kwargs).figure()


def _level_set_trace(xs: np.ndarray, log_density: np.ndarray, color: str, dash: str, name: str) -> go.Contour:
    """Contour lines of a reference log density (true or Bayes) 0.5 ... 9 nats below its top."""
    lp = np.asarray(log_density, dtype=np.float64)
    top = float(np.nanmax(lp))
    return go.Contour(
        x=xs, y=xs, z=np.maximum(lp, top - 12.0).astype(np.float32), showscale=False,
        contours={"coloring": "none", "start": top - 9.0, "end": top - 0.5, "size": 2.0},
        line={"width": 1.6, "color": color, "dash": dash}, hoverinfo="skip", name=name,
    )


def film_strip_figure(
    xs: np.ndarray, log_density: np.ndarray, lengths: Sequence[int], box: Box,
    points: np.ndarray | None = None, selected: int | None = None, log: bool = True,
    height: int = 230,
) -> go.Figure:
    """Small multiples: p(x | first n points) for each n, each panel on its own colour scale."""
    p = len(lengths)
    fig = make_subplots(rows=1, cols=p, subplot_titles=[f"n = {n}" for n in lengths],
                        horizontal_spacing=0.012)
    pts = None if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for i, n in enumerate(lengths):
        lp = np.asarray(log_density[i], dtype=np.float64)
        z = np.maximum(lp, lp.max() - LOG_DENSITY_SPAN) if log else np.exp(lp)
        fig.add_trace(go.Heatmap(x=xs, y=xs, z=z.astype(np.float32), colorscale="Viridis",
                                 showscale=False, hovertemplate=f"n={n}<extra></extra>"), row=1, col=i + 1)
        if pts is not None and n > 0:
            fig.add_trace(go.Scatter(x=pts[:n, 0], y=pts[:n, 1], mode="markers", hoverinfo="skip",
                                     marker={"size": 3, "color": CONTEXT_COLOR}, showlegend=False),
                          row=1, col=i + 1)
        _square_axes(fig, box, row=1, col=i + 1)
        fig.update_xaxes(showticklabels=False, ticks="", showline=False, row=1, col=i + 1)
        fig.update_yaxes(showticklabels=False, ticks="", showline=False, scaleanchor=f"x{i + 1 if i else ''}",
                         row=1, col=i + 1)
    if selected is not None and selected in lengths:
        k = list(lengths).index(selected)
        fig.layout.annotations[k].font = {"color": CONTEXT_COLOR, "size": 13}
    fig.update_layout(height=height, margin={"l": 4, "r": 4, "t": 26, "b": 4}, showlegend=False,
                      plot_bgcolor="rgba(0,0,0,0)")
    return fig


@functools.lru_cache(maxsize=16)
def _colour_table(colorscale: str) -> np.ndarray:
    """(256, 3) RGB of a Plotly colour scale ("_r" reversed); cached: sampling it took ~10 ms."""
    reverse = colorscale.endswith("_r")
    colors = pcolors.sample_colorscale(colorscale[:-2] if reverse else colorscale, np.linspace(0, 1, 256))
    table = np.array([[float(v) for v in re.findall(r"[\d.]+", c)[:3]] for c in colors], dtype=np.float64)
    table = table[::-1] if reverse else table
    table.flags.writeable = False  # shared by every call
    return table


def colormap(
    z: np.ndarray, colorscale: str, zmin: float | None = None, zmax: float | None = None
) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 RGB through a Plotly colour scale (256-entry table)."""
    z = np.asarray(z, dtype=np.float64)
    lo = float(np.nanmin(z)) if zmin is None else zmin
    hi = float(np.nanmax(z)) if zmax is None else zmax
    table = _colour_table(colorscale)
    t = np.clip((z - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    idx = np.nan_to_num(t * 255, nan=0).round().astype(int)
    return table[idx].round().astype(np.uint8)


def contour_mask(z: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """(H, W) bool: pixels on a level crossing of z (1-pixel contour lines, no plotting library)."""
    z = np.asarray(z, dtype=np.float64)
    band = np.digitize(z, np.sort(np.asarray(levels, dtype=np.float64)))
    edge = np.zeros(z.shape, dtype=bool)
    edge[:, 1:] |= band[:, 1:] != band[:, :-1]
    edge[1:, :] |= band[1:, :] != band[:-1, :]
    return edge


def png_data_url(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 -> 'data:image/png;base64,...' (row 0 = top), encoded with zlib only."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def trail_segments(positions: np.ndarray, frame: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Polylines (NaN-separated) through each particle's last `length` frames up to `frame`."""
    start = max(0, frame - length)
    seg = np.asarray(positions[start:frame + 1], dtype=np.float32)  # (L, M, 2)
    if seg.shape[0] < 2:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    m = seg.shape[1]
    pad = np.full((1, m, 2), np.nan, np.float32)
    path = np.concatenate([seg, pad], 0).transpose(1, 0, 2).reshape(-1, 2)  # particle-major
    return path[:, 0], path[:, 1]


def langevin_figure(
    xs: np.ndarray, energy: np.ndarray, log_density: np.ndarray, box: Box,
    positions: np.ndarray, steps: Sequence[int], *, kind: str = "density", log: bool = True,
    points: np.ndarray | None = None, true_log_density: np.ndarray | None = None,
    trails: int = 0, frame_ms: int = 80, height: int = 560,
) -> go.Figure:
    """Particles animated over the landscape with Plotly frames.

    Only the particle trace (and its trail trace) changes per frame. The landscape
    (and the true density's contours) is a static background image, not a trace:
    plotly.js 4 drops heatmap and contour layers while frames play (non-redraw
    frames) or re-creates them every frame (redraw frames, which flickers on a busy
    CPU); a layout image is untouched by frames, so the animation stays cheap.
    """
    positions = np.asarray(positions, dtype=np.float32)
    z, label = heat_values(energy, log_density, kind, log)
    rgb = colormap(z, _colorscale(kind))
    if true_log_density is not None:
        # Contours are traced on the true density's own (finer) grid, the landscape is
        # upsampled to it by nearest neighbour, so the lines stay thin.
        tl = np.asarray(true_log_density, dtype=np.float64)
        size = max(tl.shape[0], rgb.shape[0])
        rgb = rgb[np.arange(size) * rgb.shape[0] // size][:, np.arange(size) * rgb.shape[1] // size]
        tl = tl[np.arange(size) * tl.shape[0] // size][:, np.arange(size) * tl.shape[1] // size]
        top = float(np.nanmax(tl))
        on = contour_mask(tl, np.arange(top - 9.0, top, 2.0))
        rgb[on] = (0.3 * rgb[on] + 0.7 * 255).astype(np.uint8)
    fig = image_figure(rgb, z, label, kind, box)
    if points is not None and len(points):
        fig.add_trace(context_trace(points, numbers=False))  # the particles are the subject here
    _square_axes(fig, box)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_layout(height=height, dragmode=False, hovermode="closest", plot_bgcolor="#111",
                      showlegend=False)
    trail_idx = None
    if trails > 0:
        tx, ty = trail_segments(positions, 0, trails)
        fig.add_trace(go.Scatter(x=tx, y=ty, mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"width": 0.7, "color": "rgba(255,255,255,0.35)"}, name="trails"))
        trail_idx = len(fig.data) - 1
    fig.add_trace(go.Scatter(x=positions[0, :, 0], y=positions[0, :, 1], mode="markers", name="particles",
                             marker={"size": 4.5, "color": PARTICLE_COLOR,
                                     "line": {"width": 0.5, "color": "black"}},
                             hoverinfo="skip", showlegend=False))
    part_idx = len(fig.data) - 1
    frames = []
    for f, step in enumerate(steps):
        data = [go.Scatter(x=positions[f, :, 0], y=positions[f, :, 1])]
        traces = [part_idx]
        if trail_idx is not None:
            tx, ty = trail_segments(positions, f, trails)
            data.insert(0, go.Scatter(x=tx, y=ty))
            traces.insert(0, trail_idx)
        frames.append(go.Frame(data=data, traces=traces, name=str(int(step))))
    fig.frames = frames
    fig.update_layout(margin={"l": 40, "r": 10, "t": 40, "b": 70},
                      **animation_controls(steps, "▶ play", "Langevin step ", frame_ms=frame_ms))
    return fig


def image_figure(rgb: np.ndarray, z: np.ndarray, label: str, kind: str, box: Box) -> go.Figure:
    """A figure whose background is the image rgb (R, R, 3) (row 0 = lowest y) stretched over the
    box, below the traces; an invisible marker carries the colour bar of the values z it shows.

    An image rather than a heatmap trace: plotly.js drops heatmap and contour layers while
    animation frames play, a layout image is untouched by them."""
    image, bar = image_layer(rgb, z, label, kind, box)
    return go.Figure(data=[bar], layout={"images": [image]})


def image_layer(rgb: np.ndarray, z: np.ndarray, label: str, kind: str, box: Box) -> tuple[dict, dict]:
    """The parts of `image_figure` as plain dicts, (layout image, colour-bar trace), for figures built
    in one go.Figure call (each add_* / update_* call on a figure costs milliseconds)."""
    lo, hi = box
    image = {"source": png_data_url(rgb[::-1]), "xref": "x", "yref": "y", "x": lo, "y": hi, "sizex": hi - lo,
             "sizey": hi - lo, "sizing": "stretch", "layer": "below", "xanchor": "left", "yanchor": "top"}
    zmin, zmax = float(np.nanmin(z)), float(np.nanmax(z))
    bar = {"type": "scatter", "x": [None], "y": [None], "mode": "markers", "hoverinfo": "skip",
           "showlegend": False, "name": "colour bar",
           "marker": {"color": [zmin, zmax], "colorscale": colorscale_stops(_colorscale(kind)),
                      "cmin": zmin, "cmax": zmax,
                      "showscale": True, "colorbar": {"title": {"text": label, "side": "right"},
                                                      "thickness": 12, "len": 0.9}}}
    return image, bar


def animation_controls(steps: Sequence[int], play_label: str, slider_prefix: str, *, active: int = 0,
                       frame_ms: int = 80) -> dict:
    """Layout (updatemenus, sliders) for play / pause buttons and a slider over frames named
    str(step); they run in the browser, without Streamlit reruns."""

    def still() -> dict:  # jump to a frame, no transition
        return {"frame": {"duration": 0, "redraw": False}, "mode": "immediate", "transition": {"duration": 0}}

    anim = {"frame": {"duration": frame_ms, "redraw": False}, "transition": {"duration": 0},
            "fromcurrent": True, "mode": "immediate"}
    # The buttons sit at the slider's left end, below the plot: above it they covered the legend.
    return {
        "updatemenus": [{
            "type": "buttons", "direction": "left", "x": 0.0, "y": -0.06, "xanchor": "left",
            "yanchor": "top", "pad": {"t": 30, "r": 6}, "showactive": False,
            "buttons": [
                {"label": play_label, "method": "animate", "args": [None, anim]},
                {"label": "❚❚ pause", "method": "animate", "args": [[None], still()]},
            ],
        }],
        "sliders": [{
            "active": active, "x": 0.3, "len": 0.7, "y": -0.06, "yanchor": "top",
            "currentvalue": {"prefix": slider_prefix, "font": {"size": 12}}, "pad": {"t": 4},
            "steps": [{"label": str(int(s)), "method": "animate", "args": [[str(int(s))], still()]}
                      for s in steps],
        }],
    }


def icl_curve_figure(curve: dict, title: str = "In-context NLL vs context size") -> go.Figure:
    """NLL (nats/point) vs n for the model and the baselines; lower is better. The y-range and the
    legend names follow `iclebm.ui.curve_figures` (out-of-range baselines marked at the edge)."""
    return curve_chart(curve["ns"], curve["nll"], metric="NLL (nats / point)", title=title,
                       stderr={k: v for k, v in (curve.get("stderr") or {}).items() if k == "model"})


def icl_history_figure(curves: dict, height: int = 340) -> go.Figure:
    """The ICL curve of the current weights (bold), earlier refreshes (faint, never fitted), and the
    prior predictive and the oracle as reference lines (and, for a run on a task pool, the prior's
    and the pool's Bayes predictive). curves: ns, prior_predictive, oracle, optional bayes and
    bayes_pool (NLL at each n), curves = [(step, NLL at each n)], oldest first."""
    ns = [int(n) for n in curves["ns"]]
    fig = empty_chart(ns, metric="NLL (nats / point)", title="ICL curve of the current weights",
                      height=height, compact=True)  # beside the loss chart: a narrow column
    history = curves["curves"]
    for step, nll in history[:-1]:
        add_line(fig, "model", nll, label=f"step {step}", background=True, color="#1f77b4", width=1,
                 opacity=0.18, showlegend=False, refit=False)
    for key in ("prior_predictive", "oracle"):
        if curves.get(key) is not None:
            add_line(fig, key, [float(curves[key])] * len(ns), refit=False)
    for key in ("bayes", "bayes_pool"):  # a pool run's two yardsticks, one value per n
        if curves.get(key) is not None:
            add_line(fig, key, [float(v) for v in curves[key]], refit=False)
    if history:
        step, nll = history[-1]
        add_line(fig, "model", nll, label=f"model, step {step}", color="#1f77b4", refit=False)
    fig = refit(fig)
    fig.update_layout(uirevision="icl")
    return fig


def ema(values: Sequence[float], alpha: float = 0.1) -> np.ndarray:
    """Exponential moving average that skips NaN/inf (shows the trend of noisy CD losses)."""
    out = np.empty(len(values))
    acc = np.nan
    for i, v in enumerate(values):
        if np.isfinite(v):
            acc = v if not np.isfinite(acc) else (1 - alpha) * acc + alpha * v
        out[i] = acc
    return out


def loss_figure(history: Sequence[dict], height: int = 320, max_points: int = 300) -> go.Figure:
    """Live training chart: CD loss (raw + smoothed) and mean real vs negative energy."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss (CD, or NLL for exact)", "mean energies"],
                        horizontal_spacing=0.1)
    # A long run is drawn from at most max_points evenly spaced steps (smoothing uses every step):
    # the chart redraws every few seconds in every training session, so its size is kept flat.
    keep = np.unique(np.linspace(0, len(history) - 1, min(len(history), max_points)).astype(int))
    steps = [int(history[i].get("step", i)) for i in keep]
    for col, keys in ((1, ("loss",)), (2, ("e_real", "e_neg"))):
        for key in keys:
            vals = np.array([float(h.get(key, np.nan)) for h in history])
            if key == "e_neg" and history and not any("e_neg" in h for h in history):
                continue  # the exact objective has no negatives
            color = {"loss": "#ff4b4b", "e_real": "#1f77b4", "e_neg": "#ff7f0e"}[key]
            fig.add_trace(go.Scatter(x=steps, y=vals[keep], mode="lines", name=key, opacity=0.3,
                                     line={"color": color, "width": 1}, showlegend=False), row=1, col=col)
            fig.add_trace(go.Scatter(x=steps, y=ema(vals)[keep], mode="lines",
                                     name=f"{key} (smoothed)", line={"color": color, "width": 2.2}),
                          row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, margin={"l": 40, "r": 10, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": -0.3}, uirevision="loss")
    return fig
