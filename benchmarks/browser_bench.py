"""Browser latency of the explorer, as a user feels it: page load, clicks, model switches.

    python benchmarks/browser_bench.py            # 1280x800, default overlays, warm server
    python benchmarks/browser_bench.py --reps 5   # fewer repeats

Starts `streamlit run app.py` on a free port, drives Debian's Chromium (headless) with
Playwright and prints, side by side, the medians it measured:

- page load: a new tab on /density until the canvas has drawn (the first load, on a cold
  server, is reported apart from the warm ones);
- Density click: canvas click -> redrawn landscape (100x100 grid), timed in the page by the
  canvas component itself (`window.__iclebmLatencies`);
- Regression click: the same on the Regression page (linreg);
- model switch: picking another model in the sidebar until the canvas has redrawn and the run
  finished;
- optional overlays, apart: a Density click with the Bayes-optimal overlay on.

Run it with nothing else on the cores: it measures wall clock. `--only` measures a subset; a row that
fails prints FAILED with the reason and the other rows still run.

Debugged (2026-12-01): the first Density click never reported a redraw because the bench opened
/density, which is not a page's URL (the Density page is the default page, served at /): Streamlit
showed its "Page not found" dialog over the whole page, and the dialog swallowed every click. The
bench now opens /, and `check_reachable` fails loudly when anything covers the canvas at the click
pixel. The model selector is a react-aria combobox in Streamlit 1.67 (`[role=option]` items), and a
switch is detected by the canvas's figure id (with no points the revision does not change).

Where the time went (profiles on the shared, loaded 2-core machine; CPU seconds of one thread):
- Regression click: the 100-step thinking trajectory over 100 x's x 8 starts (forward and backward
  through the transformer for 800 query tokens per step) took ~90% of the run, 2.5 s of 2.8 s, for
  an animation nobody had asked for. Now a click computes the steps the picture shows (k = 20 by
  default: 0.56 s), and the figure's play button or slider fetches the other frames on first press
  (exact: the short run is the long run's prefix, `tests/test_regression_view.py`).
- Density click: the 100x100 landscape (10,000 query tokens through the cached path, plus the 20x20
  arrow field's backward) is most of the server's part (0.23-0.43 s here); building the Plotly
  figure ~50 ms and sending it ~40 ms. The browser's drawing is the rest.
- Page load: the server's first run for a new session sends the canvas after ~0.1 s (caches warm),
  but in the browser the canvas element appeared only together with window.Plotly, 13-22 s after
  the sidebar (load average 8). The likely cause is the 4.8 MB plotly.js bundle, which travels
  inside the websocket messages and is evaluated on every page load. Serving it as a cacheable file
  (a components-v2 asset_dir, or Streamlit's static serving) is the lever left; not done here.
- Model switch: the server's run is 0.4-0.6 s here (checkpoints are st.cache_resource, landscapes
  st.cache_data); the remainder is the browser redrawing the page.

A/B of the Regression row on this loaded machine (load average ~4.6, `--only regression --reps 5`,
the same bench against the tree before and after the change, back to back): click -> redraw median
4068 -> 1703 ms, of which the server's part 3844 -> 1303 ms. Quiet-machine numbers: see README,
"Speed in the browser".
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from iclebm.ui.app_server import app_server  # noqa: E402

CHROMIUM = os.environ.get("ICLEBM_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 1200}  # tall enough that the whole canvas is on screen
# The harness checks the page every POLL_MS instead of on every animation frame (Playwright's default):
# polling on frames keeps headless Chromium painting 60 frames a second, which took most of a core
# while the server computed a click. The latencies are timed inside the page, so the interval does not
# round them.
POLL_MS = 100
TARGETS_MS = {"page load (warm)": 3000, "Density click": 200, "Regression click": 400, "model switch": 1000}


def wait_idle(pg) -> None:  # type: ignore[no-untyped-def]
    pg.wait_for_timeout(50)
    pg.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState === 'notRunning'",
        timeout=120_000, polling=POLL_MS)


def wait_canvas(pg) -> None:  # type: ignore[no-untyped-def]
    pg.wait_for_function("() => document.querySelector('.iclebm-canvas')?.dataset.rendered !== undefined",
                         timeout=120_000)


def canvas_pixel(pg, x: float, y: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    pos = pg.evaluate(
        """([x, y]) => { const gd = document.querySelector('.iclebm-canvas');
            const r = gd.getBoundingClientRect(); const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            return [r.left + xa._offset + xa.d2p(x), r.top + ya._offset + ya.d2p(y)]; }""", [x, y])
    return float(pos[0]), float(pos[1])


def check_reachable(pg, px: float, py: float) -> None:  # type: ignore[no-untyped-def]
    """Fail loudly when something covers the canvas at the click pixel: Streamlit's "Page not found"
    dialog (opened by /density, the default page's path) swallowed every click, so no redraw came."""
    inside = pg.evaluate("([x, y]) => !!document.elementFromPoint(x, y)?.closest('.iclebm-canvas')", [px, py])
    if not inside:
        what = pg.evaluate("([x, y]) => document.elementFromPoint(x, y)?.outerHTML.slice(0, 120)", [px, py])
        raise RuntimeError(f"the click at ({px:.0f}, {py:.0f}) would not reach the canvas: {what}")


SPLITS: dict[str, tuple[list[float], list[float]]] = {}  # row -> (server part, browser drawing), ms


def click_latencies(pg, points: list[tuple[float, float]], row: str = "",  # type: ignore[no-untyped-def]
                    timeout_ms: int = 60_000) -> list[float]:
    """Click each data point on an idle page; the canvas reports click -> redraw in ms, and its parts:
    click -> the new figure arrives in the browser (the server's run and the transport), and drawing."""
    out = []
    first = len(pg.evaluate("window.__iclebmTimings || []"))
    for x, y in points:
        wait_idle(pg)
        done = len(pg.evaluate("window.__iclebmLatencies || []"))
        px, py = canvas_pixel(pg, x, y)
        check_reachable(pg, px, py)
        pg.mouse.click(px, py)
        pg.wait_for_function(f"() => (window.__iclebmLatencies || []).length > {done}", timeout=timeout_ms,
                             polling=POLL_MS)
        out.append(float(pg.evaluate("window.__iclebmLatencies")[-1]))
    wait_idle(pg)
    parts = pg.evaluate("window.__iclebmTimings || []")[first + 1:]  # the first click: Plotly's warm-up
    if row and parts:
        SPLITS[row] = ([float(t["arrive"]) for t in parts], [float(t["render"]) for t in parts])
    return out


def page_load_ms(browser, url: str) -> float:  # type: ignore[no-untyped-def]
    pg = browser.new_page()
    t0 = time.perf_counter()
    pg.goto(url)
    wait_canvas(pg)
    ms = (time.perf_counter() - t0) * 1000
    pg.close()
    return ms


def switch_model_ms(pg, label: str) -> float:  # type: ignore[no-untyped-def]
    """Pick `label` in the sidebar's density-model selector; until the canvas redrew and the run ended."""
    wait_idle(pg)
    # The canvas remembers the id of the figure it drew last (a hash of its JSON): another model's
    # landscape has another id, even with no points (the revision counts point edits only).
    fid = pg.evaluate("() => document.querySelector('.iclebm-canvas')._iclebmFigureId")
    pg.locator(".st-key-model_choice input").first.click()  # Streamlit 1.67: a react-aria combobox
    option = pg.locator("[role='option']").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s+\(")).first
    option.wait_for(timeout=30_000)
    t0 = time.perf_counter()
    option.click()
    pg.wait_for_function("fid => document.querySelector('.iclebm-canvas')?._iclebmFigureId !== fid",
                         arg=fid, timeout=120_000)
    wait_idle(pg)
    return (time.perf_counter() - t0) * 1000


def med(values: list[float]) -> str:
    return (f"{statistics.median(values):7.0f} ms  "
            f"(n={len(values)}, min {min(values):.0f}, max {max(values):.0f})")


SECTIONS = ("load", "density", "switch", "bayes", "regression")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9, help="clicks / loads / switches per measurement")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="measure only these (default: all)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    rows: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    cold = float("nan")
    rng = __import__("random").Random(0)

    def measure(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        """One row; a failure is printed in the table instead of ending the run."""
        print(f"measuring: {name} ...", file=sys.stderr, flush=True)
        try:
            rows[name] = fn()
        except Exception as e:  # noqa: BLE001 - reported, and the other rows still run
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0]}"

    log = os.environ.get("ICLEBM_BENCH_LOG")  # the server's output, for debugging a slow row
    with app_server(ROOT, log=Path(log) if log else None) as url, sync_playwright() as p:
        # One browser context for every tab, like one user's browser: after the cold load its HTTP
        # cache holds Streamlit's chunks and plotly.js (served from static/, see iclebm/ui/canvas.py).
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"]).new_context(
                                        viewport=VIEWPORT)
        cold = page_load_ms(browser, f"{url}/")  # "/" is the Density page ("/density" is "Page not found")
        if "load" in args.only:
            measure("page load (warm)", lambda: [page_load_ms(browser, f"{url}/") for _ in range(args.reps)])

        pg = browser.new_page()
        pg.goto(f"{url}/")
        wait_canvas(pg)
        if "density" in args.only:
            pts = [(rng.uniform(-6, 6), rng.uniform(-6, 6)) for _ in range(args.reps + 1)]
            # the first click includes Plotly's warm-up
            measure("Density click", lambda: click_latencies(pg, pts, "Density click")[1:])
        if "switch" in args.only:
            labels = ["mog2d", "mog2d-wide"]  # ends on the default model (an even count of switches)
            n = args.reps + args.reps % 2
            measure("model switch", lambda: [switch_model_ms(pg, labels[i % 2]) for i in range(n)])
        pg.close()

        if "bayes" in args.only:
            def bayes() -> list[float]:
                # A new page (the default model, an empty context): the exact Bayes predictive of an
                # anisotropic prior grows steeply with the points (14 s of CPU at 6 points here).
                bp = browser.new_page()
                bp.goto(f"{url}/")
                wait_canvas(bp)
                wait_idle(bp)
                bp.locator(".st-key-show_bayes label").first.click()
                wait_idle(bp)
                pts = [(rng.uniform(-6, 6), rng.uniform(-6, 6)) for _ in range(max(3, args.reps // 2) + 1)]
                try:
                    return click_latencies(bp, pts, timeout_ms=600_000)[1:]
                finally:
                    bp.close()
            measure("Density click, Bayes overlay on (optional)", bayes)

        if "regression" in args.only:
            pg = browser.new_page()
            pg.goto(f"{url}/regression?model=linreg")
            wait_canvas(pg)
            pts = [(rng.uniform(-8, 8), rng.uniform(-6, 6)) for _ in range(args.reps + 1)]
            measure("Regression click", lambda: click_latencies(pg, pts, "Regression click")[1:])
            pg.close()
        browser.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nbrowser latency, {VIEWPORT['width']}x{VIEWPORT['height']}, {os.cpu_count()} cores, "
          f"load average {load:.2f} at the end (medians; first page load on a cold server: {cold:.0f} ms)")
    for name in [*rows, *failed]:
        target = TARGETS_MS.get(name)
        if name in failed:
            print(f"  {name:44s} FAILED: {failed[name]}")
            continue
        values = rows[name]
        met = target is not None and statistics.median(values) <= target
        verdict = "" if target is None else f"  target <= {target} ms: {'met' if met else 'NOT met'}"
        print(f"  {name:44s} {med(values)}{verdict}")
        if name in SPLITS:
            server, drawing = SPLITS[name]
            print(f"    {'of which click -> figure arrives':42s} {statistics.median(server):7.0f} ms; "
                  f"drawing {statistics.median(drawing):.0f} ms")


if __name__ == "__main__":
    main()
