"""Plotly figures of the Regression page (arrays in, figures out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from iclebm.grid import Box
from iclebm.ui.figures import (
    METHOD_COLORS,
    _colorscale,
    _square_axes,
    animation_controls,
    colormap,
    context_trace,
    image_figure,
)

CURVE_COLOR = "#ffd400"
OLS_COLOR = "#4dd0e1"
BAYES_COLOR = "#ff80ab"
TRUE_COLOR = "rgba(255,255,255,0.9)"


def regression_figure(
    xs: np.ndarray, z: np.ndarray, label: str, kind: str, box: Box, steps: Sequence[int], curves: np.ndarray,
    k: int, *, points: np.ndarray | None = None, ols: np.ndarray | None = None,
    bayes: tuple[np.ndarray, np.ndarray] | None = None, truth: np.ndarray | None = None,
    frame_ms: int = 90, height: int = 600,
) -> go.Figure:
    """The (x, y) canvas: per-column p(y | x, D) (or E) as a background image, y_hat(x) after k
    thinking steps (frames animate k in the browser), OLS line, Bayes mean +- 2 sd, true f(x).

    z: (R_y, R_x). The heatmap is a layout image (frames would drop a heatmap trace while
    playing); only the curve trace changes per frame."""
    xs = np.asarray(xs, dtype=np.float64)
    rgb = colormap(np.asarray(z, dtype=np.float32), _colorscale(kind))
    fig = image_figure(rgb, z, label, kind, box)
    if bayes is not None:
        mean, sd = bayes
        fig.add_trace(go.Scatter(x=np.r_[xs, xs[::-1]], y=np.r_[mean + 2 * sd, (mean - 2 * sd)[::-1]],
                                 fill="toself", fillcolor="rgba(255,128,171,0.15)", line={"width": 0},
                                 hoverinfo="skip", name="Bayes ±2σ", showlegend=True))
        fig.add_trace(go.Scatter(x=xs, y=mean, mode="lines", name="Bayes mean",
                                 line={"color": BAYES_COLOR, "width": 1.8, "dash": "dash"}))
    if ols is not None:
        fig.add_trace(go.Scatter(x=xs, y=ols, mode="lines", name="OLS",
                                 line={"color": OLS_COLOR, "width": 1.6, "dash": "dot"}))
    if truth is not None:
        fig.add_trace(go.Scatter(x=xs, y=truth, mode="lines", name="true f(x)",
                                 line={"color": TRUE_COLOR, "width": 1.2, "dash": "longdash"}))
    if points is not None and len(points):
        fig.add_trace(context_trace(points))
    steps = [int(s) for s in steps]
    i0 = max((i for i, s in enumerate(steps) if s <= k), default=0)
    fig.add_trace(go.Scatter(x=xs, y=curves[i0], mode="lines", name="ŷ(x) (thinking)",
                             line={"color": CURVE_COLOR, "width": 3}))
    curve_idx = len(fig.data) - 1
    fig.frames = [go.Frame(data=[go.Scatter(x=xs, y=curves[i])], traces=[curve_idx], name=str(s))
                  for i, s in enumerate(steps)]
    _square_axes(fig, box)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_layout(
        height=height, dragmode=False, hovermode="closest", plot_bgcolor="#111",
        margin={"l": 40, "r": 10, "t": 40, "b": 70}, uirevision="reg-canvas",
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1.0, "xanchor": "right",
                "font": {"size": 11}, "bgcolor": "rgba(0,0,0,0)"},
        **animation_controls(steps, "▶ think", "thinking steps k = ", active=i0, frame_ms=frame_ms),
    )
    return fig


def method_curves_figure(ns: Sequence[int], values: dict, metric: str, title: str) -> go.Figure:
    """NLL or MSE vs n for the model and the baselines (held-out tasks from the card)."""
    fig = go.Figure()
    colors = {**METHOD_COLORS, "model": "#ff4b4b", "bayes": BAYES_COLOR, "ols": OLS_COLOR, "ridge": "#7e57c2",
              "knn": "#8d6e63", "oracle": "#9e9e9e"}
    for name, vals in values.items():
        fig.add_trace(go.Scatter(x=[str(n) for n in ns], y=vals, mode="lines+markers", name=name,
                                 line={"width": 3 if name == "model" else 1.6, "color": colors.get(name),
                                       "dash": "dot" if name == "oracle" else None}))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=340,
                      xaxis={"title": "context points n", "type": "category"}, yaxis={"title": metric},
                      margin={"l": 50, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.3})
    return fig


def thinking_curve_figure(curve: dict) -> go.Figure:
    fig = go.Figure()
    for n, vals in curve["mse"].items():
        fig.add_trace(go.Scatter(x=[str(s) for s in curve["steps"]], y=vals, mode="lines+markers",
                                 name=f"n = {n}"))
    title = "Thinking curve: MSE vs thinking steps (held-out tasks)"
    fig.update_layout(title={"text": title, "font": {"size": 14}},
                      height=340, xaxis={"title": "thinking steps", "type": "category"},
                      yaxis={"title": "MSE of ŷ"}, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.3})
    return fig
