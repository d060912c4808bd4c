"""A new user's tour in a real browser at 1280×800 with the sidebar open: every page, and the Density
page with every shipped model; every page again at 1400 and 1440 px. Fails on any console error or
page error, and on any visible label, button, option or caption whose text the layout cuts off
(ellipsis or clipped overflow).

Skipped with the reason when Chromium or Playwright is missing (a failure in CI, like test_browser).
"""

from __future__ import annotations

import sys
from contextlib import suppress
from urllib.parse import urlparse

import pytest
from browser_helpers import ARTIFACTS, ROOT, nav_link, settle, watch

VIEWPORT = {"width": 1280, "height": 800}
PAGES = {"Density": "", "Inside": "/inside", "Regression": "/regression", "Train": "/train",
         "Bayesian?": "/bayesian"}

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Every visible element that draws its own text, checked two ways: it hides what does not fit
# (text-overflow: ellipsis, or one line with overflow hidden) and its text is wider than its box; or
# an ancestor that clips or scrolls (a column, a segmented control's row) cuts it off at a side.
# Plotly's SVG text, the data editor's canvas cells, JSON trees and code blocks (which scroll on purpose)
# and anything hidden (a closed expander) are skipped. Inputs (a selectbox's choice) are checked too.
TRUNCATED_JS = """() => {
  const roots = document.querySelectorAll(
    '[data-testid="stMain"], [data-testid="stSidebar"], [role="listbox"]');
  const skip = '.js-plotly-plot, [data-testid="stDataFrame"], [data-testid="stDataFrameResizable"], '
    + '[data-testid="stJson"], pre, code';
  const out = [];
  for (const root of roots) for (const el of root.querySelectorAll('*')) {
    if (el.closest(skip) || el.closest('details:not([open])')) continue;
    if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const text = el.textContent.trim().slice(0, 60);
    const cs = getComputedStyle(el);
    const hides = cs.textOverflow === 'ellipsis' || (cs.overflowX === 'hidden' && cs.whiteSpace === 'nowrap');
    if (hides && el.scrollWidth > el.clientWidth + 1) {
      out.push(`${text} (${el.scrollWidth} > ${el.clientWidth} px)`);
      continue;
    }
    for (let a = el.parentElement; a && a !== root.parentElement; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (ox === 'visible') continue;
      const ar = a.getBoundingClientRect();
      if (r.right > ar.right + 1 || r.left < ar.left - 1) {
        out.push(`${text} (cut off by its ${ox} container)`);
        break;
      }
    }
  }
  // A selectbox shows its choice in an <input>: its text is a value, not a text node.
  for (const root of roots) for (const el of root.querySelectorAll('input')) {
    if (!el.value || el.type === 'file' || el.closest('[data-testid="stDataFrame"]')) continue;
    if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    if (el.scrollWidth > el.clientWidth + 1)
      out.push(`${el.value.slice(0, 60)} (${el.scrollWidth} > ${el.clientWidth} px, a widget's value)`);
  }
  return [...new Set(out)];
}"""


def _open(pg, url: str) -> None:  # type: ignore[no-untyped-def]
    pg.goto(url)
    pg.wait_for_selector('[data-testid="stSidebar"]', timeout=90_000)
    settle(pg)


def _go_to(pg, title: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """Open a page through the navigation, as a user does."""
    nav_link(pg, title).click(timeout=60_000)
    pg.wait_for_function("p => window.location.pathname.replace(/\\/$/, '') === p", arg=path, timeout=60_000)
    pg.wait_for_selector('[data-testid="stMain"] h3, [data-testid="stMain"] h2', timeout=90_000)
    settle(pg)


def _model_options(pg) -> list[str]:  # type: ignore[no-untyped-def]
    """Open the sidebar's model selector: its options must be whole too; closes it again."""
    box = pg.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    box.click()
    pg.wait_for_selector('[role="option"]', timeout=30_000)
    texts = pg.locator('[role="option"]').all_inner_texts()
    return texts


def _check(pg, where: str, problems: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert pg.locator('[data-testid="stSidebar"]').is_visible(), f"{where}: the sidebar is closed"
    before = len(problems)
    problems += [f"{where}: truncated label {text}" for text in pg.evaluate(TRUNCATED_JS)]
    if "Traceback" in pg.inner_text("body") or pg.locator('[data-testid="stException"]').count():
        problems.append(f"{where}: an exception is shown")
    if len(problems) > before:  # a picture of what went wrong, for artifacts/
        print("\n".join(problems[before:]), file=sys.stderr)
        with suppress(Exception):
            pg.screenshot(path=str(ARTIFACTS / f"tour-{where.replace(' ', '_')}.png"), timeout=10_000)


def _shipped_models() -> list[str]:
    return sorted(p.stem for p in (ROOT / "checkpoints").glob("*.safetensors"))


def test_tour_of_every_page_at_1280_has_no_errors_and_no_cut_labels(browser, app_url: str) -> None:  # type: ignore[no-untyped-def]
    pg = browser.new_page(viewport=VIEWPORT)
    problems = watch(pg)
    try:
        _open(pg, app_url)
        pg.locator('[data-testid="stSidebar"] details summary').filter(has_text="Model card").click()
        pg.wait_for_selector('[data-testid="stSidebar"] details[open] table', timeout=30_000)
        _check(pg, "the sidebar's model card", problems)
        for title, path in PAGES.items():
            if path:
                _go_to(pg, title, path)
            assert urlparse(pg.url).path.rstrip("/") == path, (title, pg.url)
            _check(pg, title, problems)
        options = _model_options(pg)
        # the shipped models, and any a Train page or CLI run saved to runs/ on this machine
        assert options and all(o.split()[0] in _shipped_models() or o.endswith("(runs/)") for o in options), \
            options
        _check(pg, "the model selector's options", problems)
        pg.keyboard.press("Escape")
        for model in _shipped_models():
            _open(pg, f"{app_url}/?model={model}")
            _check(pg, f"Density with {model}", problems)
        _open(pg, f"{app_url}/?model=sinusoid")  # the Regression page with all its controls
        _go_to(pg, "Regression", PAGES["Regression"])
        _check(pg, "Regression with sinusoid", problems)
        for title, path in PAGES.items():  # deep links: each page opened at its own address
            if path:
                _open(pg, f"{app_url}{path}")
                _check(pg, f"{title} opened at its link", problems)
    finally:
        pg.close()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("width", [1400, 1440])
def test_every_page_at_wider_windows_has_no_cut_labels(browser, app_url: str, width: int) -> None:  # type: ignore[no-untyped-def]
    """The widths the issue was seen at with the sidebar open: Streamlit's columns and segmented
    controls lay out differently there, so 1280 passing does not prove these."""
    pg = browser.new_page(viewport={"width": width, "height": 900})
    problems = watch(pg)
    try:
        _open(pg, app_url)
        for title, path in PAGES.items():
            if path:
                _go_to(pg, title, path)
            _check(pg, f"{title} at {width} px", problems)
    finally:
        pg.close()
    assert not problems, "\n".join(problems)
