"""Baselines as objects (one interface each) and the one table loop, against plain reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lib_helpers import random_model
from scipy import stats

from iclebm.dynamics.thinking import ThinkingConfig
from iclebm.evaluation.baselines import (
    BASELINES,
    DENSITY_BASELINES,
    POINT_METHODS,
    REGRESSION_BASELINES,
    BayesRegression,
    DensityBaseline,
    DensityFit,
    EmMixture,
    PriorPredictive,
    RegressionBaseline,
    RegressionFit,
    baseline_log_probs,
    density_baselines,
    fit_gaussian,
    knn_predict,
    linear_predictive,
    ols_predict,
    prior_predictive_log_prob,
    ridge_lambdas,
    ridge_predict,
)
from iclebm.evaluation.bayes import mixture_log_predictive
from iclebm.evaluation.density import in_context_nll, model_nll
from iclebm.evaluation.regression import regression_table
from iclebm.evaluation.tables import (
    DensityLearner,
    HeldOut,
    RegressionLearner,
    each_task,
    loss_table,
    summarize,
    task_means,
)
from iclebm.grid import grid_points
from iclebm.models.regression import conditional_nll
from iclebm.tasks import LinearPrior, MixturePrior, SinusoidPrior

PRIOR = MixturePrior()
LIN = LinearPrior(x_range=(-4.0, 4.0), w_std=0.5, b_std=1.0, noise_std=0.5)
WIDE = grid_points((-16.0, 16.0), 320)[0].numpy()
AREA = (32.0 / 320) ** 2


def points(n: int, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, size=(n, 2))


def reference_summary(rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    v = np.array(rows)
    return v.mean(0), v.std(0, ddof=1) / math.sqrt(len(v))


# ---- the objects ---------------------------------------------------------------------------


def test_registries_name_the_table_columns_and_follow_the_protocols():
    assert list(DENSITY_BASELINES) == [*BASELINES, "prior_predictive"]
    assert list(REGRESSION_BASELINES) == [*POINT_METHODS, "bayes"]
    for name, cls in DENSITY_BASELINES.items():
        b = cls(PRIOR)
        assert isinstance(b, DensityBaseline) and b.name == name and b.label
        assert isinstance(b.fit(points(4)), DensityFit)
    for name, cls in REGRESSION_BASELINES.items():
        b = cls(LIN)
        assert isinstance(b, RegressionBaseline) and b.name == name and b.label
        assert isinstance(b.fit(np.array([[0.0, 1.0], [1.0, 2.0]])), RegressionFit)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 20])
@pytest.mark.parametrize("name", list(DENSITY_BASELINES))
def test_every_density_baseline_integrates_to_one(name, n):
    """On a fine grid over a box much wider than the data: tight components make this a loose check."""
    fit = DENSITY_BASELINES[name](PRIOR).fit(points(n, seed=n), seed=1)
    assert abs(np.exp(fit.log_prob(WIDE)).sum() * AREA - 1) < 2e-2


@pytest.mark.parametrize("prior", [LIN, SinusoidPrior()])
@pytest.mark.parametrize("name", list(REGRESSION_BASELINES))
@pytest.mark.parametrize("n", [0, 1, 6])
def test_every_regression_baseline_is_a_density_of_y_given_x(name, n, prior):
    rng = np.random.default_rng(n)
    ctx = np.stack([rng.uniform(-3, 3, n), rng.normal(0, 1, n)], -1) if n else np.zeros((0, 2))
    cls = REGRESSION_BASELINES[name]
    fit = (cls(prior, np.random.default_rng(0), 3000) if cls is BayesRegression else cls(prior)).fit(ctx)
    ys = np.linspace(-7.5, 7.5, 501)  # spacing 0.03, a tenth of the smallest noise std
    # in chunks: the sinusoid posterior holds up to 200k particles, each a curve through every y
    p = np.concatenate([np.exp(fit.log_prob(np.full_like(y, 0.5), y)) for y in np.array_split(ys, 5)])
    assert abs(p.sum() * (ys[1] - ys[0]) - 1) < 1e-3
    assert np.all(np.isfinite(fit.predict(np.array([-2.0, 0.5]))))


def test_fits_agree_with_the_functions():
    ctx, x = points(6, seed=3), np.linspace(-3, 3, 7)
    q = points(9, seed=4)
    for name, lp in baseline_log_probs(ctx, q, PRIOR, k=3, seed=2).items():
        fit = density_baselines(PRIOR, (name,), k=3)[name].fit(ctx, 2)
        np.testing.assert_array_equal(fit.log_prob(q), lp)
    normal = stats.multivariate_normal(ctx.mean(0), np.cov(ctx.T, bias=True))
    np.testing.assert_allclose(fit_gaussian(ctx).log_prob(q), normal.logpdf(q))
    assert EmMixture(PRIOR, k=2).fit(ctx).means.shape == (2, 2)
    np.testing.assert_array_equal(REGRESSION_BASELINES["ols"](LIN).fit(ctx).predict(x), ols_predict(ctx, x))
    np.testing.assert_array_equal(REGRESSION_BASELINES["ridge"](LIN).fit(ctx).predict(x),
                                  ridge_predict(ctx, x, *ridge_lambdas(LIN)))
    np.testing.assert_array_equal(REGRESSION_BASELINES["knn"](LIN).fit(ctx).predict(x), knn_predict(ctx, x))
    mu, var = linear_predictive(ctx, x, LIN)
    at_mean = REGRESSION_BASELINES["bayes"](LIN).fit(ctx).log_prob(x, mu)
    np.testing.assert_allclose(at_mean, -0.5 * np.log(2 * np.pi * var))


def test_no_context_means_the_prior_predictive_shared_and_computed_once():
    q = points(5)
    made = density_baselines(PRIOR, (*BASELINES, "prior_predictive"))
    zero = made["prior_predictive"]
    assert all(b.fit(np.zeros((0, 2))) is zero for b in made.values())
    first = zero.log_prob(q)
    assert zero.log_prob(q.copy()) is first  # remembered by value
    np.testing.assert_array_equal(first, prior_predictive_log_prob(PRIOR, q))
    with pytest.raises(ValueError, match="prior"):
        DENSITY_BASELINES["kde_scott"]().fit(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="MixturePrior"):
        PriorPredictive(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        density_baselines(PRIOR, ("kde",))


# ---- the one loop ------------------------------------------------------------------------


def test_each_task_runs_tasks_then_prefix_lengths_and_stacks():
    held = HeldOut.draw(PRIOR.sample_task, 3, 4, 5, seed=1)
    calls = []

    def losses(i, context, test):
        calls.append((i, len(context)))
        return {"nll": np.full(len(test), 10.0 * i + len(context))}

    out = each_task(held, [0, 2, 4], losses)["nll"]
    assert calls == [(i, n) for i in range(3) for n in (0, 2, 4)]  # a shared rng is drawn in this order
    assert out.shape == (3, 3, 5) and out[2, 1, 0] == 22.0


def test_loss_table_checks_learners():
    held = HeldOut.draw(PRIOR.sample_task, 2, 3, 4, seed=0)
    kde = DensityLearner(DENSITY_BASELINES["kde_scott"](PRIOR))
    with pytest.raises(ValueError, match="two learners"):
        loss_table([kde, kde], held, [1])
    with pytest.raises(ValueError, match="context length"):
        loss_table([kde], held, [4])

    class Wrong:
        name = "wrong"

        def losses(self, held, ns):
            return {"nll": np.zeros((2, 4))}

    with pytest.raises(ValueError, match="shape"):
        loss_table([Wrong()], held, [1])


def test_summarize_mean_se_and_one_task():
    mean, se = summarize({"a": np.array([[1.0, 2.0], [3.0, 6.0]])})
    assert mean["a"] == [2.0, 4.0] and se["a"] == pytest.approx([1.0, 2.0])
    one = summarize({"a": np.array([[1.23456, 2.0]])}, digits=2, one_task_se=math.nan)
    assert one[0]["a"] == [1.23, 2.0] and all(math.isnan(v) for v in one[1]["a"])


def test_in_context_nll_equals_a_plain_per_task_loop():
    model = random_model(dtype=torch.float64, max_context=8)
    model.card = {"task": PRIOR.to_card(), "box": [-12.0, 12.0]}
    ns, n_tasks, n_test, seed, res, box = [0, 1, 3, 8], 3, 30, 7, 24, (-12.0, 12.0)
    table = in_context_nll(model, n_tasks=n_tasks, seed=seed, ns=ns, n_test=n_test, resolution=res)
    g = torch.Generator().manual_seed(seed)
    tasks = [PRIOR.sample_task(g) for _ in range(n_tasks)]
    contexts = [t.sample(max(ns), g) for t in tasks]
    tests = [t.sample(n_test, g) for t in tasks]
    rows: dict[str, list[list[float]]] = {}
    for i, (task, c, x) in enumerate(zip(tasks, contexts, tests, strict=True)):
        row: dict[str, list[float]] = {}
        c64, x64 = c.double().numpy(), x.double().numpy()
        for n in ns:
            fitted = baseline_log_probs(c64[:n], x64, PRIOR, 3, seed + i)
            values = {name: -lp.mean() for name, lp in fitted.items()}
            values["prior_predictive"] = -prior_predictive_log_prob(PRIOR, x64).mean()
            values["oracle"] = -task.log_prob(x.double()).mean().item()
            values["bayes"] = -mixture_log_predictive(c64[:n], x64, PRIOR).mean()
            values["model"] = float(model_nll(model, c[None], x[None], [n], box, res)[0, 0])
            for name, v in values.items():
                row.setdefault(name, []).append(float(v))
        for name, v in row.items():
            rows.setdefault(name, []).append(v)
    assert set(rows) == set(table["nll"])
    for name, per_task in rows.items():
        mean, se = reference_summary(per_task)
        tol = 1e-6 if name in ("model", "bayes") else 1e-12  # batched model / Bayes vs one task at a time
        np.testing.assert_allclose(table["nll"][name], mean, rtol=tol, atol=tol, err_msg=name)
        np.testing.assert_allclose(table["stderr"][name], se, rtol=1e-5, atol=tol, err_msg=name)


def test_regression_table_equals_a_plain_per_task_loop():
    model = random_model(seed=0, base_axes="y", max_context=8)
    model.card = {"task": LIN.to_card(), "box": [-8.0, 8.0], "thinking": ThinkingConfig(steps=3).to_dict()}
    ns, n_tasks, n_test, seed, res = (0, 2, 5), 3, 6, 11, 40
    table = regression_table(model, n_tasks=n_tasks, n_test=n_test, seed=seed, ns=ns, resolution=res)
    g = torch.Generator().manual_seed(seed)
    tasks = [LIN.sample_task(g) for _ in range(n_tasks)]
    contexts = [t.sample(max(ns), g).double() for t in tasks]
    tests = [t.sample(n_test, g).double() for t in tasks]
    noise = LIN.noise_std
    rows: dict[str, dict[str, list[list[float]]]] = {"nll": {}, "mse": {}}
    for task, c, t in zip(tasks, contexts, tests, strict=True):
        x, y = t[:, 0].numpy(), t[:, 1].numpy()
        row: dict[str, dict[str, list[float]]] = {"nll": {}, "mse": {}}
        for n in ns:
            cn = c[:n].numpy()
            mu, var = linear_predictive(cn, x, LIN)
            preds = {"ols": ols_predict(cn, x), "ridge": ridge_predict(cn, x, *ridge_lambdas(LIN)),
                     "knn": knn_predict(cn, x), "oracle": task.mean(torch.from_numpy(x)).numpy(), "bayes": mu}
            nll = {k: -stats.norm(p, noise).logpdf(y).mean() for k, p in preds.items() if k != "bayes"}
            nll["bayes"] = -stats.norm(mu, np.sqrt(var)).logpdf(y).mean()
            nll["model"] = conditional_nll(model, c[None], t[None], [n], (-8.0, 8.0), res).item()
            for k, v in nll.items():
                row["nll"].setdefault(k, []).append(float(v))
            for k, p in preds.items():
                row["mse"].setdefault(k, []).append(float(np.mean((p - y) ** 2)))
        for metric in rows:
            for k, v in row[metric].items():
                rows[metric].setdefault(k, []).append(v)
    assert list(table["nll"]) == list(table["mse"]) == ["model", "bayes", "oracle", *POINT_METHODS]
    for metric, by_name in rows.items():
        for name, per_task in by_name.items():
            mean, se = reference_summary(per_task)
            got, got_se = table[metric][name], table[metric + "_se"][name]
            np.testing.assert_allclose(got, np.round(mean, 4), atol=1.1e-4, err_msg=name)  # the table rounds
            np.testing.assert_allclose(got_se, np.round(se, 4), atol=1.1e-4, err_msg=name)


def test_task_means_keep_each_librarys_own_reduction():
    v = np.random.default_rng(0).normal(size=(4, 3, 50))
    table = {"numpy": {"nll": v}, "torch": {"nll": torch.from_numpy(v)}, "se only": {"se": v}}
    means = task_means(table)
    assert set(means) == {"numpy", "torch"}
    np.testing.assert_array_equal(means["numpy"], v.mean(-1))
    np.testing.assert_array_equal(means["torch"], torch.from_numpy(v).mean(-1).numpy())
    np.testing.assert_allclose(means["numpy"], means["torch"], rtol=1e-14)
    ols = RegressionLearner(REGRESSION_BASELINES["ols"](LIN))
    fitted = ols.losses(HeldOut.draw(LIN.sample_task, 2, 3, 4, seed=0), [0, 3])
    assert set(fitted) == {"nll", "se"} and fitted["se"].shape == (2, 2, 4)
