"""Figure builders: arrays in, Plotly figures out."""

from __future__ import annotations

import numpy as np
import pytest

from iclebm.ui import figures as P

BOX = (-12.0, 12.0)
R = 20
XS = (np.arange(R) + 0.5) * 24 / R - 12


def _grids(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    energy = rng.normal(size=(R, R)).astype(np.float32) + 3
    logp = -energy - np.log(np.exp(-energy).sum() * (24 / R) ** 2)
    return energy, logp


def test_heat_values() -> None:
    e, lp = _grids()
    z, label = P.heat_values(e, lp, "energy", False)
    assert np.allclose(z, e) and "E(" in label
    z, _ = P.heat_values(e, lp, "energy", True)
    assert z.min() == pytest.approx(0.0) and np.all(np.diff(np.sort(z.ravel())) >= 0)
    z, label = P.heat_values(e, lp, "density", False)
    assert np.allclose(z, np.exp(lp)) and label.startswith("p(")
    lp2 = lp.copy()
    lp2[0, 0] = -1e4  # far below the peak: floored so it cannot stretch the colour scale
    z, label = P.heat_values(e, lp2, "density", True)
    assert z.min() >= lp2.max() - P.LOG_DENSITY_SPAN - 1e-4 and label.startswith("log p")
    with pytest.raises(ValueError):
        P.heat_values(e, lp, "entropy")


def _names(fig) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.name for t in fig.data]


def test_landscape_figure_layers_follow_the_toggles() -> None:
    e, lp = _grids()
    pts = np.array([[0.0, 0.0], [1.0, 2.0], [-3.0, 4.0]])
    xy = np.stack(np.meshgrid(XS[::4], XS[::4]), -1).reshape(-1, 2)
    fig = P.landscape_figure(XS, e, lp, BOX, kind="density", log=True, contours=True, arrows=(xy, -xy),
                             points=pts, true_log_density=lp, bayes=(XS[::2], lp[::2, ::2]), samples=pts,
                             title="t")
    names = _names(fig)
    assert names[0].startswith("log p") and fig.data[0].type == "heatmap"
    for name in ("true density", "Bayes-optimal", "samples", "context"):
        assert name in names
    (lines,) = [s for s in fig.layout.shapes if s.name == "contours"]  # computed here, one path shape
    assert lines.xref == "x" and lines.path.startswith("M")
    (arrows,) = [s for s in fig.layout.shapes if s.name == "-grad E"]  # one path shape: fast to draw
    n_arrows = int((np.abs(xy).sum(1) > 0).sum())  # the zero vector at the origin has no arrow
    assert arrows.xref == "x" and arrows.yref == "y" and arrows.path.count("M") == 2 * n_arrows
    assert names[-1] == "context"  # points on top
    assert tuple(fig.layout.xaxis.range) == BOX and tuple(fig.layout.yaxis.range) == BOX
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.dragmode is False
    bare = P.landscape_figure(XS, e, lp, BOX, contours=False)
    assert _names(bare) == ["E(x | context)"]


def _same_json(spec: P.FigureSpec) -> None:
    """What the canvas sends for a spec (unvalidated) is what the validated go.Figure serialises to."""
    import json

    sent, validated = json.loads(spec.to_json()), json.loads(spec.figure().to_json())
    assert sent.keys() == validated.keys()
    assert sent["layout"] == validated["layout"]  # the template, colour scales as go.Figure expands them
    assert len(sent["data"]) == len(validated["data"])
    for a, b in zip(sent["data"], validated["data"], strict=True):
        assert a == b, a.get("name")
    assert sent.get("frames") == validated.get("frames")


def test_landscape_spec_sends_what_the_validated_figure_would() -> None:
    """The click path skips go.Figure's validation; every layer must still be a valid figure that
    serialises the same (typed arrays, the default template, plotly.py's colour scale stops)."""
    e, lp = _grids()
    pts = np.array([[0.0, 0.0], [1.0, 2.0], [-3.0, 4.0]])
    xy = np.stack(np.meshgrid(XS[::4], XS[::4]), -1).reshape(-1, 2)
    for kind in ("energy", "density"):
        _same_json(P.landscape_spec(XS, e, lp, BOX, kind=kind, log=kind == "density", arrows=(xy, -xy),
                                    points=pts, n_shown=2, true_log_density=lp, bayes=(XS[::2], lp[::2, ::2]),
                                    samples=pts, title="t"))
    _same_json(P.landscape_spec(XS, e, lp, BOX, contours=False))
    z = P.typed_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert z["dtype"] == "f4" and z["shape"] == "2, 3"
    with pytest.raises(TypeError):
        P.typed_array(np.arange(3))


def test_contour_path_traces_the_level_sets() -> None:
    """Circles: z = x² + y² has the level r² at radius r; every vertex of the path lies on its circle."""
    xs = np.linspace(-5, 5, 81)
    z = xs[None, :] ** 2 + xs[:, None] ** 2
    levels = np.array([4.0, 9.0])
    path = P.contour_path(xs, z, levels)
    rings = [np.array([[float(v) for v in pt.split(",")] for pt in seg.split("L")])
             for seg in path.split("M")[1:]]
    assert len(rings) == 2
    rings.sort(key=lambda r: float(np.hypot(*r.T).mean()))
    for ring, radius in zip(rings, (2.0, 3.0), strict=True):
        np.testing.assert_allclose(np.hypot(*ring.T), radius, atol=0.01)  # linear interpolation, 0.125 grid
    assert P.contour_path(xs, np.zeros_like(z), P.contour_levels(np.zeros_like(z))) == ""  # flat: none
    assert len(P.contour_levels(z)) == 14 and P.contour_levels(z).min() > z.min()


def test_context_points_are_numbered_and_the_newest_is_ringed() -> None:
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    tr = P.context_trace(pts)
    assert list(tr.customdata) == [1, 2, 3, 4] and list(tr.text) == ["1", "2", "3", "4"]
    assert "text" in tr.mode and tr.textfont.size <= 10  # small labels beside the markers
    assert "point #%{customdata}" in tr.hovertemplate
    tr = P.context_trace(pts, n_shown=2)
    assert tr.marker.color[1] == P.CONTEXT_COLOR and tr.marker.color[2] != P.CONTEXT_COLOR
    assert tr.hovertext[3] == "not yet seen"
    ring = P.newest_traces(pts, n_shown=2)
    assert len(ring) == 2 and all(r.x[0] == 1.0 and r.y[0] == 1.0 for r in ring)  # point #2
    assert ring[0].marker.size == ring[1].marker.size > tr.marker.size
    assert P.newest_traces(pts, n_shown=0) == []
    # the points come after the ring, so they are drawn on top of it
    assert [t.name for t in P.context_traces(pts)][-1] == "context"
    fig = P.landscape_figure(XS, *_grids(), BOX, points=np.zeros((64, 2)) + 0.1)
    assert len(fig.data[-1].text) == 64  # a long context is numbered too


def test_arrow_segments() -> None:
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    uv = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, -4.0]])  # the zero vector is dropped
    x, y = P.arrow_segments(xy, uv, spacing=1.0)
    assert len(x) == len(y) == 2 * 7
    assert np.isnan(x).sum() == 4
    # shaft of the strongest arrow: length 0.9 * spacing, pointing down
    assert x[7] == 2.0 and y[7] == 2.0 and y[8] == pytest.approx(2.0 - 0.9)
    # weaker arrows are shorter (sqrt scale), never longer than the spacing
    assert 0 < x[1] - x[0] < 0.9
    path = P.arrow_path(xy, uv, spacing=1.0)  # the same strokes as one SVG path
    head = np.array(path.replace("M", " M ").replace("L", " L ").replace(",", " ").split()[:12])
    assert list(head[[0, 3, 6]]) == ["M", "L", "L"]
    np.testing.assert_allclose(head[[1, 2, 4, 5, 7, 8]].astype(float),
                               np.stack([x[:3], y[:3]], 1).ravel(), atol=1e-3)
    assert P.arrow_path(xy, np.zeros_like(xy), 1.0) == ""
    empty = P.arrow_segments(xy, np.zeros_like(xy), 1.0)
    assert len(empty[0]) == 0


def test_film_strip_figure() -> None:
    e, lp = _grids()
    lengths = [0, 1, 2, 4]
    fig = P.film_strip_figure(XS, np.stack([lp] * 4), lengths, BOX, points=np.zeros((4, 2)), selected=2)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 4
    assert [a.text for a in fig.layout.annotations] == [f"n = {n}" for n in lengths]
    assert fig.layout.annotations[2].font.color == P.CONTEXT_COLOR
    assert sum(t.type == "scatter" for t in fig.data) == 3  # no points panel for n = 0


def test_trail_segments() -> None:
    pos = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    x, y = P.trail_segments(pos, 4, 2)  # frames 2..4 for 3 particles, NaN after each
    assert len(x) == 3 * 4 and np.isnan(x).sum() == 3
    assert P.trail_segments(pos, 0, 3)[0].size == 0


@pytest.mark.parametrize("trails", [0, 3])
def test_langevin_figure_animates_only_the_particles(trails: int) -> None:
    e, lp = _grids()
    rng = np.random.default_rng(0)
    positions = rng.normal(size=(6, 10, 2)).astype(np.float32)
    steps = [0, 2, 4, 6, 8, 10]
    fig = P.langevin_figure(XS, e, lp, BOX, positions, steps, points=np.zeros((2, 2)), trails=trails)
    assert len(fig.frames) == 6 and [f.name for f in fig.frames] == [str(s) for s in steps]
    n_traces = len(fig.data)
    animated = {n_traces - 1} | ({n_traces - 2} if trails else set())
    for frame in fig.frames:
        assert set(frame.traces) == animated
        assert all(t.type == "scatter" for t in frame.data)
    # the landscape is a static background image, never a trace that frames could touch
    assert len(fig.layout.images) == 1 and fig.layout.images[0].source.startswith("data:image/png;base64,")
    assert all(t.type == "scatter" for t in fig.data)
    np.testing.assert_allclose(fig.frames[3].data[-1].x, positions[3, :, 0])
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert any("play" in b for b in labels) and any("pause" in b for b in labels)
    assert len(fig.layout.sliders[0].steps) == 6


def test_langevin_figure_draws_true_contours_into_the_background() -> None:
    e, lp = _grids()
    positions = np.zeros((2, 3, 2), dtype=np.float32)
    plain = P.langevin_figure(XS, e, lp, BOX, positions, [0, 1])
    fine = np.random.default_rng(1).normal(size=(3 * R, 3 * R))
    overlay = P.langevin_figure(XS, e, lp, BOX, positions, [0, 1], true_log_density=fine)
    assert overlay.layout.images[0].source != plain.layout.images[0].source


def test_colormap_contours_and_png() -> None:
    z = np.linspace(0, 1, 12).reshape(3, 4)
    rgb = P.colormap(z, "Viridis")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (68, 1, 84) and tuple(rgb[-1, -1]) == (253, 231, 37)
    assert tuple(P.colormap(z, "Viridis_r")[0, 0]) == (253, 231, 37)
    mask = P.contour_mask(np.array([[0.0, 0.0, 2.0, 2.0]] * 3), [1.0])
    assert mask[:, 2].all() and not mask[:, :2].any() and not mask[:, 3].any()
    import base64
    import struct

    url = P.png_data_url(rgb)
    png = base64.b64decode(url.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (4, 3)


def test_icl_curve_figure_uses_human_names_and_fits_the_core_lines() -> None:
    curve = {"ns": [0, 1, 2, 4], "nll": {"model": [5, 4, 3, 2.5], "oracle": [2, 2, 2, 2],
                                          "kde_scott": [float("nan"), 6, 4, 3], "em_bic": [5, 78.1, 40, 3],
                                          "prior_predictive": [5, 5, 5, 5]}}
    fig = P.icl_curve_figure(curve)
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert names == ["model", "oracle (true distribution)", "KDE (Scott)", "EM (BIC)",
                     "prior predictive (no context)"]
    assert list(fig.layout.xaxis.ticktext) == ["0", "1", "2", "4"]
    assert np.isnan(fig.data[2].y[0])
    lo, hi = fig.layout.yaxis.range
    assert lo < 2 and hi > 6 and hi < 10  # the EM spike does not flatten the chart
    edges = " ".join(a.text for a in fig.layout.annotations)
    assert "EM BIC 78.1↑" in edges and "EM BIC 40↑" in edges


def test_icl_history_figure_keeps_faint_history_out_of_the_range() -> None:
    curves = {"ns": [0, 2, 8], "prior_predictive": 5.0, "oracle": 3.0,
              "curves": [(10, [90.0, 80.0, 70.0]), (20, [5.0, 4.5, 4.0])]}
    fig = P.icl_history_figure(curves)
    lo, hi = fig.layout.yaxis.range
    assert lo < 3.0 and 5.0 < hi < 7.0  # the diverged early refresh is faint history, not fitted
    assert not fig.layout.annotations  # nor marked at the edge
    assert fig.data[-1].name == "model, step 20" and fig.data[0].opacity < 0.5


def test_ema_and_loss_figure() -> None:
    sm = P.ema([1.0, float("nan"), 3.0, float("inf")], alpha=0.5)
    assert sm[0] == 1.0 and sm[1] == 1.0 and sm[2] == 2.0 and sm[3] == 2.0
    hist = [{"step": i, "loss": -i / 10, "e_real": 1.0, "e_neg": 2.0} for i in range(5)]
    fig = P.loss_figure(hist)
    assert len(fig.data) == 6  # raw + smoothed for loss, e_real, e_neg
    assert list(fig.data[0].x) == list(range(5))
    assert len(P.loss_figure([]).data) == 6
    # a long run is thinned for drawing, but smoothed over every step
    long = [{"step": i, "loss": float(i % 7), "e_real": 1.0} for i in range(1000)]
    fig = P.loss_figure(long, max_points=300)
    assert len(fig.data[0].x) == 300 and fig.data[0].x[0] == 0 and fig.data[0].x[-1] == 999
    full = P.ema([float(i % 7) for i in range(1000)])
    assert fig.data[1].y[-1] == full[-1] and fig.data[0].y[-1] == 999 % 7


def _regression(points: np.ndarray | None):  # type: ignore[no-untyped-def]
    from iclebm.ui.regression_figures import regression_figure

    xs = np.linspace(-10, 10, 16)
    z = np.random.default_rng(0).normal(size=(16, 16))
    curves = np.stack([0 * xs, 0.5 * xs])
    return regression_figure(xs, z, "E(y | x, D)", "energy", (-10.0, 10.0), [0, 5], curves, 5, points=points,
                             ols=xs, truth=0.5 * xs)


def test_regression_canvas_draws_points_above_the_curve_and_rings_the_newest() -> None:
    pts = np.array([[1.0, 0.5], [2.0, 1.0], [-3.0, -1.5]])
    fig = _regression(pts)
    names = [t.name for t in fig.data]
    curve = names.index("ŷ(x) (thinking)")
    assert names.index("context") > curve and names.index("newest point") > curve
    ring = fig.data[names.index("newest point")]
    assert (ring.x[0], ring.y[0]) == (-3.0, -1.5)
    assert fig.frames[0].traces == (curve,)  # the animation still moves the curve
    # the play buttons sit below the plot, away from the legend above it; the legend is dark,
    # so the white "true f(x)" swatch shows
    assert fig.layout.updatemenus[0].y < 0 and fig.layout.legend.y >= 1.0
    assert fig.layout.legend.bgcolor == "#111111"
    assert "true f(x)" in names
    assert "newest point" not in [t.name for t in _regression(None).data]


def test_regression_charts_are_compact_with_human_names_and_a_short_title() -> None:
    from iclebm.ui.regression_figures import method_curves_figure, thinking_curve_figure

    values = {"model": [2.0, 1.0, 0.8], "bayes": [1.9, 0.9, 0.7], "ols": [8.0, 553.0, 0.9]}
    fig = method_curves_figure([0, 1, 2], values, "NLL", "NLL of y given x")
    assert [t.name for t in fig.data if t.showlegend is not False] == ["model", "Bayes", "OLS"]
    assert fig.layout.yaxis.range[1] < 5 and any("553↑" in a.text for a in fig.layout.annotations)
    think = thinking_curve_figure({"steps": [0, 1, 5], "mse": {"4": [1.5, 1.2, 1.0], "16": [1.0, 0.6, 0.3]}})
    assert len(think.layout.title.text) <= 20 and "thinking steps" in think.layout.title.subtitle.text
    assert think.data[0].line.color != think.data[1].line.color


def test_regression_spec_sends_what_the_validated_figure_would() -> None:
    from iclebm.ui.regression_figures import regression_spec

    xs = np.linspace(-10, 10, 16)
    z = np.random.default_rng(0).normal(size=(16, 16))
    curves = np.stack([0 * xs, 0.5 * xs, xs])
    pts = np.array([[1.0, 0.5], [2.0, 1.0]])
    for kind in ("energy", "density"):
        _same_json(regression_spec(xs, z, "z", kind, (-10.0, 10.0), [0, 5, 10], curves, 5, points=pts, ols=xs,
                                   bayes=(0.4 * xs, np.ones(16)), truth=(0.5 * xs).astype(np.float32),
                                   slider_steps=[0, 5, 10, 20]))
