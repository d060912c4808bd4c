"""The Regression page under AppTest (widgets, model filtering, URL state) and its pure state helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lib_helpers import random_model
from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT, _ok, _open

from iclebm.checkpoints import DEFAULT_CHECKPOINT, save_checkpoint
from iclebm.dynamics.thinking import ThinkingConfig
from iclebm.evaluation.regression import regression_table, thinking_curve
from iclebm.tasks import LinearPrior
from iclebm.ui.pages.regression import draw_task

BOX = (-10.0, 10.0)


def _tiny_regression_model():
    model = random_model(seed=1, dtype=torch.float32, std=0.2, base_axes="y", base_std=5.0, max_context=64)
    model.card = {"name": "tinyreg", "task": LinearPrior().to_card(), "box": list(BOX),
                  "thinking": ThinkingConfig(steps=5, step_size=0.1).to_dict()}
    model.card["evaluation"] = regression_table(model, n_tasks=2, n_test=3, ns=(0, 2, 4), resolution=40)
    model.card["thinking_curve"] = thinking_curve(model, n_values=(2, 4), steps=(0, 1, 5), n_tasks=2,
                                                  n_test=3)
    return model


@pytest.fixture(scope="module")
def tiny_reg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reg") / "tinyreg.safetensors"
    save_checkpoint(_tiny_regression_model(), path)
    return path


@pytest.fixture()
def reg_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_reg: Path) -> Path:
    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip(f"no shipped checkpoint at {DEFAULT_CHECKPOINT}")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    sources = (DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT.with_suffix(".json"), tiny_reg,
               tiny_reg.with_suffix(".json"))
    for src in sources:
        shutil.copy(src, folder / src.name)
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(folder / DEFAULT_CHECKPOINT.name))
    return folder


def _reg_page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at._registered_pages = AppTest.from_file(APP, default_timeout=TIMEOUT).run()._registered_pages
    _open(at, "regression")
    if query:
        at.query_params.update(query)
    return at.run()


def test_regression_page_lists_only_regression_models_and_runs_its_widgets(reg_dir: Path) -> None:
    at = _reg_page()
    _ok(at)
    assert at.selectbox(key="reg_model").options == ["tinyreg  (checkpoints/)"]
    assert not any("density model" in str(i.value) for i in at.info)  # one selector per family: no banner
    at.button(key="reg_draw").click().run()
    _ok(at)
    assert len(at.session_state["reg_points"]) == 16 and at.session_state["reg_task"]["family"] == "linear"
    assert "16 pairs" in " ".join(str(c.value) for c in at.caption)
    at.slider(key="reg_k").set_value(3)
    at.toggle(key="reg_ols").set_value(False)
    at.session_state["reg_view"] = "energy"
    at.run()
    _ok(at)
    at.button(key="reg_undo").click().run()
    _ok(at)
    assert len(at.session_state["reg_points"]) == 15
    at.selectbox(key="reg_family").set_value("sinusoid")
    at.radio(key="reg_mode").set_value("point by point")
    at.button(key="reg_draw").click().run()
    _ok(at)
    # Queued, not added: a run slower than the feed's tick (a loaded machine) may already feed one.
    fed, queued = len(at.session_state["reg_points"]), len(at.session_state["reg_feed_queue"])
    assert fed <= 1 and fed + queued == 16
    at.button(key="reg_pause").click().run()
    at.button(key="reg_step").click().run()
    _ok(at)
    assert len(at.session_state["reg_points"]) == fed + 1
    at.button(key="reg_clear").click().run()
    _ok(at)
    assert at.session_state["reg_points"] == []
    q = {k: v if isinstance(v, str) else v[-1] for k, v in at.query_params.items()}
    assert q["k"] == "3" and q["ols"] == "0" and q["view"] == "energy"


def test_table_edits_reject_bad_rows(reg_dir: Path) -> None:
    at = _reg_page()
    at.session_state["reg_points"] = [(1.0, 1.0)]
    at.run()
    key = [e.key for e in at.data_editor if str(e.key).startswith("reg-table")][0]
    at.session_state[key] = {"edited_rows": {}, "added_rows": [{"x": 2.0, "y": -1.0}, {"x": 50.0, "y": 0.0}],
                             "deleted_rows": []}
    at.run()
    _ok(at)
    assert at.session_state["reg_points"] == [(1.0, 1.0), (2.0, -1.0)]


def test_a_regression_link_restores_the_page(reg_dir: Path) -> None:
    at = _reg_page({"pts": "1,2;-3.5,4.25;99,1", "view": "energy", "k": "7", "bayes": "0",
                    "task": "linear,4,8"})
    _ok(at)
    assert at.session_state["reg_points"] == [(1.0, 2.0), (-3.5, 4.25)]
    assert at.session_state["reg_k"] == 7 and at.session_state["reg_bayes"] is False
    assert at.session_state["reg_task"] == {"family": "linear", "seed": 4, "n": 8}
    assert any("out-of-box" in str(w.value) for w in at.warning)


def test_each_family_has_its_own_selector_and_choice(reg_dir: Path) -> None:
    """Density pages offer density models, the Regression page regression models; each choice is kept
    apart, and no page shows a banner about a model of the other family."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["model"] = "tinyreg"  # a link naming a regression model on the Density page: refused
    at.run()
    _ok(at)
    assert at.selectbox(key="model_choice").options == [f"{DEFAULT_CHECKPOINT.stem}  (checkpoints/)"]
    assert at.session_state["model_choice"] == f"file:{DEFAULT_CHECKPOINT.stem}"
    assert any("not one of the density models" in str(w.value) for w in at.warning)
    _open(at, "regression").run()
    _ok(at)
    assert at.session_state["reg_model"] == "file:tinyreg"
    assert at.session_state["model_choice"] == f"file:{DEFAULT_CHECKPOINT.stem}"  # remembered apart
    for path in ("train", "inside", "regression"):
        _open(at, path).run()
        _ok(at)
        banners = " ".join(str(m.value) for m in [*at.warning, *at.info])
        assert "regression model" not in banners and "density model" not in banners, (path, banners)


def test_draw_task_is_seeded() -> None:
    task, pts = draw_task(LinearPrior().to_card(), 5, 10, BOX)
    again, pts2 = draw_task(LinearPrior().to_card(), 5, 10, BOX)
    assert pts == pts2 and task == again and len(pts) == 10
