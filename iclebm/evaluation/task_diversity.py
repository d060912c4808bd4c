"""Memorise or generalise (Raventós et al. 2023): train on finite pools of M tasks, then measure the
model's NLL at n = 16 against both yardsticks, the pool's Bayes predictive and the prior's.

A model that memorised its pool scores like `bayes_pool` on held-out tasks from the prior (badly:
it only knows M tasks); one that learned to learn scores like `bayes`. Each run trains a preset
from scratch for a fixed wall-clock budget with the preset's settings, a constant learning rate
after warm-up (the budget fixes no step count for a schedule) and a pool of M tasks (M = 0: the
full prior, "M = inf"); `python -m iclebm bench --task-diversity` runs the grid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from iclebm.card import pool_entries, prior_of
from iclebm.evaluation.baselines import BayesRegression
from iclebm.evaluation.density import BayesDensity, DensityOracle, ModelDensity
from iclebm.evaluation.pool_bayes import PoolBayes
from iclebm.evaluation.regression import ModelRegression, RegressionOracle
from iclebm.evaluation.tables import HeldOut, Learner, RegressionLearner, loss_table, summarize, task_means
from iclebm.tasks import REGRESSION, TaskPool
from iclebm.training.presets import get_preset
from iclebm.training.trainer import make_trainer

DIVERSITY_POOLS = (1, 4, 16, 64, 256, 1024, 0)  # 0: the full prior (M = inf)
DIVERSITY_PRESETS = ("fast", "linreg")  # the fast density preset and the linear-regression preset
EVAL_N = 16


@contextlib.contextmanager
def held_lock(path: str | None) -> Iterator[None]:
    """An exclusive flock on `path` for the block (None: no lock): one run at a time beside other
    heavy jobs that take the same lock, which can run between two runs."""
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train_on_pool(preset_name: str, pool: int, seconds: float, seed: int = 0):
    """(trainer, training seconds): the preset trained from scratch on a pool of `pool` tasks
    (0: the full prior) for `seconds` of wall clock, constant lr after warm-up."""
    preset = get_preset(preset_name)
    cfg = replace(preset.train, task_pool=pool, pool_seed=seed, seed=seed, total_steps=0)
    trainer = make_trainer(config=cfg, model_config=preset.model)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        trainer.step()
    elapsed = time.perf_counter() - t0
    trainer.model.eval()
    trainer.model.card = {"task": trainer.prior.to_card(), "box": list(preset.box),  # type: ignore[union-attr]
                          **({"thinking": preset.thinking.to_dict()} if preset.thinking else {}),
                          **pool_entries(trainer.pool)}
    return trainer, elapsed


def _learners(trainer, preset_name: str, pool: TaskPool | None, seed: int) -> list[Learner]:
    preset = get_preset(preset_name)
    model, prior = trainer.model, trainer.prior
    extra: list[Learner] = [PoolBayes(pool)] if pool is not None else []
    if prior.capabilities.kind == REGRESSION:
        bayes = RegressionLearner(BayesRegression(prior, np.random.default_rng(seed)))
        return [ModelRegression(model, preset.box), bayes, RegressionOracle(prior.noise_std), *extra]
    return [ModelDensity(model, preset.box, resolution=100), BayesDensity(prior), DensityOracle(), *extra]


def nll_at(learners: Sequence[Learner], draw_task: Callable, n: int, n_tasks: int, n_test: int,
           seed: int) -> dict[str, tuple[float, float]]:
    """Each learner's mean NLL at context size n over held-out tasks from `draw_task`, with its
    standard error over tasks."""
    regression = any(isinstance(x, ModelRegression) for x in learners)  # float64 in; density models: float32
    held = HeldOut.draw(draw_task, n_tasks, n, n_test, seed, dtype=torch.float64 if regression else None)
    mean, se = summarize(task_means(loss_table(learners, held, [n])))
    return {name: (mean[name][0], se[name][0]) for name in mean}


def diversity_row(preset_name: str, pool: int, seconds: float, seed: int = 0, n_tasks: int = 32,
                  n_test: int = 100, eval_seed: int = 12345) -> dict:
    """One run: train on a pool of M = `pool` tasks, then NLL at n = 16 on held-out prior tasks
    (and on the pool's tasks) for the model, the prior's Bayes, the pool's Bayes and the oracle."""
    trainer, elapsed = train_on_pool(preset_name, pool, seconds, seed)
    learners = _learners(trainer, preset_name, trainer.pool, eval_seed)
    t0 = time.perf_counter()
    on_prior = nll_at(learners, trainer.prior.sample_task, EVAL_N, n_tasks, n_test, eval_seed)
    on_pool = (nll_at(learners, trainer.pool.sample_task, EVAL_N, n_tasks, n_test, eval_seed)
               if trainer.pool is not None else None)
    model, bayes = on_prior["model"][0], on_prior["bayes"][0]
    pool_nll = on_prior["bayes_pool"][0] if "bayes_pool" in on_prior else bayes
    return {
        "preset": preset_name, "pool": pool, "seconds": round(elapsed, 1), "steps": trainer.step_count,
        "n": EVAL_N, "n_tasks": n_tasks, "n_test": n_test, "torch_threads": torch.get_num_threads(),
        "prior_tasks": on_prior, "pool_tasks": on_pool,
        "model_minus_bayes": model - bayes, "model_minus_bayes_pool": model - pool_nll,
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }


def _label(pool: int) -> str:
    return "inf" if pool == 0 else str(pool)


def format_diversity_table(rows: Sequence[dict]) -> str:
    """Markdown: per preset and M, the NLL at n = 16 on held-out prior tasks of the model and both
    Bayes predictives, and the model's gaps to each; then the model and the pool's Bayes on the
    pool's own tasks."""
    lines = ["| preset | M | steps | model | bayes (prior) | bayes_pool | model - bayes | model - bayes_pool "
             "| model on pool tasks | bayes_pool on pool tasks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, q = r["prior_tasks"], r["pool_tasks"]
        bp = f"{p['bayes_pool'][0]:.3f}" if "bayes_pool" in p else "= bayes"
        mp = f"{q['model'][0]:.3f}" if q else "-"
        bq = f"{q['bayes_pool'][0]:.3f}" if q else "-"
        lines.append(f"| {r['preset']} | {_label(r['pool'])} | {r['steps']} | {p['model'][0]:.3f} ± "
                     f"{p['model'][1]:.3f} | {p['bayes'][0]:.3f} | {bp} | {r['model_minus_bayes']:+.3f} | "
                     f"{r['model_minus_bayes_pool']:+.3f} | {mp} | {bq} |")
    return "\n".join(lines)


def run_task_diversity(
    presets: Sequence[str] = DIVERSITY_PRESETS, pools: Sequence[int] = DIVERSITY_POOLS,
    seconds: float = 60.0, out: str | Path | None = None, lock: str | None = None, seed: int = 0,
    n_tasks: int = 32, n_test: int = 100, log: Callable[[str], None] = print,
) -> list[dict]:
    """Every (preset, M) run, one at a time, each inside `lock`; with `out` (a .json path) the rows
    are written after every run and rows already there (same preset, M and budget) are kept, so an
    interrupted grid resumes where it stopped."""
    path = Path(out) if out is not None else None
    rows: list[dict] = []
    if path is not None and path.exists():
        rows = json.loads(path.read_text()).get("rows", [])
    for name in presets:
        prior_of({"task": get_preset(name).train.task})  # a broken preset fails before any training
        for m in pools:
            if any(r["preset"] == name and r["pool"] == m and r.get("budget") == seconds for r in rows):
                continue
            with held_lock(lock):
                row = diversity_row(name, int(m), seconds, seed, n_tasks, n_test)
            row["budget"] = seconds
            rows.append(row)
            log(f"{name} M={_label(m)}: {row['steps']} steps, model - bayes {row['model_minus_bayes']:+.3f}, "
                f"model - bayes_pool {row['model_minus_bayes_pool']:+.3f} (eval {row['eval_seconds']} s)")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    order = {(n, m): i for i, (n, m) in enumerate((n, m) for n in presets for m in pools)}
    mine = [r for r in rows if (r["preset"], r["pool"]) in order and r.get("budget") == seconds]
    return sorted(mine, key=lambda r: order[(r["preset"], r["pool"])])


def gap_series(rows: Sequence[dict], preset: str) -> dict[str, list[float]]:
    """For the figure: M (inf as the largest finite M times 4), model - bayes and model - bayes_pool."""
    mine = [r for r in rows if r["preset"] == preset]
    finite = [r["pool"] for r in mine if r["pool"] > 0]
    inf_at = 4 * max(finite) if finite else 1.0
    return {"M": [float(r["pool"]) if r["pool"] > 0 else inf_at for r in mine],
            "model - bayes": [r["model_minus_bayes"] for r in mine],
            "model - bayes_pool": [r["model_minus_bayes_pool"] for r in mine],
            # on the pool's own tasks (nan for M = inf): how well the pool was memorised
            "pool tasks: model - bayes_pool": [r["pool_tasks"]["model"][0] - r["pool_tasks"]["bayes_pool"][0]
                                               if r["pool_tasks"] else float("nan") for r in mine],
            "is_inf": [r["pool"] == 0 for r in mine]}
