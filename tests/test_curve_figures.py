"""Metric-vs-n charts: the y-range follows the lines that matter, outliers are marked at the edge
with their value, legends use human names."""

from __future__ import annotations

import numpy as np
import pytest

from iclebm.ui import curve_figures as C

NS = [0, 1, 2, 4, 8, 16, 32]
# the shipped mog2d-wide card's evaluation (rounded): EM fits to 1-2 points reach 314 nats
DENSITY = {
    "model": [4.99, 4.56, 4.32, 4.05, 3.90, 3.65, 3.46],
    "bayes": [4.95, 4.50, 4.20, 3.90, 3.60, 3.40, 3.25],
    "oracle": [3.11] * 7,
    "kde_scott": [4.95, 14.43, 103.82, 4.87, 4.55, 3.95, 3.74],
    "em_bic": [4.95, 313.53, 155.14, 66.42, 28.62, 8.61, 5.0],
    "gaussian": [4.95, 313.53, 108.04, 10.3, 5.69, 4.13, 3.93],
    "prior_predictive": [4.95] * 7,
}


def test_the_range_covers_model_bayes_and_oracle_with_margin_and_excludes_the_outliers() -> None:
    fig = C.curve_chart(NS, DENSITY, metric="NLL", title="t")
    lo, hi = fig.layout.yaxis.range
    core = np.array(DENSITY["model"] + DENSITY["bayes"] + DENSITY["oracle"] + DENSITY["prior_predictive"])
    span = core.max() - core.min()
    assert lo <= core.min() - 0.05 * span and hi >= core.max() + 0.05 * span  # a margin on both sides
    assert hi < 10  # the outliers (10.3 .. 314) are left out
    # model, Bayes and oracle are distinguishable: their gap is a visible share of the height
    gap = min(np.abs(np.subtract(DENSITY["model"], DENSITY["oracle"])))
    assert gap / (hi - lo) > 0.1
    # the near baseline (KDE at 4.87 .. 3.74) stays fully inside; a value just outside the core
    # range (5.69, within half a span) stretches it
    assert hi >= 5.69


def test_outliers_are_marked_at_the_edge_with_their_value() -> None:
    fig = C.curve_chart(NS, DENSITY, metric="NLL", title="t")
    lo, hi = fig.layout.yaxis.range
    edge = [t for t in fig.data if t.meta.get("role") == "edge"]
    em = next(t for t in edge if t.meta["of"] == "em_bic")
    assert list(em.x) == [1, 2, 3, 4, 5] and all(y == hi for y in em.y)  # n = 1 .. 16, on the top edge
    assert em.marker.symbol == "triangle-up" and em.cliponaxis is False
    assert em.customdata[0][1] == pytest.approx(313.53)  # hover gives the value
    labels = {a.x: a.text for a in fig.layout.annotations}
    assert "EM BIC, Gaussian 314↑" in labels[1]  # same value: one entry for both lines
    assert "KDE 104↑" in labels[2] and "EM BIC 8.61↑" in labels[5]
    assert 0 not in labels and 6 not in labels  # nothing off the chart at n = 0 and 32
    assert fig.layout.margin.t > 40  # room for the stacked labels above the plot


def test_a_value_below_the_range_is_marked_on_the_bottom_edge() -> None:
    fig = C.curve_chart([1, 2], {"model": [5.0, 4.0], "oracle": [4.0, 4.0], "knn": [-20.0, 4.5]},
                        metric="NLL", title="t")
    lo, _ = fig.layout.yaxis.range
    edge = next(t for t in fig.data if t.meta.get("role") == "edge")
    assert edge.marker.symbol == "triangle-down" and list(edge.y) == [lo]
    assert any("-20↓" in a.text for a in fig.layout.annotations)


def test_legend_names_are_human_and_compact_charts_use_short_ones() -> None:
    fig = C.curve_chart(NS, DENSITY, metric="NLL", title="t")
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == ["model", "Bayes-optimal", "oracle (true distribution)", "KDE (Scott)", "EM (BIC)",
                      "single Gaussian", "prior predictive (no context)"]
    assert not any("_" in name for name in legend)
    small = C.curve_chart([0, 1], {"ols": [8.0, 7.0], "model": [2.0, 1.0]}, metric="MSE", title="t",
                          compact=True)
    assert [t.name for t in small.data if t.showlegend is not False] == ["OLS", "model"]
    assert all("OLS" not in a.text for a in small.layout.annotations)  # values only at the edge
    assert C.display_name("some_new_thing") == "some new thing"  # unknown keys still read as words


def test_adding_a_line_or_a_band_is_one_call_and_refits() -> None:
    fig = C.curve_chart([0, 1, 2], {"model": [3.0, 2.5, 2.0], "oracle": [1.9, 1.9, 1.9]}, metric="NLL",
                        title="t")
    lo0, hi0 = fig.layout.yaxis.range
    C.add_line(fig, "bayes", [3.5, 2.4, 1.95])
    assert fig.layout.yaxis.range[1] > hi0  # a core line widens the range
    C.add_line(fig, "em_bic", [60.0, 30.0, 2.0])
    assert fig.layout.yaxis.range[1] < 5 and any("EM BIC 60↑" in a.text for a in fig.layout.annotations)
    C.add_band(fig, "bayes", [1.0, 1.0, 1.0], [1.2, 1.2, 1.2], label="orders", core=True)
    assert fig.layout.yaxis.range[0] < 1.0
    # refitting never duplicates the edge marks
    assert sum(t.meta.get("role") == "edge" for t in fig.data) == 1
    with pytest.raises(ValueError, match="3 context sizes"):
        C.add_line(fig, "knn", [1.0, 2.0])


def test_fit_y_range_and_values() -> None:
    assert C.fit_y_range([1.0, 1.0]) == pytest.approx((1.0 - 0.08 * 0.05, 1.0 + 0.08 * 0.05))
    assert C.fit_y_range([], [2.0, 4.0]) == pytest.approx((2.0 - 0.16, 4.0 + 0.16))
    assert C.fit_y_range([float("nan")]) == (0.0, 1.0)
    lo, hi = C.fit_y_range([0.0, 1.0], [1.4, 100.0])
    assert hi == pytest.approx(1.4 + 0.08 * 1.4)  # 1.4 is near (within half a span), 100 is not
    assert [C.fmt_value(v) for v in (313.53, 14.43, 8.611, 1234.4, -20.0)] == ["314", "14.4", "8.61", "1234",
                                                                               "-20"]
