"""The Streamlit app under streamlit.testing.v1.AppTest: every panel runs without exceptions.

AppTest cannot click the canvas or fire `run_every`; clicks are tested in a real
browser (test_browser.py) and the logic behind them in test_ui_state.py and test_canvas.py.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from iclebm.checkpoints import DEFAULT_CHECKPOINT, checkpoint_bytes, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 120


@pytest.fixture()
def ckpt_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private checkpoints/ holding a copy of the shipped model, so saves never touch the repo."""
    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip(f"no shipped checkpoint at {DEFAULT_CHECKPOINT}")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(DEFAULT_CHECKPOINT, folder / DEFAULT_CHECKPOINT.name)
    side = DEFAULT_CHECKPOINT.with_suffix(".json")
    if side.exists():
        shutil.copy(side, folder / side.name)
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(folder / DEFAULT_CHECKPOINT.name))
    return folder


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _ok(at: AppTest, allow_errors: bool = False) -> None:
    assert not at.exception, [e.value for e in at.exception]
    if not allow_errors:
        assert not at.error, [e.value for e in at.error]
    text = " ".join(str(m.value) for m in at.markdown) + " ".join(str(e.value) for e in at.error)
    assert "Traceback" not in text


def _captions(at: AppTest) -> str:
    return " ".join(str(c.value) for c in at.caption)


def _canvases(at: AppTest) -> set[str]:
    """The keys of the canvas components (clickable or plain charts) that the last run drew."""
    return {e.proto.id.rsplit("-", 1)[-1] for e in at.get("bidi_component")}


def _download(at: AppTest, key: str):  # type: ignore[no-untyped-def]
    """The download button with widget key `key` in the last run."""
    found = [e for e in at.get("download_button") if e.proto.id.endswith(f"-{key}")]
    assert len(found) == 1, [e.proto.id for e in at.get("download_button")]
    return found[0]


def _points(at: AppTest) -> list:
    return list(at.session_state["points"])


def _url_paths(at: AppTest) -> list[str]:
    """The pages st.navigation registered in the last run, by URL path, in navigation order."""
    return [str(info["url_pathname"]) for info in at._registered_pages.values()]


def _open(at: AppTest, url_path: str) -> AppTest:
    """Select the page at /url_path for the next run, as a click in the navigation does.

    AppTest.switch_page only takes page files; our pages are callables, so this picks the
    page's hash from what st.navigation registered (the same hash the browser sends).
    """
    if not at._registered_pages:
        at.run()
    hashes = [h for h, info in at._registered_pages.items() if info.get("url_pathname") == url_path]
    assert hashes, f"no page at /{url_path}: {_url_paths(at)}"
    at._page_hash = hashes[0]
    return at


def test_app_starts_on_the_shipped_checkpoint(ckpt_dir: Path) -> None:
    at = _app().run()
    _ok(at)
    assert at.session_state["model_choice"] == f"file:{DEFAULT_CHECKPOINT.stem}"
    assert "0 context points" in _captions(at)
    assert len(at.data_editor) == 1
    # The sidebar's model card is a readable summary, the raw JSON one click away.
    card = " ".join(str(m.value) for m in at.sidebar.markdown)
    assert "**Prior**: Gaussian mixtures" in card and "| n | model |" in card
    assert len(at.sidebar.json) == 1


def test_context_panel_and_view_controls(ckpt_dir: Path) -> None:
    at = _app().run()
    at.session_state["points"] = [(1.0, 2.0), (-3.0, 0.5), (4.0, -4.0)]
    at.run()
    _ok(at)
    assert "3 context points" in _captions(at)
    at.toggle(key="log_scale").set_value(True)
    at.toggle(key="arrows").set_value(False)
    at.toggle(key="contours").set_value(False)
    at.session_state["view"] = "density"
    at.run()
    _ok(at)
    at.selectbox(key="resolution").set_value(60).run()
    _ok(at)
    at.toggle(key="show_bayes").set_value(True).run()  # Bayes-optimal contours under the training prior
    _ok(at)
    at.slider(key="n_scrub").set_value(1).run()
    _ok(at)
    assert at.session_state["scrub_all"] is False
    at.button(key="undo").click().run()
    _ok(at)
    assert _points(at) == [(1.0, 2.0), (-3.0, 0.5)]
    at.button(key="clear").click().run()
    _ok(at)
    assert _points(at) == []


def test_data_editor_rejects_bad_rows(ckpt_dir: Path) -> None:
    at = _app().run()
    at.session_state["points"] = [(1.0, 1.0), (2.0, 2.0)]
    at.run()
    key = at.data_editor[0].key
    at.session_state[key] = {
        "edited_rows": {0: {"x": "not a number"}},
        "added_rows": [{"x": 3.0, "y": -3.0}, {"x": float("nan"), "y": 1.0}, {"x": 99.0, "y": 0.0}],
        "deleted_rows": [],
    }
    at.run()
    _ok(at)
    assert _points(at) == [(1.0, 1.0), (2.0, 2.0), (3.0, -3.0)]
    warnings = " ".join(str(w.value) for w in at.warning)
    assert "Row 1 rejected: x = 'not a number' is not a number; kept (1.000, 1.000)" in warnings
    assert warnings.count("New row") == 2
    # The table shows the truth: the valid context, then the NaN row's valid y still waiting for an x.
    assert list(at.data_editor[0].value["x"].fillna("-")) == ["1.000", "2.000", "3.000", "-"]
    assert list(at.data_editor[0].value["y"]) == ["1.000", "2.000", "-3.000", "1.000"]
    at.run()  # the refusals were said once; a rerun does not repeat them
    _ok(at)
    assert not at.warning and _points(at) == [(1.0, 1.0), (2.0, 2.0), (3.0, -3.0)]
    # Letters typed into a cell of a point: refused, the point stays (it used to become 0).
    at.session_state[at.data_editor[0].key] = {"edited_rows": {1: {"y": "abc"}}, "added_rows": [],
                                               "deleted_rows": []}
    at.run()
    _ok(at)
    assert _points(at) == [(1.0, 1.0), (2.0, 2.0), (3.0, -3.0)]
    assert "Row 2 rejected: y = 'abc' is not a number" in " ".join(str(w.value) for w in at.warning)


def test_mixture_probe_and_feeding(ckpt_dir: Path) -> None:
    at = _app().run()
    at.button(key="mix_draw").click().run()
    _ok(at)
    assert len(_points(at)) == 32 and at.session_state["mixture"]["k"] == 3
    assert "32 context points" in _captions(at)
    at.radio(key="mix_mode").set_value("one at a time")
    at.button(key="mix_draw").click().run()
    _ok(at)
    # Queued, not added: a run slower than the feed's tick (a loaded machine) may already feed one.
    fed = len(_points(at))
    assert fed <= 1 and fed + len(at.session_state["feed_queue"]) == 32
    at.button(key="mix_pause").click().run()
    at.button(key="mix_step").click().run()
    at.button(key="mix_step").click().run()
    _ok(at)
    assert len(_points(at)) == fed + 2 and len(at.session_state["feed_queue"]) == 30 - fed
    at.button(key="mix_play").click().run()
    _ok(at)
    assert at.session_state["feeding"] is True
    for family in at.selectbox(key="probe_family").options:
        at.selectbox(key="probe_family").set_value(family)
        at.button(key="probe_load").click().run()
        _ok(at)
        assert len(_points(at)) == 48 and at.session_state["mixture"] is None


def test_langevin_and_icl_panels(ckpt_dir: Path) -> None:
    at = _app().run()
    at.button(key="mix_draw").click().run()
    at.number_input(key="lv_n").set_value(20)
    at.number_input(key="lv_steps").set_value(10)
    at.toggle(key="lv_trails").set_value(True)
    at.selectbox(key="lv_init").set_value("context")
    at.button(key="lv_run").click().run()
    _ok(at)
    assert at.session_state["lv_result"]["traj"].positions.shape[1] == 20
    (report,) = [m for m in at.markdown if "within 3σ" in str(m.value)]
    assert "Mean true log p:" in report.proto.help  # the report line's numbers are explained
    assert not _download(at, "lv_gif").proto.disabled  # the run's GIF, offered in the run that made it
    assert not _download(at, "lv_mp4").proto.disabled  # the dev install has the MP4 encoder
    lv = at.session_state["lv_result"]
    at.session_state["lv_result"] = {**lv, "model_key": "file:another-model"}  # as after a model switch
    at.run()
    assert _download(at, "lv_gif").proto.disabled  # no GIF of another model's particles on this landscape
    assert _download(at, "lv_mp4").proto.disabled
    at.session_state["lv_result"] = lv
    # By default the sampler samples p itself: T = 1, noise = sqrt(2 * the card's step size).
    card_step = at.number_input(key="lv_step").value
    assert at.number_input(key="lv_temp").value == 1.0
    assert at.session_state["lv_result"]["noise_std"] == pytest.approx((2 * card_step) ** 0.5)
    assert any("samples p(x) itself" in c.value for c in at.caption)
    # One click away: the card's calibrated sampler (step 0.1, noise 0.2 = T 0.2, the sharpened p^5).
    at.button(key="lv_card_preset").click().run()
    _ok(at)
    assert at.number_input(key="lv_temp").value == pytest.approx(0.2)
    assert any("p^5, sharpened" in c.value for c in at.caption)
    at.button(key="icl_run").click().run()
    _ok(at)
    curve = at.session_state["icl_result"]["curve"]
    assert curve["ns"][0] == 0 and {"model", "bayes", "oracle"} <= set(curve["nll"])


def test_live_training_panel(ckpt_dir: Path) -> None:
    at = _app().run()
    at.session_state["points"] = [(1.0, 1.0), (1.2, 0.8)]
    _open(at, "train").run()
    at.number_input(key="tr_batch").set_value(2)
    at.number_input(key="tr_lsteps").set_value(2)
    at.run()
    at.button(key="tr_new").click().run()
    _ok(at)
    assert at.session_state["trainer"] is not None
    at.button(key="tr_step").click().run()
    _ok(at)
    trainer = at.session_state["trainer"]  # a trainer process: the step lands asynchronously
    trainer.wait(lambda s: s.step == 1 and trainer.weights_step == 1, timeout=120)
    assert trainer.poll().step == 1
    at.run()
    assert any("step 1" in str(m.value) for m in at.markdown)
    at.button(key="tr_play").click().run()
    _ok(at)
    at.button(key="tr_pause").click().run()
    _ok(at)
    at.text_input(key="tr_name").set_value("mog2d").run()
    at.button(key="tr_save").click().run()
    assert any("never overwritten" in str(e.value) for e in at.error)  # the shipped name is refused
    at.text_input(key="tr_name").set_value("my run").run()
    at.button(key="tr_save").click().run()
    _ok(at)
    # saved to runs/ beside checkpoints/ (the shipped models' folder, never written by the app) ...
    runs = ckpt_dir.parent / "runs"
    assert (runs / "my_run.safetensors").exists() and (runs / "my_run.json").exists()
    assert not (ckpt_dir / "my_run.safetensors").exists()
    at.run()  # ... and selectable, marked as a saved run
    selector = at.selectbox(key="model_choice")
    assert "my_run  (runs/)" in selector.options, selector.options
    at.button(key="tr_save").click().run()  # a second save under the same name is refused
    assert any("runs/my_run.safetensors exists already" in str(e.value) for e in at.error)
    at.button(key="tr_use").click().run()
    _ok(at)
    assert at.session_state["model_choice"].startswith("session:trained-scratch")
    at.radio(key="tr_mode").set_value("finetune")
    at.button(key="tr_new").click().run()
    _ok(at)
    assert at.session_state["trainer"].mode == "finetune"
    at.session_state["trainer"].close()


def _wrong_shapes() -> bytes:
    """A real iclebm checkpoint whose card promises a wider model than its weights."""
    import json

    from safetensors.torch import load, save

    data = checkpoint_bytes(load_checkpoint(DEFAULT_CHECKPOINT))
    card = load_checkpoint(DEFAULT_CHECKPOINT).card
    card = {**card, "model": {**card["model"], "d_model": 2 * card["model"]["d_model"]}}
    return save(load(data), metadata={"iclebm_card": json.dumps(card)})


def test_model_selector_and_uploads(ckpt_dir: Path) -> None:
    at = _app().run()
    at.session_state["points"] = [(0.0, 0.0)]
    at.run()
    choice = at.session_state["model_choice"]
    bad_files = {
        "notes.safetensors": b"hello, not a model",
        "evil.safetensors": pickle.dumps({"weights": [1, 2, 3]}),
        "cut.safetensors": checkpoint_bytes(load_checkpoint(DEFAULT_CHECKPOINT))[:5000],
        "shapes.safetensors": _wrong_shapes(),
    }
    for name, data in bad_files.items():
        at.file_uploader(key="upload").set_value((name, data, "application/octet-stream")).run()
        _ok(at, allow_errors=True)
        assert any("Upload rejected" in str(e.value) for e in at.error), name
        assert at.session_state["model_choice"] == choice  # the current model stays
    good = checkpoint_bytes(load_checkpoint(DEFAULT_CHECKPOINT))
    at.file_uploader(key="upload").set_value(("mine.safetensors", good, "application/octet-stream")).run()
    _ok(at)
    assert at.session_state["model_choice"] == "session:mine"
    at.selectbox(key="model_choice").set_value(choice).run()
    _ok(at)


def test_share_link_round_trip(ckpt_dir: Path) -> None:
    at = _app()
    at.query_params["pts"] = "1,2;-3.5,4.25"
    at.query_params["view"] = "density"
    at.query_params["log"] = "1"
    at.query_params["arrows"] = "0"
    at.run()
    _ok(at)
    assert _points(at) == [(1.0, 2.0), (-3.5, 4.25)]
    assert at.session_state["view"] == "density" and at.session_state["log_scale"] is True
    assert at.session_state["arrows"] is False
    at.button(key="undo").click().run()  # the link follows the state
    assert at.query_params["pts"] == ["1,2"] or at.query_params["pts"] == "1,2"


def test_too_long_shared_context_keeps_the_newest(ckpt_dir: Path) -> None:
    at = _app()
    at.query_params["pts"] = ";".join(f"{i / 10},1" for i in range(70))
    at.run()
    _ok(at)
    assert len(_points(at)) == 64 and _points(at)[0] == (0.6, 1.0)
    assert any("at most 64" in str(w.value) for w in at.warning)


def test_missing_checkpoint_shows_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(tmp_path / "mog2d.safetensors"))
    at = _app().run()
    assert not at.exception
    assert any("Could not load a model" in str(e.value) for e in at.error)
    assert len(at.file_uploader) == 1  # the way out: upload a checkpoint


def test_broken_checkpoint_shows_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mog2d.safetensors").write_bytes(b"\x80\x04 definitely a pickle")
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(tmp_path / "mog2d.safetensors"))
    at = _app().run()
    assert not at.exception
    text = " ".join(str(e.value) for e in at.error)
    assert "Could not load" in text and "pickle" in text


# ---- pages -----------------------------------------------------------------------------------


def test_every_page_runs_and_the_app_opens_on_density(ckpt_dir: Path) -> None:
    at = _app().run()
    _ok(at)
    paths = _url_paths(at)
    assert paths[0] == "" and "train" in paths, paths  # the default page, Density, is "/"
    assert len(at.data_editor) == 1  # the default page is Density
    for path in paths:  # every registered page, including those added later
        _open(at, path).run()
        _ok(at)
        assert at.session_state["model_choice"] == f"file:{DEFAULT_CHECKPOINT.stem}"
    _open(at, "train").run()
    assert any("Live training" in str(h.value) for h in at.subheader)
    assert any("Models on disk" in str(h.value) for h in at.subheader)
    main = " ".join(str(m.value) for m in at.main.markdown)  # the checkpoint list: summaries, not JSON
    assert "**Prior**: Gaussian mixtures" in main and "**Architecture**" in main and at.main.json


def test_view_settings_survive_a_visit_to_another_page(ckpt_dir: Path) -> None:
    at = _app().run()
    at.session_state["points"] = [(1.0, 2.0), (3.0, 1.0)]
    at.run()
    at.toggle(key="log_scale").set_value(True)
    at.toggle(key="arrows").set_value(False)
    at.selectbox(key="resolution").set_value(60)
    at.number_input(key="lv_n").set_value(40).run()
    _open(at, "train").run()
    at.number_input(key="tr_batch").set_value(3).run()
    _ok(at)
    _open(at, "").run()  # Density
    _ok(at)
    assert _points(at) == [(1.0, 2.0), (3.0, 1.0)]
    assert at.toggle(key="log_scale").value is True and at.toggle(key="arrows").value is False
    assert at.selectbox(key="resolution").value == 60 and at.number_input(key="lv_n").value == 40
    _open(at, "train").run()
    assert at.number_input(key="tr_batch").value == 3


def test_a_train_link_reopens_the_train_page_with_its_settings(ckpt_dir: Path) -> None:
    link = _app()  # a fresh session that opens /train?... (page hashes learnt from another session)
    link._registered_pages = _app().run()._registered_pages
    _open(link, "train")
    link.query_params.update({"mode": "finetune", "lr": "0.001", "batch": "4", "d": "64", "lsteps": "99"})
    link.run()
    _ok(link)
    assert any("Live training" in str(h.value) for h in link.subheader)
    assert link.radio(key="tr_mode").value == "finetune"
    assert link.select_slider(key="tr_lr").value == 0.001 and link.number_input(key="tr_batch").value == 4
    assert link.select_slider(key="tr_d").value == 64
    assert any("lsteps='99'" in str(w.value) for w in link.warning)  # out of bounds: default kept, said so
    assert link.number_input(key="tr_lsteps").value != 99
    # the address bar follows the form, with the model shared by all pages
    link.number_input(key="tr_batch").set_value(5).run()
    q = {k: v if isinstance(v, str) else v[-1] for k, v in link.query_params.items()}
    assert q["batch"] == "5" and q["mode"] == "finetune" and q["lr"] == "0.001"
    assert q["model"] == DEFAULT_CHECKPOINT.stem and "pts" not in q


def test_a_model_chosen_on_one_page_is_the_model_of_every_page(ckpt_dir: Path) -> None:
    shutil.copy(ckpt_dir / DEFAULT_CHECKPOINT.name, ckpt_dir / "other.safetensors")
    shutil.copy(ckpt_dir / DEFAULT_CHECKPOINT.with_suffix(".json").name, ckpt_dir / "other.json")
    at = _app().run()
    _open(at, "train").run()
    at.selectbox(key="model_choice").set_value("file:other").run()
    _ok(at)
    for path in [p for p in _url_paths(at) if p != "regression"]:  # the density pages
        _open(at, path).run()
        _ok(at)
        assert at.session_state["model_choice"] == "file:other"
        assert at.selectbox(key="model_choice").value == "file:other"
        q = at.query_params["model"]
        assert (q if isinstance(q, str) else q[-1]) == "other"
    # a link names the model: every page of that session opens on it
    link = _app()
    link.query_params["model"] = "other"
    link.run()
    _ok(link)
    assert link.session_state["model_choice"] == "file:other"
    _open(link, "train").run()
    assert link.session_state["model_choice"] == "file:other"
    missing = _app()
    missing.query_params["model"] = "nope"
    missing.run()
    _ok(missing)
    assert missing.session_state["model_choice"] == f"file:{DEFAULT_CHECKPOINT.stem}"
    assert any("'nope'" in str(w.value) for w in missing.warning)


def test_the_training_status_shows_on_every_page(ckpt_dir: Path) -> None:
    at = _app().run()
    assert not any("Live training:" in str(c.value) for c in at.sidebar.caption)  # no run yet
    _open(at, "train").run()
    at.number_input(key="tr_batch").set_value(2)
    at.number_input(key="tr_lsteps").set_value(2)
    at.button(key="tr_new").click().run()
    at.button(key="tr_step").click().run()
    trainer = at.session_state["trainer"]  # a trainer process: the step lands asynchronously
    trainer.wait(lambda s: s.step == 1 and s.status == "paused", timeout=120)
    for path in _url_paths(at):
        _open(at, path).run()
        _ok(at)
        line = " ".join(str(c.value) for c in at.sidebar.caption)
        assert "Live training: **paused** · step 1" in line, (path, line)
        assert "steps/s" not in line, (path, line)  # a paused run has no rate
    at.session_state["trainer"].close()
