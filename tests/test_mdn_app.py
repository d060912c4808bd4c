"""The app with the parametric peer selected: density, Langevin, ICL curve, card, live fine-tune."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_app import _app, _ok, _open
from test_mdn import random_mdn

from iclebm.checkpoints import DEFAULT_CHECKPOINT, save_checkpoint
from iclebm.models.mixture import MixtureDensityTransformer
from iclebm.tasks import MixturePrior


@pytest.fixture()
def mdn_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private checkpoints/ with the shipped energy model and a tiny MDN beside it."""
    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip(f"no shipped checkpoint at {DEFAULT_CHECKPOINT}")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for src in (DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT.with_suffix(".json")):
        shutil.copy(src, folder / src.name)
    card = {"name": "tinymdn", "task": MixturePrior().to_card(), "box": [-12.0, 12.0],
            "sampler": {"steps": 20, "step_size": 0.01, "noise_std": 0.14, "grad_clip": 20.0}}
    save_checkpoint(random_mdn(dtype=torch.float32), folder / "tinymdn.safetensors", card)
    monkeypatch.setenv("ICLEBM_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("ICLEBM_CHECKPOINT", str(folder / DEFAULT_CHECKPOINT.name))
    return folder


def test_app_runs_every_panel_with_the_mdn(mdn_dir: Path) -> None:
    at = _app().run()
    at.selectbox(key="model_choice").set_value("file:tinymdn").run()
    _ok(at)
    text = " ".join(str(m.value) for m in at.markdown) + " ".join(str(c.value) for c in at.caption)
    assert "Gaussian mixture" in text and "parametric" in text
    at.button(key="mix_draw").click().run()
    _ok(at)
    at.toggle(key="arrows").set_value(True).run()
    _ok(at)
    at.number_input(key="lv_n").set_value(20)
    at.number_input(key="lv_steps").set_value(5)
    at.button(key="lv_run").click().run()
    _ok(at)
    assert at.session_state["lv_result"]["traj"].positions.shape[1] == 20
    at.button(key="icl_run").click().run()
    _ok(at)
    assert "model" in at.session_state["icl_result"]["curve"]["nll"]
    # live fine-tuning of the MDN uses its own objective, exact NLL
    _open(at, "train").run()
    at.number_input(key="tr_batch").set_value(2)
    at.radio(key="tr_mode").set_value("finetune")
    at.run()
    at.button(key="tr_new").click().run()
    _ok(at)
    trainer = at.session_state["trainer"]  # a trainer process: steps land asynchronously
    at.button(key="tr_step").click().run()
    _ok(at)
    trainer.wait(lambda s: s.step == 1 and trainer.weights_step == 1, timeout=120)
    assert trainer.poll().step == 1
    assert isinstance(trainer.model(), MixtureDensityTransformer)
    assert "nll_first" in trainer.poll().history[-1]  # MixtureTrainer's exact-NLL metrics
    trainer.close()
