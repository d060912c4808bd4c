"""The Train page's task pool (issue 20): the control and its link, a pool run's card and curve toggle,
and the two yardsticks on the live ICL curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iclebm.card import pool_of
from iclebm.errors import TaskPoolError
from iclebm.evaluation.icl_curve import ValidationSet
from iclebm.tasks import MixturePrior, TaskPool
from iclebm.ui.card_view import card_markdown
from iclebm.ui.figures import icl_history_figure
from iclebm.ui.jobs.live_settings import make_configs
from tests.test_app import _app, _ok, _open, ckpt_dir  # noqa: F401  (ckpt_dir is a fixture)


def test_the_pool_control_round_trips_through_the_link(ckpt_dir: Path) -> None:  # noqa: F811
    link = _app()
    link._registered_pages = _app().run()._registered_pages
    _open(link, "train")
    link.query_params.update({"pool": "16", "cpool": "1"})
    link.run()
    _ok(link)
    assert link.number_input(key="tr_pool").value == 16 and link.session_state["tr_curve_pool"] is True
    link.number_input(key="tr_pool").set_value(4).run()
    q = {k: v if isinstance(v, str) else v[-1] for k, v in link.query_params.items()}
    assert q["pool"] == "4" and q["cpool"] == "1"
    bad = _app()
    bad._registered_pages = link._registered_pages
    _open(bad, "train")
    bad.query_params.update({"pool": "-3"})
    bad.run()
    _ok(bad)
    assert any("pool='-3'" in str(w.value) for w in bad.warning)  # refused, said so, default kept
    assert bad.number_input(key="tr_pool").value == 0


def test_a_pool_run_shows_the_toggle_and_writes_the_pool_into_its_card(ckpt_dir: Path) -> None:  # noqa: F811
    at = _app().run()
    _open(at, "train").run()
    at.number_input(key="tr_batch").set_value(2)
    at.number_input(key="tr_pool").set_value(3)
    at.run()
    at.button(key="tr_new").click().run()
    _ok(at)
    trainer = at.session_state["trainer"]
    assert trainer.pool_size == 3
    assert at.toggle(key="tr_curve_pool").value is False  # the curve is on prior tasks unless asked
    card = trainer.card()
    pool = pool_of(card)
    assert card["task_pool"] == 3 and pool is not None and pool.size == 3
    assert "M = 3" in card_markdown(card)
    trainer.close()


def test_live_settings_refuse_a_bad_pool_size() -> None:
    with pytest.raises(TaskPoolError):
        make_configs("scratch", {"task_pool": -1})
    assert make_configs("scratch", {"task_pool": 8})[0].task_pool == 8


def test_a_pool_of_one_has_the_oracle_as_its_bayes_line_on_its_own_tasks() -> None:
    prior = MixturePrior()
    pool = TaskPool.draw(prior, 1, seed=4)
    v = ValidationSet.draw(prior, (-12.0, 12.0), n_tasks=3, n_test=20, ns=(0, 1, 2), draws=pool)
    lines = v.yardsticks(prior, pool)
    np.testing.assert_allclose(lines["bayes_pool"], [v.oracle] * 3, rtol=1e-9)
    assert all(b > p for b, p in zip(lines["bayes"], lines["bayes_pool"], strict=True))


def test_the_icl_chart_draws_both_yardsticks() -> None:
    curves = {"ns": [0, 1, 2], "prior_predictive": 5.0, "oracle": 2.0, "bayes": [5.0, 4.0, 3.5],
              "bayes_pool": [4.5, 3.0, 2.5], "curves": [(3, [5.1, 4.2, 3.9])]}
    keys = [t.meta["key"] for t in icl_history_figure(curves).data]
    assert {"bayes", "bayes_pool", "model", "oracle", "prior_predictive"} <= set(keys)
    plain = [t.meta["key"] for t in icl_history_figure({**curves, "bayes": None, "bayes_pool": None}).data]
    assert "bayes" not in plain and "bayes_pool" not in plain


def test_a_pool_run_sends_curves_on_prior_and_pool_tasks_with_both_yardsticks() -> None:
    from iclebm.ui.jobs.trainer_process import PoolConfig, TrainerPool

    tiny = {"n_layer": 1, "d_model": 8, "batch_size": 2, "context_len": 4, "chains": 1, "langevin_steps": 2,
            "task_pool": 2}
    cfg = PoolConfig(max_trainers=1, nice=0, curve_every=0.01, curve_tasks=2, curve_resolution=16)
    pool = TrainerPool(cfg)
    try:
        t = pool.create("scratch", tiny)
        t.step(1)
        t.wait(lambda s: t.icl_curves(on_pool=True) is not None, 240.0)
        prior_side, pool_side = t.icl_curves(), t.icl_curves(on_pool=True)
        assert prior_side is not None and pool_side is not None
        for c in (prior_side, pool_side):
            assert len(c["bayes"]) == len(c["bayes_pool"]) == len(c["ns"]) == len(c["curves"][-1][1])
        # on its own tasks a pool of 2 is told apart within a few points: the pool's Bayes is far better
        assert pool_side["bayes_pool"][-1] < pool_side["bayes"][-1]
        # on fresh prior tasks it is far worse (it only knows two tasks)
        assert prior_side["bayes_pool"][-1] > prior_side["bayes"][-1]
    finally:
        pool.shutdown()


def test_the_density_page_draws_from_a_pool_models_own_tasks(ckpt_dir: Path) -> None:  # noqa: F811
    from iclebm.checkpoints import read_card
    from iclebm.cli import main

    out = ckpt_dir / "pooled.safetensors"
    assert main(["train", "--preset", "small", "--steps", "1", "--out", str(out), "--quiet",
                 "--task-pool", "5", "--batch-size", "2", "--force"]) == 0
    pool = pool_of(read_card(out))
    at = _app().run()
    assert "mix_draw_pool" not in [b.key for b in at.button]  # the shipped model has no pool
    at.selectbox(key="model_choice").set_value("file:pooled").run()
    _ok(at)
    assert any("M = 5" in str(m.value) for m in at.sidebar.markdown)  # the card says it is a pool model
    at.number_input(key="mix_seed").set_value(7)
    at.slider(key="mix_n").set_value(6)
    at.run()
    at.button(key="mix_draw_pool").click().run()
    _ok(at)
    index, pts = pool.context(7, 6)
    assert index == 2
    np.testing.assert_allclose(np.asarray(at.session_state["points"]), pts.numpy().clip(-12, 12), atol=1e-6)
