"""The explorer's background trainer: controls, snapshots, divergence, cleanup."""

from __future__ import annotations

import gc
import time

import pytest
import torch

import iclebm.training as training
from iclebm.model import EnergyConfig, EnergyTransformer
from iclebm.ui.live_training import BOUNDS, LiveTrainer, make_configs

TINY = {"n_layer": 1, "d_model": 8, "batch_size": 2, "context_len": 4, "chains": 1, "langevin_steps": 2}


def _wait(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture()
def base_model() -> EnergyTransformer:
    m = EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=6))
    m.card = {"name": "base", "task": {"n_components": 2, "mean_std": 2.0, "component_std": [0.3, 0.4]},
              "box": [-10, 10],
              "sampler": {"steps": 50, "step_size": 0.05, "noise_std": 0.3, "grad_clip": 20.0}}
    for p in m.parameters():  # as the app's cached, inference-only model
        p.requires_grad_(False)
    return m.eval()


def test_make_configs_clamps_absurd_values() -> None:
    train, model_cfg = make_configs("scratch", {"lr": 10.0, "batch_size": 10_000, "chains": 0, "d_model": 7,
                                                "n_layer": 99, "noise_std": -1.0})
    assert train.lr == BOUNDS["lr"][1] and train.batch_size == BOUNDS["batch_size"][1] and train.chains == 1
    assert train.noise_std == 0.0
    assert model_cfg is not None and model_cfg.n_layer == BOUNDS["n_layer"][1]
    assert model_cfg.d_model % model_cfg.n_head == 0 and model_cfg.d_model >= BOUNDS["d_model"][0]
    with pytest.raises(ValueError):
        make_configs("finetune", {})
    with pytest.raises(ValueError):
        make_configs("sideways", {})


def test_finetune_config_follows_the_base_card(base_model: EnergyTransformer) -> None:
    train, model_cfg = make_configs("finetune", {"context_len": 32}, base_model)
    assert model_cfg is None
    assert train.task["n_components"] == 2 and train.box == (-10.0, 10.0)
    assert train.context_len == 6  # never longer than the base model reads


def test_step_poll_play_pause_reset_close() -> None:
    lt = LiveTrainer("scratch", TINY)
    try:
        assert lt.status == "paused" and lt.poll().step == 0
        lt.step(2)
        assert lt.wait_idle(30)
        snap = lt.poll(with_model=True)
        assert snap.step == 2 and len(snap.history) == 2 and snap.status == "paused"
        assert snap.model is not None and not snap.model.training
        assert snap.model.card["training"]["steps"] == 2 and snap.model.card["training"]["mode"] == "scratch"
        lt.play()
        assert lt.running and lt.status == "running"
        assert _wait(lambda: lt.poll().step >= 5)
        assert lt.poll().steps_per_s > 0
        lt.pause()
        assert lt.wait_idle(30)
        stopped = lt.poll().step
        time.sleep(0.3)
        assert lt.poll().step == stopped and lt.status == "paused"
        lt.reset()
        assert lt.poll().step == 0 and lt.alive
    finally:
        lt.close()
    assert _wait(lambda: not lt.alive, 5)


def test_snapshot_is_a_copy() -> None:
    lt = LiveTrainer("scratch", TINY)
    try:
        lt.step(1)
        lt.wait_idle(30)
        snap = lt.poll(with_model=True)
        before = {k: v.clone() for k, v in snap.model.state_dict().items()}
        lt.step(2)
        lt.wait_idle(30)
        for k, v in snap.model.state_dict().items():
            assert torch.equal(v, before[k])
    finally:
        lt.close()


def test_finetune_never_touches_the_shared_model(base_model: EnergyTransformer) -> None:
    before = {k: v.clone() for k, v in base_model.state_dict().items()}
    lt = LiveTrainer("finetune", TINY, base_model=base_model)
    try:
        lt.step(2)
        assert lt.wait_idle(30)
        snap = lt.poll(with_model=True)
        assert snap.step == 2
        changed = any(not torch.equal(v, before[k]) for k, v in snap.model.state_dict().items())
        assert changed, "fine-tuning did not train (frozen copy?)"
        assert snap.model.card["training"]["base"] == "base" and snap.model.card["box"] == [-10.0, 10.0]
    finally:
        lt.close()
    for k, v in base_model.state_dict().items():
        assert torch.equal(v, before[k])


def test_divergence_pauses_with_a_message_and_keeps_the_last_good_weights(monkeypatch) -> None:
    lt = LiveTrainer("scratch", TINY, max_bad_steps=3)
    try:
        lt.step(1)
        lt.wait_idle(30)
        good = {k: v.clone() for k, v in lt.poll(with_model=True).model.state_dict().items()}
        # the live default objective is the exact likelihood (with importance points)
        loss_name = {"cd": "cd_loss", "exact": "exact_nll_loss"}[lt.train_config.objective]
        real = getattr(training, loss_name)

        def nan_loss(*args, **kwargs):  # type: ignore[no-untyped-def]
            loss, stats = real(*args, **kwargs)
            return loss * float("nan"), stats

        monkeypatch.setattr(training, loss_name, nan_loss)
        lt.play()
        assert _wait(lambda: lt.status == "diverged", 30)
        snap = lt.poll(with_model=True)
        assert not lt.running and "diverged" in snap.message and "last good weights" in snap.message
        assert snap.step == 1
        for k, v in snap.model.state_dict().items():
            assert torch.equal(v, good[k])
        monkeypatch.setattr(training, loss_name, real)
        lt.step(1)  # stepping again clears the state and trains on
        assert lt.wait_idle(30) and lt.poll().step == 2 and lt.status == "paused"
    finally:
        lt.close()


def test_unwatched_runs_pause_themselves() -> None:
    lt = LiveTrainer("scratch", TINY, idle_timeout=0.3)
    try:
        lt.play()
        assert _wait(lambda: lt.status == "paused", 20)
        assert "no browser" in lt.poll().message
    finally:
        lt.close()


def test_thread_ends_when_the_session_drops_the_trainer() -> None:
    lt = LiveTrainer("scratch", TINY)
    thread = lt._thread
    lt.play()
    del lt
    gc.collect()
    assert _wait(lambda: not thread.is_alive(), 20)
