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
    colours = F.categorical_colors(2)
    assert scale[0][1] == colours[0] and scale[2][1] == colours[1] and scale[-1][1] == F.SELF_COLOR
    assert list(fig.data[1].marker.color) == colours
    with pytest.raises(ValueError):
        # without the self entry, index 2 is out of range for 2 points
        F.dominant_map_figure(xs, owner, BOX, pts, (0, 0), "most influence", self_index=False)
    with pytest.raises(ValueError):
        F.dominant_map_figure(xs, owner * 0, BOX, np.zeros((0, 2)), None, "x", self_index=False)


def test_side_by_side_and_distance_figures():
    xs = np.linspace(-11, 11, 5)
    a = -np.arange(25, dtype=float).reshape(5, 5)
    fig = F.side_by_side_figure(xs, a, a - 1.0, BOX, np.ones((3, 2)), np.ones((1, 2)), step=20)
    heats = [t for t in fig.data if t.type == "heatmap"]
    assert len(heats) == 2 and heats[0].zmax == heats[1].zmax == 0.0  # one shared colour scale
    assert "k = 20" in fig.layout.annotations[1].text and "3 points read" in fig.layout.annotations[0].text
    d = F.distance_figure([0, 1, 5], [2.0, 1.0, 0.5], [0.6, 0.4, 0.2], selected=5)
    assert [t.name for t in d.data] == ["symmetric KL", "Hellinger"] and list(d.data[1].y) == [0.6, 0.4, 0.2]
