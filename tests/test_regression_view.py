"""The Regression page's fast path computes the same picture as the simple one (float64, random
weights): the thinking curves of a short run are exactly the first curves of a long run, which is
what lets the page compute only the k steps it shows and the animation's 100 steps on demand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lib_helpers import random_model

from iclebm.probes.regression_view import (
    compute_regression_view,
    curve_frames,
    regression_grid,
    thinking_curves,
)


def _case(seed: int, accept: str) -> tuple:
    model = random_model(seed=seed, dtype=torch.float64)
    model.card = {"box": [-5.0, 5.0], "thinking": {"steps": 30, "step_size": 0.2, "starts": 3,
                                                     "accept": accept}}
    pts = np.random.default_rng(seed).uniform(-4, 4, (6, 2))
    return model, pts


@pytest.mark.parametrize("accept", ["always", "descent"])
def test_short_thinking_runs_are_prefixes_of_the_long_one(accept: str) -> None:
    model, pts = _case(1, accept)
    xs = np.linspace(-4.5, 4.5, 23)
    steps_long, long = thinking_curves(model, pts, xs, max_steps=100)
    assert steps_long == curve_frames(100)
    assert not np.allclose(long[0], long[-1])  # thinking moves the curve: the comparison means something
    for k in (0, 1, 7, 20, 63):
        steps, short = thinking_curves(model, pts, xs, max_steps=k, schedule=100)
        assert steps == steps_long[: len(steps)] and steps[-1] == max(s for s in steps_long if s <= k)
        np.testing.assert_array_equal(short, long[: len(steps)])


@pytest.mark.parametrize("k", [0, 10, 17, 20, 55, 100])
def test_the_page_computes_the_curve_it_shows_as_before(k: int) -> None:
    """The canvas shows the curve of the last animation frame at or before k; the page's short run
    must reach that frame and give the same curve as the full 100-step run it replaced."""
    from iclebm.ui.pages.regression import MAX_STEPS, thinking_steps_needed

    model, pts = _case(3, "always")
    xs = np.linspace(-4.5, 4.5, 11)
    full_steps, full = thinking_curves(model, pts, xs, max_steps=MAX_STEPS)
    shown = max(i for i, s in enumerate(full_steps) if s <= k)
    needed = thinking_steps_needed(k, False)
    steps, short = thinking_curves(model, pts, xs, max_steps=needed, schedule=MAX_STEPS)
    assert steps == full_steps[: len(steps)] and len(steps) == shown + 1
    np.testing.assert_array_equal(short[-1], full[shown])
    assert thinking_steps_needed(k, True) == MAX_STEPS


def test_the_view_is_the_grid_and_the_curves() -> None:
    model, pts = _case(2, "always")
    view = compute_regression_view(model, pts, (-5.0, 5.0), resolution=12, max_steps=15)
    xs, ys, energy, log_p = regression_grid(model, pts, (-5.0, 5.0), 12)
    steps, curves = thinking_curves(model, pts, xs, max_steps=15)
    for a, b in [(view.xs, xs), (view.ys, ys), (view.energy, energy), (view.log_density, log_p),
                 (view.curves, curves)]:
        np.testing.assert_array_equal(a, b)
    assert view.steps == steps


@pytest.mark.parametrize("accept", ["always", "descent"])
def test_columns_split_over_threads_give_the_one_thread_picture(monkeypatch: pytest.MonkeyPatch,
                                                                 accept: str) -> None:
    """The grid and the thinking run their x columns in parts on separate threads; in float64 the
    parts put together equal the whole computed at once."""
    from iclebm.probes import regression_view as R

    model, pts = _case(4, accept)
    monkeypatch.setattr(R, "QUERY_THREADS", 1)
    xs, ys, energy, log_p = regression_grid(model, pts, (-5.0, 5.0), 13)  # odd: unequal parts
    steps, curves = thinking_curves(model, pts, xs, max_steps=12)
    monkeypatch.setattr(R, "QUERY_THREADS", 3)
    assert len(R._x_parts(torch.as_tensor(xs)[None])) == 3
    xs2, _, energy2, log_p2 = regression_grid(model, pts, (-5.0, 5.0), 13)
    steps2, curves2 = thinking_curves(model, pts, xs2, max_steps=12)
    assert steps2 == steps
    for a, b in [(xs2, xs), (energy2, energy), (log_p2, log_p)]:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # Thinking is a recurrence: a batch of another size rounds its sums differently (~1e-16), and
    # each step of this random model's steep landscape multiplies that (to ~1e-7 by step 25); over 12
    # steps it stays below 1e-9. A wrong split would be off by whole units.
    np.testing.assert_allclose(curves2, curves, rtol=1e-9, atol=1e-9)
