"""Regression yardsticks and tables: model vs OLS, ridge, kNN, the Bayes predictive and the oracle.

For held-out tasks from the training prior and n = 0, 1, 2, 4, 8, 16, 32 context pairs,
each method predicts y at fresh test x from the task:

- ``model``: NLL of y under p(y | x, D) (1-D quadrature normalisation, `iclebm.models.regression`)
  and the MSE of y_hat after the card's default thinking steps (`iclebm.dynamics.thinking.predict`).
- ``oracle``: the task's true conditional N(f(x), noise^2): NLL exact, prediction f(x).
- ``ols``: least squares on features [x, 1], minimum-norm when n < 2 (n = 0 predicts 0).
- ``ridge``: [x, 1] with the prior's penalties lambda_w = noise^2 / w_std^2 and
  lambda_b = noise^2 / b_std^2, so for the linear family it is the Bayes posterior mean
  (for the sinusoid family, unit-variance coefficient priors: lambda = noise^2).
- ``knn``: scikit-learn KNeighborsRegressor, k = min(3, n) (n = 0 predicts 0).
- ``bayes``: the posterior predictive under the training prior. Linear: exact Gaussian
  conjugate. Sinusoid: importance sampling over (A, omega, phi): first from the prior, then
  (while the effective sample size is low) from a defensive mixture of the prior and a
  Gaussian kernel density around resampled particles (population Monte Carlo); its NLL is
  checked against an independent run (`bayes_stability`).

MSE is against the observed (noisy) test y, so the oracle's MSE is the noise variance.
Point predictors (OLS, ridge, kNN) also get a plug-in NLL: N(y; y_hat, noise^2) with the
prior's known noise (it ignores their parameter uncertainty, so it is no posterior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.neighbors import KNeighborsRegressor

from iclebm.card import box_of, prior_of
from iclebm.dynamics.thinking import ThinkingConfig, predict
from iclebm.errors import TaskFamilyError
from iclebm.evaluation.density import DEFAULT_NS, eval_mode
from iclebm.models.energy import EnergyTransformer
from iclebm.models.regression import conditional_nll
from iclebm.tasks import REGRESSION, LinearPrior, RegressionTask, SinusoidPrior

LOG_2PI = math.log(2 * math.pi)
POINT_METHODS = ("ols", "ridge", "knn")
THINKING_STEPS = (0, 1, 2, 5, 10, 20, 50, 100)


def _gauss_nll(y: np.ndarray, mu: np.ndarray, var: np.ndarray | float) -> np.ndarray:
    return 0.5 * (y - mu) ** 2 / var + 0.5 * (LOG_2PI + np.log(var))


def _features(x: np.ndarray) -> np.ndarray:
    return np.stack([x, np.ones_like(x)], -1)


# ---- point predictors ---------------------------------------------------------------------


def ols_predict(context: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least squares on [x, 1]; minimum-norm solution when n < 2; zeros for n = 0."""
    if len(context) == 0:
        return np.zeros_like(x, dtype=np.float64)
    theta, *_ = np.linalg.lstsq(_features(context[:, 0]), context[:, 1], rcond=None)
    return _features(x) @ theta


def ridge_predict(context: np.ndarray, x: np.ndarray, lam_w: float, lam_b: float) -> np.ndarray:
    """argmin |y - [x, 1] theta|^2 + lam_w w^2 + lam_b b^2, evaluated at x."""
    phi = _features(context[:, 0]) if len(context) else np.zeros((0, 2))
    a = phi.T @ phi + np.diag([lam_w, lam_b])
    theta = np.linalg.solve(a, phi.T @ (context[:, 1] if len(context) else np.zeros(0)))
    return _features(x) @ theta


def knn_predict(context: np.ndarray, x: np.ndarray, k: int = 3) -> np.ndarray:
    if len(context) == 0:
        return np.zeros_like(x, dtype=np.float64)
    knn = KNeighborsRegressor(n_neighbors=min(k, len(context))).fit(context[:, :1], context[:, 1])
    return knn.predict(x[:, None])


def ridge_lambdas(prior: LinearPrior | SinusoidPrior) -> tuple[float, float]:
    s2 = prior.noise_std**2
    if isinstance(prior, LinearPrior):
        return s2 / prior.w_std**2, s2 / prior.b_std**2
    return s2, s2


# ---- Bayes posterior predictives ----------------------------------------------------------


def linear_posterior(context: np.ndarray, prior: LinearPrior) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian posterior over theta = (w, b): mean (2,), covariance (2, 2)."""
    s2 = prior.noise_std**2
    phi = _features(context[:, 0]) if len(context) else np.zeros((0, 2))
    y = context[:, 1] if len(context) else np.zeros(0)
    precision = phi.T @ phi / s2 + np.diag([1 / prior.w_std**2, 1 / prior.b_std**2])
    cov = np.linalg.inv(precision)
    return cov @ phi.T @ y / s2, cov


def linear_predictive(
    context: np.ndarray, x: np.ndarray, prior: LinearPrior
) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior predictive N(mean, var) of y at x (S,)."""
    m, cov = linear_posterior(context, prior)
    f = _features(x)
    return f @ m, prior.noise_std**2 + np.einsum("si,ij,sj->s", f, cov, f)


@dataclass
class SinusoidPosterior:
    """Weighted particles theta = (A, omega, phi) approximating the posterior."""

    theta: np.ndarray  # (K, 3)
    log_w: np.ndarray  # (K,) normalised: logsumexp(log_w) = 0
    noise_std: float

    def curves(self, x: np.ndarray) -> np.ndarray:  # (K, S)
        a, om, ph = self.theta.T
        return a[:, None] * np.sin(om[:, None] * x[None] + ph[:, None])

    def mean(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.log_w) @ self.curves(x)

    def log_prob_y(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        lp = -_gauss_nll(y[None], self.curves(x), self.noise_std**2)  # (K, S)
        return logsumexp(self.log_w[:, None] + lp, axis=0)

    @property
    def ess(self) -> float:
        return float(1.0 / np.exp(logsumexp(2 * self.log_w)))


def _sinusoid_loglik(theta: np.ndarray, context: np.ndarray, noise_std: float) -> np.ndarray:
    if len(context) == 0:
        return np.zeros(len(theta))
    a, om, ph = theta.T
    f = a[:, None] * np.sin(om[:, None] * context[None, :, 0] + ph[:, None])
    return -_gauss_nll(context[None, :, 1], f, noise_std**2).sum(-1)


def sinusoid_posterior(
    context: np.ndarray, prior: SinusoidPrior, rng: np.random.Generator, n_samples: int = 30000,
    max_rounds: int = 5, n_centres: int = 100, defensive: float = 0.1, target_ess: float = 3000.0,
    n_prior_samples: int = 200000,
) -> SinusoidPosterior:
    """Importance sampling from the prior (n_prior_samples), refined by population Monte Carlo
    (n_samples per round) while the effective sample size is below target_ess."""
    lo = np.array([prior.amplitude[0], prior.frequency[0], prior.phase[0]])
    hi = np.array([prior.amplitude[1], prior.frequency[1], prior.phase[1]])
    width = np.maximum(hi - lo, 1e-12)
    log_prior = -np.log(width).sum()

    def prior_logpdf(t: np.ndarray) -> np.ndarray:
        inside = np.all((t >= lo) & (t <= hi), axis=-1)
        return np.where(inside, log_prior, -np.inf)

    theta = lo + width * rng.random((n_prior_samples, 3))
    log_w = _sinusoid_loglik(theta, context, prior.noise_std)
    for _ in range(max_rounds):
        log_w = log_w - logsumexp(log_w)
        post = SinusoidPosterior(theta, log_w, prior.noise_std)
        if post.ess >= target_ess:
            return post
        w = np.exp(log_w)
        centres = theta[rng.choice(len(theta), size=n_centres, p=w / w.sum())]
        mu = w @ theta
        std = np.sqrt(np.maximum(w @ (theta - mu) ** 2, 1e-12))
        bw = np.maximum(std * n_centres ** (-1 / 7), 1e-4 * width)  # Silverman-like, per dimension
        n_prior = rng.binomial(n_samples, defensive)
        from_prior = lo + width * rng.random((n_prior, 3))
        pick = centres[rng.integers(n_centres, size=n_samples - n_prior)]
        theta = np.concatenate([from_prior, pick + bw * rng.standard_normal(pick.shape)])
        z = (theta[:, None, :] - centres[None]) / bw  # (K, J, 3)
        log_kde = logsumexp(-0.5 * (z**2).sum(-1), axis=1) - math.log(n_centres) \
            - np.log(bw).sum() - 1.5 * LOG_2PI
        log_q = np.logaddexp(math.log(defensive) + log_prior, math.log(1 - defensive) + log_kde)
        log_w = prior_logpdf(theta) + _sinusoid_loglik(theta, context, prior.noise_std) - log_q
    log_w = log_w - logsumexp(log_w)
    return SinusoidPosterior(theta, log_w, prior.noise_std)


def bayes_predictive(
    context: np.ndarray, x: np.ndarray, y: np.ndarray, prior: LinearPrior | SinusoidPrior,
    rng: np.random.Generator | None = None, n_samples: int = 30000,
) -> tuple[np.ndarray, np.ndarray]:
    """(NLL per test point (S,), posterior-mean prediction (S,)) under the training prior."""
    if isinstance(prior, LinearPrior):
        mu, var = linear_predictive(context, x, prior)
        return _gauss_nll(y, mu, var), mu
    post = sinusoid_posterior(context, prior, rng or np.random.default_rng(0), n_samples)
    return -post.log_prob_y(y, x), post.mean(x)


# ---- tables -------------------------------------------------------------------------------


def _held_out(prior, n_tasks: int, n_ctx: int, n_test: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    tasks: list[RegressionTask] = [prior.sample_task(g) for _ in range(n_tasks)]
    ctx = torch.stack([t.sample(n_ctx, g) for t in tasks]).double()
    test = torch.stack([t.sample(n_test, g) for t in tasks]).double()
    return tasks, ctx, test


def _resolve(model: EnergyTransformer, prior, box):
    prior = prior if prior is not None else prior_of(model, REGRESSION, "the regression tables")
    if prior.capabilities.kind != REGRESSION:
        raise TaskFamilyError(f"the regression tables need a regression prior, got {type(prior).__name__}")
    return prior, (box if box is not None else box_of(model))


@torch.no_grad()
def _model_nll(model, ctx, test, ns, box, resolution, chunk: int = 8) -> np.ndarray:
    out = [conditional_nll(model, ctx[i:i + chunk], test[i:i + chunk], list(ns), box, resolution)
           for i in range(0, ctx.shape[0], chunk)]
    return torch.cat(out).numpy()  # (T, P)


def regression_table(
    model: EnergyTransformer, n_tasks: int = 64, n_test: int = 20, seed: int = 12345,
    ns: tuple[int, ...] = DEFAULT_NS, prior: LinearPrior | SinusoidPrior | None = None,
    box: tuple[float, float] | None = None, resolution: int = 160, bayes_samples: int = 30000,
) -> dict:
    """NLL (nats/point) and MSE vs n for the model and every baseline on held-out tasks.

    Returns {"ns", "nll": {method: [..]}, "mse": {method: [..]}, "nll_se", "mse_se", settings}."""
    prior, box = _resolve(model, prior, box)
    ns = tuple(int(n) for n in ns)
    if max(ns) > model.config.max_context:
        raise ValueError(f"n up to {max(ns)} exceeds the model's max_context {model.config.max_context}")
    tasks, ctx, test = _held_out(prior, n_tasks, max(ns), n_test, seed)
    rng = np.random.default_rng(seed)
    lam_w, lam_b = ridge_lambdas(prior)
    s2 = prior.noise_std**2
    nll: dict[str, np.ndarray] = {k: np.zeros((n_tasks, len(ns))) for k in ("model", "bayes", "oracle",
                                                                          *POINT_METHODS)}
    mse: dict[str, np.ndarray] = {k: np.zeros((n_tasks, len(ns))) for k in nll}
    with eval_mode(model):
        nll["model"] = _model_nll(model, ctx, test, ns, box, resolution)
        for j, n in enumerate(ns):
            y_hat = predict(model, test[..., 0], ctx[:, :n]).double().numpy()  # (T, S)
            mse["model"][:, j] = ((y_hat - test[..., 1].numpy()) ** 2).mean(-1)
    for i, task in enumerate(tasks):
        x, y = test[i, :, 0].numpy(), test[i, :, 1].numpy()
        f = task.mean(torch.from_numpy(x)).numpy()
        for j, n in enumerate(ns):
            c = ctx[i, :n].numpy()
            preds = {"ols": ols_predict(c, x), "ridge": ridge_predict(c, x, lam_w, lam_b),
                     "knn": knn_predict(c, x), "oracle": f}
            b_nll, preds["bayes"] = bayes_predictive(c, x, y, prior, rng, bayes_samples)
            nll["bayes"][i, j] = b_nll.mean()
            nll["oracle"][i, j] = _gauss_nll(y, f, s2).mean()
            for k in POINT_METHODS:
                nll[k][i, j] = _gauss_nll(y, preds[k], s2).mean()
            for k, p in preds.items():
                mse[k][i, j] = ((p - y) ** 2).mean()

    def summary(d: dict[str, np.ndarray]) -> tuple[dict, dict]:
        se = math.sqrt(n_tasks)
        return ({k: [round(float(v), 4) for v in a.mean(0)] for k, a in d.items()},
                {k: [round(float(v), 4) for v in a.std(0, ddof=1) / se] for k, a in d.items()})

    nll_m, nll_se = summary(nll)
    mse_m, mse_se = summary(mse)
    return {
        "ns": list(ns), "nll": nll_m, "mse": mse_m, "nll_se": nll_se, "mse_se": mse_se,
        "family": prior.family, "n_tasks": n_tasks, "n_test": n_test, "seed": seed, "resolution": resolution,
        "thinking": dict((model.card or {}).get("thinking") or {}),
        "notes": "MSE vs observed (noisy) y; ols/ridge/knn NLL is plug-in N(y_hat, noise^2)",
    }


@torch.no_grad()
def thinking_curve(
    model: EnergyTransformer, n_values: tuple[int, ...] = (4, 16), steps: tuple[int, ...] = THINKING_STEPS,
    n_tasks: int = 64, n_test: int = 20, seed: int = 12345, starts: int | None = None,
    prior: LinearPrior | SinusoidPrior | None = None,
) -> dict:
    """MSE of y_hat after k thinking steps (card's start and step size) at each n.

    Returns {"steps", "mse": {str(n): [..]}, ...}."""
    prior, _ = _resolve(model, prior, None)
    # the same held-out contexts and test points as regression_table with the same seed
    _, ctx, test = _held_out(prior, n_tasks, max(*n_values, *DEFAULT_NS), n_test, seed)
    out: dict[str, list[float]] = {}
    with eval_mode(model):
        for n in n_values:
            traj = predict(model, test[..., 0], ctx[:, :n], steps=max(steps), starts=starts,
                           return_trajectory=True)
            err = ((traj.double() - test[None, ..., 1]) ** 2).mean((-1, -2))  # (T+1,)
            out[str(n)] = [round(float(err[k]), 4) for k in steps]
    return {"steps": list(steps), "mse": out, "n_tasks": n_tasks, "starts": starts,
            "thinking": dict((model.card or {}).get("thinking") or {})}


def format_regression_tables(table: dict, curve: dict | None = None) -> str:
    ns = table["ns"]
    head = "  ".join(f"{'n=' + str(n):>8}" for n in ns)
    lines = [f"NLL of y given x (nats/point), {table['family']}, {table['n_tasks']} held-out tasks"
             " (ols/ridge/knn: plug-in known noise)", f"{'method':<8}  {head}"]
    for k, v in table["nll"].items():
        lines.append(f"{k:<8}  " + "  ".join(f"{x:8.3f}" for x in v))
    lines += ["", "MSE of y_hat (vs noisy y; model after the card's default thinking steps)",
              f"{'method':<8}  {head}"]
    for k, v in table["mse"].items():
        lines.append(f"{k:<8}  " + "  ".join(f"{x:8.3f}" for x in v))
    if curve is not None:
        lines += ["", "Thinking curve: MSE vs thinking steps",
                  "n    " + "  ".join(f"{s:>7}" for s in curve["steps"])]
        for n, v in curve["mse"].items():
            lines.append(f"{n:<4} " + "  ".join(f"{x:7.3f}" for x in v))
    return "\n".join(lines)


@torch.no_grad()
def tune_thinking(
    model: EnergyTransformer, step_sizes: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8),
    starts: tuple[int, ...] = (1, 8), steps: int = 30, n_values: tuple[int, ...] = (2, 8, 16),
    n_tasks: int = 32, n_test: int = 20, seed: int = 777,
) -> tuple[dict, list[dict]]:
    """Pick the default step size and number of starts: lowest validation MSE after `steps` steps,
    averaged over n_values. Validation tasks use their own seed (not the evaluation seed).
    Returns (thinking dict, rows)."""

    prior, _ = _resolve(model, None, None)
    base = ThinkingConfig.from_dict((model.card or {}).get("thinking"))
    _, ctx, test = _held_out(prior, n_tasks, max(n_values), n_test, seed)
    rows = []
    with eval_mode(model):
        for s in step_sizes:
            for k in starts:
                errs = [float(((predict(model, test[..., 0], ctx[:, :n], steps=steps, step_size=s, starts=k)
                                .double() - test[..., 1]) ** 2).mean()) for n in n_values]
                rows.append({"step_size": s, "starts": k, "steps": steps, "mse": [round(e, 4) for e in errs],
                             "mean_mse": round(float(np.mean(errs)), 4)})
    best = min(rows, key=lambda r: r["mean_mse"])
    chosen = ThinkingConfig(start=base.start, steps=steps, step_size=best["step_size"],
                            grad_clip=base.grad_clip, starts=best["starts"])
    return chosen.to_dict(), rows
