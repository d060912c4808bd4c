"""Baselines: what an in-context learner is measured against, each a small object with one interface.

Density baselines (on R^2, float64 numpy) follow `DensityBaseline`: ``fit(context (n, 2), seed)``
returns a `DensityFit` whose ``log_prob(x (M, 2))`` is a normalised log density (M,). Regression
baselines follow `RegressionBaseline`: ``fit(context (n, 2) of (x, y) pairs, seed)`` returns a
`RegressionFit` with ``predict(x (M,))``, the point prediction, and ``log_prob(x, y)``, log p(y | x).
`DENSITY_BASELINES` and `REGRESSION_BASELINES` map the table column names to the classes; each
class is built as ``cls(prior)``. The tables (`iclebm.evaluation.tables`) refit a baseline on every
task's first n points.

Density:

- ``kde_scott``: isotropic Gaussian KDE, bandwidth h = n^(-1/6) * pooled std (Scott's
  rule in 2-D; pooled std = sqrt of the mean of the two per-axis variances, ddof=1).
  For n = 1 (no spread to measure) h = ``FALLBACK_BANDWIDTH`` = 1.0; h is floored at 1e-3.
- ``kde_scipy``: ``scipy.stats.gaussian_kde`` (full covariance, Scott's factor). It cannot
  fit n <= 2 points or collinear/duplicate points (singular covariance); then it falls
  back to ``kde_scott``.
- ``em_mixture``: scikit-learn's ``GaussianMixture`` with the prior's K (capped at the number
  of distinct points), isotropic components, 5 k-means++ starts.
- ``em_bic``: the same with full covariances and K = 1..6 chosen by BIC (K unknown).
- ``gaussian``: one Gaussian, maximum-likelihood mean and covariance.
  Every fitted covariance has its eigenvalues floored at the prior's smallest component
  variance (``component_var_floor``: 0.33^2 for the shipped prior; ``VAR_FLOOR`` = 1e-2
  without a prior), so a component fitted to one or two points keeps a plausible width.
- ``prior_predictive``: the density of one point under the task prior, marginalised over
  tasks (needs no data, so it is the same for every n). For ``MixturePrior`` it is exact:
  a point is its component's mean plus N(0, s^2 I) noise, the mean is N(0, mean_std^2 I)
  truncated to the square [-mean_limit, mean_limit]^2 (the prior's rejection step), so
  each axis is a Gaussian convolved with a truncated Gaussian (closed form with erf); a
  ranged mean_std or component std is integrated by Gauss-Legendre quadrature.

For n = 0 every data-fitted density baseline is the prior predictive, the only sensible density
with no data. The Bayes posterior predictive (`iclebm.evaluation.bayes`) and the oracle (the task's
own density) are references rather than baselines: see `iclebm.evaluation.density`.

Regression (y given x; MSE is against the observed, noisy y):

- ``ols``: least squares on features [x, 1], minimum-norm when n < 2 (n = 0 predicts 0).
- ``ridge``: [x, 1] with the prior's penalties lambda_w = noise^2 / w_std^2 and
  lambda_b = noise^2 / b_std^2, so for the linear family it is the Bayes posterior mean
  (for the sinusoid family, unit-variance coefficient priors: lambda = noise^2).
- ``knn``: scikit-learn KNeighborsRegressor, k = min(3, n) (n = 0 predicts 0).
- ``bayes``: the posterior predictive under the training prior. Linear: exact Gaussian
  conjugate. Sinusoid: importance sampling over (A, omega, phi): first from the prior, then
  (while the effective sample size is low) from a defensive mixture of the prior and a
  Gaussian kernel density around resampled particles (population Monte Carlo).

Point predictors (ols, ridge, knn) get a plug-in log p(y | x) = log N(y; y_hat, noise^2) with the
prior's known noise (it ignores their parameter uncertainty, so it is no posterior).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from scipy import stats
from scipy.special import logsumexp, ndtr
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsRegressor
from threadpoolctl import threadpool_limits

from iclebm.evaluation.bayes import log_diff_ndtr as _log_diff_ndtr
from iclebm.evaluation.bayes import quadrature as _quadrature
from iclebm.tasks import LinearPrior, MixturePrior, SinusoidPrior

FALLBACK_BANDWIDTH = 1.0
MIN_BANDWIDTH = 1e-3
VAR_FLOOR = 1e-2
LOG_2PI = math.log(2 * math.pi)


# ---- the interfaces ----------------------------------------------------------------------


@runtime_checkable
class DensityFit(Protocol):
    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Normalised log density (M,) at the points x (M, 2)."""
        ...


@runtime_checkable
class DensityBaseline(Protocol):
    name: str  # the table column
    label: str  # a short description for people

    def fit(self, context: np.ndarray, seed: int = 0) -> DensityFit:
        """Fit on the (n, 2) context (n may be 0); `seed` makes randomised fits repeatable."""
        ...


@runtime_checkable
class RegressionFit(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Point prediction of y (M,) at x (M,)."""
        ...

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """log p(y | x) (M,)."""
        ...


@runtime_checkable
class RegressionBaseline(Protocol):
    name: str
    label: str

    def fit(self, context: np.ndarray, seed: int = 0) -> RegressionFit:
        """Fit on the (n, 2) context of (x, y) pairs (n may be 0)."""
        ...


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {x.shape}")
    return x


# ---- density: the prior predictive ---------------------------------------------------------


def prior_predictive_log_prob(
    prior: MixturePrior, x: torch.Tensor | np.ndarray, n_quad: int = 16
) -> np.ndarray:
    """Exact log density (S,) of one point under the mixture prior, marginalised over tasks.

    Each axis: N(0, sigma^2) truncated to [-L, L] (the mean) plus N(0, s^2) (the noise):
    N(x; 0, sigma^2 + s^2) * [Phi((L - mu)/tau) - Phi((-L - mu)/tau)] / [Phi(L/sigma) - Phi(-L/sigma)],
    mu = x sigma^2 / (sigma^2 + s^2), tau = sigma s / sqrt(sigma^2 + s^2). Ranged sigma and s are
    integrated with n_quad-point Gauss-Legendre rules.
    """
    if not isinstance(prior, MixturePrior):
        raise ValueError(f"the prior predictive needs a MixturePrior, got {type(prior).__name__}")
    x = _np(x)
    if prior.anisotropic:  # 12^3 nodes already agree with 24^3 to 1e-4 nats
        return _anisotropic_prior_predictive(prior, x, min(n_quad, 12))
    sig, lw_sig = _quadrature(prior.mean_std, n_quad)
    ss, lw_s = _quadrature(prior.component_std, n_quad)
    limit = prior.mean_limit
    terms = []
    for a, lwa in zip(sig, lw_sig, strict=True):
        for s, lws in zip(ss, lw_s, strict=True):
            v = a * a + s * s
            logp = -0.5 * (x * x).sum(1) / v - LOG_2PI - math.log(v)
            if limit is not None and math.isfinite(limit) and a > 0:
                mu = x * (a * a / v)
                tau = a * s / math.sqrt(v)
                num = _log_diff_ndtr((-limit - mu) / tau, (limit - mu) / tau).sum(1)
                den = 2 * float(_log_diff_ndtr(np.array(-limit / a), np.array(limit / a)))
                logp = logp + num - den
            terms.append(logp + lwa + lws)
    return logsumexp(np.stack(terms, 0), axis=0)


def _log_box_prob(m: np.ndarray, c: np.ndarray, limit: float, n_nodes: int = 24) -> np.ndarray:
    """log P(mu in [-L, L]^2) for mu ~ N(m, C): m (..., 2), c (..., 2, 2) -> (...).

    Integrates N(mu_1; m_1, C_11) * P(mu_2 in [-L, L] | mu_1) over mu_1 with Gauss-Legendre on
    [-L, L] cut to m_1 +- 8 sd (the conditional factor is a difference of normal CDFs).
    """
    s1 = np.sqrt(c[..., 0, 0])
    lo = np.maximum(-limit, m[..., 0] - 8 * s1)
    hi = np.minimum(limit, m[..., 0] + 8 * s1)
    empty = hi <= lo
    hi = np.where(empty, lo + 1e-9, hi)
    t, w = np.polynomial.legendre.leggauss(n_nodes)
    half = (hi - lo) / 2
    mu1 = lo[..., None] + half[..., None] * (t + 1)  # (..., Q)
    z1 = (mu1 - m[..., 0, None]) / s1[..., None]
    dens1 = np.exp(-0.5 * z1 * z1) / (math.sqrt(2 * math.pi) * s1[..., None])
    slope = (c[..., 0, 1] / c[..., 0, 0])[..., None]
    cond_mean = m[..., 1, None] + slope * (mu1 - m[..., 0, None])
    cond_sd = np.sqrt(np.maximum(c[..., 1, 1] - c[..., 0, 1] ** 2 / c[..., 0, 0], 1e-300))[..., None]
    p2 = ndtr((limit - cond_mean) / cond_sd) - ndtr((-limit - cond_mean) / cond_sd)
    prob = (dens1 * p2) @ w * half
    with np.errstate(divide="ignore"):
        return np.where(empty, -np.inf, np.log(prob))


def _anisotropic_prior_predictive(prior: MixturePrior, x: np.ndarray, n_quad: int) -> np.ndarray:
    """The prior predictive when components are rotated ellipses (see prior_predictive_log_prob).

    For a mean mu ~ N(0, a^2 I) cut to the box and noise N(0, Sigma), Sigma = R diag(u^2, v^2) R^T:
    p(x) = N(x; 0, Sigma + a^2 I) * P(mu in box | x) / P(mu in box), where mu | x ~ N(m, C) with
    C = (Sigma^-1 + a^-2 I)^-1 and m = C Sigma^-1 x. Ranged mean_std, component std and aspect
    ratio use n_quad-point Gauss-Legendre rules; the uniform angle uses n_quad equally spaced
    nodes on [0, pi) (exact for a periodic trigonometric integrand up to high order).
    """
    sig, lw_sig = _quadrature(prior.mean_std, n_quad)
    ss, lw_s = _quadrature(prior.component_std, n_quad)
    rr, lw_r = _quadrature(prior.aspect_ratio, n_quad)
    theta = np.pi * np.arange(n_quad) / n_quad
    lw_t = np.full(n_quad, -math.log(n_quad))
    # every (a, s, r, theta) combination, flattened: (M,)
    a, s, r, th = (v.ravel() for v in np.meshgrid(sig, ss, rr, theta, indexing="ij"))
    lw = sum(v.ravel() for v in np.meshgrid(lw_sig, lw_s, lw_r, lw_t, indexing="ij"))
    u2, v2 = s * s * r, s * s / r  # major and minor variances
    cos, sin = np.cos(th), np.sin(th)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (M, 2, 2)

    def rotated(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return rot @ (np.stack([d1, d2], -1)[..., :, None] * np.swapaxes(rot, -1, -2))

    a2 = a * a
    marg = rotated(u2 + a2, v2 + a2)  # (M, 2, 2) covariance of x
    post = rotated(1 / (1 / u2 + 1 / a2), 1 / (1 / v2 + 1 / a2))  # C
    shrink = rotated(a2 / (u2 + a2), a2 / (v2 + a2))  # m = shrink @ x
    limit = prior.mean_limit
    truncated = limit is not None and math.isfinite(limit)
    if truncated:
        den = np.array([2 * float(_log_diff_ndtr(np.array(-limit / ai), np.array(limit / ai))) for ai in a])
        sd = np.sqrt(np.stack([post[:, 0, 0], post[:, 1, 1]], -1))  # (M, 2)
    out = np.empty(x.shape[0])
    chunk = max(1, 50_000 // len(a))  # bounds the (chunk, M, nodes) temporaries to ~10 MB each
    for start in range(0, x.shape[0], chunk):
        xs = x[start : start + chunk]
        logp = _gauss_log_pdf(xs, np.zeros((len(a), 2)), marg)  # (S, M)
        if truncated:
            m = np.einsum("kij,sj->ski", shrink, xs)  # (S, M, 2)
            # Where mu | x lies 7 sd inside the box on both axes, P(box | x) = 1 to 1e-11: skip it.
            edge = ~(np.abs(m) + 7 * sd <= limit).all(-1)  # (S, M)
            num = np.zeros(edge.shape)
            idx = np.nonzero(edge)
            num[idx] = _log_box_prob(m[idx], post[idx[1]], limit)
            logp = logp + num - den
        out[start : start + chunk] = logsumexp(logp + lw, axis=1)
    return out


# ---- density: kernel densities, Gaussians and EM mixtures -----------------------------------


def scott_bandwidth(points: torch.Tensor | np.ndarray) -> float:
    """h = n^(-1/6) * pooled std (ddof=1); FALLBACK_BANDWIDTH for n = 1; floored at MIN_BANDWIDTH."""
    p = _np(points)
    n = p.shape[0]
    if n == 0:
        raise ValueError("a KDE needs at least one point")
    if n == 1:
        return FALLBACK_BANDWIDTH
    pooled = math.sqrt(float(p.var(axis=0, ddof=1).mean()))
    return max(MIN_BANDWIDTH, n ** (-1 / 6) * pooled)


def kde_scott_log_prob(points: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Isotropic Gaussian KDE with Scott's bandwidth: log p(x) (S,)."""
    p, q = _np(points), _np(x)
    h = scott_bandwidth(p)
    d2 = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)  # (S, n)
    return logsumexp(-0.5 * d2 / h**2, axis=1) - math.log(p.shape[0]) - LOG_2PI - 2 * math.log(h)


def kde_scipy_log_prob(points: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """scipy.stats.gaussian_kde (full covariance); falls back to kde_scott when it cannot fit."""
    p, q = _np(points), _np(x)
    if p.shape[0] > 2:
        try:
            kde = stats.gaussian_kde(p.T)
            out = kde.logpdf(q.T)
            if np.all(np.isfinite(out)):
                return out
        except (np.linalg.LinAlgError, ValueError):
            pass
    return kde_scott_log_prob(p, q)


def _gauss_log_pdf(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log N(x; mean_k, cov_k) for x (S, 2), means (K, 2), covs (K, 2, 2) -> (S, K)."""
    a, b, d = covs[:, 0, 0], covs[:, 0, 1], covs[:, 1, 1]
    det = a * d - b * b
    diff = x[:, None, :] - means[None]  # (S, K, 2)
    dx, dy = diff[..., 0], diff[..., 1]
    maha = (d * dx * dx - 2 * b * dx * dy + a * dy * dy) / det
    return -0.5 * maha - LOG_2PI - 0.5 * np.log(det)


def _floor_cov(cov: np.ndarray, var_floor: float) -> np.ndarray:
    """Clamp the eigenvalues of symmetric (..., 2, 2) matrices at var_floor."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, var_floor)
    return (v * w[..., None, :]) @ np.swapaxes(v, -1, -2)


class GaussianMixtureFit:
    """A fitted Gaussian mixture: weights (K,), means (K, 2), covariances (K, 2, 2), and the
    fit's training log-likelihood and BIC (scikit-learn's, before the variance floor)."""

    def __init__(
        self, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, log_lik: float, bic: float = math.nan
    ) -> None:
        self.weights, self.means, self.covs, self.log_lik, self.bic = weights, means, covs, log_lik, bic

    def log_prob(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        q = _np(x)
        return logsumexp(np.log(self.weights)[None] + _gauss_log_pdf(q, self.means, self.covs), axis=1)


SKLEARN_COVARIANCE = {"isotropic": "spherical", "diag": "diag", "full": "full"}


def _full_covariances(gm: GaussianMixture) -> np.ndarray:
    """scikit-learn's covariances_ in any covariance_type -> (K, 2, 2)."""
    c, k = gm.covariances_, gm.n_components
    if gm.covariance_type == "full":
        return np.array(c)
    if gm.covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.asarray(c)[:, None, None] * np.eye(2)[None].repeat(k, 0)  # spherical


def fit_gmm(
    points: torch.Tensor | np.ndarray,
    k: int,
    covariance: str = "isotropic",
    var_floor: float = VAR_FLOOR,
    n_init: int = 5,
    seed: int = 0,
) -> GaussianMixtureFit:
    """scikit-learn `GaussianMixture` (EM, k-means++ starts, best of n_init) with K capped at the
    number of distinct points; every covariance eigenvalue is then floored at var_floor, so a
    component fitted to one or two points keeps a plausible width instead of collapsing. A
    single distinct point gives N(point, var_floor I).

    covariance: "isotropic" (sklearn's "spherical"), "diag" or "full".
    """
    if covariance not in SKLEARN_COVARIANCE:
        raise ValueError(f"covariance must be isotropic, diag or full, got {covariance!r}")
    p = _np(points)
    if p.shape[0] == 0:
        raise ValueError("EM needs at least one point")
    distinct = np.unique(p, axis=0).shape[0]
    if distinct == 1:  # one point (or copies of one): sklearn cannot fit; the floored Gaussian at it
        return GaussianMixtureFit(np.ones(1), p[:1].copy(), var_floor * np.eye(2)[None], math.nan)
    k = max(1, min(int(k), distinct))
    gm = GaussianMixture(k, covariance_type=SKLEARN_COVARIANCE[covariance], reg_covar=1e-6,
                         n_init=n_init, init_params="k-means++", random_state=seed, max_iter=200)
    # one BLAS/OpenMP thread: these fits are tiny, and thread pools made them 10-100x slower
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(p)
    covs = _floor_cov(_full_covariances(gm), var_floor)
    return GaussianMixtureFit(gm.weights_, gm.means_, covs, float(gm.score(p) * p.shape[0]), float(gm.bic(p)))


def fit_gmm_bic(
    points: torch.Tensor | np.ndarray,
    max_k: int = 6,
    covariance: str = "full",
    var_floor: float = VAR_FLOOR,
    n_init: int = 2,
    seed: int = 0,
) -> GaussianMixtureFit:
    """The fit_gmm with the lowest BIC over K = 1..max_k (capped at the distinct points)."""
    p = _np(points)
    if p.shape[0] == 0:
        raise ValueError("EM needs at least one point")
    top = max(1, min(int(max_k), np.unique(p, axis=0).shape[0]))
    fits = [fit_gmm(p, k, covariance, var_floor, n_init, seed) for k in range(1, top + 1)]
    return min(fits, key=lambda f: f.bic)


def em_mixture_log_prob(
    points: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray, k: int, seed: int = 0, **kw: object
) -> np.ndarray:
    """log p(x) under an EM-fitted K-component mixture of the points (see fit_gmm)."""
    return fit_gmm(points, k, seed=seed, **kw).log_prob(x)  # type: ignore[arg-type]


def em_bic_log_prob(
    points: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray, seed: int = 0, **kw: object
) -> np.ndarray:
    """log p(x) under the BIC-chosen EM mixture (K = 1..6, full covariances; see fit_gmm_bic)."""
    return fit_gmm_bic(points, seed=seed, **kw).log_prob(x)  # type: ignore[arg-type]


def component_var_floor(prior: MixturePrior | None) -> float:
    """The prior's smallest component variance (no fitted component should be narrower); VAR_FLOOR
    without a prior."""
    if prior is None:
        return VAR_FLOOR
    s = prior.component_std
    lo = float(s[0] if isinstance(s, tuple) else s)
    return max(VAR_FLOOR, lo * lo)


@dataclass(frozen=True)
class GaussianFit:
    """One Gaussian: mean (2,), covariance (2, 2)."""

    mean: np.ndarray
    cov: np.ndarray

    def log_prob(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        return _gauss_log_pdf(_np(x), self.mean[None], self.cov[None])[:, 0]


def fit_gaussian(points: torch.Tensor | np.ndarray, var_floor: float = VAR_FLOOR) -> GaussianFit:
    """The maximum-likelihood Gaussian of the points, covariance eigenvalues floored at var_floor."""
    p = _np(points)
    if p.shape[0] == 0:
        raise ValueError("a Gaussian fit needs at least one point")
    mean = p.mean(0)
    diff = p - mean
    return GaussianFit(mean, _floor_cov(diff.T @ diff / p.shape[0], var_floor))


def gaussian_log_prob(
    points: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray, var_floor: float = VAR_FLOOR
) -> np.ndarray:
    """log p(x) under one maximum-likelihood Gaussian, covariance eigenvalues floored at var_floor."""
    p, q = _np(points), _np(x)
    return fit_gaussian(p, var_floor).log_prob(q)


def _prior_k(prior: MixturePrior | None, default: int = 3) -> int:
    if prior is None:
        return default
    k = prior.n_components
    return int(round(sum(k) / 2)) if isinstance(k, tuple) else int(k)


# ---- density baselines as objects ----------------------------------------------------------


class PriorPredictive:
    """The prior predictive as a baseline: it ignores the context, so every n gets the same density.

    It remembers its answers by query set, because every data-fitted baseline falls back to it at
    n = 0 and the anisotropic prior predictive is costly: one instance per table shares that work.
    """

    name: ClassVar[str] = "prior_predictive"
    label: ClassVar[str] = "prior predictive (ignores the context)"

    def __init__(self, prior: MixturePrior) -> None:
        if not isinstance(prior, MixturePrior):
            raise ValueError(f"the prior predictive needs a MixturePrior, got {type(prior).__name__}")
        self.prior = prior
        self._memo: dict[bytes, np.ndarray] = {}

    def fit(self, context: np.ndarray, seed: int = 0) -> PriorPredictive:
        return self

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        q = _np(x)
        key = q.tobytes()
        if key not in self._memo:
            if len(self._memo) >= 1024:  # a table's worth of test sets; drop the oldest beyond that
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = prior_predictive_log_prob(self.prior, q)
        return self._memo[key]


@dataclass(frozen=True)
class _Kernel:
    """A kernel density keeps its points; log_prob evaluates fn(points, x)."""

    points: np.ndarray
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        return self.fn(self.points, x)


@dataclass(frozen=True)
class _FittedOnContext:
    """What the data-fitted density baselines share: the prior (variance floor, K) and the prior
    predictive they report with no context (built from the prior unless a shared one is given)."""

    prior: MixturePrior | None = None
    at_zero: PriorPredictive | None = None

    def __post_init__(self) -> None:
        if self.at_zero is None and self.prior is not None:
            object.__setattr__(self, "at_zero", PriorPredictive(self.prior))

    @property
    def var_floor(self) -> float:
        return component_var_floor(self.prior)

    def fit(self, context: np.ndarray, seed: int = 0) -> DensityFit:
        p = _np(context) if len(context) else np.zeros((0, 2))
        if p.shape[0] > 0:
            return self._fit(p, seed)
        if self.at_zero is None:
            raise ValueError("with no context points the baselines need the task prior")
        return self.at_zero

    def _fit(self, points: np.ndarray, seed: int) -> DensityFit:
        raise NotImplementedError


@dataclass(frozen=True)
class KdeScott(_FittedOnContext):
    name: ClassVar[str] = "kde_scott"
    label: ClassVar[str] = "isotropic Gaussian KDE, Scott's bandwidth"

    def _fit(self, points: np.ndarray, seed: int) -> DensityFit:
        return _Kernel(points, kde_scott_log_prob)


@dataclass(frozen=True)
class KdeScipy(_FittedOnContext):
    name: ClassVar[str] = "kde_scipy"
    label: ClassVar[str] = "scipy gaussian_kde (full covariance)"

    def _fit(self, points: np.ndarray, seed: int) -> DensityFit:
        return _Kernel(points, kde_scipy_log_prob)


@dataclass(frozen=True)
class EmMixture(_FittedOnContext):
    k: int | None = None  # components; None: the prior's K

    name: ClassVar[str] = "em_mixture"
    label: ClassVar[str] = "EM mixture, the prior's K, isotropic"

    def _fit(self, points: np.ndarray, seed: int) -> DensityFit:
        k = _prior_k(self.prior) if self.k is None else self.k
        return fit_gmm(points, k, seed=seed, var_floor=self.var_floor)


@dataclass(frozen=True)
class EmBic(_FittedOnContext):
    name: ClassVar[str] = "em_bic"
    label: ClassVar[str] = "EM mixture, K = 1..6 by BIC, full covariances"

    def _fit(self, points: np.ndarray, seed: int) -> DensityFit:
        return fit_gmm_bic(points, seed=seed, var_floor=self.var_floor)


@dataclass(frozen=True)
class SingleGaussian(_FittedOnContext):
    name: ClassVar[str] = "gaussian"
    label: ClassVar[str] = "one maximum-likelihood Gaussian"

    def _fit(self, points: np.ndarray, seed: int) -> DensityFit:
        return fit_gaussian(points, self.var_floor)


DENSITY_BASELINES: dict[str, type] = {
    "kde_scott": KdeScott,
    "kde_scipy": KdeScipy,
    "em_mixture": EmMixture,
    "em_bic": EmBic,
    "gaussian": SingleGaussian,
    "prior_predictive": PriorPredictive,
}
# The data-fitted density baselines: every registered one but the prior predictive (its own column).
BASELINES = tuple(name for name in DENSITY_BASELINES if name != "prior_predictive")


def density_baselines(
    prior: MixturePrior | None, names: tuple[str, ...] = BASELINES, k: int | None = None
) -> dict[str, DensityBaseline]:
    """The named density baselines for one table, sharing one prior predictive (their n = 0 answer);
    k: EM's number of components (default the prior's K)."""
    unknown = [n for n in names if n not in DENSITY_BASELINES]
    if unknown:
        raise ValueError(f"unknown density baselines {unknown}; choose from {list(DENSITY_BASELINES)}")
    zero = PriorPredictive(prior) if prior is not None else None
    out: dict[str, DensityBaseline] = {}
    for name in names:
        if name == "prior_predictive":
            out[name] = zero if zero is not None else PriorPredictive(prior)  # type: ignore[arg-type]
        elif name == "em_mixture":
            out[name] = EmMixture(prior, zero, k)
        else:
            out[name] = DENSITY_BASELINES[name](prior, zero)
    return out


def baseline_log_probs(
    points: torch.Tensor | np.ndarray,
    x: torch.Tensor | np.ndarray,
    prior: MixturePrior | None,
    k: int = 3,
    seed: int = 0,
    prior_log_prob: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """log p(x) (S,) of every data-fitted baseline on `points` (n, 2); n = 0 -> prior predictive
    (`prior_log_prob`, when the caller has it already)."""
    p = _np(points) if len(points) else np.zeros((0, 2))
    if p.shape[0] == 0:
        if prior is None:
            raise ValueError("with no context points the baselines need the task prior")
        pp = prior_predictive_log_prob(prior, x) if prior_log_prob is None else prior_log_prob
        return {name: pp for name in BASELINES}
    q = _np(x)
    return {name: b.fit(p, seed).log_prob(q) for name, b in density_baselines(prior, BASELINES, k).items()}


# ---- regression: point predictors ---------------------------------------------------------


def _gauss_nll(y: np.ndarray, mu: np.ndarray, var: np.ndarray | float) -> np.ndarray:
    return 0.5 * (y - mu) ** 2 / var + 0.5 * (LOG_2PI + np.log(var))


def _features(x: np.ndarray) -> np.ndarray:
    return np.stack([x, np.ones_like(x)], -1)


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


# ---- regression: Bayes posterior predictives -----------------------------------------------


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

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The posterior mean (a `RegressionFit`)."""
        return self.mean(x)

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """log p(y | x) (a `RegressionFit`)."""
        return self.log_prob_y(y, x)

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



# ---- regression baselines as objects -------------------------------------------------------


@dataclass(frozen=True)
class PointFit:
    """A point predictor's fit: predict(x) = the predictor on its context, and the plug-in
    log p(y | x) = log N(y; predict(x), noise_std^2) with the prior's known noise."""

    predictor: Callable[[np.ndarray], np.ndarray]
    noise_std: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predictor(x)

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -_gauss_nll(y, self.predict(x), self.noise_std**2)


@dataclass(frozen=True)
class LinearPredictiveFit:
    """The exact Gaussian posterior predictive of the linear family."""

    context: np.ndarray
    prior: LinearPrior

    def predict(self, x: np.ndarray) -> np.ndarray:
        return linear_predictive(self.context, x, self.prior)[0]

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        mu, var = linear_predictive(self.context, x, self.prior)
        return -_gauss_nll(y, mu, var)


@dataclass(frozen=True)
class LeastSquares:
    prior: LinearPrior | SinusoidPrior

    name: ClassVar[str] = "ols"
    label: ClassVar[str] = "least squares on [x, 1]"

    def fit(self, context: np.ndarray, seed: int = 0) -> RegressionFit:
        return PointFit(partial(ols_predict, context), self.prior.noise_std)


@dataclass(frozen=True)
class Ridge:
    prior: LinearPrior | SinusoidPrior

    name: ClassVar[str] = "ridge"
    label: ClassVar[str] = "ridge on [x, 1] with the prior's penalties"

    def fit(self, context: np.ndarray, seed: int = 0) -> RegressionFit:
        lam_w, lam_b = ridge_lambdas(self.prior)
        return PointFit(partial(ridge_predict, context, lam_w=lam_w, lam_b=lam_b), self.prior.noise_std)


@dataclass(frozen=True)
class NearestNeighbours:
    prior: LinearPrior | SinusoidPrior
    k: int = 3

    name: ClassVar[str] = "knn"
    label: ClassVar[str] = "k nearest neighbours (k = 3)"

    def fit(self, context: np.ndarray, seed: int = 0) -> RegressionFit:
        return PointFit(partial(knn_predict, context, k=self.k), self.prior.noise_std)


@dataclass(frozen=True)
class BayesRegression:
    """The posterior predictive under the training prior. The sinusoid posterior is sampled with
    `rng`, one stream for the whole table (so `seed` is not used): fits draw from it in turn."""

    prior: LinearPrior | SinusoidPrior
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    n_samples: int = 30000

    name: ClassVar[str] = "bayes"
    label: ClassVar[str] = "Bayes posterior predictive under the training prior"

    def fit(self, context: np.ndarray, seed: int = 0) -> RegressionFit:
        if isinstance(self.prior, LinearPrior):
            return LinearPredictiveFit(context, self.prior)
        return sinusoid_posterior(context, self.prior, self.rng, self.n_samples)


REGRESSION_BASELINES: dict[str, type] = {
    "ols": LeastSquares,
    "ridge": Ridge,
    "knn": NearestNeighbours,
    "bayes": BayesRegression,
}
# The regression point predictors: every registered baseline but the Bayes predictive (its own column).
POINT_METHODS = tuple(name for name in REGRESSION_BASELINES if name != "bayes")


def bayes_predictive(
    context: np.ndarray, x: np.ndarray, y: np.ndarray, prior: LinearPrior | SinusoidPrior,
    rng: np.random.Generator | None = None, n_samples: int = 30000,
) -> tuple[np.ndarray, np.ndarray]:
    """(NLL per test point (S,), posterior-mean prediction (S,)) under the training prior."""
    fit = BayesRegression(prior, rng or np.random.default_rng(0), n_samples).fit(context)
    return -fit.log_prob(x, y), fit.predict(x)
