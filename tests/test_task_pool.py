"""Finite task pools (issue 20): the pool's draw and card, its exact Bayes predictive, and training on it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from iclebm.card import pool_entries, pool_of, pool_size_of
from iclebm.checkpoints import read_card
from iclebm.cli import main
from iclebm.errors import TaskPoolError
from iclebm.evaluation.pool_bayes import pool_log_predictive, pool_mean_y, pool_point_nll
from iclebm.tasks import (
    MAX_TASK_POOL,
    LinearPrior,
    MixturePrior,
    SinusoidPrior,
    TaskPool,
    check_pool_size,
    task_params,
)
from iclebm.training.config import TrainConfig
from iclebm.training.trainer import make_trainer

PRIORS = {
    "mixture": MixturePrior(),
    "anisotropic": MixturePrior(n_components=(1, 4), aspect_ratio=(1.0, 3.0)),
    "linear": LinearPrior(),
    "sinusoid": SinusoidPrior(),
}


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_pool_is_reproducible_with_m_distinct_tasks(name):
    prior = PRIORS[name]
    a, b = TaskPool.draw(prior, 16, seed=3), TaskPool.draw(prior, 16, seed=3)
    params = [json.dumps(task_params(t)) for t in a.tasks]
    assert params == [json.dumps(task_params(t)) for t in b.tasks]
    assert a.size == 16 and len(set(params)) == 16
    other = [json.dumps(task_params(t)) for t in TaskPool.draw(prior, 16, seed=4).tasks]
    assert not set(params) & set(other)


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_pool_round_trips_through_a_json_card_exactly(name):
    pool = TaskPool.draw(PRIORS[name], 5, seed=1)
    card = json.loads(json.dumps({"task": pool.prior.to_card(), **pool_entries(pool)}))
    back = pool_of(card)
    assert back is not None and pool_size_of(card) == 5 and back.seed == 1
    x = pool.tasks[0].sample(7, torch.Generator().manual_seed(0)).double()
    for t, u in zip(pool.tasks, back.tasks, strict=True):
        assert task_params(t) == task_params(u)
        if name in ("linear", "sinusoid"):
            assert torch.equal(t.log_prob_y(x[:, 1], x[:, 0]), u.log_prob_y(x[:, 1], x[:, 0]))
        else:
            assert torch.equal(t.log_prob(x), u.log_prob(x))


def test_pool_draws_only_its_own_tasks():
    pool = TaskPool.draw(LinearPrior(), 3, seed=0)
    g = torch.Generator().manual_seed(5)
    drawn = {id(pool.sample_task(g)) for _ in range(60)}
    assert drawn == {id(t) for t in pool.tasks}


@pytest.mark.parametrize("bad", [-1, 2.5, "x", "1.5", True, None, MAX_TASK_POOL + 1, float("nan")])
def test_bad_pool_sizes_are_typed_errors(bad):
    with pytest.raises(TaskPoolError):
        check_pool_size(bad)
    with pytest.raises(TaskPoolError):
        TrainConfig(task_pool=bad)  # type: ignore[arg-type]


def test_pool_sizes_in_range_are_accepted():
    assert [check_pool_size(v) for v in (0, 1, "64", 4.0, MAX_TASK_POOL)] == [0, 1, 64, 4, MAX_TASK_POOL]


def test_broken_pool_cards_are_typed_errors():
    prior = LinearPrior()
    with pytest.raises(TaskPoolError):
        pool_of({"task": prior.to_card(), "task_pool": 4})  # a size but no tasks
    with pytest.raises(TaskPoolError):
        pool_of({"task": prior.to_card(), "pool": {"size": 1, "tasks": [{"w": 1.0}]}})  # b missing
    with pytest.raises(TaskPoolError):
        pool_of({"task": prior.to_card(), "pool": {"size": 2, "tasks": [{"w": 1.0, "b": 0.0}]}})
    assert pool_of({"task": prior.to_card()}) is None


# ---- the pool's Bayes predictive against a brute-force sum ------------------------------------


def _brute_density(pool, context, query):
    """p(q | D) = sum_m prod_i p_m(x_i) p_m(q) / sum_m prod_i p_m(x_i), point by point in plain floats."""
    def p(task, x):
        return math.exp(float(task.log_prob(torch.tensor(x, dtype=torch.float64))))

    out = []
    for q in query:
        num = den = 0.0
        for task in pool.tasks:
            w = 1.0
            for x in context:
                w *= p(task, x)
            num += w * p(task, q)
            den += w
        out.append(math.log(num / den))
    return np.array(out)


def _brute_regression(pool, context, query):
    def p(task, x, y):
        mu = float(task.mean(torch.tensor([x], dtype=torch.float64))[0])
        return math.exp(-0.5 * (y - mu) ** 2 / task.noise_std**2) / math.sqrt(2 * math.pi * task.noise_std**2)

    logs, means = [], []
    for qx, qy in query:
        num = den = mean = 0.0
        for task in pool.tasks:
            w = 1.0
            for x, y in context:
                w *= p(task, x, y)
            num += w * p(task, qx, qy)
            mean += w * float(task.mean(torch.tensor([qx], dtype=torch.float64))[0])
            den += w
        logs.append(math.log(num / den))
        means.append(mean / den)
    return np.array(logs), np.array(means)


def test_pool_bayes_equals_the_brute_force_sum_for_densities():
    pool = TaskPool.draw(MixturePrior(), 4, seed=2)
    g = torch.Generator().manual_seed(1)
    context = pool.tasks[1].sample(5, g).double().numpy()
    query = pool.tasks[2].sample(6, g).double().numpy()
    for n in range(6):
        np.testing.assert_allclose(pool_log_predictive(pool, context[:n], query),
                                   _brute_density(pool, context[:n], query), rtol=1e-10, atol=1e-10)
    nll = pool_point_nll(pool, context[None], query[None], [0, 3, 5])
    for j, n in enumerate([0, 3, 5]):
        np.testing.assert_allclose(-nll[0, j], _brute_density(pool, context[:n], query), rtol=1e-10)


def test_pool_bayes_equals_the_brute_force_sum_for_regression():
    pool = TaskPool.draw(LinearPrior(), 5, seed=7)
    g = torch.Generator().manual_seed(3)
    context = pool.tasks[0].sample(4, g).double().numpy()
    query = pool.tasks[0].sample(6, g).double().numpy()
    ns = [0, 1, 4]
    nll = pool_point_nll(pool, context[None], query[None], ns)
    mean = pool_mean_y(pool, context[None], query[None, :, 0], ns)
    for j, n in enumerate(ns):
        logs, means = _brute_regression(pool, context[:n], query)
        np.testing.assert_allclose(-nll[0, j], logs, rtol=1e-10)
        np.testing.assert_allclose(mean[0, j], means, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["mixture", "linear"])
def test_a_pool_of_one_task_is_that_tasks_density(name):
    pool = TaskPool.draw(PRIORS[name], 1, seed=11)
    task = pool.tasks[0]
    g = torch.Generator().manual_seed(0)
    context = task.sample(8, g).double()[None].numpy()
    test = task.sample(20, g).double()
    nll = pool_point_nll(pool, context, test[None].numpy(), [0, 4, 8])
    exact = -(task.log_prob_y(test[:, 1], test[:, 0]) if name == "linear" else task.log_prob(test)).numpy()
    for j in range(3):
        np.testing.assert_allclose(nll[0, j], exact, rtol=1e-12)


# ---- training on a pool -------------------------------------------------------------------------


@pytest.mark.parametrize("task", [MixturePrior().to_card(), LinearPrior().to_card()])
def test_training_on_a_pool_runs_and_draws_from_the_pool(task):
    cfg = TrainConfig(batch_size=4, context_len=6, extra_points=2, chains=1, langevin_steps=2, warmup=1,
                      task=task, objective="exact", grid_resolution=4, y_grid=8, task_pool=2, pool_seed=5)
    trainer = make_trainer(config=cfg)
    assert trainer.pool is not None and trainer.pool.size == 2 and trainer.draws is trainer.pool
    seq, _ = trainer.sample_batch()
    # every sequence is a sample of one of the two pool tasks: its likelihood under that task is
    # far above its likelihood under a fresh prior task
    tasks = trainer.pool.tasks
    for row in seq.double():
        if "family" in task and task["family"] == "linear":
            best = max(float(t.log_prob_y(row[:, 1], row[:, 0]).sum()) for t in tasks)
        else:
            best = max(float(t.log_prob(row).sum()) for t in tasks)
        assert best > -6 * 4  # generous: about -1.5 nats a point for a true task
    metrics = trainer.run(2)
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)


@pytest.mark.parametrize("preset", ["small", "linreg"])
def test_train_with_a_pool_writes_the_pool_into_the_card(tmp_path, preset, capsys):
    out = tmp_path / "pool.safetensors"
    assert main(["train", "--preset", preset, "--steps", "2", "--out", str(out), "--quiet",
                 "--task-pool", "3", "--pool-seed", "9", "--batch-size", "2"]) == 0
    card = read_card(out)
    assert card["task_pool"] == 3 and card["training"]["config"]["task_pool"] == 3
    pool = pool_of(card)
    assert pool is not None and pool.seed == 9
    expected = TaskPool.draw(pool.prior, 3, seed=9)
    assert [task_params(t) for t in pool.tasks] == [task_params(t) for t in expected.tasks]
    # evaluate prints a bayes_pool row beside bayes, on prior tasks and on the pool's tasks
    capsys.readouterr()
    js = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out), "--tasks", "2", "--resolution", "40",
                 "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "held-out tasks from the prior" in text and "held-out tasks from the pool" in text
    table = json.loads(js.read_text())
    table = table.get("evaluation", table)
    for t in (table, table["pool_tasks"]):
        assert {"bayes", "bayes_pool"} <= set(t["nll"])
    # on the pool's own tasks the pool's Bayes beats the prior's once the context has points
    assert table["pool_tasks"]["nll"]["bayes_pool"][-1] < table["pool_tasks"]["nll"]["bayes"][-1]


def test_train_refuses_a_bad_pool_size(tmp_path, capsys):
    out = tmp_path / "bad.safetensors"
    assert main(["train", "--preset", "small", "--steps", "1", "--out", str(out), "--task-pool", "-3"]) == 2
    assert "--task-pool: must be in [0, 4096]" in capsys.readouterr().err
    assert not out.exists()
