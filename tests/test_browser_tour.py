"""A new user's tour in a real browser at 1280×800 with the sidebar open: every page, and the Density
page with every shipped model. Fails on any console error or page error, and on any visible label,
button, option or caption whose text the layout cuts off (ellipsis or clipped overflow).

Skipped with the reason when Chromium or Playwright is missing (a failure in CI, like test_browser).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import skip_or_fail

from iclebm.ui.app_server import app_server

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("ICLEBM_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
PAGES = {"Density": "", "Inside": "/inside", "Regression": "/regression", "Train": "/train"}

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
NAV_LINKS = '[data-testid="stTopNavLink"], [data-testid="stSidebarNavLink"]'


def _skip(reason: str) -> None:
    print(f"\nSKIPPING browser tour: {reason}", file=sys.stderr)
    skip_or_fail(reason)


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        _skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        _skip(f"playwright is not installed: {e}")
    ARTIFACTS.mkdir(exist_ok=True)
    with app_server(ROOT, log=ARTIFACTS / "streamlit-tour.log") as url:
        yield url


def _wait_idle(pg) -> None:  # type: ignore[no-untyped-def]
    pg.wait_for_timeout(150)
    pg.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState === 'notRunning'",
        timeout=90_000)


def _open(pg, url: str) -> None:  # type: ignore[no-untyped-def]
    pg.goto(url)
    pg.wait_for_selector('[data-testid="stSidebar"]', timeout=90_000)
    _settle(pg)


def _settle(pg) -> None:  # type: ignore[no-untyped-def]
    _wait_idle(pg)
    pg.wait_for_timeout(500)  # late layout (fonts, component iframes) settles
    _wait_idle(pg)


def _go_to(pg, title: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """Open a page through the navigation, as a user does (a deep link makes Streamlit probe
    /page/_stcore/health first: a 404 in the console that is Streamlit's, not the app's)."""
    pg.locator(NAV_LINKS).filter(has=pg.get_by_text(title, exact=True)).first.click(timeout=60_000)
    pg.wait_for_function("p => window.location.pathname.replace(/\\/$/, '') === p", arg=path, timeout=60_000)
    pg.wait_for_selector('[data-testid="stMain"] h3, [data-testid="stMain"] h2', timeout=90_000)
    _settle(pg)


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


def test_tour_of_every_page_at_1280_has_no_errors_and_no_cut_labels(app_url: str) -> None:
    if not Path(CHROMIUM).exists():
        _skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport=VIEWPORT)
        pg.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
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
            assert options and all(o.split()[0] in _shipped_models() for o in options), options
            _check(pg, "the model selector's options", problems)
            pg.keyboard.press("Escape")
            for model in _shipped_models():
                _open(pg, f"{app_url}/?model={model}")
                _check(pg, f"Density with {model}", problems)
            _open(pg, f"{app_url}/?model=sinusoid")  # the Regression page with all its controls
            _go_to(pg, "Regression", PAGES["Regression"])
            _check(pg, "Regression with sinusoid", problems)
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
