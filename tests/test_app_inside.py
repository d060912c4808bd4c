"""The Inside page under AppTest: inspector, map modes, links, the contexts-to-weights run, bad input.

Canvas clicks are tested in the browser (test_browser.py); here the query is set as the click
callback would set it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app import _app, _canvases, _ok, _open, ckpt_dir  # noqa: F401 - ckpt_dir is a fixture
from test_mdn_app import mdn_dir  # noqa: F401 - a fixture

from iclebm.probes import ctx2weights

PTS = [(1.0, 2.0), (3.0, 1.0), (-2.0, 0.5), (0.5, -1.5)]


def _q(at) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v if isinstance(v, str) else v[-1] for k, v in at.query_params.items()}


def _texts(at, kind: str) -> str:  # type: ignore[no-untyped-def]
    return " ".join(str(e.value) for e in getattr(at, kind))


def _inside(points: list | None = None):  # type: ignore[no-untyped-def]
    at = _app().run()
    if points is not None:
        at.session_state["points"] = list(points)
    _open(at, "inside").run()
    return at


def test_inside_page_shows_the_inspector_and_its_link(ckpt_dir: Path) -> None:  # noqa: F811
    at = _inside(PTS)
    _ok(at)
    assert any("Inside the model" in str(m.value) for m in at.markdown)
    assert {"in_grid", "in_influence"} <= _canvases(at)  # the inspector grid and the influence bars
    q = _q(at)
    assert q["pts"] == "1,2;3,1;-2,0.5;0.5,-1.5" and q["q"] == "0.625,0.5" and q["model"] == "mog2d"
    at.session_state["in_query"] = (2.0, -3.0)  # what a click on the canvas does
    at.run()
    _ok(at)
    assert _q(at)["q"] == "2,-3" and "q = (2.00, -3.00)" in _texts(at, "caption")


@pytest.mark.parametrize("mode", ["attention", "influence"])
def test_map_modes_run(ckpt_dir: Path, mode: str) -> None:  # noqa: F811
    at = _inside(PTS)
    at.segmented_control(key="in_mode").set_value(mode).run()
    _ok(at)
    assert "coloured by the context point" in _texts(at, "caption")
    assert _q(at)["mode"] in ("attention", "influence")


def test_empty_context_says_only_the_self_weight(ckpt_dir: Path) -> None:  # noqa: F811
    at = _inside([])
    _ok(at)
    info = _texts(at, "info")
    assert "only attend to itself" in info and "add points on the Density page" in info
    assert at.button(key="in_run").disabled
    at.segmented_control(key="in_mode").set_value("attention").run()
    _ok(at)
    assert "no point to colour the plane by" in _texts(at, "info")


def test_a_link_reopens_the_inside_view(ckpt_dir: Path) -> None:  # noqa: F811
    link = _app()
    link._registered_pages = _app().run()._registered_pages
    _open(link, "inside")
    link.query_params.update({"pts": "1,2;3,1;-2,0.5", "q": "2,-1", "mode": "attention", "layer": "2",
                              "k": "30", "lr": "0.003", "short": "1"})
    link.run()
    _ok(link)
    ss = link.session_state
    assert ss["points"] == [(1.0, 2.0), (3.0, 1.0), (-2.0, 0.5)] and ss["in_query"] == (2.0, -1.0)
    assert link.segmented_control(key="in_mode").value == "attention"
    assert link.selectbox(key="in_layer").value == 2 and link.selectbox(key="in_head").value == "mean"
    assert link.slider(key="in_k").value == 30 and link.select_slider(key="in_lr").value == 0.003
    assert link.number_input(key="in_short").value == 1
    q = _q(link)
    assert q["layer"] == "2" and q["mode"] == "attention" and q["k"] == "30"


def test_a_bad_link_warns_and_keeps_defaults(ckpt_dir: Path) -> None:  # noqa: F811
    link = _app()
    link._registered_pages = _app().run()._registered_pages
    _open(link, "inside")
    link.query_params.update({"pts": "1,2", "q": "40,0", "k": "9999"})
    link.run()
    _ok(link)
    warnings = _texts(link, "warning")
    assert "outside the box" in warnings and "k='9999'" in warnings
    assert link.session_state["in_query"] == (1.0, 2.0)  # the context's centre
    assert link.slider(key="in_k").value == 100


def _run_fine_tune(at, k: int):  # type: ignore[no-untyped-def]
    at.slider(key="in_k").set_value(k).run()
    at.button(key="in_run").click().run()
    at.session_state["in_job"].join(120)
    at.run()
    return at


def test_contexts_to_weights_run_shows_both_landscapes_and_distances(ckpt_dir: Path) -> None:  # noqa: F811
    at = _app().run()
    at.session_state["points"] = PTS
    at.session_state["mixture"] = {"k": 3, "spread": 3.0, "width": [0.33, 0.5], "seed": 5}  # a drawn task
    _open(at, "inside").run()
    _run_fine_tune(at, 3)
    _ok(at)
    assert "Fine-tuned for k = 3 steps" in _texts(at, "success")
    assert "What this shows" in " ".join(str(m.value) for m in at.markdown)
    assert at.select_slider(key="in_snap").value == 3
    table = at.dataframe[0].value
    assert list(table.index) == ["in context p(x | D)", "in weights, k = 3", "true mixture"]
    assert table.shape[1] == 2 and float(table.iloc[2, 1]) > 0  # held-out NLL, oracle included
    # the truth has no NLL-of-D entry: a dash, never a missing value that the grid shows as "None"
    assert table.iloc[2, 0] == "–" and table.notna().all().all(), table
    assert "symmetric KL" in _texts(at, "caption")
    # changing the context marks the comparison stale instead of silently mixing contexts
    at.session_state["points"] = PTS[:2]
    at.run()
    assert "context or the model changed" in _texts(at, "warning")


def test_a_diverging_fine_tune_shows_a_message_and_keeps_the_in_context_view(
    ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    real = ctx2weights.grid_nll
    calls = {"n": 0}

    def exploding(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > 2 else out

    monkeypatch.setattr(ctx2weights, "grid_nll", exploding)
    at = _inside(PTS)
    _run_fine_tune(at, 20)
    _ok(at, allow_errors=True)
    errors = _texts(at, "error")
    assert "diverged at step 2" in errors and "in-context view is unaffected" in errors
    assert at.select_slider(key="in_snap").value == 1  # the last good snapshot (0, 1 kept; 2 diverged)
    assert {"in_side", "in_dist"} <= _canvases(at)  # the last good snapshot is drawn



def test_a_mixture_density_model_gets_a_message_not_a_traceback(mdn_dir: Path) -> None:  # noqa: F811
    at = _inside(PTS)
    at.selectbox(key="model_choice").set_value("file:tinymdn").run()
    _ok(at)
    assert "inspects energy transformers" in _texts(at, "info")


def test_a_context_longer_than_the_model_reads_is_cut_to_the_newest_with_a_warning(
        ckpt_dir: Path) -> None:  # noqa: F811
    pts = [(float(i % 10) - 5.0, float(i // 10) - 3.0) for i in range(70)]
    at = _inside(pts)
    _ok(at)
    assert [tuple(p) for p in at.session_state["points"]] == pts[-64:]  # the model reads 64
    assert "kept the newest 64, dropped the oldest 6" in _texts(at, "warning")
