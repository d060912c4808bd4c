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
from iclebm.ui.figures import CONTEXT_COLOR, LOG_DENSITY_SPAN, _square_axes, landscape_figure

QUERY_COLOR = "#00e5ff"
SELF_COLOR = "#888888"
POS_COLOR = "#ff4b4b"  # removing the point raises E: it supports the density at q
NEG_COLOR = "#1f77b4"  # removing it lowers E


def _points(points: np.ndarray | Sequence) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def query_trace(query: Sequence[float] | None) -> go.Scatter:
    q = [np.nan, np.nan] if query is None else list(query)
    return go.Scatter(x=[q[0]], y=[q[1]], mode="markers", name="query", showlegend=False,
                      marker={"symbol": "x", "size": 13, "color": QUERY_COLOR, "line": {"width": 2,
                                                                                        "color": "black"}},
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


def attention_grid_figure(
    points: np.ndarray, query: Sequence[float], weights: np.ndarray, box: Box, cell: int = 170,
) -> go.Figure:
    """Layers x heads small canvases: every context point sized and coloured by the attention the
    query pays it; the query is marked (its own weight is in the panel title).

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
            fig.add_trace(query_trace(query), row=row, col=col)
            _square_axes(fig, box, row=row, col=col)
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


def categorical_colors(k: int) -> list[str]:
    """k distinct colours (cycled from Plotly's qualitative palettes)."""
    base = pcolors.qualitative.Dark24 + pcolors.qualitative.Light24
    return [base[i % len(base)] for i in range(k)]


def dominant_map_figure(
    xs: np.ndarray, owner: np.ndarray, box: Box, points: np.ndarray, query: Sequence[float] | None,
    what: str, self_index: bool, height: int = 520,
) -> go.Figure:
    """The plane coloured by which context point a query there attends to most (or leans on most).

    owner: (R, R) ints in [0, N) (or N = the query's own key when self_index). Each context point
    is drawn in its region's colour.
    """
    pts = _points(points)
    n = len(pts)
    k = n + (1 if self_index else 0)
    if k == 0:
        raise ValueError("no context points to colour the plane by")
    colors = categorical_colors(n) + ([SELF_COLOR] if self_index else [])
    own = np.asarray(owner)
    if own.size and (own.min() < 0 or own.max() >= k):
        raise ValueError(f"owner indices must lie in [0, {k})")
    # a stepped colour scale: value i maps to colour i
    scale = []
    for i, c in enumerate(colors):
        scale += [[i / k, c], [(i + 1) / k, c]]
    names = np.array([f"point #{i + 1}" for i in range(n)] + (["itself"] if self_index else []))
    fig = go.Figure(go.Heatmap(
        x=xs, y=xs, z=own.astype(np.float32) + 0.5, zmin=0, zmax=k, colorscale=scale, showscale=False,
        customdata=names[own], hovertemplate="x=%{x:.2f}, y=%{y:.2f}<br>" + what + ": %{customdata}"
                                             "<extra></extra>",
    ))
    if n:
        fig.add_trace(go.Scatter(
            x=pts[:, 0], y=pts[:, 1], mode="markers+text", text=[str(i + 1) for i in range(n)],
            textposition="top center", textfont={"color": "white", "size": 10}, showlegend=False,
            marker={"size": 10, "color": colors[:n], "line": {"width": 1.5, "color": "white"}},
            hovertemplate="point #%{text}<extra></extra>",
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
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04, subplot_titles=[
        f"in context: p(x | D), {len(_points(points))} points read",
        f"in weights: after k = {step} steps, {len(_points(short_points))} points read",
    ])
    for col, z in ((1, a), (2, b)):
        fig.add_trace(go.Heatmap(x=xs, y=xs, z=np.maximum(z, top - LOG_DENSITY_SPAN).astype(np.float32),
                                 zmin=top - LOG_DENSITY_SPAN, zmax=top, colorscale="Viridis",
                                 showscale=col == 2, colorbar={"title": {"text": "log p"}, "thickness": 10},
                                 hovertemplate="x=%{x:.2f}, y=%{y:.2f}<br>log p=%{z:.2f}<extra></extra>"),
                      row=1, col=col)
        pts = _points(points)
        marker = ({"size": 5, "color": CONTEXT_COLOR} if col == 1
                  else {"size": 5, "color": "rgba(255,255,255,0.6)", "symbol": "circle-open"})
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=marker), row=1, col=col)
        _square_axes(fig, box, row=1, col=col)
        fig.update_yaxes(scaleanchor="x" if col == 1 else "x2", row=1, col=col)
    sp = _points(short_points)
    if len(sp):
        fig.add_trace(go.Scatter(x=sp[:, 0], y=sp[:, 1], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker={"size": 6, "color": CONTEXT_COLOR}), row=1, col=2)
    for ann in fig.layout.annotations:
        ann.font = {"size": 12}
    fig.update_layout(height=height, margin={"l": 30, "r": 10, "t": 30, "b": 20}, showlegend=False,
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
    fig.update_layout(height=height, margin={"l": 50, "r": 50, "t": 30, "b": 40},
                      title={"text": "distance between the in-context and in-weights densities", "x": 0.01,
                             "font": {"size": 13}},
                      legend={"orientation": "h", "y": -0.25})
    return fig
