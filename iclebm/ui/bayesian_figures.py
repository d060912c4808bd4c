"""Figure builders for the "Is it Bayesian?" page: arrays in, Plotly figures out (no torch, no Streamlit).

Grids follow `iclebm.ui.figures`: a square box, (R, R) arrays with rows = y, cell centres xs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclebm.ui.curve_figures import display_name, line_style
from iclebm.ui.figures import CONTEXT_COLOR

LEARNER_COLORS = {"model": "#d62728", "bayes": "#1f77b4", "kde_scott": "#2ca02c", "em_mixture": "#9467bd",
                  "oracle": "#7f7f7f", "last-point-heavy KDE": "#ff7f0e", "shrinking KDE": "#8c564b"}


DIVERGING = ("RdBu_r", "RdBu")  # centred on 0
AXIS_MARGIN = {"l": 64, "r": 10, "t": 30, "b": 52}  # room for tick labels and axis titles


def _color(name: str) -> str:
    return LEARNER_COLORS.get(name, "#17becf")


def _points(points: np.ndarray | Sequence) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _context_trace(points: np.ndarray, row: int | None = None) -> go.Scatter:
    return go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", showlegend=False, name="context",
                      marker={"size": 5, "color": CONTEXT_COLOR, "line": {"width": 0.5, "color": "black"}},
                      hovertemplate="context (%{x:.2f}, %{y:.2f})<extra></extra>")


def heatmap_row_figure(
    xs: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str], points: np.ndarray | Sequence,
    colorscales: Sequence[str], height: int = 330,
) -> go.Figure:
    """Several (R, R) maps side by side on the same square axes, the context on each."""
    pts = _points(points)
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=list(titles), horizontal_spacing=0.11)
    for i, (z, scale) in enumerate(zip(maps, colorscales, strict=True), start=1):
        right = fig.layout[f"xaxis{i if i > 1 else ''}"].domain[1]  # the colour bar just right of its panel
        mid = 0.0 if scale in DIVERGING else None
        bar = {"len": 0.8, "thickness": 8, "x": right + 0.005, "xanchor": "left"}
        fig.add_trace(go.Heatmap(x=xs, y=xs, z=z, colorscale=scale, zmid=mid, colorbar=bar,
                                 hovertemplate="%{z:.3g}<extra></extra>"), row=1, col=i)
        fig.add_trace(_context_trace(pts), row=1, col=i)
        fig.update_xaxes(range=[xs[0], xs[-1]], row=1, col=i)
        fig.update_yaxes(range=[xs[0], xs[-1]], row=1, col=i)
    fig.update_layout(height=height, margin={"l": 40, "r": 10, "t": 40, "b": 30}, showlegend=False)
    return fig


def martingale_steps_figure(gaps: Mapping[str, Sequence[float]], height: int = 300) -> go.Figure:
    """The martingale gap after 1..m self-sampled points, one line per learner (0 for a martingale)."""
    fig = go.Figure()
    for name, g in gaps.items():
        fig.add_trace(go.Scatter(x=list(range(1, len(g) + 1)), y=list(g), mode="lines+markers",
                                 name=display_name(name), line={"color": _color(name)}))
    fig.update_layout(height=height, margin=AXIS_MARGIN,
                      xaxis_title="points sampled from the learner's own predictive",
                      yaxis_title="martingale gap (relative L2)", legend={"orientation": "h", "y": 1.12})
    fig.update_yaxes(rangemode="tozero")
    fig.update_xaxes(dtick=1)
    return fig


def bayes_gap_figure(
    decomp: Mapping, learner: str, oracle_nll: Sequence[float], height: int = 330,
) -> go.Figure:
    """Stacked bands above the oracle's NLL: posterior variance (Bayes - oracle), then the learner's Bayes
    gap (learner - Bayes); n on a log2(1 + n) axis as the ICL chart."""
    ns = list(decomp["ns"])
    x = [np.log2(1 + n) for n in ns]
    oracle = np.asarray(oracle_nll, dtype=np.float64)
    bayes = oracle + np.asarray(decomp["posterior_variance"])
    mine = bayes + np.asarray(decomp["bayes_gap"][learner])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=oracle, mode="lines", name="oracle (the task itself)",
                             line={"color": _color("oracle"), "dash": "dot"}))
    fig.add_trace(go.Scatter(x=x, y=bayes, mode="lines", fill="tonexty",
                             name="posterior variance (Bayes - oracle)", line={"color": _color("bayes")},
                             fillcolor="rgba(31,119,180,0.25)"))
    fig.add_trace(go.Scatter(x=x, y=mine, mode="lines+markers", fill="tonexty",
                             name=f"Bayes gap ({line_style(learner).short} − Bayes)",
                             line={"color": _color(learner)},
                             fillcolor="rgba(214,39,40,0.25)"))
    fig.update_layout(height=height, margin=AXIS_MARGIN,
                      yaxis_title="NLL (nats/point)", legend={"orientation": "h", "y": 1.15})
    fig.update_xaxes(tickvals=x, ticktext=[str(n) for n in ns], title="context points n")
    return fig


def trajectory_figure(names: Sequence[str], ns: Sequence[int], coords: np.ndarray, highlight: int | None,
                      height: int = 460) -> go.Figure:
    """Each learner's path through n in the MDS plane of Hellinger distances; n = `highlight` marked."""
    fig = go.Figure()
    for i, name in enumerate(names):
        c = coords[i]
        fig.add_trace(go.Scatter(
            x=c[:, 0], y=c[:, 1], mode="lines+markers", name=display_name(name), line={"color": _color(name)},
            marker={"size": 5}, text=[f"{name}, n = {n}" for n in ns],
            hovertemplate="%{text}<extra></extra>"))
        if highlight is not None and highlight in ns:
            j = list(ns).index(highlight)
            fig.add_trace(go.Scatter(x=[c[j, 0]], y=[c[j, 1]], mode="markers", showlegend=False,
                                     marker={"size": 13, "color": _color(name), "symbol": "diamond",
                                             "line": {"width": 1.5, "color": "black"}},
                                     hovertemplate=f"{name}, n = {highlight}<extra></extra>"))
    fig.update_layout(height=height, margin=AXIS_MARGIN,
                      legend={"orientation": "h", "y": 1.08}, xaxis_title="MDS 1", yaxis_title="MDS 2")
    fig.update_yaxes(scaleanchor="x")
    return fig


def density_strip_figure(xs: np.ndarray, log_density: np.ndarray, names: Sequence[str],
                         points: np.ndarray | Sequence, height: int = 230) -> go.Figure:
    """One small density map per learner (L, R, R), the same colour range, the context on each."""
    p = np.exp(np.asarray(log_density, dtype=np.float64))
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[display_name(n) for n in names],
                        horizontal_spacing=0.02)
    pts = _points(points)
    top = float(p.max()) if p.size else 1.0
    for i in range(len(names)):
        fig.add_trace(go.Heatmap(x=xs, y=xs, z=p[i], zmin=0, zmax=top, colorscale="Viridis", showscale=False,
                                 hovertemplate="p = %{z:.3g}<extra></extra>"), row=1, col=i + 1)
        fig.add_trace(_context_trace(pts), row=1, col=i + 1)
        fig.update_xaxes(showticklabels=False, row=1, col=i + 1, range=[xs[0], xs[-1]])
        fig.update_yaxes(showticklabels=False, row=1, col=i + 1, range=[xs[0], xs[-1]],
                         scaleanchor=f"x{i + 1 if i else ''}")
    fig.update_layout(height=height, margin={"l": 5, "r": 5, "t": 30, "b": 5}, showlegend=False)
    return fig
