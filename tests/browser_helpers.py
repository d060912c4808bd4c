"""What the browser tests share: paths, starting the app server and Chromium, waiting for the app,
navigating, and collecting console and page errors.

The pytest fixtures built on these (`app_url`, `browser`) are in conftest.py; a test module sets
`APP_ENV` (extra environment for its own server) when it needs one. Playwright is imported lazily, so
importing this module costs nothing where the browser tests are deselected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from conftest import skip_or_fail

from iclebm.ui.app_server import app_server

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"  # screenshots and server logs (gitignored)
CHROMIUM = os.environ.get("ICLEBM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NAV_LINKS = '[data-testid="stTopNavLink"], [data-testid="stSidebarNavLink"]'

# Streamlit's client cannot tell a page path from a base URL path, so on a deep link (/inside) it
# first tries /inside/_stcore/health and /inside/_stcore/host-config, gets 404s that Chromium logs
# as "Failed to load resource", then finds the root. Streamlit's own and harmless (the app loads):
# streamlit/streamlit#7074, where the maintainers call it expected base-URL discovery whose initial
# 404s "can be ignored"; no config option (server.baseUrlPath included) avoids it. So exactly
# these two paths are not counted as problems by `watch`; every other failed load is.
KNOWN_404_SUFFIXES = ("/_stcore/health", "/_stcore/host-config")


def skip(reason: str) -> None:
    """A missing browser prerequisite: a skip with the reason printed (a failure when CI=true)."""
    print(f"\nSKIPPING browser tests: {reason}", file=sys.stderr)
    skip_or_fail(reason)


def require_browser() -> None:
    """Skip (or fail in CI) unless Chromium and Playwright are here; make artifacts/."""
    if not Path(CHROMIUM).exists():
        skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        skip(f"playwright is not installed: {e}")
    ARTIFACTS.mkdir(exist_ok=True)


@contextmanager
def served_app(log_name: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The app on a free port (its log in artifacts/`log_name`), after checking the prerequisites."""
    require_browser()
    with app_server(ROOT, log=ARTIFACTS / log_name, env=env) as url:
        yield url


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Debian Chromium through Playwright; a launch failure is a skip with its reason."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as e:  # noqa: BLE001 - any launch failure is a skip with its reason
            skip(f"Chromium did not start: {e}")
        try:
            yield b
        finally:
            b.close()


def _known_404(url: str) -> bool:
    return urlparse(url).path.endswith(KNOWN_404_SUFFIXES)


def watch(pg, console: bool = True) -> list[str]:  # type: ignore[no-untyped-def]
    """Collect the page's page errors and (with `console`) its console errors into the returned list.

    A resource that fails to load is a network message, not a script error: it is recorded on
    `pg.missing` and counted as a problem unless it is Streamlit's known deep-link probe (above).
    """
    problems: list[str] = []
    missing: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    if console:
        def on_console(m) -> None:  # type: ignore[no-untyped-def]
            if m.type != "error":
                return
            url = (m.location or {}).get("url", "")
            if m.text.startswith("Failed to load resource") and _known_404(url):
                return
            problems.append(f"console error: {m.text} ({url})")

        pg.on("console", on_console)
    pg.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    pg.missing = missing
    return problems


def wait_idle(pg, timeout_ms: int = 120_000, pause_ms: int = 100) -> None:  # type: ignore[no-untyped-def]
    """Wait until the app's script run has finished (the app root reports its script state)."""
    pg.wait_for_timeout(pause_ms)
    pg.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState === 'notRunning'",
        timeout=timeout_ms)


def settle(pg) -> None:  # type: ignore[no-untyped-def]
    """Idle, then idle again after late layout (fonts, component iframes) has settled."""
    wait_idle(pg, pause_ms=150)
    pg.wait_for_timeout(500)
    wait_idle(pg, pause_ms=150)


def wait_canvas(pg, index: int = 0, timeout_ms: int = 180_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until the index-th canvas has drawn and takes clicks."""
    pg.wait_for_function(
        "i => { const c = document.querySelectorAll('.iclebm-canvas')[i]; "
        "return c && c.dataset.rendered !== undefined && c.querySelector('.nsewdrag'); }",
        arg=index, timeout=timeout_ms)


def nav_link(pg, title: str):  # type: ignore[no-untyped-def]
    """The navigation's link to the page with this title."""
    return pg.locator(NAV_LINKS).filter(has=pg.get_by_text(title, exact=True)).first


def go_to(pg, title: str) -> str:  # type: ignore[no-untyped-def]
    """Open a page by clicking its link in the navigation, as a user does; wait until its run has
    finished; return its path ("" for the main page)."""
    wait_idle(pg)
    link = nav_link(pg, title)
    path = urlparse(link.get_attribute("href") or "").path.rstrip("/")
    link.click(timeout=60_000)
    pg.wait_for_function("p => window.location.pathname.replace(/\\/$/, '') === p", arg=path, timeout=60_000)
    wait_idle(pg)
    return path
