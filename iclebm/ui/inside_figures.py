"""Figure builders for the Inside page: arrays in, Plotly figures out (no torch, no Streamlit).

Grids follow `iclebm.ui.figures`: a square box, (R, R) arrays with rows = y, cell centres xs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclebm.grid import Box
from iclebm.ui.figures import CONTEXT_COLOR, LOG_DENSITY_SPAN, NUMBER_FONT, _square_axes, landscape_figure

QUERY_COLOR = "#00e5ff"
SELF_COLOR = "#888888"
POS_COLOR = "#ff4b4b"  # removing the point raises E: it supports the density at q
NEG_COLOR = "#1f77b4"  # removing it lowers E


def _points(points: np.ndarray | Sequence) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def query_trace(query: Sequence[float] | None, size: float = 13) -> go.Scatter:
    q = [np.nan, np.nan] if query is None else list(query)
    return go.Scatter(x=[q[0]], y=[q[1]], mode="markers", name="query", showlegend=False,
                      marker={"symbol": "x", "size": size, "color": QUERY_COLOR,
                              "line": {"width": 2 if size > 10 else 1, "color": "black"}},
                      hovertemplate="query (%{x:.3f}, %{y:.3f})<extra></extra>")


def query_canvas_figure(
    xs: np.ndarray, energy: np.ndarray, log_density: np.ndarray, box: Box, points: np.ndarray,
    query: Sequence[float] | None, height: int = 520,
) -> go.Figure:
    """The clickable canvas: the landscape of the context with the query marked."""
    fig = landscape_figure(xs, energy, log_density, box, kind="density", log=True, contours=True,
                           points=_points(points), height=height)
    fig.add_trace(query_trace(query))
    return fig


def point_sizes(weights: np.ndarray, smallest: float = 3.0, largest: float = 22.0) -> np.ndarray:
    """Marker sizes with area proportional to the attention weight (weights in [0, 1])."""
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, 1.0)
    return smallest + (largest - smallest) * np.sqrt(w)


Window = tuple[float, float, float, float]  # x lo, x hi, y lo, y hi


def view_window(points: np.ndarray, query: Sequence[float] | None, box: Box, margin: float = 0.15,
                min_half: float = 1.0) -> Window:
    """A square window around the context and the query: their extent plus `margin` of it on each
    side, at least 2 * min_half wide, shifted to lie inside `box`. A context is often a small clump
    in a large box, which the whole box would shrink to a dot under the query mark."""
    pts = _points(points)
    if query is not None and np.all(np.isfinite(np.asarray(query, dtype=np.float64))):
        pts = np.vstack([pts, np.asarray(query, dtype=np.float64).reshape(1, 2)])
    blo, bhi = float(box[0]), float(box[1])
    if not len(pts):
        return blo, bhi, blo, bhi
    lo, hi = pts.min(0), pts.max(0)
    half = min(max(float((hi - lo).max()) / 2 * (1 + 2 * margin), min_half), (bhi - blo) / 2)
    cx, cy = np.clip((lo + hi) / 2, blo + half, bhi - half)
    return float(cx - half), float(cx + half), float(cy - half), float(cy + half)


def attention_grid_figure(
    points: np.ndarray, query: Sequence[float], weights: np.ndarray, box: Box, cell: int = 170,
) -> go.Figure:
    """Layers x heads small canvases: every context point sized and coloured by the attention the
    query pays it; the query is marked (its own weight is in the panel title). The panels show the
    context and the query (`view_window`), not the whole box.

    weights: (L, H, N + 1), the last entry of each row being the self weight.
    """
    w = np.asarray(weights, dtype=np.float64)
    n_layer, n_head, n1 = w.shape
    pts = _points(points)
    if len(pts) != n1 - 1:
        raise ValueError(f"weights have {n1 - 1} context entries but {len(pts)} points were given")
    titles = [f"L{l + 1} H{h + 1} · self {w[l, h, -1]:.2f}" for l in range(n_layer) for h in range(n_head)]
    fig = make_subplots(rows=n_layer, cols=n_head, subplot_titles=titles, horizontal_spacing=0.025,
                        vertical_spacing=0.3 / max(1, n_layer))
    labels = np.arange(1, len(pts) + 1)
    window = view_window(pts, query, box)
    for l in range(n_layer):
        for h in range(n_head):
            row, col = l + 1, h + 1
            if len(pts):
                fig.add_trace(go.Scatter(
                    x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False, customdata=labels,
                    marker={"size": point_sizes(w[l, h, :-1]), "color": w[l, h, :-1], "cmin": 0.0,
                            "cmax": 1.0, "colorscale": "YlOrRd", "line": {"width": 0.8, "color": "#444"}},
                    hovertemplate=f"L{l + 1} H{h + 1}<br>point #%{{customdata}}: %{{marker.color:.3f}}"
                                  "<extra></extra>",
                ), row=row, col=col)
            fig.add_trace(query_trace(query, size=9), row=row, col=col)  # small: it sat over the context
            _square_axes(fig, box, row=row, col=col)
            fig.update_xaxes(range=list(window[:2]), row=row, col=col)
            fig.update_yaxes(range=list(window[2:]), row=row, col=col)
            idx = (l * n_head + h + 1)
            fig.update_xaxes(showticklabels=False, ticks="", row=row, col=col)
            fig.update_yaxes(showticklabels=False, ticks="", scaleanchor=f"x{idx if idx > 1 else ''}",
                             row=row, col=col)
    for a in fig.layout.annotations:
        a.font = {"size": 11, "color": "#333"}
    fig.update_layout(height=cell * n_layer + 30, margin={"l": 4, "r": 4, "t": 24, "b": 4},
                      plot_bgcolor="#f3f3f3", showlegend=False)
    return fig


def influence_figure(influence: np.ndarray, height: int = 260) -> go.Figure:
    """Bars: E(q | D without x_j) - E(q | D) for each context point j (positive: x_j supports q)."""
    v = np.asarray(influence, dtype=np.float64).reshape(-1)
    labels = [f"#{j + 1}" for j in range(len(v))]
    fig = go.Figure(go.Bar(
        x=labels, y=v, marker_color=[POS_COLOR if x >= 0 else NEG_COLOR for x in v],
        hovertemplate="point %{x}<br>ΔE = %{y:.4f}<extra></extra>",
    ))
    fig.update_layout(height=height, margin={"l": 40, "r": 10, "t": 30, "b": 30},
                      title={"text": "Leave-one-out influence: E(q | D without x_j) − E(q | D)",
                             "font": {"size": 13}, "x": 0.01},
                      yaxis_title="ΔE at the query", xaxis={"type": "category"})
    return fig


def position_colors(k: int) -> list[str]:
    """k colours in context order (first: dark blue, last: yellow): a region's colour says how early
    its point came, and its number says which point it is."""
    if k <= 0:
        return []
    return pcolors.sample_colorscale("Plasma", list(np.linspace(0.0, 0.95, k)) if k > 1 else [0.0])


def region_labels(
    xs: np.ndarray, owner: np.ndarray, k: int, min_share: float = 0.004
) -> list[tuple[int, float, float]]:
    """[(index, x, y)]: one label spot per region of `owner` (R, R) covering at least `min_share` of
    the grid, at the region's cell nearest its centroid (inside the region even when it is not
    convex). Labelling regions rather than points keeps the numbers apart: regions do not overlap."""
    own = np.asarray(owner)
    xs = np.asarray(xs, dtype=np.float64)
    gx, gy = np.meshgrid(xs, xs)  # rows = y
    out = []
    for i in range(k):
        cells = own == i
        if cells.sum() < max(1, min_share * own.size):
            continue
        px, py = gx[cells], gy[cells]
        j = int(np.argmin((px - px.mean()) ** 2 + (py - py.mean()) ** 2))
        out.append((i, float(px[j]), float(py[j])))
    return out


def dominant_map_figure(
    xs: np.ndarray, owner: np.ndarray, box: Box, points: np.ndarray, query: Sequence[float] | None,
    what: str, self_index: bool, height: int = 520,
) -> go.Figure:
    """The plane coloured by which context point a query there attends to most (or leans on most).

    owner: (R, R) ints in [0, N) (or N = the query's own key when self_index). Colours follow the
    points' order in the context (`position_colors`, a colour bar says so); each region large
    enough carries its point's number, and each point wears its region's colour.
    """
    pts = _points(points)
    n = len(pts)
    k = n + (1 if self_index else 0)
    if k == 0:
        raise ValueError("no context points to colour the plane by")
    colors = position_colors(n) + ([SELF_COLOR] if self_index else [])
    own = np.asarray(owner)
    if own.size and (own.min() < 0 or own.max() >= k):
        raise ValueError(f"owner indices must lie in [0, {k})")
    # a stepped colour scale: value i + 0.5 maps to colour i
    scale = []
    for i, c in enumerate(colors):
        scale += [[i / k, c], [(i + 1) / k, c]]
    names = np.array([f"point #{i + 1}" for i in range(n)] + (["itself"] if self_index else []))
    ticks = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1} - {-1}) if n else []
    tickvals = [i + 0.5 for i in ticks] + ([n + 0.5] if self_index else [])
    ticktext = [f"#{i + 1}" for i in ticks] + (["itself"] if self_index else [])
    fig = go.Figure(go.Heatmap(
        x=xs, y=xs, z=own.astype(np.float32) + 0.5, zmin=0, zmax=k, colorscale=scale, showscale=True,
        colorbar={"title": {"text": "point (order)", "side": "right"}, "thickness": 12, "len": 0.9,
                  "tickvals": tickvals, "ticktext": ticktext},
        customdata=names[own], hovertemplate="x=%{x:.2f}, y=%{y:.2f}<br>" + what + ": %{customdata}"
                                             "<extra></extra>",
    ))
    spots = region_labels(xs, own, n)
    if spots:
        fig.add_trace(go.Scatter(
            x=[x for _, x, _ in spots], y=[y for _, _, y in spots], mode="text", showlegend=False,
            text=[str(i + 1) for i, _, _ in spots], textfont={**NUMBER_FONT, "size": 11}, hoverinfo="skip",
            name="region numbers",
        ))
    if n:
        fig.add_trace(go.Scatter(
            x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False, customdata=np.arange(1, n + 1),
            marker={"size": 8, "color": colors[:n], "line": {"width": 1.5, "color": "white"}},
            hovertemplate="point #%{customdata}<extra></extra>", name="context",
        ))
    fig.add_trace(query_trace(query))
    _square_axes(fig, box)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_layout(height=height, margin={"l": 40, "r": 10, "t": 10, "b": 30}, dragmode=False,
                      hovermode="closest", showlegend=False, uirevision="canvas")
    return fig


def side_by_side_figure(
    xs: np.ndarray, log_in_context: np.ndarray, log_in_weights: np.ndarray, box: Box, points: np.ndarray,
    short_points: np.ndarray, step: int, height: int = 380,
) -> go.Figure:
    """p(x | D) from the context beside p_k(x | S) after k fine-tuning steps; shared colour scale."""
    a, b = (np.asarray(z, dtype=np.float64) for z in (log_in_context, log_in_weights))
    top = float(max(a.max(), b.max()))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.05, subplot_titles=[
        f"in context: p(x | D), {len(_points(points))} points read",
        f"in weights: after k = {step} steps, {len(_points(short_points))} points read",
    ])
    for col, z in ((1, a), (2, b)):
        fig.add_trace(go.Heatmap(x=xs, y=xs, z=np.maximum(z, top - LOG_DENSITY_SPAN).astype(np.float32),
                                 zmin=top - LOG_DENSITY_SPAN, zmax=top, colorscale="Viridis",
                                 # below the panels, as wide as both: beside them it was
                                 # taller than the square panels
                                 showscale=col == 2,
                                 colorbar={"title": {"text": "log p", "side": "top"}, "thickness": 10,
                                           "orientation": "h", "y": -0.06, "yanchor": "top", "len": 1.0},
                                 hovertemplate="x=%{x:.2f}, y=%{y:.2f}<br>log p=%{z:.2f}<extra></extra>"),
                      row=1, col=col)
        pts = _points(points)
        marker = ({"size": 5, "color": CONTEXT_COLOR} if col == 1
                  else {"size": 5, "color": "rgba(255,255,255,0.6)", "symbol": "circle-open"})
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=marker), row=1, col=col)
        _square_axes(fig, box, row=1, col=col)
        # the right panel shares the left one's y scale: its tick labels ran into the left heatmap
        fig.update_yaxes(scaleanchor="x" if col == 1 else "x2", showticklabels=col == 1, row=1, col=col)
    sp = _points(short_points)
    if len(sp):
        fig.add_trace(go.Scatter(x=sp[:, 0], y=sp[:, 1], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker={"size": 6, "color": CONTEXT_COLOR}), row=1, col=2)
    for ann in fig.layout.annotations:
        ann.font = {"size": 12}
    fig.update_layout(height=height, margin={"l": 30, "r": 10, "t": 30, "b": 70}, showlegend=False,
                      plot_bgcolor="#111")
    return fig


def distance_figure(steps: Sequence[int], sym_kl: Sequence[float], hellinger: Sequence[float],
                    selected: int | None = None, height: int = 300) -> go.Figure:
    """Symmetric KL (left axis) and Hellinger distance (right axis) vs fine-tuning steps k."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=list(steps), y=list(sym_kl), mode="lines+markers", name="symmetric KL",
                             line={"color": "#ff7f0e"}), secondary_y=False)
    fig.add_trace(go.Scatter(x=list(steps), y=list(hellinger), mode="lines+markers", name="Hellinger",
                             line={"color": "#2ca02c"}), secondary_y=True)
    if selected is not None:
        fig.add_vline(x=selected, line={"dash": "dot", "color": "#888"})
    fig.update_xaxes(title_text="fine-tuning steps k")
    fig.update_yaxes(title_text="KL(p‖q) + KL(q‖p)", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="Hellinger", secondary_y=True, range=[0, 1], dtick=0.25, showgrid=False)
    fig.update_layout(height=height, margin={"l": 50, "r": 50, "t": 48, "b": 75},
                      title={"text": "in-context vs in-weights density:<br>distance", "x": 0.01,
                             "font": {"size": 13}},
                      legend={"orientation": "h", "y": -0.42})  # below the axis title, not on it
    return fig
