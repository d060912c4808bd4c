"""The "Is it Bayesian?" page in AppTest: the four views on a small context, numbers beside Bayes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from iclebm.card import prior_of
from iclebm.checkpoints import CHECKPOINT_DIR, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    for name in ("mog2d", "mog2d-wide"):
        for ext in (".safetensors", ".json"):
            shutil.copy(CHECKPOINT_DIR / f"{name}{ext}", folder / f"{name}{ext}")
    return folder


def _open(at: AppTest, url_path: str) -> None:
    hashes = [h for h, info in at._registered_pages.items() if info.get("url_pathname") == url_path]
    assert hashes, url_path
    at._page_hash = hashes[0]


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _points(model: str, n: int) -> list[list[float]]:
    prior = prior_of(load_checkpoint(CHECKPOINT_DIR / f"{model}.safetensors"))
    g = torch.Generator().manual_seed(5)
    return prior.sample_task(g).sample(n, g).tolist()


def _finish_trajectory(at: AppTest) -> None:
    """Wait for the background trajectory job, then run the page as its polling fragment would."""
    job = at.session_state["_by_traj_job"]
    job.join(240)
    assert not job.running
    at.run()


@pytest.mark.parametrize("model", ["mog2d", "mog2d-wide"])
def test_bayesian_page_four_views(model: str, shipped_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(shipped_copy))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(shipped_copy / f"{model}.safetensors"))
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.session_state["points"] = _points(model, 4)
    _open(at, "bayesian")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # the trajectory map is computed in the background: the page shows its progress, then the map
    assert any("trajectory map in the background" in (p.text or "") for p in at.get("progress"))
    assert "learners ×" not in " ".join(c.value for c in at.caption)
    _finish_trajectory(at)
    assert not at.error, [e.value for e in at.error]
    metrics = _metrics(at)
    kl = float(metrics["permutation KL, model"].split()[0])
    assert kl > 0  # a causal model is order-sensitive
    assert float(metrics["martingale gap, last-point-heavy KDE"]) > 0.1  # the check's power
    if model == "mog2d":  # isotropic prior: the Bayes reference is exact at n = 4 (and 4 + 4 continued)
        assert abs(float(metrics["permutation KL, Bayes"].split()[0])) < 1e-9
        bayes_gap = float(metrics["martingale gap, bayes"])
        assert abs(bayes_gap) < 0.15 < float(metrics["martingale gap, last-point-heavy KDE"])
    else:  # anisotropic: stated, not computed live
        assert metrics["permutation KL, Bayes"] == "0"
    captions = " ".join(c.value for c in at.caption)
    assert "learners ×" in captions and "Traceback" not in captions  # the trajectory map was drawn
    # the Bayes-gap view switches learner
    at.segmented_control(key="by_learner").set_value("kde_scott").run()
    assert not at.exception
    assert "Bayes gap (kde_scott)" in at.dataframe[0].value.columns


def test_a_new_context_stops_the_stale_trajectory_job(shipped_copy: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(shipped_copy))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(shipped_copy / "mog2d.safetensors"))
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.session_state["points"] = _points("mog2d", 32)
    _open(at, "bayesian")
    at.run()
    old = at.session_state["_by_traj_job"]
    at.session_state["points"] = _points("mog2d", 6)
    at.run()
    new = at.session_state["_by_traj_job"]
    assert new is not old and len(new.key[1]) == 6
    old.join(240)
    assert old.status().cancelled and old.result() is None  # it stopped instead of finishing
    _finish_trajectory(at)
    assert not at.exception and "learners × 7 densities" in " ".join(c.value for c in at.caption)
