"""Evaluation: grid-normalised densities, the in-context NLL curve, baselines, calibration.

In 2-D the partition function is a grid sum: Z = sum_cells exp(-E(cell centre)) * cell area
over the plotting box (midpoint rule). NLL(x | D) = E(x | D) + log Z(D), in nats.

Baselines (all normalised densities on R^2, evaluated at the test points directly, in
float64 numpy), each fitted on the first n context points:

- ``oracle``: the task's exact log density (needs ``task.log_prob``).
- ``bayes``: the posterior predictive under the task prior (``iclebm.evaluation.bayes``): the best any
  in-context learner trained on that prior can do, and the headline comparison.
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

For n = 0 every data-fitted baseline (kde_scott, kde_scipy, em_mixture, em_bic, gaussian) reports
the prior predictive, the only sensible density with no data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from scipy import stats
from scipy.special import logsumexp, ndtr
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from iclebm.card import box_of, prior_of
from iclebm.dynamics.langevin import SamplerConfig, langevin, uniform_init
from iclebm.evaluation.bayes import bayes_point_nll
from iclebm.evaluation.bayes import log_diff_ndtr as _log_diff_ndtr
from iclebm.evaluation.bayes import quadrature as _quadrature
from iclebm.grid import grid_points
from iclebm.models.energy import EnergyTransformer
from iclebm.tasks import DENSITY, MixturePrior

DEFAULT_NS = (0, 1, 2, 4, 8, 16, 32)


@contextmanager
def eval_mode(model: EnergyTransformer) -> Iterator[None]:
    """Eval mode for the duration, touching the model only if it is training: the app shares
    one model across sessions, and flipping its mode from a reader would race with others."""
    if not model.training:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()


FALLBACK_BANDWIDTH = 1.0
MIN_BANDWIDTH = 1e-3
VAR_FLOOR = 1e-2
BASELINES = ("kde_scott", "kde_scipy", "em_mixture", "em_bic", "gaussian")
COLUMNS = ("model", "bayes", "oracle", *BASELINES, "prior_predictive")
LOG_2PI = math.log(2 * math.pi)








def _cpu64(x: torch.Tensor) -> torch.Tensor:
    """Model outputs back on the CPU in float64 for the tables (no copy on CPU; MPS has no float64)."""
    return x.to("cpu").double()


@torch.no_grad()
def model_log_z(
    model: EnergyTransformer,
    context: torch.Tensor,
    lengths: list[int] | torch.Tensor,
    box: tuple[float, float],
    resolution: int = 200,
) -> torch.Tensor:
    """log Z for each task and prefix length: (T, N, 2) -> (T, P)."""
    grid, area = grid_points(box, resolution)
    grid = grid.to(model.dtype)[None].expand(context.shape[0], -1, -1)
    energy = model.energy_at_prefixes(grid, context.to(model.dtype), lengths)  # (T, P, G)
    return torch.logsumexp(-_cpu64(energy), dim=-1) + math.log(area)


@torch.no_grad()
def model_nll(
    model: EnergyTransformer,
    context: torch.Tensor,
    test: torch.Tensor,
    lengths: list[int] | torch.Tensor,
    box: tuple[float, float],
    resolution: int = 200,
) -> torch.Tensor:
    """Mean NLL (nats/point) of test points (T, S, 2) under p(x | context[:, :n]): -> (T, P)."""
    log_z = model_log_z(model, context, lengths, box, resolution)
    energy = model.energy_at_prefixes(test.to(model.dtype), context.to(model.dtype), lengths)
    return (_cpu64(energy) + log_z[..., None]).mean(-1)


@torch.no_grad()
def model_point_nll(
    model: EnergyTransformer,
    context: torch.Tensor,
    test: torch.Tensor,
    lengths: Sequence[int],
    box: tuple[float, float],
    resolution: int = 200,
    task_batch: int = 8,
) -> torch.Tensor:
    """Per-point NLL (T, P, S) of test points (T, S, 2) under p(x | context[:, :n]), float64.

    Tasks are processed `task_batch` at a time to bound memory.
    """
    out = []
    for i in range(0, context.shape[0], task_batch):
        ctx, tst = context[i : i + task_batch], test[i : i + task_batch]
        log_z = model_log_z(model, ctx, list(lengths), box, resolution)
        energy = model.energy_at_prefixes(tst.to(model.dtype), ctx.to(model.dtype), list(lengths))
        out.append(_cpu64(energy) + log_z[..., None])
    return torch.cat(out, 0)


# ---- baselines ---------------------------------------------------------------------------


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {x.shape}")
    return x


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


def gaussian_log_prob(
    points: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray, var_floor: float = VAR_FLOOR
) -> np.ndarray:
    """log p(x) under one maximum-likelihood Gaussian, covariance eigenvalues floored at var_floor."""
    p, q = _np(points), _np(x)
    if p.shape[0] == 0:
        raise ValueError("a Gaussian fit needs at least one point")
    mean = p.mean(0)
    diff = p - mean
    cov = _floor_cov(diff.T @ diff / p.shape[0], var_floor)
    return _gauss_log_pdf(q, mean[None], cov[None])[:, 0]


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
    floor = component_var_floor(prior)
    return {
        "kde_scott": kde_scott_log_prob(p, x),
        "kde_scipy": kde_scipy_log_prob(p, x),
        "em_mixture": em_mixture_log_prob(p, x, k, seed=seed, var_floor=floor),
        "em_bic": em_bic_log_prob(p, x, seed=seed, var_floor=floor),
        "gaussian": gaussian_log_prob(p, x, var_floor=floor),
    }


def _prior_k(prior: MixturePrior | None, default: int = 3) -> int:
    if prior is None:
        return default
    k = prior.n_components
    return int(round(sum(k) / 2)) if isinstance(k, tuple) else int(k)


# ---- NLL tables --------------------------------------------------------------------------


def _resolve(model: EnergyTransformer, prior: MixturePrior | None, box: tuple[float, float] | None):
    if prior is None:
        prior = prior_of(model, DENSITY, "the density NLL table")
    return prior, (box_of(model) if box is None else (float(box[0]), float(box[1])))


def _summary(per: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """per[name]: (T, P) per-task mean NLL -> mean and standard error lists over tasks."""
    nll, se = {}, {}
    for name, v in per.items():
        t = v.shape[0]
        nll[name] = [float(x) for x in v.mean(0)]
        se[name] = [float(x) for x in (v.std(0, ddof=1) / math.sqrt(t) if t > 1 else np.zeros(v.shape[1]))]
    return nll, se


def _baseline_table(
    context: np.ndarray,
    test: np.ndarray,
    ns: Sequence[int],
    prior: MixturePrior | None,
    k: int,
    seed: int,
    oracle: Callable[[np.ndarray], np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """Per-point NLL (P, S) for one task, every baseline."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in BASELINES}
    pp = prior_predictive_log_prob(prior, test) if prior is not None else None
    for n in ns:
        for name, lp in baseline_log_probs(context[:n], test, prior, k, seed, pp).items():
            out[name].append(-lp)
    res = {name: np.stack(v) for name, v in out.items()}
    if pp is not None:
        res["prior_predictive"] = np.tile(-pp, (len(ns), 1))
    if oracle is not None:
        res["oracle"] = np.tile(-oracle(test), (len(ns), 1))
    return res


def in_context_nll(
    model: EnergyTransformer,
    n_tasks: int = 64,
    seed: int = 12345,
    ns: Sequence[int] = DEFAULT_NS,
    n_test: int = 200,
    resolution: int = 200,
    prior: MixturePrior | None = None,
    box: tuple[float, float] | None = None,
    task_batch: int = 8,
    bayes: bool = True,
) -> dict:
    """Mean NLL (nats/point) of fresh task samples under p(x | first n context points).

    Held-out tasks come from the model's training prior (its card's "task", unless `prior`
    is given); each gets a context of max(ns) points and n_test fresh test points, all
    from one torch.Generator seeded with `seed`. The model's density is normalised on a
    resolution x resolution grid over the box; baselines are exact densities on R^2.
    `bayes` is the Bayes posterior predictive under the prior (`iclebm.evaluation.bayes`), the best any
    in-context learner trained on it can do; bayes=False (or an anisotropic prior, which
    `iclebm.evaluation.bayes` does not cover) leaves that column out.
    Returns a JSON-able dict: ns, nll[column] and stderr[column] (lists over ns; standard
    error over tasks), n_tasks, n_test, resolution, seed, box.
    """
    ns = [int(n) for n in ns]
    if not ns or min(ns) < 0:
        raise ValueError("ns must be a non-empty list of non-negative ints")
    if n_tasks < 1 or n_test < 1:
        raise ValueError("n_tasks and n_test must be >= 1")
    prior, box = _resolve(model, prior, box)
    g = torch.Generator().manual_seed(int(seed))
    n_ctx = max(ns)
    tasks = [prior.sample_task(g) for _ in range(n_tasks)]
    context = torch.stack([t.sample(n_ctx, g) for t in tasks])  # (T, N, 2)
    test = torch.stack([t.sample(n_test, g) for t in tasks])  # (T, S, 2)
    with eval_mode(model):
        model_pts = model_point_nll(model, context, test, ns, box, resolution, task_batch)  # (T, P, S)
    per: dict[str, list[np.ndarray]] = {"model": list(model_pts.mean(-1).numpy())}
    if bayes and prior.capabilities.bayes:
        per["bayes"] = list(bayes_point_nll(context, test, ns, prior).mean(-1))
    k = _prior_k(prior)
    ctx_np, test_np = context.double().numpy(), test.double().numpy()
    for i, task in enumerate(tasks):
        res = _baseline_table(
            ctx_np[i],
            test_np[i],
            ns,
            prior,
            k,
            seed + i,
            lambda x, t=task: t.log_prob(torch.from_numpy(x)).numpy(),
        )
        for name, v in res.items():
            per.setdefault(name, []).append(v.mean(-1))
    nll, se = _summary({name: np.stack(v) for name, v in per.items()})
    order = [c for c in COLUMNS if c in nll]
    return {
        "ns": ns,
        "nll": {c: nll[c] for c in order},
        "stderr": {c: se[c] for c in order},
        "n_tasks": int(n_tasks),
        "n_test": int(n_test),
        "resolution": int(resolution),
        "seed": int(seed),
        "box": list(box),
    }


def nll_curve_for_task(
    model: EnergyTransformer,
    task,
    context: torch.Tensor,
    ns: Sequence[int] | None = None,
    n_test: int = 500,
    box: tuple[float, float] | None = None,
    resolution: int = 200,
    seed: int = 0,
    prior: MixturePrior | None = None,
) -> dict:
    """The NLL curve of ONE task (the app's chart): same structure as in_context_nll.

    context: (N, 2) points of the task; ns defaults to DEFAULT_NS and is cut to n <= N.
    n_test fresh points come from task.sample with a generator seeded by `seed`; stderr is
    over those points. The oracle column appears only when the task has `log_prob`; K for EM
    is the task's n_components when it has one, else the prior's. `bayes` is the posterior
    predictive under the prior (the training prior unless `prior` is given), whatever the task.
    """
    context = torch.as_tensor(context, dtype=torch.float32)
    if context.ndim != 2 or context.shape[1] != 2:
        raise ValueError(f"context must have shape (N, 2), got {tuple(context.shape)}")
    ns = [int(n) for n in (DEFAULT_NS if ns is None else ns) if int(n) <= context.shape[0]]
    if not ns:
        raise ValueError("no n in ns fits the context length")
    prior, box = _resolve(model, prior, box)
    g = torch.Generator().manual_seed(int(seed))
    test = task.sample(int(n_test), g).float()
    with eval_mode(model):
        model_pts = model_point_nll(model, context[None], test[None], ns, box, resolution)[0].numpy()
    k = int(getattr(task, "n_components", _prior_k(prior)))
    oracle = None
    if hasattr(task, "log_prob"):
        def oracle(x: np.ndarray) -> np.ndarray:
            return task.log_prob(torch.from_numpy(x)).numpy()

    bayes = {}
    if prior.capabilities.bayes:
        bayes["bayes"] = bayes_point_nll(context[None], test[None], ns, prior)[0]
    res = {
        "model": model_pts,
        **bayes,
        **_baseline_table(context.double().numpy(), test.double().numpy(), ns, prior, k, seed, oracle),
    }
    s = int(n_test)
    order = [c for c in COLUMNS if c in res]
    return {
        "ns": ns,
        "nll": {c: [float(x) for x in res[c].mean(-1)] for c in order},
        "stderr": {
            c: [float(x) for x in res[c].std(-1, ddof=1) / math.sqrt(s)] if s > 1 else [0.0] * len(ns)
            for c in order
        },
        "n_tasks": 1,
        "n_test": s,
        "resolution": int(resolution),
        "seed": int(seed),
        "box": list(box),
    }


def format_nll_table(table: dict) -> str:
    """Markdown table: one row per n, columns model / bayes / oracle / baselines, then the model's
    gaps to Bayes and to the oracle."""
    ns, nll = table["ns"], table["nll"]
    cols = [c for c in COLUMNS if c in nll] + [c for c in nll if c not in COLUMNS]
    gaps = [ref for ref in ("bayes", "oracle") if "model" in nll and ref in nll]
    head = ["n", *cols] + [f"model - {ref}" for ref in gaps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, n in enumerate(ns):
        row = [str(n)] + [f"{nll[c][i]:.3f}" for c in cols]
        row += [f"{nll['model'][i] - nll[ref][i]:+.3f}" for ref in gaps]
        lines.append("| " + " | ".join(row) + " |")
    meta = [f"{key}={table[key]}" for key in ("n_tasks", "n_test", "resolution", "seed") if key in table]
    if meta:
        lines.append("")
        lines.append("NLL in nats/point (lower is better); " + ", ".join(meta))
    return "\n".join(lines)


# ---- sampler guidance (temperature fits live in iclebm.evaluation.calibration) -----------------------


def guidance_fraction(
    model: EnergyTransformer,
    n_tasks: int = 8,
    n_particles: int = 1000,
    context_len: int = 32,
    radius: float = 1.5,
    sampler=None,
    seed: int = 4242,
    prior: MixturePrior | None = None,
    box: tuple[float, float] | None = None,
) -> float:
    """Share of particles, started uniformly over the box, that end within `radius` of a true mean.

    For n_tasks held-out tasks with a context_len-point context, run `sampling.langevin` with
    the card's sampler settings (or `sampler`, a SamplerConfig), clamped to the box; average
    the per-task fractions.
    """

    prior, box = _resolve(model, prior, box)
    if sampler is None:
        sampler = SamplerConfig.from_dict(model.card.get("sampler", {}))
    g = torch.Generator().manual_seed(int(seed))
    tasks = [prior.sample_task(g) for _ in range(n_tasks)]
    context = torch.stack([t.sample(context_len, g) for t in tasks])
    init = uniform_init(n_particles, box, generator=g, batch=n_tasks)
    with eval_mode(model):
        final = langevin(
            model,
            context,
            init,
            sampler.steps,
            sampler.step_size,
            sampler.noise_std,
            sampler.grad_clip,
            box=box,
            generator=g,
        )
    final = final.cpu()
    fracs = []
    for i, t in enumerate(tasks):
        d = torch.cdist(final[i].double(), t.means.double()).min(-1).values
        fracs.append(float((d <= radius).double().mean()))
    return float(np.mean(fracs))
