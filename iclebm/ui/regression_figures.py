"""Plotly figures of the Regression page (arrays in, figures out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from iclebm.grid import Box
from iclebm.ui.curve_figures import curve_chart
from iclebm.ui.figures import (
    FigureSpec,
    _colorscale,
    animation_controls,
    colormap,
    context_dicts,
    image_layer,
    square_axis,
)

CURVE_COLOR = "#ffd400"
OLS_COLOR = "#4dd0e1"
BAYES_COLOR = "#ff80ab"
TRUE_COLOR = "rgba(255,255,255,0.9)"


def regression_spec(
    xs: np.ndarray, z: np.ndarray, label: str, kind: str, box: Box, steps: Sequence[int], curves: np.ndarray,
    k: int, *, points: np.ndarray | None = None, ols: np.ndarray | None = None,
    bayes: tuple[np.ndarray, np.ndarray] | None = None, truth: np.ndarray | None = None,
    frame_ms: int = 90, height: int = 600, slider_steps: Sequence[int] | None = None,
) -> FigureSpec:
    """The (x, y) canvas: per-column p(y | x, D) (or E) as a background image, y_hat(x) after k
    thinking steps (frames animate k in the browser), OLS line, Bayes mean +- 2 sd, true f(x); as a
    `FigureSpec` (`regression_figure` makes the go.Figure).

    z: (R_y, R_x). slider_steps: the slider's steps (default `steps`); when the curves cover only
    the first of them, the canvas fetches the rest when the animation is asked for. The heatmap is
    a layout image (frames would drop a heatmap trace while playing); only the curve trace changes
    per frame."""
    xs = np.asarray(xs, dtype=np.float64)
    rgb = colormap(np.asarray(z, dtype=np.float32), _colorscale(kind))
    image, bar = image_layer(rgb, z, label, kind, box)
    # Plain dicts, not graph objects: add_trace / update_* calls and go.Figure's validation cost
    # ~45 ms per figure, which is redrawn on every click.
    traces: list = [bar]
    if bayes is not None:
        mean, sd = bayes
        traces.append({"type": "scatter", "x": np.r_[xs, xs[::-1]],
                       "y": np.r_[mean + 2 * sd, (mean - 2 * sd)[::-1]], "fill": "toself",
                       "fillcolor": "rgba(255,128,171,0.15)", "line": {"width": 0}, "hoverinfo": "skip",
                       "name": "Bayes ±2σ", "showlegend": True})
        traces.append(_line(xs, mean, "Bayes mean", {"color": BAYES_COLOR, "width": 1.8, "dash": "dash"}))
    if ols is not None:
        traces.append(_line(xs, ols, "OLS", {"color": OLS_COLOR, "width": 1.6, "dash": "dot"}))
    if truth is not None:
        traces.append(_line(xs, truth, "true f(x)", {"color": TRUE_COLOR, "width": 1.2, "dash": "longdash"}))
    steps = [int(s) for s in steps]
    i0 = max((i for i, s in enumerate(steps) if s <= k), default=0)
    traces.append(_line(xs, curves[i0], "ŷ(x) (thinking)", {"color": CURVE_COLOR, "width": 3}))
    curve_idx = len(traces) - 1
    if points is not None and len(points):  # above the curve, the newest ringed
        traces += context_dicts(points)
    frames = [{"data": [{"type": "scatter", "x": xs, "y": curves[i]}], "traces": [curve_idx], "name": str(s)}
              for i, s in enumerate(steps)]
    axis = square_axis(box)
    layout = {
        "images": [image], "xaxis": axis, "yaxis": {**axis, "scaleanchor": "x", "scaleratio": 1},
        "height": height, "dragmode": False, "hovermode": "closest", "plot_bgcolor": "#111",
        "margin": {"l": 40, "r": 10, "t": 40, "b": 70}, "uirevision": "reg-canvas",
        # dark like the plot, so the white "true f(x)" swatch shows
        "legend": {"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1.0, "xanchor": "right",
                   "font": {"size": 11, "color": "#eeeeee"}, "bgcolor": "#111111"},
        **animation_controls(steps if slider_steps is None else [int(s) for s in slider_steps], "▶ think",
                             "thinking steps k = ", active=i0, frame_ms=frame_ms),
    }
    return FigureSpec(traces, layout, frames)


def regression_figure(*args: Any, **kwargs: Any) -> go.Figure:
    """`regression_spec` (same arguments) as a go.Figure."""
    return regression_spec(*args, **kwargs).figure()


def _line(x: np.ndarray, y: np.ndarray, name: str, line: dict) -> dict:
    return {"type": "scatter", "x": x, "y": y, "mode": "lines", "name": name, "line": line}


def method_curves_figure(ns: Sequence[int], values: dict, metric: str, title: str) -> go.Figure:
    """NLL or MSE vs n for the model and the baselines (held-out tasks from the card); a third of the
    page wide, so compact (short legend names; values only at the edge, see `curve_figures`)."""
    return curve_chart(ns, values, metric=metric, title=title, height=400, compact=True)


THINKING_COLORS = ("#9ecae1", "#4292c6", "#08519c", "#08306b")  # light: few points, dark: many


def thinking_curve_figure(curve: dict, height: int = 400) -> go.Figure:
    """MSE of y_hat vs thinking steps k, one line per context size n (held-out tasks from the card).
    A short title with the details on a second, smaller line: a third of the page wide, the long
    title was clipped."""
    fig = go.Figure()
    steps = [str(s) for s in curve["steps"]]
    for i, (n, vals) in enumerate(curve["mse"].items()):
        color = THINKING_COLORS[min(i, len(THINKING_COLORS) - 1)]
        fig.add_trace(go.Scatter(x=steps, y=vals, mode="lines+markers", name=f"n = {n}",
                                 line={"color": color, "width": 2.2},
                                 hovertemplate=f"n = {n}, k = %{{x}}: MSE %{{y:.3f}}<extra></extra>"))
    fig.update_layout(
        title={"text": "Thinking curve", "font": {"size": 14}, "x": 0.01, "xanchor": "left",
               "subtitle": {"text": "MSE vs thinking steps k, held-out tasks", "font": {"size": 11}}},
        height=height, xaxis={"title": "thinking steps k", "type": "category", "title_standoff": 4},
        yaxis={"title": "MSE of ŷ"}, margin={"l": 55, "r": 10, "t": 64, "b": 70},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "yref": "container", "y": 0,
                "yanchor": "bottom", "font": {"size": 11}},
    )
    return fig
