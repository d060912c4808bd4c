"""The task-diversity bench (issue 20): runs, rows, resume, table and figure, on tiny budgets."""

from __future__ import annotations

import json
import math

import pytest

from iclebm.cli import main
from iclebm.evaluation import task_diversity as td
from iclebm.render.diversity import diversity_figure


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("td") / "grid"
    assert main(["bench", "--task-diversity", "--quick", "--seconds", "0.01", "--pools", "2,inf",
                 "--diversity-out", str(out)]) == 0
    return out


def test_the_grid_writes_rows_table_and_figure(grid, capsys):
    rows = json.loads(grid.with_suffix(".json").read_text())["rows"]
    want = [("fast", 2), ("fast", 0), ("linreg", 2), ("linreg", 0)]
    assert [(r["preset"], r["pool"]) for r in rows] == want
    assert grid.with_suffix(".png").stat().st_size > 1000
    for r in rows:
        assert r["steps"] >= 1 and r["budget"] == 0.01
        p = r["prior_tasks"]
        assert math.isclose(r["model_minus_bayes"], p["model"][0] - p["bayes"][0])
        if r["pool"]:
            assert math.isclose(r["model_minus_bayes_pool"], p["model"][0] - p["bayes_pool"][0])
            # on its own tasks a pool of 2 is nearly known after 16 points: the pool's Bayes beats the prior's
            assert r["pool_tasks"]["bayes_pool"][0] < r["pool_tasks"]["bayes"][0]
        else:
            assert r["pool_tasks"] is None and "bayes_pool" not in p


def test_an_interrupted_grid_resumes_without_retraining(grid, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(td, "diversity_row", boom)
    rows = td.run_task_diversity(["fast"], [2, 0], 0.01, out=grid.with_suffix(".json"), log=lambda s: None)
    assert [r["pool"] for r in rows] == [2, 0]


def test_table_and_series_are_pure_functions_of_the_rows(grid):
    rows = json.loads(grid.with_suffix(".json").read_text())["rows"]
    table = td.format_diversity_table(rows)
    assert table.count("\n") == 1 + len(rows) and "| fast | inf |" in table and "= bayes" in table
    s = td.gap_series(rows, "linreg")
    assert s["M"] == [2.0, 8.0] and s["is_inf"] == [False, True]  # inf drawn at 4 x the largest M
    assert math.isnan(s["pool tasks: model - bayes_pool"][1])
    fig = diversity_figure(rows, ["fast", "linreg"])
    assert len(fig.axes) == 2


@pytest.mark.parametrize("bad", ["-1", "x", "5000", "1.5"])
def test_bad_pool_lists_are_refused(bad, tmp_path, capsys):
    assert main(["bench", "--task-diversity", "--pools", bad, "--diversity-out", str(tmp_path / "x")]) == 2
    assert "--pools" in capsys.readouterr().err
