"""Your own data in a real browser: upload a wide CSV with a bad row, rescale it into the box, download
the context back in the data's units, and the canvas's SVG download beside its PNG one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser_helpers import settle, wait_canvas, wait_idle, watch

from iclebm.data.points import read_points

pytestmark = pytest.mark.browser

ROWS = [(i, 1950 + i, 300 + 1.5 * i) for i in range(80)]


@pytest.fixture()
def page(browser, app_url: str):  # type: ignore[no-untyped-def]
    pg = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    errors = watch(pg)
    pg.goto(app_url)
    wait_canvas(pg)
    settle(pg)
    yield pg
    assert "Traceback" not in pg.inner_text("body")
    assert not errors, errors
    pg.close()


def test_the_canvas_downloads_svg_as_well_as_png(page) -> None:  # type: ignore[no-untyped-def]
    titles = page.locator(".iclebm-canvas .modebar-btn").evaluate_all("els => els.map(e => e.dataset.title)")
    assert "Download plot as a PNG" in titles and "Download plot as SVG" in titles
    with page.expect_download() as d:
        page.locator('.iclebm-canvas [data-title="Download plot as SVG"]').first.click(force=True)
    assert Path(d.value.path()).read_text().startswith("<svg")


def test_upload_rescale_and_download_the_context(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "co2.csv"
    csv.write_text("id,year,co2\n" + "".join(f"{a},{b},{c}\n" for a, b, c in ROWS) + "99,abc,1\n")
    page.get_by_text("Your data", exact=True).click()
    wait_idle(page)
    panel = page.locator('[data-testid="stExpander"]').filter(has_text="Use as context")
    panel.get_by_text("upload", exact=True).click()
    wait_idle(page)
    panel.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(csv))
    settle(page)
    assert panel.get_by_text("x column").count() == 1  # a wide table: column pickers
    panel.get_by_text("rescale into the box").click()
    wait_idle(page)
    panel.get_by_role("button", name="Use as context").click()
    settle(page)
    body = page.inner_text("body")
    assert "row 81 (line 82): 'abc' is not a number" in body
    assert "kept a random subset (seed 0) of 64" in body and "Loaded 64 point(s)" in body
    assert "Map in use: id' = " in body
    with page.expect_download() as d:
        panel.get_by_role("button", name="Download context as CSV").click()
    back = read_points(Path(d.value.path()))
    assert back.columns == ("id", "year") and len(back.points) == 64
    rows = {(float(a), float(b)) for a, b, _ in ROWS}
    assert {tuple(p) for p in back.points.tolist()} <= rows  # the data's own numbers, exactly
    assert np.unique(back.points[:, 0]).size == 64
