"""Metric-vs-context-size charts (ICL curves): NLL or MSE against n for the model, its yardsticks and
the baselines. Arrays in, figures out (no torch, no Streamlit).

Readability rules, the same on every page:
- The y-range is fitted to the lines that matter, the *core* lines (model, Bayes-optimal, oracle,
  prior predictive: `LineStyle.core`), with a margin of `MARGIN` of their span on each side. A
  baseline is shown in full when it stays within `STRETCH` core spans beyond that range (the range
  grows to hold it); one that goes further (an EM fit to two points, an OLS spike) would flatten
  every other line, so the axis does not follow it: its line runs off the edge, a triangle marks
  each value beyond the edge, and the column's label above the plot gives its value ("EM 314↑").
  Auto-ranged rather than log-scaled: NLLs can be negative, and a log axis still spends most of
  its height on the outliers.
- Legends use human names from one table, `LINES` (key -> label, short name, colour, dash, core).
- x is the context size n, one evenly spaced column per n (0, 1, 2, 4, ... are not to scale).

Adding a line or a band is one call (`add_line`, `add_band`): the range and the edge marks are
fitted again from every line in the figure, so callers never touch the axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

MARGIN = 0.08  # of the core span, on each side
STRETCH = 0.5  # baselines this many core spans beyond the core range still fit in
MIN_SPAN = 0.05  # a flat core (one constant line) still gets a readable, non-degenerate range
MAX_EDGE_ROWS = 3  # edge labels stacked per column; more are counted ("+2")
EDGE_ROW_PX = 12
LEGEND_PER_ROW = 4  # legend entries a row in a full-width chart
LEGEND_ROW_PX = 19
_EDGE = "edge"  # meta role of the edge-marker traces (refitted, never counted as data)


@dataclass(frozen=True)
class LineStyle:
    label: str  # legend name
    short: str  # name in edge labels and in a compact chart's legend
    color: str
    width: float = 1.6
    dash: str | None = None
    core: bool = False  # the y-range is fitted to the core lines


LINES: dict[str, LineStyle] = {
    "model": LineStyle("model", "model", "#ff4b4b", 3.0, core=True),
    "bayes": LineStyle("Bayes-optimal", "Bayes", "#e377c2", 2.6, "dash", core=True),
    # a pool-trained model's other yardstick: the Bayes predictive of its finite task pool
    "bayes_pool": LineStyle("Bayes of the task pool", "Bayes pool", "#2ca02c", 2.4, "dashdot", core=True),
    "oracle": LineStyle("oracle (true distribution)", "oracle", "#222222", 1.8, "dot", core=True),
    "prior_predictive": LineStyle("prior predictive (no context)", "prior pred.", "#7f7f7f", 1.6, "dashdot",
                                  core=True),
    "kde_scott": LineStyle("KDE (Scott)", "KDE", "#1f77b4"),
    "kde_scipy": LineStyle("KDE (full covariance)", "KDE full", "#17becf"),
    "em_mixture": LineStyle("EM (K known)", "EM", "#2ca02c"),
    "em_bic": LineStyle("EM (BIC)", "EM BIC", "#8c564b"),
    "gaussian": LineStyle("single Gaussian", "Gaussian", "#9467bd"),
    "ols": LineStyle("least squares", "OLS", "#4dd0e1"),
    "ridge": LineStyle("ridge (prior penalty)", "ridge", "#7e57c2"),
    "knn": LineStyle("k nearest neighbours", "kNN", "#8d6e63"),
}


def line_style(key: str) -> LineStyle:
    """The style of a line by its key; an unknown key gets its own name (humanised), grey, not core."""
    if key in LINES:
        return LINES[key]
    name = key.replace("_", " ")
    return LineStyle(name, name, "#888888")


def display_name(key: str) -> str:
    return line_style(key).label


def fit_y_range(core: Sequence[float], others: Sequence[float] = ()) -> tuple[float, float]:
    """(lo, hi): the core values' range plus MARGIN on each side, stretched to hold the other
    values that lie within STRETCH core spans of it. Non-finite values are ignored."""
    c = np.asarray(list(core), dtype=np.float64)
    c = c[np.isfinite(c)]
    o = np.asarray(list(others), dtype=np.float64)
    o = o[np.isfinite(o)]
    if not c.size:
        c = o  # no core line at all: fit everything
    if not c.size:
        return 0.0, 1.0
    lo, hi = float(c.min()), float(c.max())
    span = max(hi - lo, MIN_SPAN * max(1.0, abs(hi)))
    near = o[(o >= lo - STRETCH * span) & (o <= hi + STRETCH * span)]
    if near.size:
        lo, hi = min(lo, float(near.min())), max(hi, float(near.max()))
    span = max(hi - lo, MIN_SPAN * max(1.0, abs(hi)))
    return lo - MARGIN * span, hi + MARGIN * span


def fmt_value(v: float) -> str:
    """Three significant figures, no exponent for everyday sizes: 313.5 -> '314', 14.43 -> '14.4'."""
    a = abs(v)
    if a >= 1000:
        return f"{v:.3g}" if a >= 1e5 else f"{v:.0f}"
    return f"{v:.3g}"


def curve_chart(
    ns: Sequence[int], lines: Mapping[str, Sequence[float]], *, metric: str, title: str,
    height: int = 360, stderr: Mapping[str, Sequence[float]] | None = None, compact: bool = False,
) -> go.Figure:
    """A metric-vs-n chart with one line per entry of `lines` (keys from LINES; order kept).

    compact: for a narrow chart (a third of the page): the legend uses the short names and the edge
    labels give values only."""
    fig = empty_chart(ns, metric=metric, title=title, height=height, compact=compact)
    for key, values in lines.items():
        add_line(fig, key, values, stderr=None if stderr is None else stderr.get(key), refit=False)
    return refit(fig)


def empty_chart(
    ns: Sequence[int], *, metric: str, title: str, height: int = 360, compact: bool = False
) -> go.Figure:
    """The axes of a curve chart for context sizes `ns`, no lines yet (see `curve_chart`)."""
    ns = [int(n) for n in ns]
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left", "y": 0.98,
               "yanchor": "top", "yref": "container"},
        height=height, meta={"ns": ns, "title_px": 30, "compact": bool(compact)},
        xaxis={"title": "context points n", "tickmode": "array", "tickvals": list(range(len(ns))),
               "ticktext": [str(n) for n in ns], "range": [-0.3, len(ns) - 0.7], "zeroline": False,
               "title_standoff": 4},
        yaxis={"title": metric, "zeroline": False},
        # the legend below the axis title, whatever the chart's size
        margin={"l": 55, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "yref": "container", "y": 0,
                "yanchor": "bottom", "font": {"size": 11}},
        hovermode="closest",
    )
    return fig


def _ns(fig: go.Figure) -> list[int]:
    return list(fig.layout.meta["ns"])


def add_line(
    fig: go.Figure, key: str, values: Sequence[float], *, label: str | None = None, core: bool | None = None,
    stderr: Sequence[float] | None = None, color: str | None = None, dash: str | None = None,
    width: float | None = None, opacity: float = 1.0, showlegend: bool = True, background: bool = False,
    refit: bool = True,
) -> go.Figure:
    """Add line `key` (values at the chart's ns; NaN = no value); style from LINES unless overridden.

    `core` decides whether the y-range is fitted to it (default: the table's say); a `background`
    line (earlier refreshes, drawn faint) is neither fitted nor marked at the edge."""
    style = line_style(key)
    y = np.asarray(values, dtype=np.float64)
    ns = _ns(fig)
    if y.shape != (len(ns),):
        raise ValueError(f"line {key!r} has {y.size} values for {len(ns)} context sizes")
    y = np.where(np.isfinite(y), y, np.nan)
    err = None
    if stderr is not None:
        err = {"type": "data", "array": np.nan_to_num(np.asarray(stderr, dtype=np.float64)), "thickness": 1,
               "width": 3}
    name = label or (style.short if fig.layout.meta["compact"] else style.label)
    fig.add_trace(go.Scatter(
        x=list(range(len(ns))), y=y, mode="lines+markers", name=name, error_y=err, opacity=opacity,
        showlegend=showlegend, customdata=ns,
        line={"width": width or style.width, "color": color or style.color, "dash": dash or style.dash},
        marker={"size": 5 if (width or style.width) < 2.5 else 7},
        meta={"key": key, "core": (style.core if core is None else bool(core)) and not background,
              "short": style.short, "background": bool(background)},
        hovertemplate=f"{name}<br>n = %{{customdata}}: %{{y:.3f}}<extra></extra>",
    ))
    return _refit(fig) if refit else fig


def add_band(
    fig: go.Figure, key: str, lo: Sequence[float], hi: Sequence[float], *, label: str | None = None,
    core: bool | None = None, color: str = "rgba(227,119,194,0.18)", refit: bool = True,
) -> go.Figure:
    """Add a shaded band between lo and hi at the chart's ns (a spread, e.g. over orders)."""
    ns = _ns(fig)
    a, b = (np.asarray(v, dtype=np.float64) for v in (lo, hi))
    if a.shape != (len(ns),) or b.shape != (len(ns),):
        raise ValueError(f"band {key!r} needs {len(ns)} values on each side")
    x = list(range(len(ns)))
    name = label or line_style(key).label
    fig.add_trace(go.Scatter(
        x=x + x[::-1], y=np.r_[b, a[::-1]], fill="toself", fillcolor=color, line={"width": 0}, name=name,
        hoverinfo="skip", meta={"key": key, "core": bool(line_style(key).core if core is None else core),
                                "short": line_style(key).short, "band": True},
    ))
    return _refit(fig) if refit else fig


def refit(fig: go.Figure) -> go.Figure:
    """Fit the y-range to the figure's lines again and redraw the edge marks (see the module doc)."""
    return _refit(fig)


def _data_traces(fig: go.Figure) -> list:
    """The lines and bands that the range is fitted to (not edge marks, not background lines)."""
    return [t for t in fig.data
            if isinstance(t.meta, dict) and "key" in t.meta and not t.meta.get("background")]


def _refit(fig: go.Figure) -> go.Figure:
    traces = _data_traces(fig)
    core = [v for t in traces if t.meta["core"] for v in np.asarray(t.y, dtype=np.float64)]
    others = [v for t in traces if not t.meta["core"] for v in np.asarray(t.y, dtype=np.float64)]
    lo, hi = fit_y_range(core, others)
    fig.data = tuple(t for t in fig.data if not (isinstance(t.meta, dict) and t.meta.get("role") == _EDGE))
    fig.layout.annotations = [a for a in fig.layout.annotations if a.name != _EDGE]
    rows = _edge_marks(fig, [t for t in traces if not t.meta.get("band")], lo, hi)
    fig.update_yaxes(range=[lo, hi], autorange=False)
    # Room above the plot for the stacked edge labels (below the title), and below the axis title
    # for the legend: LEGEND_PER_ROW entries a row (three short names in a compact chart).
    entries = sum(1 for t in traces if t.showlegend is not False)
    per_row = 3 if fig.layout.meta["compact"] else LEGEND_PER_ROW
    legend_rows = -(-entries // per_row)
    fig.update_layout(margin={"t": int(fig.layout.meta["title_px"]) + 10 + EDGE_ROW_PX * rows,
                              "b": 48 + LEGEND_ROW_PX * legend_rows})
    return fig


def edge_points(values: Sequence[float], lo: float, hi: float) -> tuple[list[int], list[int]]:
    """Indices of the finite values above hi and below lo."""
    v = np.asarray(values, dtype=np.float64)
    above = [i for i, x in enumerate(v) if np.isfinite(x) and x > hi]
    below = [i for i, x in enumerate(v) if np.isfinite(x) and x < lo]
    return above, below


def _edge_marks(fig: go.Figure, traces: Iterable, lo: float, hi: float) -> int:
    """Triangles on the edge for every value beyond it, and per column a label stack above the plot
    ('short value↑' in the line's colour). Returns the number of label rows used above the plot."""
    ns = _ns(fig)
    top: dict[int, list[tuple[float, str, str]]] = {}
    bottom: dict[int, list[tuple[float, str, str]]] = {}
    for t in traces:
        y = np.asarray(t.y, dtype=np.float64)
        above, below = edge_points(y, lo, hi)
        color = t.line.color or "#888888"
        for idx, edge, stack, symbol in ((above, hi, top, "triangle-up"),
                                         (below, lo, bottom, "triangle-down")):
            if not idx:
                continue
            fig.add_trace(go.Scatter(
                x=idx, y=[edge] * len(idx), mode="markers", cliponaxis=False, showlegend=False,
                marker={"symbol": symbol, "size": 9, "color": color,
                        "line": {"width": 0.5, "color": "white"}},
                customdata=[[ns[i], y[i]] for i in idx], meta={"role": _EDGE, "of": t.meta["key"]},
                name=f"{t.name} (off the chart)",
                hovertemplate=f"{t.name}<br>n = %{{customdata[0]}}: %{{customdata[1]:.4g}} (off the chart)"
                              "<extra></extra>",
            ))
            for i in idx:
                stack.setdefault(i, []).append((float(y[i]), t.meta["short"], color))
    rows = 0
    names = not fig.layout.meta["compact"]
    for stack, arrow, y in ((top, "↑", 1.0), (bottom, "↓", 0.0)):
        for i, entries in stack.items():
            shown = edge_label_lines(entries, arrow, names)
            if arrow == "↑":
                shown.reverse()  # the furthest value nearest the top
                rows = max(rows, len(shown))
            fig.add_annotation(
                x=i, y=y, xref="x", yref="paper", yanchor="bottom", yshift=2, showarrow=False, name=_EDGE,
                text="<br>".join(shown), font={"size": 9}, align="center",
                bgcolor="rgba(255,255,255,0.75)" if arrow == "↓" else None,
            )
    return rows


def edge_label_lines(entries: Sequence[tuple[float, str, str]], arrow: str, names: bool = True) -> list[str]:
    """The label lines of one column's off-chart values [(value, short name, colour)], furthest
    first: 'EM 314↑' in the line's colour; lines with the same shown value share one entry
    ('EM, Gauss 314↑'); past MAX_EDGE_ROWS the rest are counted ('+2 more')."""
    merged: dict[str, tuple[float, list[str], str]] = {}
    for v, short, color in sorted(entries, key=lambda e: -e[0] if arrow == "↑" else e[0]):
        text = fmt_value(v)
        if text in merged:
            merged[text][1].append(short)
        else:
            merged[text] = (v, [short], color)
    lines = []
    for text, (_, shorts, color) in merged.items():
        label = f"{', '.join(shorts)} {text}{arrow}" if names else f"{text}{arrow}"
        lines.append(f'<span style="color:{color}">{label}</span>')
    if len(lines) > MAX_EDGE_ROWS:
        lines = lines[:MAX_EDGE_ROWS] + [f"+{len(lines) - MAX_EDGE_ROWS} more"]
    return lines
