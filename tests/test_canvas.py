"""The canvas's click bookkeeping: every click is applied exactly once, even when several
clicks reach Python in one trigger (Streamlit keeps only the newest of queued triggers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iclebm.ui.canvas import unapplied_clicks


def _c(seq: int, x: float = 1.0) -> dict:
    return {"x": x, "y": -x, "seq": seq, "t": 0}


def _payload(*seqs: int) -> dict:
    clicks = [_c(s, float(s)) for s in seqs]
    return {**clicks[-1], "clicks": clicks}


def test_queued_clicks_are_applied_once_in_order() -> None:
    clicks, ack = unapplied_clicks(_payload(1, 2, 3), None)
    assert [c["seq"] for c in clicks] == [1, 2, 3] and ack == 3
    clicks, ack = unapplied_clicks(_payload(3, 4), 3)  # 3 was applied; the browser had not heard yet
    assert [c["seq"] for c in clicks] == [4] and ack == 4
    assert unapplied_clicks(_payload(3, 4), 4) == ([], 4)  # the same trigger again: nothing new
    clicks, _ = unapplied_clicks({**_c(7), "clicks": [_c(7), _c(5), _c(6)]}, 4)
    assert [c["seq"] for c in clicks] == [5, 6, 7]


def test_odd_payloads() -> None:
    assert unapplied_clicks(None, 2) == ([], 2)
    clicks, ack = unapplied_clicks(_payload(1), 9)  # a new page restarted the count
    assert [c["seq"] for c in clicks] == [1] and ack == 1
    clicks, ack = unapplied_clicks({"x": 1.0, "y": 2.0}, 3)  # no sequence numbers: just this click
    assert clicks == [{"x": 1.0, "y": 2.0}] and ack == 3
    clicks, ack = unapplied_clicks({**_c(2), "clicks": [_c(2), {"seq": 1}, "junk"]}, None)
    assert [c["seq"] for c in clicks] == [2] and ack == 2
    assert unapplied_clicks({"clicks": "junk"}, 1) == ([], 1)


def test_chart_config_drops_share_and_keeps_png_download() -> None:
    from iclebm.ui.canvas import _CANVAS_JS
    from iclebm.ui.figures import CHART_CONFIG

    assert CHART_CONFIG["showSendToCloud"] is False and CHART_CONFIG["displaylogo"] is False
    removed = CHART_CONFIG["modeBarButtonsToRemove"]
    assert "sendChartToCloud" in removed and "toImage" not in removed
    assert CHART_CONFIG["toImageButtonOptions"]["format"] == "png"
    # the canvas takes its modebar from Python (data.config), not from defaults of its own
    assert "data.config" in _CANVAS_JS and "modeBarButtonsToRemove" not in _CANVAS_JS


def test_plotly_js_is_served_as_a_cacheable_file_or_else_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """With static serving on, the loader is a small <script src> for a copy of the bundle in static/;
    with it off, the loader carries the whole bundle inline. The bundle is the shipped cartesian one
    when it matches the plotly.js version the installed `plotly` writes figures for."""
    from plotly.offline import get_plotlyjs_version

    from iclebm.ui import canvas

    bundle = canvas.plotly_bundle()
    assert bundle.name == f"plotly-cartesian-{get_plotlyjs_version()}.min.js"  # shipped for this version
    head = bundle.read_text(encoding="utf-8")[:200]
    assert f"plotly.js (cartesian - minified) v{get_plotlyjs_version()}" in head
    options = {"server.enableStaticServing": True, "server.baseUrlPath": ""}
    monkeypatch.setattr(canvas.st, "get_option", lambda key: options[key])
    for f in (canvas.static_plotly_url, canvas._plotly_loader_js):
        f.cache_clear()
    url = canvas.static_plotly_url()
    assert url == f"/app/static/{bundle.name}"
    served = Path(canvas.__file__).resolve().parents[2] / "static" / url.rsplit("/", 1)[1]
    assert served.read_bytes() == bundle.read_bytes()
    assert len(canvas._plotly_loader_js()) < 2000 and json.dumps(url) in canvas._plotly_loader_js()
    options["server.enableStaticServing"] = False
    for f in (canvas.static_plotly_url, canvas._plotly_loader_js):
        f.cache_clear()
    assert canvas.static_plotly_url() is None and len(canvas._plotly_loader_js()) > 1_000_000
    # another plotly.js version: the installed package's own full bundle
    monkeypatch.setattr("plotly.offline.get_plotlyjs_version", lambda: "0.0.1")
    assert canvas.plotly_bundle().name == "plotly.min.js"
    canvas.static_plotly_url.cache_clear()
    canvas._plotly_loader_js.cache_clear()
