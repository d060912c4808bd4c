"""The "Is it Bayesian?" page in a real browser at 1280 px: opened from a share link with a context,
all four views drawn, no error, nothing cut off; the screenshot goes to artifacts/."""

from __future__ import annotations

import pytest
from browser_helpers import ARTIFACTS, settle, watch

from iclebm.ui.page_state import encode_points

pytestmark = pytest.mark.browser

POINTS = [(-2.1, 1.3), (-1.8, 0.9), (2.6, -1.2), (3.0, -0.7), (0.4, 3.1), (-2.4, 1.0)]
CHARTS = 6  # order maps, martingale maps and steps, Bayes-gap bands, trajectory map, density strip


def test_bayesian_page_at_1280(browser, app_url: str) -> None:  # type: ignore[no-untyped-def]
    pg = browser.new_page(viewport={"width": 1280, "height": 3600})  # tall: the whole page in one shot
    errors = watch(pg)  # page errors and console errors
    pg.goto(f"{app_url}/bayesian?pts={encode_points(POINTS)}")
    pg.wait_for_function(f"() => document.querySelectorAll('.iclebm-canvas').length >= {CHARTS}",
                         timeout=240_000)
    settle(pg)
    body = pg.inner_text("body")
    for heading in ("Order sensitivity", "The martingale check", "The Bayes-gap decomposition",
                    "The trajectory map"):
        assert heading in body
    assert "permutation KL, model" in body and "martingale gap, last-point-heavy KDE" in body
    assert "Traceback" not in body and not errors, errors
    # nothing wider than the window: no horizontal scroll at 1280 px
    assert pg.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "bayesian-1280.png"))
    pg.close()
