"""The "Your data" panel in AppTest: paste with bad rows and a refused table, and one-click iris."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_app import _open

from iclebm.checkpoints import CHECKPOINT_DIR, DEFAULT_CHECKPOINT


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    linreg = CHECKPOINT_DIR / "linreg.safetensors"
    for ckpt in (DEFAULT_CHECKPOINT, linreg):
        for f in (ckpt, ckpt.with_suffix(".json")):
            shutil.copy(f, folder / f.name)
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(folder / DEFAULT_CHECKPOINT.name))
    return AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in (at.error, at.warning, at.info, at.success) for e in kind)


def test_paste_keeps_good_rows_reports_bad_ones_and_an_error_keeps_the_context(app: AppTest) -> None:
    at = app.run()
    assert not at.exception
    at.text_area(key="density_data_text").input("x,y\n1,2\nabc,3\n-4,0.5\n50,1\n")
    at.button(key="density_data_load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["points"] == [(1.0, 2.0), (-4.0, 0.5)]
    text = _texts(at)
    assert "row 2 (line 3): 'abc' is not a number" in text
    assert "1 of 3 points lie outside the box [-12, 12]² and were rejected" in text
    version = at.session_state["pts_version"]
    at.text_area(key="density_data_text").input("1\n2\n3\n")  # one column: refused
    at.button(key="density_data_load").click().run()
    assert "Not loaded, the context is unchanged: the table has a single column" in _texts(at)
    assert at.session_state["points"] == [(1.0, 2.0), (-4.0, 0.5)]
    assert at.session_state["pts_version"] == version


def test_the_iris_example_loads_in_one_click_with_its_source(app: AppTest) -> None:
    at = app.run()
    at.session_state["density_data_source"] = "example"
    at.run()
    assert "scikit-learn" in " ".join(str(c.value) for c in at.caption)
    at.button(key="density_data_load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    pts = np.array(at.session_state["points"])
    assert pts.shape == (64, 2) and (np.abs(pts) <= 12).all()
    text = _texts(at)
    assert "Source: Iris flowers (Fisher 1936)" in text and "kept a random subset (seed 0) of 64" in text


def test_diabetes_loads_on_the_regression_page(app: AppTest) -> None:
    at = _open(app, "regression")
    at.run()
    at.session_state["regression_data_source"] = "example"
    at.session_state["regression_data_subset"] = "first"
    at.run()
    at.button(key="regression_data_load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    pts = np.array(at.session_state["reg_points"])
    assert pts.shape == (64, 2) and (np.abs(pts) <= 10).all()  # linreg's box
    assert "Source: Diabetes (Efron et al. 2004)" in _texts(at)
    assert at.session_state["points"] == []  # the Density page's context is another one


def test_the_diabetes_comparison_shows_the_model_beside_the_baselines(
        app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    from iclebm.ui import data_panel

    monkeypatch.setattr(data_panel, "COMPARE_SPLITS", 2)  # the table's shape is tested, not its numbers
    at = _open(app, "regression")
    at.run()
    at.session_state["regression_data_source"] = "example"
    at.run()
    at.button(key="regression_data_compare_run").click().run(timeout=600)  # minutes on a loaded machine
    assert not at.exception, [e.value for e in at.exception]
    tables = [str(m.value) for m in at.markdown if str(m.value).startswith(("Held-out NLL", "MSE of the"))]
    assert len(tables) == 2  # NLL and MSE
    assert "ols" in tables[0] and "| 64 |" in tables[0] and "±" in tables[1]
