"""Live training in a real browser, with the idle pause cut to seconds (ICLEBM_IDLE_PAUSE_S).

A run whose Train page stays open must keep training well past the idle limit (the page's live
refresh pings it); the sidebar follows the run on the Train page itself; Pause shows at once and
without a rate; and once the page is closed the run pauses by itself, which a second session
sees in the app's trainer summary. Its own server, so the idle limit and the counts are its own.
"""

from __future__ import annotations

import re
import time

import pytest
from browser_helpers import ARTIFACTS, wait_idle, watch

LIMIT_S = 8.0  # the idle pause here: well above the 3-s refresh, far below the 120-s default
APP_ENV = {"ICLEBM_IDLE_PAUSE_S": str(LIMIT_S), "ICLEBM_MAX_TRAINERS": "2"}
MAIN = '[data-testid="stMain"]'
SIDE = '[data-testid="stSidebar"]'
STATUS = r"(waiting|starting|paused|running|diverged|error|stopped) · step (\d+)( · [\d.]+ steps/s)?"

pytestmark = pytest.mark.browser


def _status(pg, where: str) -> tuple[str, int, bool]:  # type: ignore[no-untyped-def]
    """(state, step, shows a rate) of the status line in the main view or the sidebar."""
    m = re.search(STATUS, pg.locator(where).inner_text())
    return (m.group(1), int(m.group(2)), bool(m.group(3))) if m else ("", -1, False)


def _wait_status(pg, where: str, pattern: str, timeout_ms: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until the text of `where` matches `pattern`; on a timeout, fail showing what it says."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        pg.wait_for_function("([sel, p]) => new RegExp(p).test(document.querySelector(sel)?.innerText || '')",
                             arg=[where, pattern], timeout=timeout_ms)
    except PlaywrightTimeout:
        pg.screenshot(path=str(ARTIFACTS / "live-timeout.png"), full_page=True)
        raise AssertionError(f"{pattern!r} not in {where} within {timeout_ms} ms; main: "
                             f"{pg.locator(MAIN).inner_text()[:600]!r}; sidebar: "
                             f"{pg.locator(SIDE).inner_text()[-400:]!r}") from None


def _open_train(browser, url: str):  # type: ignore[no-untyped-def]
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = watch(pg, console=False)
    pg.goto(url.rstrip("/") + "/train")
    pg.wait_for_selector(".st-key-tr_new button", timeout=90_000)
    wait_idle(pg)
    return pg, errors


def test_a_watched_run_keeps_going_and_an_abandoned_one_pauses(browser, app_url: str) -> None:  # type: ignore[no-untyped-def]
    pg, errors = _open_train(browser, app_url)
    other = None
    try:
        box = pg.locator(".st-key-tr_batch input").first
        box.fill("4")  # small batches: steps come quickly on a busy machine
        box.press("Enter")
        wait_idle(pg)
        pg.locator(".st-key-tr_new button").first.click()
        pg.wait_for_selector(".st-key-tr_play button:not([disabled])", timeout=120_000)
        # The sidebar follows the trainer out of "starting" on the Train page itself.
        _wait_status(pg, SIDE, r"Live training: paused · step 0", 120_000)
        pg.locator(".st-key-tr_play button").first.click()
        _wait_status(pg, MAIN, r"running · step [1-9]\d*", 180_000)
        start, (_, first, _) = time.monotonic(), _status(pg, MAIN)
        side_first = _status(pg, SIDE)[1]
        while time.monotonic() - start < 4 * LIMIT_S:  # the tab stays open: the run must go on
            pg.wait_for_timeout(1000)
            state = _status(pg, MAIN)[0]
            assert state == "running", (state, time.monotonic() - start, pg.locator(MAIN).inner_text()[:400])
        assert "no open page has looked" not in pg.inner_text("body")
        # Opened straight on /train, the page's first canvases are drawn by the live fragment's own
        # reruns, which must load plotly.js inside the fragment (the sidebar is out of its reach).
        for key in ("loss_chart", "train_icl"):
            pg.locator(f".st-key-{key} .js-plotly-plot").first.wait_for(timeout=60_000)
        assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator(MAIN).inner_text()[:600]
        _wait_status(pg, MAIN, r"running · step \d+", 10_000)
        assert _status(pg, MAIN)[1] > first, (first, _status(pg, MAIN))
        _wait_status(pg, SIDE, r"Live training: running · step \d+", 30_000)
        assert _status(pg, SIDE)[1] > side_first, (side_first, _status(pg, SIDE))  # not stale

        # Pause: the status says so at once (from the handle, not the child's next report), no rate.
        t0 = time.monotonic()
        pg.locator(".st-key-tr_pause button").first.click()
        _wait_status(pg, MAIN, r"paused · step \d+", 30_000)
        print(f"\nPause -> 'paused' shown in {time.monotonic() - t0:.2f} s")
        state, _, rate = _status(pg, MAIN)
        assert state == "paused" and not rate, pg.locator(MAIN).inner_text()[:300]
        pg.wait_for_selector(".st-key-tr_play button:not([disabled])", timeout=30_000)
        assert pg.locator(".st-key-tr_pause button[disabled]").count() == 1

        pg.locator(".st-key-tr_play button").first.click()
        _wait_status(pg, MAIN, r"running · step \d+ · [\d.]+ steps/s", 60_000)
        other, other_errors = _open_train(browser, app_url)  # a second session sees the app's trainers
        seen = other.inner_text("body")
        assert re.search(r"Trainers in this app: 1 running", seen), seen
        assert not errors, errors
        pg.close()  # the page is gone: nothing pings the run any more
        pg = None
        deadline = time.monotonic() + LIMIT_S + 90
        text = ""
        while time.monotonic() < deadline:
            other.reload()
            other.wait_for_selector(".st-key-tr_new button", timeout=90_000)
            wait_idle(other)
            text = other.inner_text("body")
            if re.search(r"Trainers in this app: 1 paused", text):
                break
        assert re.search(r"Trainers in this app: 1 paused", text), text
        assert "Traceback" not in text and not other_errors, other_errors
    finally:
        for p in (pg, other):
            if p is not None:
                p.close()
