"""Trainers in child processes: lifecycle, exact snapshots, the cap and queue, crashes, cleanup."""

from __future__ import annotations

import gc
import os
import re
import signal
import time

import pytest
import torch

from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.training.trainer import Trainer
from iclebm.ui.jobs.live_settings import make_configs
from iclebm.ui.jobs.trainer_process import PoolConfig, ProcessTrainer, TrainerPool

TINY = {"n_layer": 1, "d_model": 8, "batch_size": 2, "context_len": 4, "chains": 1, "langevin_steps": 2}
START = 120.0  # seconds allowed for a spawned child to import torch on a loaded machine


def gone(pid: int, timeout: float = 20.0) -> bool:
    """True once no process with this pid exists (it exited and was reaped: no zombie either)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def started(t: ProcessTrainer) -> bool:
    return t.wait(lambda s: s.status == "paused", START).status == "paused"


class NanTrainer(Trainer):
    """A trainer whose steps after the second produce a NaN loss (divergence across the boundary)."""

    def step(self) -> dict:
        if self.step_count >= 2:
            for p in self.model.parameters():
                p.data.fill_(float("nan"))
        return super().step()


def nan_factory(spec: dict) -> Trainer:
    train_cfg, model_cfg = make_configs(spec["mode"], spec["settings"])
    return NanTrainer(config=train_cfg, model_config=model_cfg, max_bad_steps=2)


@pytest.fixture(scope="module")
def pool():
    p = TrainerPool(PoolConfig(max_trainers=2, nice=2, status_every=0.05, weights_every=0.2, curve_every=0))
    yield p
    p.shutdown()


def test_lifecycle_and_exact_snapshot(pool: TrainerPool) -> None:
    t = pool.create("scratch", TINY)
    try:
        assert started(t)
        pid = t.pid
        assert pid is not None and pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 2
        t.step(3)
        snap = t.wait(lambda s: s.step == 3 and s.status == "paused")
        assert snap.step == 3 and len(snap.history) == 3
        model = t.wait(lambda s: t.model() is not None and t._weights["step"] == 3) and t.model()
        assert model is not None and not model.training and model.card["training"]["steps"] == 3
        # The same 3 steps in this process, one thread as in the child: bit-identical weights.
        train_cfg, model_cfg = make_configs("scratch", TINY)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            ref = Trainer(config=train_cfg, model_config=model_cfg)
            for _ in range(3):
                ref.step()
        finally:
            torch.set_num_threads(threads)
        for k, v in ref.model.state_dict().items():
            assert torch.equal(v, model.state_dict()[k]), k
        t.play()
        assert t.wait(lambda s: s.step >= 8).step >= 8
        assert t.poll().steps_per_s > 0 and t.status == "running"
        t.pause()
        t.wait(lambda s: s.status == "paused")
        time.sleep(0.5)  # the step in flight when Pause arrived may still land (more on a loaded machine)
        settled = t.poll().step
        time.sleep(0.5)
        assert t.poll().step == settled  # then a paused run takes no more steps
        t.reset()
        snap = t.wait(lambda s: s.step == 0 and not s.history)
        assert snap.step == 0 and snap.status == "paused" and t.pid == pid  # same process, fresh weights
    finally:
        t.close()
    assert gone(pid)
    assert t.poll().status == "closed"


def test_cap_and_queue() -> None:
    pool = TrainerPool(PoolConfig(max_trainers=1, nice=0, status_every=0.05, curve_every=0))
    try:
        a = pool.create("scratch", TINY)
        b = pool.create("scratch", TINY)
        assert pool.active == 1 and pool.waiting == 1
        snap = b.poll()
        assert snap.status == "waiting" and "free slot" in (snap.message or "")
        b.play()  # remembered while waiting
        assert started(a)
        assert b.poll().status == "waiting" and b.pid is None
        pid_a = a.pid
        a.close()
        assert b.wait(lambda s: s.step >= 2, START).step >= 2  # b got the slot and plays
        assert gone(pid_a) and pool.active == 1 and pool.waiting == 0
    finally:
        pool.shutdown()


def test_session_end_reaps_the_process() -> None:
    pool = TrainerPool(PoolConfig(max_trainers=2, nice=0, status_every=0.05, curve_every=0))
    try:
        t = pool.create("scratch", TINY)
        assert started(t)
        t.play()
        pid = t.pid
        del t  # the browser session ended: its state (and the handle) is dropped
        gc.collect()
        assert gone(pid)
        assert pool.active == 0
    finally:
        pool.shutdown()


def test_abandoned_session_times_out() -> None:
    pool = TrainerPool(PoolConfig(max_trainers=2, nice=0, session_timeout=1.0, curve_every=0))
    try:
        t = pool.create("scratch", TINY)
        assert started(t)
        pid = t.pid
        time.sleep(1.6)  # nobody polls
        assert gone(pid) and pool.active == 0
    finally:
        pool.shutdown()


def test_crash_is_reported_and_reset_restarts(pool: TrainerPool) -> None:
    t = pool.create("scratch", TINY)
    try:
        assert started(t)
        t.step(2)
        t.wait(lambda s: s.step == 2 and t.model() is not None and t._weights["step"] == 2)
        kept = t.model()
        pid = t.pid
        os.kill(pid, signal.SIGKILL)
        snap = t.wait(lambda s: s.status == "stopped")
        assert snap.status == "stopped" and snap.message.startswith("Training stopped")
        assert "signal 9" in snap.message
        assert t.poll(with_model=True).model is kept  # the last weights survive the crash
        assert gone(pid)
        t.reset()
        assert started(t) and t.pid != pid
        t.step(1)
        assert t.wait(lambda s: s.step == 1).step == 1
    finally:
        t.close()


def test_divergence_pauses_and_keeps_last_good_weights(pool: TrainerPool) -> None:
    t = pool.create("scratch", TINY, factory=nan_factory)
    try:
        assert started(t)
        t.play()
        snap = t.wait(lambda s: s.status == "diverged")
        assert snap.status == "diverged" and "last good weights" in snap.message
        assert snap.step == 2
        model = t.wait(lambda s: t._weights is not None and t._weights["step"] == 2) and t.model()
        assert all(torch.isfinite(p).all() for p in model.parameters())
        t.step(1)  # a single step clears the message and tries again
        assert t.wait(lambda s: s.status == "diverged" and s.history[-1]["skipped"]).status == "diverged"
    finally:
        t.close()


def test_bad_settings_fail_in_the_caller(pool: TrainerPool) -> None:
    with pytest.raises(ValueError):
        pool.create("sideways", TINY)
    with pytest.raises(ValueError):
        pool.create("finetune", TINY)  # needs a base model
    with pytest.raises(ValueError):
        PoolConfig(max_trainers=0)


def test_finetune_trains_a_copy(pool: TrainerPool) -> None:
    base = EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=6))
    base.card = {"name": "base", "box": [-10, 10]}
    before = {k: v.clone() for k, v in base.state_dict().items()}
    t = pool.create("finetune", {"batch_size": 2, "chains": 1, "langevin_steps": 2}, base_model=base)
    try:
        assert started(t)
        t.step(2)
        t.wait(lambda s: s.step == 2 and t._weights is not None and t._weights["step"] == 2)
        model = t.model()
        assert model.card["name"] == "base-finetuned" and model.card["training"]["mode"] == "finetune"
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    finally:
        t.close()


def test_icl_curve_of_the_current_weights() -> None:
    cfg = PoolConfig(max_trainers=1, nice=0, curve_every=0.01, curve_tasks=2, curve_resolution=16)
    pool = TrainerPool(cfg)
    try:
        t = pool.create("scratch", TINY)
        t.step(2)
        t.wait(lambda s: (t.icl_curves() or {}).get("curves", [(0,)])[-1][0] == 2, START)
        c = t.icl_curves()
        assert c is not None and c["curves"][-1][0] == 2
        assert c["ns"] == [0, 1, 2, 4, 8, 16, 32] and len(c["curves"][-1][1]) == len(c["ns"])
        assert c["prior_predictive"] > c["oracle"]
        # The child's numbers equal the page-side computation on the same weights and tasks.
        from iclebm.evaluation.icl_curve import ValidationSet
        from iclebm.tasks import MixturePrior

        cfg = t.train_config
        vset = ValidationSet.draw(MixturePrior.from_card(cfg.task), cfg.box, n_tasks=2, ns=c["ns"])
        assert vset.prior_predictive == pytest.approx(c["prior_predictive"])
        model = t.wait(lambda s: t._weights is not None and t._weights["step"] == 2) and t.model()
        assert vset.model_curve(model, 16) == pytest.approx(c["curves"][-1][1], abs=1e-4)
        t.reset()
        assert t.icl_curves() is None
    finally:
        pool.shutdown()


def test_curves_come_less_often_when_they_are_slow() -> None:
    """With several trainers per core a curve takes longer; its share of the trainer's time stays capped."""
    from types import SimpleNamespace

    from iclebm.ui.jobs.trainer_process import _Child

    cfg = PoolConfig(curve_every=4.0, curve_share=0.2)
    assert _Child.curve_interval(SimpleNamespace(cfg=cfg, curve_seconds=0.3)) == 4.0
    assert _Child.curve_interval(SimpleNamespace(cfg=cfg, curve_seconds=2.0)) == pytest.approx(10.0)


def test_pings_keep_a_run_going_and_a_run_nobody_looks_at_pauses() -> None:
    """The page's live refresh pings the run (ProcessTrainer.ping); without pings it pauses after
    `idle_pause` s, says why, and offers Play again (wants_run cleared), the message staying put."""
    limit = 1.0
    pool = TrainerPool(PoolConfig(max_trainers=1, nice=0, status_every=0.05, curve_every=0, idle_pause=limit))
    try:
        t = pool.create("scratch", TINY)
        assert started(t)
        t.play()
        first = t.wait(lambda s: s.step >= 1, START).step
        end = time.monotonic() + 4 * limit
        while time.monotonic() < end:  # a page that keeps refreshing
            t.ping()
            assert t.poll().status == "running" and t.active
            time.sleep(limit / 5)
        assert t.poll().step > first and t.poll().status == "running"
        # The page is gone: polls (which are no pings) see it pause by itself.
        snap = t.wait(lambda s: s.status == "paused", 10 * limit)
        assert snap.status == "paused" and "no open page has looked at this run" in (snap.message or "")
        assert not t.active and not t.wants_run  # Play enabled, Pause disabled
        time.sleep(0.3)
        assert t.poll().message == snap.message and t.poll().steps_per_s == 0.0  # until the user acts
        t.play()
        assert t.poll().message is None
        assert t.wait(lambda s: s.status == "running" and s.step > snap.step).step > snap.step
    finally:
        pool.shutdown()


def test_pause_shows_at_once_without_a_rate(pool: TrainerPool) -> None:
    t = pool.create("scratch", TINY)
    try:
        assert started(t)
        t.play()
        assert t.wait(lambda s: s.steps_per_s > 0 and s.status == "running").status == "running"
        t.pause()
        for _ in range(20):  # reports sent before the child saw the pause must not flip it back
            snap = t.poll()
            assert snap.status == "paused" and snap.steps_per_s == 0.0
            time.sleep(0.02)
        assert not t.active
    finally:
        t.close()


def test_pool_config_from_the_environment() -> None:
    cfg = PoolConfig.from_env({"ICLEBM_IDLE_PAUSE_S": "4.5", "ICLEBM_MAX_TRAINERS": "3",
                               "ICLEBM_WATCHDOG_WARMUP": "20", "ICLEBM_WATCHDOG_ENERGY": "50"})
    assert cfg.idle_pause == 4.5 and cfg.max_trainers == 3
    assert cfg.watchdog.warmup_steps == 20 and cfg.watchdog.energy_bound == 50.0
    default = PoolConfig.from_env({"ICLEBM_MAX_TRAINERS": "0"})
    assert default.idle_pause == PoolConfig().idle_pause and default.max_trainers == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="ICLEBM_IDLE_PAUSE_S"):
        PoolConfig.from_env({"ICLEBM_IDLE_PAUSE_S": "soon"})
    with pytest.raises(ValueError, match="idle_pause"):
        PoolConfig.from_env({"ICLEBM_IDLE_PAUSE_S": "-1"})


def test_the_pool_sees_every_trainers_state_without_polling() -> None:
    pool = TrainerPool(PoolConfig(max_trainers=1, nice=0, status_every=0.05, curve_every=0))
    try:
        a = pool.create("scratch", TINY)
        b = pool.create("scratch", TINY)
        assert pool.summary() in ({"starting": 1, "waiting": 1}, {"paused": 1, "waiting": 1})
        assert started(a)
        a.play()
        a.wait(lambda s: s.step >= 1, START)
        end = time.monotonic() + START
        while pool.summary() != {"running": 1, "waiting": 1} and time.monotonic() < end:
            time.sleep(0.05)  # nobody polls a: the pool reads what its process reports
        assert pool.summary() == {"running": 1, "waiting": 1}
        del b
    finally:
        pool.shutdown()


# The run of the issue that diverged unnoticed (lr 0.01, contrastive divergence, Langevin step 0.5,
# noise 2), with 4 tasks a batch so that it is short: its ICL NLL at n = 16 climbs above the prior
# predictive within a few dozen steps.
DIVERGING = {"lr": 0.01, "objective": "cd", "step_size": 0.5, "noise_std": 2.0, "batch_size": 4}


def watched_pool(warmup: int) -> TrainerPool:
    from iclebm.training.watchdog import WatchdogLimits

    # idle_pause: these tests poll but never ping (a slow machine must not idle-pause the run first)
    return TrainerPool(PoolConfig(max_trainers=1, nice=0, status_every=0.1, curve_every=0.01, curve_tasks=4,
                                  curve_resolution=40, idle_pause=3600.0,
                                  watchdog=WatchdogLimits(warmup_steps=warmup)))


def test_the_watchdog_pauses_a_diverging_run_and_restores_healthy_weights() -> None:
    pool = watched_pool(warmup=10)
    try:
        t = pool.create("scratch", DIVERGING)
        assert started(t)
        t.play()
        snap = t.wait(lambda s: s.status != "running" and s.step > 0, 600)
        assert snap.status == "diverged", (snap.status, snap.step, snap.message)
        assert "ICL NLL at n = 16 was worse than the prior predictive" in snap.message
        assert "restored" in snap.message and not t.active and not t.wants_run
        # The weights and the step count went back to the last healthy check (the last curve kept),
        # before the three checks that struck; the history ends there too.
        restored = int(re.search(r"the weights of step (\d+)", snap.message).group(1))
        struck = [int(v) for v in re.search(r"\(steps ([\d, ]+);", snap.message).group(1).split(", ")]
        assert snap.step == restored and len(struck) == 3 and all(s > restored for s in struck), snap.message
        assert min(struck) >= 10  # no strike during the warm-up
        assert all(row["step"] < restored for row in snap.history)
        assert t.wait(lambda s: t.weights_step == restored).step == restored
        assert t.icl_curves()["curves"][-1][0] == restored
        model = t.model()
        assert model is not None and all(torch.isfinite(p).all() for p in model.parameters())
        time.sleep(0.3)
        assert t.poll().message == snap.message  # until the user acts
    finally:
        pool.shutdown()


def test_a_normal_fast_preset_run_never_trips_the_watchdog() -> None:
    """The fast preset from scratch (4 tasks a batch: noisier than the default 32, so stricter), 200
    steps with an ICL check every few steps; a warm-up of 20 instead of 200 puts most checks to work
    (a loaded machine makes fewer checks in 200 steps: each check takes longer than a step)."""
    pool = watched_pool(warmup=20)
    try:
        t = pool.create("scratch", {"batch_size": 4})
        assert started(t)
        # The ICL checks run on the trainer's clock, not every k steps: a loaded machine fits fewer
        # into 200 steps, so train on (100 steps at a time, up to 600) until three were judged.
        target, judged = 0, []
        while target < 600 and len(judged) < 3:
            more = 200 if target == 0 else 100
            target += more
            t.step(more)
            snap = t.wait(lambda s, n=target: s.step >= n or s.status != "paused", 900)
            assert snap.status == "paused" and snap.step == target, (snap.status, snap.step, snap.message)
            assert snap.message is None
            judged = [step for step, _ in t.icl_curves()["curves"] if step >= 20]
        assert len(judged) >= 3, judged
    finally:
        pool.shutdown()
