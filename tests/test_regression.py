"""Regression in context: task priors, per-column normalisation, y-only training, thinking, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lib_helpers import naive_energy, random_model

from iclebm.card import is_regression, prior_from_card
from iclebm.dynamics.thinking import ThinkingConfig, minimise, predict
from iclebm.evaluation.baselines import (
    bayes_predictive,
    linear_posterior,
    linear_predictive,
    ols_predict,
    ridge_lambdas,
    ridge_predict,
    sinusoid_posterior,
)
from iclebm.evaluation.regression import format_regression_tables, regression_table, thinking_curve
from iclebm.grid import y_axis
from iclebm.models.energy import EnergyConfig
from iclebm.models.regression import conditional_log_density, conditional_nll
from iclebm.objectives.regression import regression_nll_loss as exact_nll_loss
from iclebm.objectives.regression import y_negatives
from iclebm.tasks import LinearPrior, MixturePrior, SinusoidPrior
from iclebm.training.config import TrainConfig
from iclebm.training.trainer import RegressionTrainer, make_trainer

BOX = (-8.0, 8.0)
LIN = LinearPrior(x_range=(-4.0, 4.0), w_std=0.5, b_std=1.0, noise_std=0.5)


def reg_model(seed: int = 0, **kw):
    model = random_model(seed=seed, base_axes="y", **kw)
    model.card = {"task": LIN.to_card(), "box": list(BOX)}
    return model


# ---- task priors ---------------------------------------------------------------------------


@pytest.mark.parametrize("prior", [LinearPrior(), SinusoidPrior(), LIN])
def test_prior_card_round_trip_and_samples(prior):
    card = prior.to_card()
    assert set(card) >= {"family", "x_range", "noise_std"}
    assert prior_from_card(card) == prior
    assert is_regression(card)
    ctx, tasks = prior.sample_batch(3, 50, torch.Generator().manual_seed(0))
    assert ctx.shape == (3, 50, 2)
    lo, hi = prior.x_range
    assert bool((ctx[..., 0] >= lo).all()) and bool((ctx[..., 0] <= hi).all())
    # log_prob_y is the exact Gaussian around the task's mean
    t = tasks[0]
    x = torch.tensor([0.3, -1.0], dtype=torch.float64)
    y = t.mean(x) + 0.1
    want = -0.5 * (0.1 / t.noise_std) ** 2 - 0.5 * math.log(2 * math.pi * t.noise_std**2)
    assert torch.allclose(t.log_prob_y(y, x), torch.full((2,), want, dtype=torch.float64))


def test_card_keys_and_family_dispatch():
    assert set(LinearPrior().to_card()) == {"family", "x_range", "w_std", "b_std", "noise_std"}
    keys = {"family", "x_range", "amplitude", "frequency", "phase", "noise_std"}
    assert set(SinusoidPrior().to_card()) == keys
    assert isinstance(prior_from_card({"family": "gaussian_mixture", "n_components": 2}), MixturePrior)
    assert isinstance(prior_from_card(None), MixturePrior)
    with pytest.raises(ValueError, match="unknown task family"):
        prior_from_card({"family": "spirals"})
    with pytest.raises(ValueError, match="noise_std"):
        prior_from_card({"family": "linear", "noise_std": -1})
    with pytest.raises(ValueError, match="x_range"):
        LinearPrior(x_range=(2.0, 1.0))


def test_base_axes_option():
    assert EnergyConfig().base_axes == "xy"  # old checkpoints load unchanged
    with pytest.raises(ValueError, match="base_axes"):
        EnergyConfig(base_axes="x")
    m_xy, m_y = random_model(base_std=2.0), random_model(base_std=2.0, base_axes="y")
    p = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    assert m_xy.base_energy(p).item() == pytest.approx((9 + 1) / 8)
    assert m_y.base_energy(p).item() == pytest.approx(1 / 8)


# ---- normalisation and the exact objective ---------------------------------------------------


def test_per_column_normalisation_integrates_to_one():
    model = reg_model()
    ctx = torch.randn(2, 5, 2, dtype=torch.float64)
    x = torch.randn(2, 7, dtype=torch.float64)
    log_p, ys = conditional_log_density(model, x, ctx, BOX, 90, [0, 3, 5])
    assert log_p.shape == (2, 3, 7, 90)
    h = (BOX[1] - BOX[0]) / 90
    torch.testing.assert_close(log_p.exp().sum(-1) * h, torch.ones(2, 3, 7, dtype=torch.float64))


def test_conditional_nll_and_exact_loss_equal_naive_float64():
    model = reg_model(seed=3)
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(2, 4, 2, dtype=torch.float64, generator=g) * 2
    test = torch.randn(2, 3, 2, dtype=torch.float64, generator=g) * 2
    ys, h = y_axis(BOX, 40)
    # naive: every (x_test, y_k) appended to the prefix, plain causal forward
    for j, n in enumerate([0, 2, 4]):
        want = []
        for s in range(3):
            q = torch.stack([test[:, s, 0, None].expand(2, 40), ys[None].expand(2, 40)], -1)
            e = naive_energy(model, q, ctx[:, :n])  # (2, K)
            e_t = naive_energy(model, test[:, s : s + 1], ctx[:, :n])[:, 0]
            want.append(e_t + torch.logsumexp(-e, -1) + math.log(h))
        got = conditional_nll(model, ctx, test, [0, 2, 4], BOX, 40)[:, j]
        torch.testing.assert_close(got, torch.stack(want, -1).mean(-1))
    # the training loss over all positions at once == per-position naive NLL (alpha = 0)
    model.train()
    loss, _ = exact_nll_loss(model, ctx, BOX, 40, 0.0, torch.Generator().manual_seed(5))
    off = float(torch.rand((), generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    ys, h = y_axis(BOX, 40, off)
    nll = []
    for n in range(4):
        q = torch.stack([ctx[:, n, 0, None].expand(2, 40), ys[None].expand(2, 40)], -1)
        e = naive_energy(model, q, ctx[:, :n])
        nll.append(naive_energy(model, ctx[:, n : n + 1], ctx[:, :n])[:, 0] + torch.logsumexp(-e, -1)
                   + math.log(h))
    torch.testing.assert_close(loss, torch.stack(nll).mean())


def test_negatives_move_y_only():
    model = reg_model()
    cfg = TrainConfig(box=BOX, chains=3, langevin_steps=4, data_init_frac=0.5, task=LIN.to_card())
    seq, _ = LIN.sample_batch(2, 6, torch.Generator().manual_seed(1))
    neg = y_negatives(model, seq.double(), cfg, torch.Generator().manual_seed(2))
    assert neg.shape == (2, 6, 3, 2)
    assert torch.equal(neg[..., 0], seq.double()[:, :, None, 0].expand(2, 6, 3))
    assert not torch.equal(neg[..., 1], seq.double()[:, :, None, 1].expand(2, 6, 3))
    assert bool((neg[..., 1] >= BOX[0]).all()) and bool((neg[..., 1] <= BOX[1]).all())


def test_cd_step_with_y_negatives_runs():
    cfg = TrainConfig(batch_size=2, context_len=4, chains=2, langevin_steps=2, warmup=1, box=BOX,
                      task=LIN.to_card(), objective="cd")
    trainer = make_trainer(config=cfg, model_config=EnergyConfig(n_layer=1, n_head=2, d_model=8, mlp_ratio=2,
                                                                 max_context=8, base_axes="y"))
    m = trainer.step()
    assert not m["skipped"] and math.isfinite(m["loss"]) and {"cd", "e_real", "e_neg"} <= set(m)


def test_tiny_training_lowers_nll_at_n8(objective="exact"):
    cfg = TrainConfig(batch_size=8, context_len=9, chains=1, langevin_steps=3, step_size=0.2, lr=1e-2,
                      warmup=2, alpha=1e-3, box=BOX, task=LIN.to_card(), objective=objective, y_grid=16,
                      seed=0)
    trainer = make_trainer(config=cfg, model_config=EnergyConfig(n_layer=1, n_head=2, d_model=16, mlp_ratio=2,
                                                                 max_context=16, base_std=4.0, base_axes="y"))
    assert isinstance(trainer, RegressionTrainer)
    ctx_all, _ = LIN.sample_batch(32, 16, torch.Generator().manual_seed(99))
    ctx, test = ctx_all[:, :8], ctx_all[:, 8:]

    def nll8() -> float:
        with torch.no_grad():
            return float(conditional_nll(trainer.model.eval(), ctx, test, [8], BOX, 80).mean())

    before = nll8()
    trainer.model.train()
    trainer.run(30)
    after = nll8()
    assert after < before - 0.3, (before, after)


def test_regression_trainer_rejects_density_task_and_bad_objective():
    with pytest.raises(ValueError, match="regression task"):
        RegressionTrainer(config=TrainConfig(), model_config=EnergyConfig(n_layer=1, d_model=8, n_head=2))
    with pytest.raises(ValueError, match="objective"):
        RegressionTrainer(config=TrainConfig(task=LIN.to_card(), objective="nope"),
                          model_config=EnergyConfig(n_layer=1, d_model=8, n_head=2))


# ---- thinking ----------------------------------------------------------------------------------


def test_minimise_quadratic_converges_and_descends_every_step():
    target = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.float64)
    curv = torch.tensor([[0.5, 2.0, 4.0]], dtype=torch.float64)

    def energy(y):
        return 0.5 * curv * (y - target) ** 2

    ys, es = minimise(energy, torch.zeros(1, 3, dtype=torch.float64), 200, 0.2, return_trajectory=True)
    assert ys.shape == (201, 1, 3)
    assert bool((es[1:21] < es[:20]).all())  # strictly lower at every step while above rounding
    assert bool((es[1:] <= es[:-1]).all())
    torch.testing.assert_close(ys[-1], target, atol=1e-8, rtol=0)


def test_predict_on_a_quadratic_model_and_multiple_starts():
    # a model whose learned part is 0: E = y^2 / (2 base_std^2), minimum at y = 0
    model = reg_model(base_std=1.0)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    ctx = torch.randn(2, 3, 2, dtype=torch.float64)
    x = torch.randn(2, 4, dtype=torch.float64)
    traj = predict(model, x, ctx, steps=30, step_size=0.5, start="context_mean", return_trajectory=True)
    assert traj.shape == (31, 2, 4)
    assert float(traj[-1].abs().max()) < 1e-6
    assert bool((traj[1:].abs() <= traj[:-1].abs() + 1e-12).all())
    # starts > 1 keeps the candidate of lowest final energy: with 0 steps, the start nearest 0
    g = torch.Generator().manual_seed(0)
    y1 = predict(model, x, ctx, steps=0, step_size=0.1, starts=8, start="context_mean", generator=g)
    g = torch.Generator().manual_seed(0)
    from iclebm.dynamics.thinking import start_values

    cands = start_values("context_mean", ctx, 4, 8, BOX, g)
    torch.testing.assert_close(y1, cands.gather(-1, cands.abs().argmin(-1, keepdim=True))[..., 0])


def test_thinking_config_validation():
    assert ThinkingConfig.from_dict(ThinkingConfig().to_dict()) == ThinkingConfig()
    with pytest.raises(ValueError, match="start"):
        ThinkingConfig(start="median")
    with pytest.raises(ValueError, match="steps"):
        predict(reg_model(), torch.zeros(1, 2), torch.zeros(1, 1, 2), steps=-1)
    with pytest.raises(ValueError, match="NaN"):
        predict(reg_model(), torch.tensor([[float("nan")]]), torch.zeros(1, 1, 2))


# ---- baselines and Bayes -------------------------------------------------------------------


def test_linear_bayes_predictive_matches_monte_carlo():
    rng = np.random.default_rng(0)
    ctx = np.array([[-1.0, 0.4], [2.0, 1.5], [0.5, 0.9]])
    x = np.array([-3.0, 0.0, 3.5])
    mu, var = linear_predictive(ctx, x, LIN)
    # Monte Carlo: draw theta from the prior, weight by the likelihood, draw y
    k = 400_000
    theta = rng.standard_normal((k, 2)) * [LIN.w_std, LIN.b_std]
    pred = theta[:, :1] * ctx[None, :, 0] + theta[:, 1:]
    logw = -0.5 * ((ctx[None, :, 1] - pred) ** 2).sum(-1) / LIN.noise_std**2
    w = np.exp(logw - logw.max())
    w /= w.sum()
    f = theta[:, :1] * x[None] + theta[:, 1:]
    mc_mean = w @ f
    mc_var = w @ (f - mc_mean) ** 2 + LIN.noise_std**2
    np.testing.assert_allclose(mu, mc_mean, atol=0.02)
    np.testing.assert_allclose(var, mc_var, rtol=0.03)


def test_ridge_with_prior_lambda_is_bayes_mean_and_ols_min_norm():
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 7):
        ctx = rng.standard_normal((n, 2)) * 2
        x = rng.standard_normal(5)
        ridge = ridge_predict(ctx, x, *ridge_lambdas(LIN))
        np.testing.assert_allclose(ridge, linear_predictive(ctx, x, LIN)[0], atol=1e-12)
        m, _ = linear_posterior(ctx, LIN)
        np.testing.assert_allclose(ridge_predict(ctx, x, *ridge_lambdas(LIN)), m[0] * x + m[1], atol=1e-12)
    one = np.array([[2.0, 3.0]])  # min-norm fit through one point: theta = y [x, 1] / (x^2 + 1)
    np.testing.assert_allclose(ols_predict(one, np.array([0.0, 1.0])), [0.6, 1.8])


def test_sinusoid_importance_sampling_is_stable_and_sharpens():
    prior = SinusoidPrior()
    task = prior.sample_task(torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(5)
    ctx, test = task.sample(16, g).double().numpy(), task.sample(20, g).double().numpy()
    nlls = [bayes_predictive(ctx, test[:, 0], test[:, 1], prior, np.random.default_rng(s))[0].mean()
            for s in (0, 1)]
    assert abs(nlls[0] - nlls[1]) < 0.02
    post = sinusoid_posterior(ctx, prior, np.random.default_rng(2))
    f = task.mean(torch.from_numpy(test[:, 0])).numpy()
    assert np.mean((post.mean(test[:, 0]) - f) ** 2) < 0.05  # 16 points pin the curve down


def test_regression_table_and_thinking_curve_run_on_a_tiny_model():
    model = reg_model()
    model.card["thinking"] = ThinkingConfig(steps=3, step_size=0.05).to_dict()
    table = regression_table(model, n_tasks=3, n_test=4, ns=(0, 1, 4), resolution=40)
    assert set(table["nll"]) == {"model", "bayes", "oracle", "ols", "ridge", "knn"}
    assert table["mse"]["ridge"] == table["mse"]["bayes"]  # linear family: ridge is the Bayes mean
    assert all(len(v) == 3 and all(math.isfinite(a) for a in v) for v in table["nll"].values())
    curve = thinking_curve(model, n_values=(1, 4), steps=(0, 1, 3), n_tasks=3, n_test=4)
    assert set(curve["mse"]) == {"1", "4"} and len(curve["mse"]["4"]) == 3
    text = format_regression_tables(table, curve)
    assert "ridge" in text and "Thinking curve" in text
    density = random_model()
    density.card = {"task": MixturePrior().to_card()}
    with pytest.raises(ValueError, match="regression task"):
        regression_table(density, n_tasks=2)


def test_trajectory_step_k_equals_predict_with_k_steps_for_several_starts():
    model = reg_model(seed=2)
    ctx = torch.randn(2, 4, 2, dtype=torch.float64)
    x = torch.randn(2, 5, dtype=torch.float64)
    traj = predict(model, x, ctx, steps=6, step_size=0.05, starts=4, return_trajectory=True)
    for k in (0, 3, 6):
        torch.testing.assert_close(traj[k], predict(model, x, ctx, steps=k, step_size=0.05, starts=4))


def test_cli_evaluate_prints_regression_tables_and_updates_the_card(tmp_path, capsys):
    from iclebm.checkpoints import load_checkpoint, save_checkpoint
    from iclebm.cli import main

    short = reg_model()  # reads 16 points: the n = 32 column is refused with a reason, no traceback
    short_path = save_checkpoint(short, tmp_path / "short.safetensors")
    assert main(["evaluate", "--checkpoint", str(short_path), "--tasks", "2"]) == 2
    assert "exceeds the model's max_context 16" in capsys.readouterr().err
    model = reg_model(max_context=64)
    model.card["thinking"] = ThinkingConfig(steps=2, step_size=0.05).to_dict()
    path = save_checkpoint(model, tmp_path / "tiny.safetensors")
    assert main(["evaluate", "--checkpoint", str(path), "--tasks", "2", "--resolution", "40",
                 "--update-card"]) == 0
    out = capsys.readouterr().out
    assert "NLL of y given x" in out and "MSE of y_hat" in out and "Thinking curve" in out
    card = load_checkpoint(path).card
    assert card["evaluation"]["family"] == "linear" and set(card["thinking_curve"]["mse"]) == {"4", "16"}
