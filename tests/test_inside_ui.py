"""The Inside page's pure parts: figure builders (arrays in, figures out). Its URL state is the
INSIDE property table (tests/test_ui_state.py)."""

from __future__ import annotations

import numpy as np
import pytest

from iclebm.ui import inside_figures as F

BOX = (-12.0, 12.0)


def test_attention_grid_sizes_and_colours_follow_the_weights():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(5, 2))
    w = rng.dirichlet(np.ones(6), size=(3, 2))  # (L, H, N + 1)
    fig = F.attention_grid_figure(pts, (0.5, -1.0), w, BOX)
    scatters = [t for t in fig.data if t.name != "query"]
    assert len(scatters) == 3 * 2 and len([t for t in fig.data if t.name == "query"]) == 6
    # panel (layer 2, head 1) is the third: its colours are that head's weights, sizes grow with them
    panel = scatters[2]
    np.testing.assert_allclose(panel.marker.color, w[1, 0, :-1])
    order = np.argsort(w[1, 0, :-1])
    assert np.all(np.diff(np.asarray(panel.marker.size)[order]) >= 0)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[2] == f"L2 H1 · self {w[1, 0, -1]:.2f}"
    with pytest.raises(ValueError):
        F.attention_grid_figure(pts[:3], (0, 0), w, BOX)


def test_attention_grid_with_an_empty_context_shows_only_the_query():
    fig = F.attention_grid_figure(np.zeros((0, 2)), (1.0, 2.0), np.ones((2, 2, 1)), BOX)
    assert all(t.name == "query" for t in fig.data) and len(fig.data) == 4
    assert all("self 1.00" in a.text for a in fig.layout.annotations)


def test_point_sizes_area_proportional():
    s = F.point_sizes(np.array([0.0, 0.25, 1.0]), smallest=0.0, largest=10.0)
    np.testing.assert_allclose(s, [0.0, 5.0, 10.0])


def test_influence_bars_signed_colours():
    fig = F.influence_figure(np.array([0.3, -0.2, 0.0]))
    bar = fig.data[0]
    assert list(bar.x) == ["#1", "#2", "#3"] and list(bar.y) == [0.3, -0.2, 0.0]
    assert list(bar.marker.color) == [F.POS_COLOR, F.NEG_COLOR, F.POS_COLOR]


def test_dominant_map_colours_each_region_like_its_point():
    pts = np.array([[-5.0, 0.0], [5.0, 0.0]])
    xs = np.linspace(-11, 11, 4)
    owner = np.array([[0, 0, 1, 1]] * 3 + [[2, 2, 2, 2]])
    fig = F.dominant_map_figure(xs, owner, BOX, pts, (0, 0), "most attention", self_index=True)
    heat = fig.data[0]
    assert heat.zmax == 3 and np.array_equal(np.asarray(heat.z), owner + 0.5)
    assert heat.customdata[3][0] == "itself" and heat.customdata[0][2] == "point #2"
    # the stepped scale maps value i + 0.5 to colour i, and the point markers wear the same colours
    scale = heat.colorscale
    colours = F.position_colors(2)
    assert scale[0][1] == colours[0] and scale[2][1] == colours[1] and scale[-1][1] == F.SELF_COLOR
    points = next(t for t in fig.data if t.name == "context")
    assert list(points.marker.color) == colours
    # each region carries its point's number (inside the region), and the colour bar says what
    # the colours mean
    numbers = next(t for t in fig.data if t.name == "region numbers")
    assert list(numbers.text) == ["1", "2"]
    assert numbers.x[0] < 0 < numbers.x[1] and all(y < 11 for y in numbers.y)  # not in the self row
    assert heat.showscale and list(heat.colorbar.ticktext) == ["#1", "#2", "itself"]
    with pytest.raises(ValueError):
        # without the self entry, index 2 is out of range for 2 points
        F.dominant_map_figure(xs, owner, BOX, pts, (0, 0), "most influence", self_index=False)
    with pytest.raises(ValueError):
        F.dominant_map_figure(xs, owner * 0, BOX, np.zeros((0, 2)), None, "x", self_index=False)


def test_position_colours_run_in_context_order():
    cols = F.position_colors(32)
    assert len(set(cols)) == 32 and F.position_colors(0) == [] and len(F.position_colors(1)) == 1
    # first dark, last bright: a region's colour says how early its point came
    def lum(c: str) -> float:
        r, g, b = (float(v) for v in c[c.index("(") + 1:-1].split(","))
        return 0.3 * r + 0.6 * g + 0.1 * b
    assert lum(cols[0]) < lum(cols[15]) < lum(cols[-1])


def test_region_labels_skip_tiny_regions_and_stay_inside_their_region():
    xs = np.linspace(-10, 10, 50)
    gx, gy = np.meshgrid(xs, xs)
    owner = np.where(np.hypot(gx - 4, gy) < 3, 1, 0)  # a disc (1) inside a ring-shaped region (0)
    owner[0, 0] = 2  # one cell: too small for a number
    spots = F.region_labels(xs, owner, 3)
    assert [i for i, _, _ in spots] == [0, 1]
    for i, x, y in spots:
        cell = owner[np.argmin(np.abs(xs - y)), np.argmin(np.abs(xs - x))]
        assert cell == i


def test_head_panels_zoom_to_the_context_and_the_query():
    pts = np.array([[1.0, 1.0], [2.0, 1.5], [1.5, 3.0]])
    x0, x1, y0, y1 = F.view_window(pts, (2.0, 2.0), BOX)
    assert x1 - x0 == pytest.approx(y1 - y0)  # square
    assert x0 < 1.0 and x1 > 2.0 and y0 < 1.0 and y1 > 3.0  # everything in view, with a margin
    assert x1 - x0 < 4.0  # ... and not the 24-wide box
    assert F.view_window(np.zeros((0, 2)), None, BOX) == (-12.0, 12.0, -12.0, 12.0)
    edge = F.view_window(np.array([[11.9, -11.9]]), None, BOX)  # the window stays inside the box
    assert edge[1] <= 12.0 and edge[2] >= -12.0 and edge[1] - edge[0] == pytest.approx(2.0)
    w = np.full((2, 2, 4), 0.25)
    fig = F.attention_grid_figure(pts, (2.0, 2.0), w, BOX)
    assert tuple(fig.layout.xaxis4.range) == (x0, x1) and tuple(fig.layout.yaxis4.range) == (y0, y1)


def test_side_by_side_and_distance_figures():
    xs = np.linspace(-11, 11, 5)
    a = -np.arange(25, dtype=float).reshape(5, 5)
    fig = F.side_by_side_figure(xs, a, a - 1.0, BOX, np.ones((3, 2)), np.ones((1, 2)), step=20)
    heats = [t for t in fig.data if t.type == "heatmap"]
    assert len(heats) == 2 and heats[0].zmax == heats[1].zmax == 0.0  # one shared colour scale
    # the colour bar lies below, as wide as both panels; the right panel repeats no y tick labels
    assert heats[1].colorbar.orientation == "h" and heats[1].colorbar.len == 1.0
    assert fig.layout.yaxis2.showticklabels is False and fig.layout.yaxis.showticklabels is not False
    assert "k = 20" in fig.layout.annotations[1].text and "3 points read" in fig.layout.annotations[0].text
    d = F.distance_figure([0, 1, 5], [2.0, 1.0, 0.5], [0.6, 0.4, 0.2], selected=5)
    assert [t.name for t in d.data] == ["symmetric KL", "Hellinger"] and list(d.data[1].y) == [0.6, 0.4, 0.2]
