"""The divergence watchdog's decisions on synthetic streams (the live trainer's use: test_trainer_process)."""

from __future__ import annotations

import math

import pytest

from iclebm.training.watchdog import Watchdog, WatchdogLimits, icl_gap, step_fault

NS = [0, 1, 2, 4, 8, 16, 32]
PRIOR = 5.0


def healthy_curve(step: int) -> list[float]:
    """NLL falling with n, below the prior predictive from n = 2 on (a model that learns in context)."""
    return [6.3, 5.4, 4.9, 4.4, 3.9, 3.6, 3.5]


def rising_curve(step: int) -> list[float]:
    """NLL rising with n to 11 (the diverged run of the issue): worse than the prior predictive."""
    return [6.0, 6.5, 7.0, 8.0, 9.5, 11.0, 11.2]


def metrics(step: int, loss: float = -1.0, **energies: float) -> dict:
    return {"step": step, "loss": loss, "skipped": False, "e_real": 2.0, "e_neg": 4.0, **energies}


def test_a_healthy_stream_never_trips() -> None:
    dog = Watchdog(WatchdogLimits(warmup_steps=200))
    for step in range(0, 2000, 10):
        assert dog.check_step(metrics(step, loss=3.0 - step / 1000)) is None
        if step % 40 == 0:
            assert dog.check_curve(step, NS, healthy_curve(step), PRIOR) is None
            assert dog.healthy_curve


def test_non_finite_loss_energy_or_gradient_trips() -> None:
    lim = WatchdogLimits()
    assert "loss is not finite" in step_fault(metrics(7, loss=math.nan), lim)
    assert "step 7" in step_fault(metrics(7, loss=math.inf), lim)
    assert "e_neg is not finite" in step_fault(metrics(3, e_neg=math.inf), lim)
    assert "gradient" in step_fault({**metrics(4), "skipped": True}, lim)


def test_energy_beyond_the_bound_trips_and_names_it() -> None:
    lim = WatchdogLimits(energy_bound=100.0)
    assert step_fault(metrics(5, e_neg=99.0), lim) is None
    cause = step_fault(metrics(5, e_neg=-250.0), lim)
    assert cause is not None and "e_neg" in cause and "±100" in cause
    assert "log_z" in step_fault(metrics(5, log_z=1e5), lim)


def test_icl_worse_than_the_prior_trips_after_three_checks_in_a_row() -> None:
    dog = Watchdog(WatchdogLimits(warmup_steps=200, icl_margin=0.5, icl_strikes=3))
    # During the warm-up a bad curve is no strike (a fresh model is worse than the prior).
    for step in (0, 50, 100, 150):
        assert dog.check_curve(step, NS, rising_curve(step), PRIOR) is None and dog.healthy_curve
    assert dog.check_curve(200, NS, rising_curve(200), PRIOR) is None and not dog.healthy_curve
    assert dog.check_curve(250, NS, rising_curve(250), PRIOR) is None
    cause = dog.check_curve(300, NS, rising_curve(300), PRIOR)
    assert cause is not None and "n = 16" in cause and "prior predictive (5.00)" in cause
    assert "200, 250, 300" in cause


def test_a_good_check_between_bad_ones_resets_the_count() -> None:
    dog = Watchdog(WatchdogLimits(warmup_steps=0, icl_strikes=3))
    assert dog.check_curve(1, NS, rising_curve(1), PRIOR) is None
    assert dog.check_curve(2, NS, rising_curve(2), PRIOR) is None
    assert dog.check_curve(3, NS, healthy_curve(3), PRIOR) is None and dog.healthy_curve
    assert dog.check_curve(4, NS, rising_curve(4), PRIOR) is None
    assert dog.check_curve(5, NS, rising_curve(5), PRIOR) is None
    assert dog.check_curve(6, NS, rising_curve(6), PRIOR) is not None


def test_within_the_margin_is_no_strike() -> None:
    dog = Watchdog(WatchdogLimits(warmup_steps=0, icl_margin=0.5, icl_strikes=1))
    assert dog.check_curve(1, NS, [6.0, 5.5, 5.5, 5.5, 5.5, PRIOR + 0.49, 5.5], PRIOR) is None
    assert dog.check_curve(2, NS, [6.0, 5.5, 5.5, 5.5, 5.5, PRIOR + 0.51, 5.5], PRIOR) is not None


def test_icl_gap_uses_the_longest_context_up_to_n() -> None:
    assert icl_gap(NS, healthy_curve(0), PRIOR, 16) == (16, pytest.approx(3.6 - PRIOR))
    assert icl_gap([0, 1, 2, 4, 8], [6.0, 5.0, 4.0, 3.0, 7.0], PRIOR, 16) == (8, pytest.approx(2.0))
    assert icl_gap([0], [6.0], PRIOR, 16) is None


def test_bad_limits_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="energy_bound"):
        WatchdogLimits(energy_bound=0)
    with pytest.raises(ValueError, match="icl_strikes"):
        WatchdogLimits(icl_strikes=0)
    with pytest.raises(ValueError, match="warmup"):
        WatchdogLimits(warmup_steps=-1)
