"""Share links under AppTest: on every page, non-default choices go into the address bar in the same
run, and a fresh session opened at that address shows the same choices (the page's property table,
`iclebm.ui.page_tables`, is the list of choices); a model that cannot travel says so; a link's
warnings stay until the user acts; the mixture panel follows the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash
from test_app import APP, TIMEOUT, _ok

from iclebm.checkpoints import CHECKPOINT_DIR, checkpoint_bytes, load_checkpoint
from iclebm.ui import page_tables as T

MODELS = ("mog2d", "mog2d-wide", "linreg", "sinusoid")


@pytest.fixture()
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private checkpoints/ with two density and two regression models; the app opens on mog2d."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in MODELS:
        for ext in (".safetensors", ".json"):
            src = CHECKPOINT_DIR / f"{name}{ext}"
            if not src.exists():
                pytest.skip(f"no shipped checkpoint {src}")
            shutil.copy(src, folder / src.name)
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(folder / "mog2d.safetensors"))
    return folder


def _q(at: AppTest) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v[-1] for k, v in at.query_params.items()}


def _at(page: str, query: dict[str, str] | None = None) -> AppTest:
    """A fresh session opening /page?query, as a browser opening a shared link does."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at._page_hash = calc_hash(page)  # st.Page's hash of its url_path (our pages are callables)
    at.query_params.update(query or {})
    return at.run()


def _same_choices(a: AppTest, b: AppTest, table: T.Table, skip: tuple[str, ...] = ()) -> None:
    for p in table.props:
        if p.name in skip:
            continue
        va, vb = a.session_state[p.name], b.session_state[p.name]
        assert table.encode({p.name: va}) == table.encode({p.name: vb}), (p.name, va, vb)


def test_density_link_round_trips_every_choice_and_the_mixture_panel(models_dir: Path) -> None:
    at = _at("density")
    ss = at.session_state
    for name, value in {"view": "density", "resolution": 60, "log_scale": True, "contours": False,
                        "arrows": False, "mix_from_prior": False, "mix_k": (2, 4), "mix_width": (0.3, 0.6),
                        "mix_seed": 7, "mix_n": 12}.items():
        ss[name] = value
    at.run()
    at.button(key="mix_draw").click().run()  # the drawn points are in the address bar in the same run
    _ok(at)
    q = _q(at)
    assert len(q["pts"].split(";")) == 12 and q["mixk"] == "2-4" and q["mixprior"] == "0" and q["seed"] == "7"
    assert q["model"] == "mog2d" and q["view"] == "density" and q["grid"] == "60"
    link = _at("density", q)
    _ok(link)
    assert not link.warning, [w.value for w in link.warning]
    _same_choices(at, link, T.DENSITY, skip=("n_shown",))
    assert link.slider(key="mix_k").value == (2, 4) and link.number_input(key="mix_seed").value == 7
    assert link.session_state["mixture"]["k"] == [2, 4] and _q(link) == q  # the link reads back the same


def test_the_mixture_panel_shows_the_models_prior_and_follows_a_model_switch(models_dir: Path) -> None:
    at = _at("density")
    assert at.slider(key="mix_k").value == (3, 3)  # mog2d: 3 components
    at.selectbox(key="model_choice").set_value("file:mog2d-wide").run()
    _ok(at)
    prior = at.session_state["_prior_mixture"]
    assert at.slider(key="mix_k").value == (1, 6) and prior["k"] == [1, 6]  # mog2d-wide: 1 to 6
    assert at.slider(key="mix_width").value == tuple(prior["width"])  # not mog2d's widths


def test_regression_link_keeps_the_sinusoid_model_and_its_choices(models_dir: Path) -> None:
    at = _at("regression")
    assert at.selectbox(key="reg_model").options == ["linreg  (checkpoints/)", "sinusoid  (checkpoints/)"]
    at.selectbox(key="reg_model").set_value("file:sinusoid")
    for name, value in {"reg_view": "energy", "reg_k": 7, "reg_bayes": False, "reg_ols": False,
                        "reg_family": "sinusoid", "reg_seed": 3, "reg_n": 5}.items():
        at.session_state[name] = value
    at.run()
    at.button(key="reg_draw").click().run()
    _ok(at)
    q = _q(at)
    assert q["model"] == "sinusoid" and q["task"] == "sinusoid,3,5" and len(q["pts"].split(";")) == 5
    link = _at("regression", q)
    _ok(link)
    assert link.session_state["reg_model"] == "file:sinusoid"  # not linreg
    _same_choices(at, link, T.REGRESSION)
    assert _q(link) == q


def test_train_link_carries_the_objective(models_dir: Path) -> None:
    at = _at("train")
    at.radio(key="tr_objective").set_value("cd")
    at.radio(key="tr_mode").set_value("finetune")
    at.number_input(key="tr_batch").set_value(5).run()
    _ok(at)
    q = _q(at)
    assert q["obj"] == "cd" and q["mode"] == "finetune" and q["batch"] == "5"
    link = _at("train", q)
    _ok(link)
    assert link.radio(key="tr_objective").value == "cd"
    _same_choices(at, link, T.TRAIN)


def test_inside_link_round_trips(models_dir: Path) -> None:
    q = {"pts": "1,2;3,1;-2,0.5", "q": "2,-1", "mode": "attention", "layer": "2", "head": "1", "obj": "cd",
         "k": "30", "lr": "0.003", "short": "1", "model": "mog2d"}
    at = _at("inside", q)
    _ok(at)
    assert _q(at) == q and not at.warning
    assert at.session_state["in_obj"] == "cd" and at.session_state["in_head"] == 1


def test_an_uploaded_model_says_it_cannot_travel_in_a_link(models_dir: Path) -> None:
    at = _at("density")
    data = checkpoint_bytes(load_checkpoint(models_dir / "mog2d.safetensors"))
    at.file_uploader(key="upload").set_value(("mine.safetensors", data, "application/octet-stream")).run()
    _ok(at)
    assert at.session_state["model_choice"] == "session:mine"
    note = " ".join(str(w.value) for w in at.sidebar.warning)
    assert "cannot carry **mine**" in note and "default model" in note
    assert "model" not in _q(at)
    at.run()  # persistent: still there on the next run
    assert any("cannot carry" in str(w.value) for w in at.sidebar.warning)
    at.selectbox(key="model_choice").set_value("file:mog2d").run()
    assert not any("cannot carry" in str(w.value) for w in at.sidebar.warning)


def test_a_model_without_a_bayes_predictive_says_so_in_one_line(models_dir: Path) -> None:
    """A prior the Bayes predictive cannot take (elongated components, mean_std over a range): the
    overlay and the ICL chart say why in one line each; no exception reaches the page."""
    model = load_checkpoint(models_dir / "mog2d.safetensors")
    card = {**model.card, "task": {**model.card["task"], "mean_std": [2.0, 4.0], "aspect_ratio": [1.0, 3.0],
                                   "rotation": "uniform"}}
    at = _at("density")
    at.file_uploader(key="upload").set_value(("ranged.safetensors", checkpoint_bytes(model, card),
                                              "application/octet-stream")).run()
    at.toggle(key="show_bayes").set_value(True).run()
    _ok(at)
    captions = " ".join(str(c.value) for c in at.caption)
    assert "Bayes-optimal overlay: not available for this model: " in captions and "mean_std" in captions
    assert not at.exception and not at.error


def test_link_warnings_stay_until_the_user_acts(models_dir: Path) -> None:
    at = _at("density", {"pts": "1,2;oops", "view": "weird"})
    for _ in range(2):  # reruns (the canvas's first draw triggers one in the browser) keep them
        texts = " ".join(str(w.value) for w in at.warning)
        assert "unreadable or out-of-box" in texts and "view='weird'" in texts
        at.run()
    at.toggle(key="log_scale").set_value(True).run()  # the user acts: the link's view is gone
    assert not any("view='weird'" in str(w.value) for w in at.warning)


def test_the_last_click_caption_goes_with_clear_draw_and_probes(models_dir: Path) -> None:
    at = _at("density")
    at.session_state["points"] = [(1.0, 1.0)]
    at.session_state["last_added"] = (1.0, 1.0)  # as a click leaves it
    at.run()
    assert "last click added" in " ".join(str(c.value) for c in at.caption)
    at.button(key="clear").click().run()
    assert "last click added" not in " ".join(str(c.value) for c in at.caption)
    at.session_state["last_added"] = (1.0, 1.0)
    at.button(key="mix_draw").click().run()
    assert "last click added" not in " ".join(str(c.value) for c in at.caption)
    at.session_state["last_added"] = (1.0, 1.0)
    at.button(key="probe_load").click().run()  # a probe shape replaces the context too
    assert len(at.session_state["points"]) > 1
    assert "last click added" not in " ".join(str(c.value) for c in at.caption)
