"""Save one screenshot per page of the app to docs/page-<title>.png (for the README).

    python docs/screenshots.py                 # every page in the navigation
    python docs/screenshots.py --pages Train   # only these

Starts `streamlit run app.py` on a free port and drives Debian's Chromium (headless) with
Playwright. The pages are read from the app's own navigation, so a page added to PAGES in
app.py is picked up without touching this script. PREPARE holds optional per-page steps
that put something worth seeing on the page first.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the iclebm package of this checkout
from iclebm.ui.app_server import app_server  # noqa: E402

DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("ICLEBM_CHROMIUM", "/usr/bin/chromium")
NAV_LINKS = '[data-testid="stTopNavLink"], [data-testid="stSidebarNavLink"]'
VIEWPORT = {"width": 1280, "height": 1000}  # the width the guide asks every page to fit


def wait_idle(pg, timeout_ms: int = 120_000) -> None:  # type: ignore[no-untyped-def]
    """Until the app's script run has finished."""
    pg.wait_for_timeout(150)
    pg.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState === 'notRunning'",
        timeout=timeout_ms)


def prepare_density(pg) -> None:  # type: ignore[no-untyped-def]
    """Draw a random mixture (32 points) and wait for the redrawn canvas."""
    pg.wait_for_selector(".iclebm-canvas .nsewdrag", timeout=120_000)
    pg.locator(".st-key-mix_draw button").first.click()
    pg.wait_for_function("() => /32 context points/.test(document.body.innerText)", timeout=120_000)
    wait_idle(pg)
    pg.wait_for_timeout(500)  # Plotly's last paint


def prepare_train(pg) -> None:  # type: ignore[no-untyped-def]
    """Make a trainer and run a few steps so the loss chart has something to show."""
    pg.locator(".st-key-tr_new button").first.click()
    pg.wait_for_selector(".st-key-tr_step button:not([disabled])", timeout=120_000)
    for _ in range(5):
        pg.locator(".st-key-tr_step button").first.click()
        wait_idle(pg)
    # the trainer process takes a few seconds to start; play until the ICL curve is drawn
    pg.locator(".st-key-tr_play button").first.click()
    pg.wait_for_function("() => /step [1-9]\\d* · /.test(document.body.innerText)", timeout=120_000)
    pg.locator(".st-key-train_icl .js-plotly-plot").wait_for(timeout=120_000)
    pg.wait_for_timeout(20_000)  # about 20 s of training: the landscape starts to use its context
    pg.locator(".st-key-tr_pause button").first.click()
    wait_idle(pg)
    pg.wait_for_timeout(1000)


def prepare_inside(pg) -> None:  # type: ignore[no-untyped-def]
    """Click a query, run a contexts-to-weights fine-tune, and also shoot that section
    (docs/page-inside-c2w.png). Uses the context the Density page drew."""
    pg.locator(".st-key-in_grid .js-plotly-plot").wait_for(timeout=120_000)
    if " 0 context points" in pg.inner_text("body"):  # shot alone (--pages Inside): draw a context first
        pg.locator(NAV_LINKS).filter(has_text="Density").first.click()
        wait_idle(pg)
        prepare_density(pg)
        pg.locator(NAV_LINKS).filter(has_text="Inside").first.click()
        wait_idle(pg)
        pg.locator(".st-key-in_grid .js-plotly-plot").wait_for(timeout=120_000)
    pos = pg.evaluate(
        """([x, y]) => { const gd = document.querySelector('.iclebm-canvas');
            const r = gd.getBoundingClientRect(); const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            return [r.left + xa._offset + xa.d2p(x), r.top + ya._offset + ya.d2p(y)]; }""", [1.0, -1.0])
    pg.mouse.click(pos[0], pos[1])
    wait_idle(pg)
    pg.locator(".st-key-in_run button").first.click()
    pg.wait_for_function("() => /Fine-tuned for k = /.test(document.body.innerText)", timeout=600_000)
    wait_idle(pg)
    pg.evaluate("""() => { const el = document.querySelector('.st-key-in_snap');
        const main = document.querySelector('[data-testid="stMain"]');
        if (el && main) main.scrollBy(0, el.getBoundingClientRect().top - 70); }""")
    pg.wait_for_timeout(800)
    pg.screenshot(path=str(DOCS / "page-inside-c2w.png"), full_page=False)
    print("saved docs/page-inside-c2w.png")


def prepare_regression(pg) -> None:  # type: ignore[no-untyped-def]
    """Draw a random task of the model's family (16 pairs) and wait for the redrawn canvas."""
    pg.wait_for_selector(".iclebm-canvas .nsewdrag", timeout=120_000)
    pg.locator(".st-key-reg_draw button").first.click()
    pg.wait_for_function("() => /16 pairs/.test(document.body.innerText)", timeout=120_000)
    wait_idle(pg)
    pg.wait_for_timeout(500)


# page title -> steps to run after opening it (pages without an entry are shot as they open)
PREPARE: dict[str, Callable] = {"Density": prepare_density, "Inside": prepare_inside, "Train": prepare_train,
                                "Regression": prepare_regression}


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def page_titles(pg) -> list[str]:  # type: ignore[no-untyped-def]
    pg.wait_for_selector(NAV_LINKS, timeout=120_000)
    # a link reads "icon name\n\nTitle": keep the title
    return [t.strip().splitlines()[-1].strip() for t in pg.locator(NAV_LINKS).all_inner_texts()]


def shoot(only: list[str] | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    saved = []
    with app_server(ROOT) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport=VIEWPORT)
        pg.goto(url)
        for title in page_titles(pg):
            if only and title not in only:
                continue
            try:
                pg.locator(NAV_LINKS).filter(has=pg.get_by_text(title, exact=True)).first.click()
                wait_idle(pg)
                if title in PREPARE:
                    PREPARE[title](pg)
                pg.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollTo(0, 0)")
            except Exception as e:  # noqa: BLE001 - one slow page must not cost the others their shots
                print(f"skipped {title}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            out = DOCS / f"page-{slug(title)}.png"
            pg.screenshot(path=str(out), full_page=False)
            saved.append(out)
            print(f"saved {out.relative_to(ROOT)}")
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", nargs="*", help="page titles to shoot (default: all)")
    args = parser.parse_args()
    shoot(args.pages)


if __name__ == "__main__":
    main()
