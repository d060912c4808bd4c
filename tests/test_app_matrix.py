"""Every page with every shipped model, as a new user meets them: no exception, no traceback, no
error box; where a capability is missing (a Bayes predictive, a density model on a regression page)
the page says so in one line instead. The Bayes overlays are switched on throughout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from iclebm.card import capabilities_of
from iclebm.checkpoints import CHECKPOINT_DIR, read_card

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
SHIPPED = sorted(CHECKPOINT_DIR.glob("*.safetensors"))
PAGES = ("density", "inside", "regression", "train", "bayesian")


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped checkpoints and cards in a private folder, so no page can write to the repo."""
    folder = tmp_path_factory.mktemp("checkpoints")
    for p in SHIPPED:
        shutil.copy(p, folder / p.name)
        shutil.copy(p.with_suffix(".json"), folder / p.with_suffix(".json").name)
    return folder


def _texts(at: AppTest, kind: str) -> str:
    return " ".join(str(e.value) for e in getattr(at, kind))


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    for kind in ("markdown", "caption", "warning", "info"):
        assert "Traceback" not in _texts(at, kind) and "Error:" not in _texts(at, kind)


def _open(at: AppTest, page: str) -> None:
    url_path = "" if page == PAGES[0] else page  # the first page opens at "/"
    hashes = [h for h, info in at._registered_pages.items() if info.get("url_pathname") == url_path]
    assert hashes, url_path
    at._page_hash = hashes[0]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("model", [p.stem for p in SHIPPED])
def test_every_page_with_every_shipped_model(model: str, page: str, shipped_copy: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(shipped_copy))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(shipped_copy / f"{model}.safetensors"))
    at = AppTest.from_file(APP, default_timeout=180).run()
    _open(at, page)
    at.session_state["show_bayes"] = True  # the Density page's overlay (kept across pages)
    at.session_state["reg_bayes"] = True
    at.run()
    _ok(at)
    caps = capabilities_of(read_card(shipped_copy / f"{model}.safetensors"))
    if page == "density" and caps.kind == "density":
        at.button(key="mix_draw").click().run()  # a random task from the model's own prior
        _ok(at)
        mix = at.session_state["mixture"]
        assert ("ratio" in mix) == caps.anisotropic  # mog2d-wide draws elongated, rotated components
        # every shipped density model has the Bayes overlay now (mog2d-wide's anisotropic prior too)
        assert caps.bayes, caps.why_no_bayes
        assert "Bayes-optimal overlay: not available for this model" not in _texts(at, "caption")
        if caps.anisotropic:  # the ICL chart has its Bayes line too (fewer test points, coarser rule)
            at.session_state["points"] = at.session_state["points"][:8]
            at.button(key="icl_run").click().run()
            _ok(at)
            curve = at.session_state["icl_result"]["curve"]
            assert "bayes" in curve["nll"] and curve["n_test"] == 150, curve.keys()
            assert curve["nll"]["bayes"][-1] < curve["nll"]["bayes"][0]  # the context informs it
    if page == "density" and caps.kind == "regression":
        # selection by family: the Density page offers density models only, so a regression default
        # (ICLEBM_CHECKPOINT) opens it on a density model instead of a contradictory banner
        shown = str(at.session_state["model_choice"]).removeprefix("file:")
        assert capabilities_of(read_card(shipped_copy / f"{shown}.safetensors")).kind == "density", shown
