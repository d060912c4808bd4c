"""Bayes posterior predictive for the Gaussian-mixture task prior: the best any in-context learner can do.

For a context D = (x_1..x_N) and a query x, p(x | D) = E[p(x | task) | D] under `MixturePrior`:
K components (fixed, or uniform over a range), uniform weights 1/K, means mu_k ~ N(0, a^2 I)
truncated to the square [-L, L]^2 (the prior's rejection step; a = mean_std, fixed or uniform
over a range), isotropic stds s_k (fixed, or uniform over a range, independent per component).

How it is computed (everything float64 numpy):

- Given the assignment z of points to components, components are independent. For one
  component with data statistics (n, S = sum x, Q = sum |x|^2) and std s, the mean integrates out
  in closed form (conjugate Gaussian): per axis the n values are N(0, s^2 I + a^2 11^T), and the
  truncation of the mean to [-L, L] contributes the posterior mass of the mean inside the square,
  prod_d [Phi((L - m_d)/sqrt(v)) - Phi((-L - m_d)/sqrt(v))] / [Phi(L/a) - Phi(-L/a)]^2, with m, v the
  posterior mean and variance of the mean. The truncation is thus handled exactly, not ignored.
- The std s is integrated on Gauss-Legendre nodes over its range (16 by default: the same rule as
  `evaluate.prior_predictive_log_prob`, so n = 0 reproduces it to rounding). This gives the
  component's marginal likelihood M(n, S, Q); its predictive for a new point is
  M(stats + x) / M(stats), and p(x | z, D) = (1/K) sum_k M(stats_k + x) / M(stats_k).
- p(x | D) = sum_z p(z | D) p(x | z, D). Small contexts: exact enumeration over all set
  partitions of the points into at most K blocks (a partition with b blocks stands for
  K!/(K-b)! labelled assignments). Larger contexts: collapsed Gibbs sampling of z (means and
  stds integrated out), several chains started by sequential assignment, and the
  Rao-Blackwellised predictive averaged over the sweeps after burn-in.
- A range of K or of mean_std is a mixture over hypotheses h = (K, a) (uniform over K,
  Gauss-Legendre over a) weighted by the evidence p(D | h). The evidence is exact for small
  contexts and otherwise the chain rule sum_i log p(x_i | x_<i, h) with each factor from the
  sampler above, so a range costs about N times a fixed prior.

Public: `mixture_log_predictive(context, query, prior)` for one context, and
`mixture_log_predictive_batch` for T contexts of equal length (what evaluation uses).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_ndtr, ndtri_exp

from iclebm.card import prior_of
from iclebm.errors import CapabilityError
from iclebm.grid import grid_axis, grid_points
from iclebm.tasks import DENSITY, MixturePrior

LOG_2PI = math.log(2 * math.pi)
STD_NODES = 16  # Gauss-Legendre nodes for a uniform range of the isotropic component std
TAIL_SD = 7.0  # truncation tails further than this many posterior sds are dropped (< 1.3e-12)
EXACT_MAX_PARTITIONS = 1100  # enumerate exactly up to this many set partitions (K = 3: N <= 8)


def log_diff_ndtr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails."""
    a, b = np.broadcast_arrays(a, b)
    flip = a > 0  # both in the upper tail: use the symmetry Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    lb, la = log_ndtr(hi), log_ndtr(lo)
    return lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))


def _log_mass_inside(m: np.ndarray, sd: np.ndarray, limit: float) -> np.ndarray:
    """log P(|N(m, sd^2)| <= limit), elementwise. A tail more than TAIL_SD standard deviations
    away (mass < 1.3e-12) is dropped, so most elements cost nothing and most others one log_ndtr."""
    out = np.zeros(m.shape)
    near = limit - np.abs(m) < TAIL_SD * sd
    if near.any():
        mn, sn = np.abs(m[near]), sd[near]
        val = log_ndtr((limit - mn) / sn)  # the near tail only
        both = limit + mn < TAIL_SD * sn
        if both.any():
            val[both] = log_diff_ndtr((-limit - mn[both]) / sn[both], (limit - mn[both]) / sn[both])
        out[near] = val
    return out


def quadrature(value: float | tuple[float, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log weights for the mean over U(lo, hi) (or a single fixed value)."""
    if isinstance(value, (int, float)) or value[0] == value[1]:
        v = float(value if isinstance(value, (int, float)) else value[0])
        return np.array([v]), np.array([0.0])
    lo, hi = value
    x, w = np.polynomial.legendre.leggauss(n)
    return lo + (hi - lo) * (x + 1) / 2, np.log(w / 2)


def as_prior(prior: MixturePrior | dict) -> MixturePrior:
    """A MixturePrior, or one built from a card's task dict (or a whole card with a "task")."""
    if isinstance(prior, MixturePrior):
        return prior
    if isinstance(prior, dict):
        card = prior if "task" in prior else {"task": prior}
        return prior_of(card, DENSITY, "the mixture Bayes predictive")  # type: ignore[return-value]
    raise ValueError(f"prior must be a MixturePrior or a card's task dict, got {type(prior).__name__}")


def _points(x: np.ndarray | torch.Tensor, name: str, batched: bool) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    want = 3 if batched else 2
    if x.ndim != want or x.shape[-1] != 2:
        shape = "(T, N, 2)" if batched else "(N, 2)"
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


# ---- one component: marginal likelihood with the mean integrated out ------------------------------


@dataclass(frozen=True)
class Hypothesis:
    """Fixed K and mean_std a, with the std nodes s (G,) and their log weights (G,)."""

    k: int
    a: float
    s: np.ndarray
    log_w_s: np.ndarray
    limit: float
    log_prior: float  # log p(h) among the hypotheses

    def log_marginal_nodes(self, n: np.ndarray, s_sum: np.ndarray, sq: np.ndarray) -> np.ndarray:
        """log p(data | s_g) + log w_g per std node: stats n (...), S (..., 2), Q (...) -> (..., G)."""
        a2 = self.a * self.a
        s2 = self.s * self.s  # (G,)
        n = n[..., None]
        denom = s2 + n * a2  # (..., G)
        ss = (s_sum * s_sum).sum(-1)[..., None]
        out = (
            -n * LOG_2PI
            - (n - 1) * np.log(s2)
            - np.log(denom)
            - 0.5 * (sq[..., None] - a2 * ss / denom) / s2
        )
        if self.truncated:
            m = s_sum[..., None, :] * (a2 / denom)[..., None]  # (..., G, 2) posterior mean of mu
            sd = np.sqrt(s2 * a2 / denom)[..., None]
            inside = _log_mass_inside(m, np.broadcast_to(sd, m.shape), self.limit).sum(-1)
            out = out + inside - self.log_mass_prior
        return out + self.log_w_s

    def log_marginal(self, n: np.ndarray, s_sum: np.ndarray, sq: np.ndarray) -> np.ndarray:
        """log M(n, S, Q): stats n (...), S (..., 2), Q (...) -> (...), s integrated on the nodes."""
        return _lse(self.log_marginal_nodes(n, s_sum, sq), axis=-1)

    @property
    def truncated(self) -> bool:
        return math.isfinite(self.limit) and self.a > 0

    @property
    def log_mass_prior(self) -> float:
        """log P(mean inside the square) under N(0, a^2 I)."""
        return 2 * float(log_diff_ndtr(np.array(-self.limit / self.a), np.array(self.limit / self.a)))


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    """logsumexp over one axis (inputs are finite or -inf, never all -inf here)."""
    m = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - m).sum(axis=axis)) + np.squeeze(m, axis=axis)


def hypotheses(prior: MixturePrior, n_quad: int = STD_NODES) -> list[Hypothesis]:
    """The (K, mean_std) grid with log prior weights; the std nodes are shared."""
    caps = prior.capabilities
    if not caps.bayes:
        raise CapabilityError(f"no Bayes predictive for this prior: {caps.why_no_bayes}")
    if prior.anisotropic:
        raise CapabilityError("hypotheses() models isotropic components only; anisotropic priors go "
                              "through shape_hypothesis (mixture_log_predictive picks it)")
    s, lw_s = quadrature(prior.component_std, n_quad)
    if np.any(s <= 0):
        raise ValueError(f"component std must be positive, got {prior.component_std!r}")
    a_nodes, lw_a = quadrature(prior.mean_std, n_quad)
    if np.any(a_nodes < 0):
        raise ValueError(f"mean_std must be non-negative, got {prior.mean_std!r}")
    ks = prior.n_components
    k_list = list(range(int(ks[0]), int(ks[1]) + 1)) if isinstance(ks, tuple) else [int(ks)]
    if min(k_list) < 1:
        raise ValueError(f"n_components must be >= 1, got {ks!r}")
    limit = math.inf if prior.mean_limit is None else float(prior.mean_limit)
    return [
        Hypothesis(k, float(a), s, lw_s, limit, la - math.log(len(k_list)))
        for k in k_list
        for a, la in zip(a_nodes, lw_a, strict=True)
    ]


def _stats(x: np.ndarray, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Component statistics for assignments z (..., N) of points x (..., N, 2) -> n, S, Q over K."""
    onehot = (z[..., None] == np.arange(k)).astype(np.float64)  # (..., N, K)
    n = onehot.sum(-2)
    s_sum = np.einsum("...nk,...nd->...kd", onehot, x)
    sq = np.einsum("...nk,...n->...k", onehot, (x * x).sum(-1))
    return n, s_sum, sq


def _log_pred_given_stats(
    h: Hypothesis, n: np.ndarray, s_sum: np.ndarray, sq: np.ndarray, query: np.ndarray
) -> np.ndarray:
    """Reference: log p(q | z, D) = log (1/K) sum_k M(stats_k + q) / M(stats_k).

    stats (..., K) / (..., K, 2), queries (..., M, 2) broadcastable against (...) -> (..., M).
    """
    base = h.log_marginal(n, s_sum, sq)[..., None]  # (..., K, 1)
    q = query[..., None, :, :]  # (..., 1, M, 2)
    new = h.log_marginal(n[..., None] + 1, s_sum[..., None, :] + q, sq[..., None] + (q * q).sum(-1))
    return _lse(new - base, axis=-2) - math.log(h.k)  # (..., M)


def _log_pred_fast(
    h: Hypothesis, n: np.ndarray, s_sum: np.ndarray, sq: np.ndarray, query: np.ndarray, log_p0: np.ndarray
) -> np.ndarray:
    """Same as _log_pred_given_stats for stats (T, R, K) and queries (T, M, 2), about 4x cheaper.

    Per std node the component predictive is a Gaussian N(q; m, (v + s^2) I) (m, v: posterior of
    the mean) times the truncation ratio P(mean inside | data + q) / P(mean inside | data); the
    quadratic form goes through one matrix product, and the truncation ratio is evaluated only
    where it can differ from 1 in float64. Empty components predict with the prior predictive
    log_p0 (T, M) of this hypothesis. Returns (T, R, M).
    """
    a2, s2 = h.a * h.a, h.s * h.s
    log_w = h.log_marginal_nodes(n, s_sum, sq)  # (T, R, K, G)
    log_w = log_w - _lse(log_w, axis=-1)[..., None]  # posterior over the std nodes
    denom = s2 + n[..., None] * a2  # (T, R, K, G)
    m = s_sum[..., None, :] * (a2 / denom)[..., None]  # (T, R, K, G, 2)
    tau2 = s2 * a2 / denom + s2
    qq = (query * query).sum(-1)  # (T, M)
    cross = m @ np.swapaxes(query, -1, -2)[:, None, None]  # (T, R, K, G, M)
    mm = (m * m).sum(-1)
    lp = (log_w - np.log(2 * math.pi * tau2))[..., None] - (
        qq[:, None, None, None] - 2 * cross + mm[..., None]
    ) / (2 * tau2[..., None])  # (T, R, K, G, M)
    if h.truncated:
        denom1 = s2 + (n[..., None] + 1) * a2
        sd, sd1 = np.sqrt(s2 * a2 / denom), np.sqrt(s2 * a2 / denom1)
        # (component, query) pairs where the posterior mean with or without q comes within TAIL_SD sd
        # of the edge; elsewhere the truncation ratio is 1 (to 1e-12)
        before = _log_mass_inside(m, np.broadcast_to(sd[..., None], m.shape), h.limit).sum(-1)  # (T, R, K, G)
        reach = ((h.limit - TAIL_SD * sd1) * denom1 / a2).min(-1)  # (T, R, K): |S + q| beyond this
        far = (np.abs(s_sum[:, :, :, None] + query[:, None, None]) > reach[..., None, None]).any(-1)
        edge = (before < 0).any(-1)  # (T, R, K)
        t, r, k, mi = np.nonzero((far | edge[..., None]) & (n > 0)[..., None])  # (T, R, K, M) pairs
        if t.size:
            m1 = (s_sum[t, r, k][:, None] + query[t, mi][:, None]) * (a2 / denom1[t, r, k])[..., None]
            after = _log_mass_inside(m1, np.broadcast_to(sd1[t, r, k][..., None], m1.shape), h.limit)
            lp[t, r, k, :, mi] += after.sum(-1) - before[t, r, k]  # (F, G)
    comp = _lse(lp, axis=-2)  # (T, R, K, M)
    comp = np.where((n == 0)[..., None], log_p0[:, None, None], comp)
    return _lse(comp, axis=-2) - math.log(h.k)


def _log_p0(h: Hypothesis, query: np.ndarray) -> np.ndarray:
    """The hypothesis' prior predictive (T, M): an empty component's predictive."""
    return h.log_marginal(np.ones(query.shape[:-1]), query, (query * query).sum(-1))


# ---- exact enumeration ------------------------------------------------------------------------------


def set_partitions(n: int, k: int) -> np.ndarray:
    """All partitions of n items into at most k blocks, as restricted growth strings (P, n)."""
    rows = np.zeros((1, 0), dtype=np.int64)
    for _ in range(n):
        top = rows.max(1) if rows.shape[1] else np.full(rows.shape[0], -1)
        ext = []
        for lab in range(k):
            ok = lab <= top + 1
            if ok.any():
                ext.append(np.concatenate([rows[ok], np.full((int(ok.sum()), 1), lab)], 1))
        rows = np.concatenate(ext, 0)
    return rows


def n_partitions(n: int, k: int) -> int:
    """Number of partitions of n items into at most k blocks (sum of Stirling numbers of the 2nd kind)."""
    row = [1] + [0] * k  # S(0, j)
    for _ in range(n):
        row = [0] + [j * row[j] + row[j - 1] for j in range(1, k + 1)]
    return int(sum(row))


def _exact(h: Hypothesis, context: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact log p(q | D, h) (T, M) and log p(D | h) (T,) for contexts (T, N, 2).

    Partitions whose posterior is below e^-50 of the task's most probable one are left out of
    the predictive sum (their total share is < 1e-18 of it).
    """
    t, n = context.shape[:2]
    if n_partitions(n, h.k) > 50 * EXACT_MAX_PARTITIONS:
        raise ValueError(f"exact enumeration of {n} points into {h.k} components is too large; use gibbs")
    z = set_partitions(n, h.k)  # (P, N)
    blocks = z.max(1) + 1 if n else np.zeros(1, dtype=np.int64)
    log_mult = np.array([math.lgamma(h.k + 1) - math.lgamma(h.k - b + 1) for b in blocks]) - n * math.log(h.k)
    cnt, s_sum, sq = _stats(context[:, None], np.broadcast_to(z, (t, *z.shape)), h.k)  # (T, P, K)
    log_joint = log_mult + h.log_marginal(cnt, s_sum, sq).sum(-1)  # (T, P)
    log_ev = _lse(log_joint, axis=1)
    post = log_joint - log_ev[:, None]
    log_p0 = _log_p0(h, query)  # (T, M)
    out = np.empty(query.shape[:2])
    for i in range(t):
        keep = post[i] > post[i].max() - 50.0
        pred = _log_pred_fast(h, cnt[i : i + 1, keep], s_sum[i : i + 1, keep], sq[i : i + 1, keep],
                              query[i : i + 1], log_p0[i : i + 1])  # (1, P', M)
        out[i] = _lse(post[i, keep][:, None] + pred[0], axis=0)
    return out, log_ev


# ---- collapsed Gibbs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GibbsConfig:
    chains: int = 8
    burn_in: int = 10  # sweeps discarded
    sweeps: int = 20  # sweeps after burn-in; the predictive is averaged over every one
    stuck_nats: float = 15.0  # during burn-in, a chain this far below the task's best restarts from it
    seed: int = 0


def _restart_stuck(base: np.ndarray, state: tuple[np.ndarray, ...], nats: float) -> None:
    """Copy each task's best chain over its chains whose log p(z, D) is `nats` or more below it.

    Single-site Gibbs cannot leave some wrong partitions (e.g. two far clusters sharing one
    component while a third cluster is split over two); such a state is e^-nats less probable
    than the best chain's, so during burn-in it is replaced. log p(z, D) = sum_k log M_k + const.
    """
    log_joint = base.sum(-1)  # (T, C)
    best = log_joint.argmax(1)  # (T,)
    stuck = log_joint < log_joint.max(1, keepdims=True) - nats
    if stuck.any():
        t_idx = np.nonzero(stuck)[0]
        for arr in state:
            arr[stuck] = arr[t_idx, best[t_idx]]


def _gibbs(
    h: Hypothesis, context: np.ndarray, query: np.ndarray, cfg: GibbsConfig, rng: np.random.Generator
) -> np.ndarray:
    """Rao-Blackwellised Gibbs estimate of log p(q | D, h) (T, M): contexts (T, N, 2), queries (T, M, 2)."""
    t, n = context.shape[:2]
    c, k = cfg.chains, h.k
    x = np.broadcast_to(context[:, None], (t, c, n, 2))
    x2 = (x * x).sum(-1)  # (T, C, N)
    cnt = np.zeros((t, c, k))
    s_sum = np.zeros((t, c, k, 2))
    sq = np.zeros((t, c, k))
    base = np.zeros((t, c, k))  # log M(stats_k), kept current
    z = np.full((t, c, n), -1)
    eye = np.eye(k)
    ti, ci = np.meshgrid(np.arange(t), np.arange(c), indexing="ij")
    log_p0 = _log_p0(h, query)

    def add(idx: np.ndarray | int) -> None:
        """Draw the component of point idx (an index, or one per task and chain) given the rest."""
        xi, x2i = x[ti, ci, idx], x2[ti, ci, idx]  # (T, C, 2), (T, C)
        gain = h.log_marginal(cnt + 1, s_sum + xi[:, :, None], sq + x2i[..., None])  # (T, C, K)
        new = np.argmax(gain - base + rng.gumbel(size=base.shape), axis=-1)
        oh = eye[new]
        cnt[...] += oh
        s_sum[...] += oh[..., None] * xi[:, :, None]
        sq[...] += oh * x2i[..., None]
        base[ti, ci, new] = gain[ti, ci, new]
        z[ti, ci, idx] = new

    def remove(i: int) -> None:
        old = z[:, :, i]
        oh = eye[old]
        cnt[...] -= oh
        s_sum[...] -= oh[..., None] * x[:, :, i, None]
        sq[...] -= oh * x2[:, :, i, None]
        base[ti, ci, old] = h.log_marginal(cnt[ti, ci, old], s_sum[ti, ci, old], sq[ti, ci, old])

    order = np.argsort(rng.random((t, c, n)), axis=-1)
    for j in range(n):  # sequential start in a random order per chain: each point given the earlier ones
        add(order[:, :, j])
    total = None
    for sweep in range(cfg.burn_in + cfg.sweeps):
        for i in range(n):
            remove(i)
            add(i)
        if sweep < cfg.burn_in:
            _restart_stuck(base, (cnt, s_sum, sq, base, z), cfg.stuck_nats)
        else:
            pred = _lse(_log_pred_fast(h, cnt, s_sum, sq, query, log_p0), axis=1)  # (T, M)
            total = pred if total is None else np.logaddexp(total, pred)
    assert total is not None
    return total - math.log(c * cfg.sweeps)


def _enumerates(method: str, n: int, k: int, cap: int) -> bool:
    """Whether `method` means exact enumeration of the partitions of n points into at most k blocks:
    "exact" always, "auto" while there are at most `cap` of them."""
    return method == "exact" or (method == "auto" and n_partitions(n, k) <= cap)


def _predictive(
    h: Hypothesis, context: np.ndarray, query: np.ndarray, method: str, cfg: GibbsConfig, rng
) -> np.ndarray:
    n = context.shape[1]
    if _enumerates(method, n, h.k, EXACT_MAX_PARTITIONS):
        return _exact(h, context, query)[0]
    if n == 0:
        return _exact(h, context, query)[0]
    return _gibbs(h, context, query, cfg, rng)


def _log_evidence(h: Hypothesis, context: np.ndarray, method: str, cfg: GibbsConfig, rng) -> np.ndarray:
    """log p(D | h) (T,): exact when enumerable, else the chain rule over sequential predictives."""
    n = context.shape[1]
    if _enumerates(method, n, h.k, EXACT_MAX_PARTITIONS):
        return _exact(h, context, context[:, :1] if n else np.zeros((context.shape[0], 1, 2)))[1]
    # exact for the enumerable prefix, then one factor per further point
    m = max(i for i in range(n + 1) if n_partitions(i, h.k) <= EXACT_MAX_PARTITIONS)
    total = _log_evidence(h, context[:, :m], "exact", cfg, rng)
    for i in range(m, n):
        total = total + _gibbs(h, context[:, :i], context[:, i : i + 1], cfg, rng)[:, 0]
    return total


def mixture_log_predictive_batch(
    context: np.ndarray | torch.Tensor,
    query: np.ndarray | torch.Tensor,
    prior: MixturePrior | dict,
    method: str = "auto",
    gibbs: GibbsConfig | None = None,
    n_quad: int = STD_NODES,
    shape: ShapeRule | None = None,
) -> np.ndarray:
    """log p(q | D) (T, M) for T contexts (T, N, 2) of equal length N >= 0 and queries (T, M, 2).

    method: "auto" (exact enumeration while the number of set partitions of N points into at
    most K blocks is <= EXACT_MAX_PARTITIONS, else collapsed Gibbs), "exact" or "gibbs".
    Anisotropic priors go through `aniso_log_predictive_batch` with the ShapeRule `shape`
    (default ShapeRule()); n_quad is the isotropic std rule.
    """
    ctx = _points(context, "context", batched=True)
    q = _points(query, "query", batched=True)
    return _log_predictive_batch(ctx, q, as_prior(prior), method, gibbs, n_quad, shape)


def _log_predictive_batch(
    ctx: np.ndarray, q: np.ndarray, prior: MixturePrior, method: str, gibbs: GibbsConfig | None,
    n_quad: int, shape: ShapeRule | None,
) -> np.ndarray:
    """`mixture_log_predictive_batch` on arguments already checked by `_points` and `as_prior` (the public
    entry points check their inputs once, then come here)."""
    if method not in ("auto", "exact", "gibbs"):
        raise ValueError(f"method must be auto, exact or gibbs, got {method!r}")
    if ctx.shape[0] != q.shape[0]:
        raise ValueError(f"context and query must hold as many tasks, got {ctx.shape[0]} and {q.shape[0]}")
    if prior.anisotropic:
        return aniso_log_predictive_batch(ctx, q, prior, method, gibbs, shape or ShapeRule())
    cfg = gibbs or GibbsConfig()
    rng = np.random.default_rng(cfg.seed)
    hs = hypotheses(prior, n_quad)
    if len(hs) == 1:
        return _predictive(hs[0], ctx, q, method, cfg, rng)
    log_post = np.stack([h.log_prior + _log_evidence(h, ctx, method, cfg, rng) for h in hs])  # (H, T)
    log_post -= _lse(log_post, axis=0)
    preds = np.stack([_predictive(h, ctx, q, method, cfg, rng) for h in hs])  # (H, T, M)
    return _lse(log_post[..., None] + preds, axis=0)


def mixture_log_predictive(
    context: np.ndarray | torch.Tensor,
    query: np.ndarray | torch.Tensor,
    prior: MixturePrior | dict,
    method: str = "auto",
    gibbs: GibbsConfig | None = None,
    n_quad: int = STD_NODES,
    shape: ShapeRule | None = None,
) -> np.ndarray:
    """Log posterior-predictive density (M,) of queries (M, 2) given a context (N, 2), N >= 0.

    prior: a `MixturePrior` or a checkpoint card's task dict. NaN/inf raises ValueError.
    See the module docstring for the method and `mixture_log_predictive_batch` for `method`.
    """
    ctx = _points(context, "context", batched=False)
    q = _points(query, "query", batched=False)
    return _log_predictive_batch(ctx[None], q[None], as_prior(prior), method, gibbs, n_quad, shape)[0]


def bayes_point_nll(
    context: np.ndarray | torch.Tensor,
    test: np.ndarray | torch.Tensor,
    ns: list[int],
    prior: MixturePrior | dict,
    gibbs: GibbsConfig | None = None,
    shape: ShapeRule | None = None,
) -> np.ndarray:
    """Per-point NLL (T, P, S) of test points (T, S, 2) under p(x | context[:, :n]) for each n in ns.
    `shape`: the anisotropic priors' shape rule (default ShapeRule(); the app's chart uses GRID_SHAPE)."""
    ctx = _points(context, "context", batched=True)
    tst = _points(test, "test", batched=True)
    prior = as_prior(prior)
    nll = [-_log_predictive_batch(ctx[:, :n], tst, prior, "auto", gibbs, STD_NODES, shape) for n in ns]
    return np.stack(nll, 1)


# ---- a cached grid for the app's "Bayes-optimal" overlay ---------------------------------------

GRID_MAX_RESOLUTION = 80  # the overlay grid is at most this many cells per axis (6400 queries)
# anisotropic priors cost about 300 shape nodes per query and block: their overlay grid is capped
# at 32 cells per axis (a contour picture; 32 x 32 is about 4 s of CPU at n = 3 here)
GRID_MAX_RESOLUTION_ANISO = 32
GRID_MAX_CONTEXT = 64
GRID_GIBBS = GibbsConfig(chains=4, burn_in=10, sweeps=10)  # beyond exact enumeration (N > 8 for K = 3)


def predictive_grid(
    context: np.ndarray | torch.Tensor | list,
    prior: MixturePrior | dict,
    box: tuple[float, float],
    resolution: int = 60,
) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres (R,) and log p(x | context) (R, R) (row = y, column = x) on a grid over the box.

    For the app: R = min(resolution, GRID_MAX_RESOLUTION) (GRID_MAX_RESOLUTION_ANISO for an
    anisotropic prior, with the coarse GRID_SHAPE rule), the context is at most
    GRID_MAX_CONTEXT points (else ValueError), Gibbs uses the short GRID_GIBBS run, and the last
    64 answers are cached, so a repeated view costs nothing.
    """
    ctx = _points(np.asarray(context, dtype=np.float64).reshape(-1, 2), "context", batched=False)
    if ctx.shape[0] > GRID_MAX_CONTEXT:
        raise ValueError(f"the Bayes grid takes at most {GRID_MAX_CONTEXT} points, got {ctx.shape[0]}")
    prior = as_prior(prior)
    cap = GRID_MAX_RESOLUTION_ANISO if prior.anisotropic else GRID_MAX_RESOLUTION
    res = max(2, min(int(resolution), cap))
    return _cached_grid(tuple(map(tuple, ctx.tolist())), prior, (float(box[0]), float(box[1])), res)


@functools.lru_cache(maxsize=64)
def _cached_grid(context: tuple, prior: MixturePrior, box: tuple[float, float], res: int):
    xs = grid_axis(box, res)
    query = grid_points(box, res)[0].numpy()
    ctx = np.array(context, dtype=np.float64).reshape(-1, 2)
    lp = mixture_log_predictive(ctx, query, prior, gibbs=GRID_GIBBS, shape=GRID_SHAPE).reshape(res, res)
    xs.setflags(write=False)
    lp.setflags(write=False)
    return xs, lp


# ---- anisotropic components (aspect ratio > 1, uniform rotation) -----------------------------------
#
# A component now has covariance R(t) diag(s^2 r, s^2 / r) R(t)^T with s, r, t drawn per component.
# Given (s, r, t) the prior of the mean N(0, a^2 I) is rotation invariant, so in the component's own
# axes the two coordinates are independent and each is the 1-D version of the isotropic formula
# above (variance lambda_i in place of s^2): the mean integrates out in closed form. The shape
# (s, r, t) is integrated on a product rule: Gauss-Legendre over s and r, the trapezoid rule over t
# (periodic, so it converges geometrically). The truncation of the mean to the square is a
# bivariate normal rectangle probability, computed by 1-D quadrature (`rect_log_mass`).
#
# The number of components K (uniform over a range) is folded into the partition prior instead of
# being a hypothesis with its own evidence: given K the components are exchangeable and a block's
# marginal likelihood does not depend on K, so p(partition with b blocks) = sum_K p(K) K!/((K-b)! K^n)
# and p(q | partition) = E[1/K | b] sum_blocks p(q | block) + E[(K-b)/K | b] p0(q). The predictive is
# then linear in the blocks: p(q | D) = sum_blocks W(block) p(q | block) + W0 p0(q), with W summed over
# the partitions (exact enumeration) or over the distinct partitions a collapsed Gibbs sampler
# visited, each with its exact posterior weight within that set.

RECT_NODES = 48  # Gauss-Legendre nodes of the rectangle quadrature (see _rect_quadrature)
NODE_PRUNE_NATS = 30.0  # a block's shape nodes this far below its best carry < e^-30 of its predictive
BLOCK_PRUNE_NATS = 30.0  # blocks whose weight is this far below the total are left out (share < 1e-12)


@dataclass(frozen=True)
class ShapeRule:
    """Quadrature over one component's shape: nodes for the std s and the aspect ratio r
    (Gauss-Legendre over their ranges), and angles (equally spaced over [0, pi): the trapezoid rule).

    Accuracy (tests/test_anisotropic.py): the default matches a brute-force Monte Carlo over the
    prior to the Monte Carlo's error at n <= 4; with many points in one component the posterior over
    the angle narrows (about 0.07 rad at 32 points and aspect 4) and more angles are needed for
    1e-3 nats; `ANISO_EVAL_RULE` is a finer rule for checking the default at large n (the
    evaluation tables use the default; their error at n = 32 has not been measured yet)."""

    n_std: int = 8
    n_ratio: int = 6
    n_angle: int = 16
    # nodes of the rectangle quadrature for the truncation (rect_log_mass): 16 are 3-10x cheaper than
    # RECT_NODES and move log p(q | D) by < 1e-4 nats at n = 2 and 8 on the wide prior (tests: < 1e-3)
    rect_nodes: int = 16

    def __post_init__(self) -> None:
        counts = (self.n_std, self.n_ratio, self.n_angle)
        if min(counts) < 1 or max(counts) > 64:
            raise ValueError(f"ShapeRule node counts must lie in [1, 64], got {self}")
        if not 2 <= self.rect_nodes <= 256:
            raise ValueError(f"rect_nodes must lie in [2, 256], got {self.rect_nodes}")


ANISO_EVAL_RULE = ShapeRule(n_std=10, n_ratio=8, n_angle=24)
# the app's overlay: 288 nodes and a 12-node rectangle rule, about 40x cheaper than ShapeRule() on a
# 60 x 60 grid; a picture, so 1e-2 nats is plenty (measured against ShapeRule() in the tests)
GRID_SHAPE = ShapeRule(n_std=6, n_ratio=4, n_angle=12, rect_nodes=12)


def _features(x: np.ndarray) -> np.ndarray:
    """Second moments (..., 3): x^2, xy, y^2 of points (..., 2)."""
    return np.stack([x[..., 0] * x[..., 0], x[..., 0] * x[..., 1], x[..., 1] * x[..., 1]], -1)


def rect_log_mass(
    mx: np.ndarray, my: np.ndarray, vxx: np.ndarray, vxy: np.ndarray, vyy: np.ndarray, limit: float,
    nodes: int = RECT_NODES,
) -> np.ndarray:
    """log P(|X| <= L, |Y| <= L) for (X, Y) ~ N((mx, my), [[vxx, vxy], [vxy, vyy]]), elementwise.

    Far from the edges (TAIL_SD sds) it is 0; uncorrelated, a product of 1-D terms; otherwise
    P = P(|X| <= L) E[P(|Y| <= L | X) | |X| <= L], the expectation by Gauss-Legendre in the
    quantile u of the truncated X (x = mx + sd Phi^-1(u), in log space so far tails stay exact).
    """
    arrays = (np.asarray(v, dtype=np.float64) for v in (mx, my, vxx, vxy, vyy))
    mx, my, vxx, vxy, vyy = np.broadcast_arrays(*arrays)
    out = np.zeros(mx.shape)
    sdx, sdy = np.sqrt(vxx), np.sqrt(vyy)
    near = (limit - np.abs(mx) < TAIL_SD * sdx) | (limit - np.abs(my) < TAIL_SD * sdy)
    if not near.any():
        return out
    mxn, myn, sxn, syn, cov = mx[near], my[near], sdx[near], sdy[near], vxy[near]
    rho = cov / (sxn * syn)
    res = _log_mass_inside(mxn, sxn, limit) + _log_mass_inside(myn, syn, limit)
    dep = np.abs(rho) > 1e-9
    if dep.any():
        res[dep] = _rect_quadrature(mxn[dep], myn[dep], sxn[dep], syn[dep], rho[dep], limit, nodes)
    out[near] = res
    return out


@functools.lru_cache(maxsize=8)
def _unit_gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = np.polynomial.legendre.leggauss(nodes)
    return (t + 1) / 2, np.log(w / 2)


def _rect_quadrature(mx, my, sx, sy, rho, limit: float, nodes: int = RECT_NODES) -> np.ndarray:
    """rect_log_mass for correlated elements (F,). The quantile substitution puts the nodes where X
    has its mass; where P(|Y| <= L | x) switches steeply far in the tail of X it converges
    algebraically: 48 nodes give an absolute error below 3e-5 on the mass (tests: < 1e-4)."""
    flip = mx < 0  # reflect x so its mean is >= 0: the box is symmetric; the covariance changes sign
    mx, rho = np.where(flip, -mx, mx), np.where(flip, -rho, rho)
    lo, hi = (-limit - mx) / sx, (limit - mx) / sx  # lo < 0: [lo, hi] straddles 0 or lies in the lower tail
    log_zx = log_diff_ndtr(lo, hi)
    cond_sd = sy * np.sqrt(np.maximum(1 - rho * rho, 1e-300))
    # E[Y | x] is linear in x, so over x in [lo, hi] (standardised) it is extreme at the ends: where
    # both ends leave Y's box TAIL_SD conditional sds away, P(|Y| <= L | x) > 1 - 1.3e-12 throughout
    # and the element is X's mass alone (most elements, and the quadrature's cost)
    ends = np.maximum(np.abs(my + rho * sy * lo), np.abs(my + rho * sy * hi))
    corr = limit - ends < TAIL_SD * cond_sd
    out = log_zx.copy()
    if not corr.any():
        return out
    lo, log_zx, mx, my, sy, rho, cond_sd = (v[corr] for v in (lo, log_zx, mx, my, sy, rho, cond_sd))
    t, log_w = _unit_gauss_legendre(nodes)
    log_u = np.logaddexp(log_ndtr(lo)[:, None], np.log(t)[None] + log_zx[:, None])  # (F, J)
    x_std = ndtri_exp(np.minimum(log_u, 0.0))  # standardised x of the nodes
    cond_m = my[:, None] + rho[:, None] * sy[:, None] * x_std
    g = _log_mass_inside(cond_m, np.broadcast_to(cond_sd[:, None], cond_m.shape), limit)  # far tails: 0
    out[corr] = log_zx + _lse(g + log_w[None], axis=1)
    return out


@dataclass(frozen=True)
class ShapeHypothesis:
    """An anisotropic prior's component model: mean_std a, shape nodes (G,) (major and minor
    variances lam1, lam2, the major axis (cos, sin) and log weights), K uniform over [kmin, kmax]."""

    kmin: int
    kmax: int
    a: float
    limit: float
    lam1: np.ndarray
    lam2: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    log_w: np.ndarray
    rect_nodes: int = RECT_NODES

    @property
    def truncated(self) -> bool:
        return math.isfinite(self.limit) and self.a > 0

    @property
    def log_mass_prior(self) -> float:
        return 2 * float(log_diff_ndtr(np.array(-self.limit / self.a), np.array(self.limit / self.a)))

    def _rotate(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 2) -> coordinates (..., G) along the major and the minor axis of every node."""
        x, y = v[..., 0, None], v[..., 1, None]
        return x * self.cos + y * self.sin, -x * self.sin + y * self.cos

    def posterior(self, n: np.ndarray, s_sum: np.ndarray) -> tuple[np.ndarray, ...]:
        """Posterior of the mean per node, in the node's axes: m1, m2, v1, v2 (..., G)."""
        a2 = self.a * self.a
        s1, s2 = self._rotate(s_sum)
        d1, d2 = self.lam1 + n[..., None] * a2, self.lam2 + n[..., None] * a2
        return a2 * s1 / d1, a2 * s2 / d2, self.lam1 * a2 / d1, self.lam2 * a2 / d2

    def log_inside(self, m1, m2, v1, v2) -> np.ndarray:
        """log P(mean inside the square) for posteriors given in the nodes' axes (..., G)."""
        c, s = self.cos, self.sin
        return rect_log_mass(c * m1 - s * m2, s * m1 + c * m2, c * c * v1 + s * s * v2,
                             c * s * (v1 - v2), s * s * v1 + c * c * v2, self.limit, self.rect_nodes)

    def log_marginal_nodes(self, n: np.ndarray, s_sum: np.ndarray, sq: np.ndarray) -> np.ndarray:
        """log p(data | node) + log w per node: n (...), S (..., 2), sq (..., 3) = sums of x^2, xy, y^2."""
        a2 = self.a * self.a
        c, s = self.cos, self.sin
        nn = n[..., None]
        s1, s2 = self._rotate(s_sum)
        qxx, qxy, qyy = sq[..., 0, None], sq[..., 1, None], sq[..., 2, None]
        q1 = qxx * c * c + 2 * qxy * c * s + qyy * s * s
        q2 = qxx * s * s - 2 * qxy * c * s + qyy * c * c
        out = -nn * LOG_2PI + self.log_w
        for lam, si, qi in ((self.lam1, s1, q1), (self.lam2, s2, q2)):
            d = lam + nn * a2
            out = out - 0.5 * ((nn - 1) * np.log(lam) + np.log(d) + (qi - a2 * si * si / d) / lam)
        if self.truncated:
            out = out + self.log_inside(*self.posterior(n, s_sum)) - self.log_mass_prior
        return out

    def log_marginal(self, n: np.ndarray, s_sum: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return _lse(self.log_marginal_nodes(n, s_sum, sq), axis=-1)

    def log_block_predictive(
        self, n: float, s_sum: np.ndarray, sq: np.ndarray, query: np.ndarray
    ) -> np.ndarray:
        """log p(q | one block's data) (M,) for block stats (scalars, (2,), (3,)) and queries (M, 2):
        per node N(q; m, V + Sigma) times P(inside | data + q) / P(inside | data), summed over the
        nodes with the block's posterior weights (nodes below NODE_PRUNE_NATS are skipped)."""
        n_arr = np.asarray(float(n))
        lw = self.log_marginal_nodes(n_arr, s_sum, sq)
        lw = lw - _lse(lw, axis=-1)
        keep = lw > lw.max() - NODE_PRUNE_NATS
        h = _subset(self, keep)
        lw = lw[keep]
        m1, m2, v1, v2 = h.posterior(n_arr, s_sum)
        t1, t2 = v1 + h.lam1, v2 + h.lam2
        q1, q2 = h._rotate(query)  # (M, G')
        lp = lw - LOG_2PI - 0.5 * np.log(t1 * t2) - 0.5 * ((q1 - m1) ** 2 / t1 + (q2 - m2) ** 2 / t2)
        if h.truncated:
            before = h.log_inside(m1, m2, v1, v2)
            after = h.log_inside(*h.posterior(np.asarray(n + 1.0), s_sum + query))  # (M, G')
            lp = lp + after - before
        return _lse(lp, axis=-1)


def _subset(h: ShapeHypothesis, keep: np.ndarray) -> ShapeHypothesis:
    return ShapeHypothesis(h.kmin, h.kmax, h.a, h.limit, h.lam1[keep], h.lam2[keep], h.cos[keep],
                           h.sin[keep], h.log_w[keep], h.rect_nodes)


def shape_hypothesis(prior: MixturePrior, rule: ShapeRule = ShapeRule()) -> ShapeHypothesis:
    """The component model of an anisotropic prior on the rule's nodes."""
    if not isinstance(prior.mean_std, (int, float)) and prior.mean_std[0] != prior.mean_std[1]:
        raise CapabilityError("no Bayes predictive for an anisotropic prior with a range of mean_std")
    a = float(prior.mean_std if isinstance(prior.mean_std, (int, float)) else prior.mean_std[0])
    s, lw_s = quadrature(prior.component_std, rule.n_std)
    if np.any(s <= 0):
        raise ValueError(f"component std must be positive, got {prior.component_std!r}")
    r, lw_r = quadrature(prior.aspect_ratio, rule.n_ratio)
    isotropic = bool(np.all(r == 1.0))
    n_t = 1 if isotropic else rule.n_angle
    t = np.pi * np.arange(n_t) / n_t
    ss, rr, tt = (v.ravel() for v in np.meshgrid(s, r, t, indexing="ij"))
    lw = (lw_s[:, None, None] + lw_r[None, :, None] - math.log(n_t) + np.zeros((1, 1, n_t))).ravel()
    ks = prior.n_components
    kmin, kmax = (int(ks[0]), int(ks[1])) if isinstance(ks, tuple) else (int(ks), int(ks))
    limit = math.inf if prior.mean_limit is None else float(prior.mean_limit)
    return ShapeHypothesis(kmin, kmax, a, limit, ss * ss * rr, ss * ss / rr, np.cos(tt), np.sin(tt), lw,
                           rule.rect_nodes)


def partition_prior(kmin: int, kmax: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For b = 0..kmax+1 blocks among n points, K uniform over [kmin, kmax]: log p(partition) (the
    unlabelled set partition), log E[1/K | b] and log E[(K - b)/K | b] (the share of the empty
    components in the predictive). b = kmax + 1 is impossible (-inf), for indexing convenience."""
    ks = np.arange(kmin, kmax + 1)
    lp = np.full(kmax + 2, -np.inf)
    log_a = np.full(kmax + 2, -np.inf)
    log_b = np.full(kmax + 2, -np.inf)
    for b in range(kmax + 1):
        ok = ks >= b
        if not ok.any():
            continue
        k = ks[ok].astype(np.float64)
        falling = np.array([math.lgamma(v + 1) - math.lgamma(v - b + 1) for v in k])  # K! / (K - b)!
        lj = falling - n * np.log(k) - math.log(len(ks))
        lp[b] = _lse(lj, axis=0)
        post = lj - lp[b]
        log_a[b] = _lse(post - np.log(k), axis=0)
        empty = k > b
        if empty.any():
            log_b[b] = _lse(post[empty] + np.log((k[empty] - b) / k[empty]), axis=0)
    return lp, log_a, log_b


def _subset_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stats of every subset of the N points (bitmask 0..2^N-1): n (2^N,), S (2^N, 2), sq (2^N, 3)."""
    n = x.shape[0]
    masks = np.arange(1 << n)
    member = ((masks[:, None] >> np.arange(n)) & 1).astype(np.float64)  # (2^N, N)
    return member.sum(1), member @ x, member @ _features(x)


def _masks(z: np.ndarray) -> np.ndarray:
    """Bitmask of each label's block (..., K) for label strings z (..., N) with labels < K."""
    k = int(z.max()) + 1 if z.size else 0
    bits = (1 << np.arange(z.shape[-1])).astype(np.int64)
    return np.stack([((z == j) * bits).sum(-1) for j in range(k)], -1)


def _aniso_block_weights(h: ShapeHypothesis, x: np.ndarray) -> tuple[dict[int, float], float]:
    """Exact: log W(block) for every block with weight, and log W0 (empty components), one task."""
    n = x.shape[0]
    if n == 0:
        return {}, 0.0
    z = set_partitions(n, h.kmax)  # (P, N)
    cnt, s_sum, sq = _subset_stats(x)
    log_m = h.log_marginal(cnt, s_sum, sq)  # (2^N,)
    masks = _masks(z)  # (P, B)
    b = (masks > 0).sum(1)
    lp, log_a, log_b = partition_prior(h.kmin, h.kmax, n)
    joint = lp[b] + np.where(masks > 0, log_m[masks], 0.0).sum(1)
    post = joint - _lse(joint, axis=0)
    return _accumulate(masks, post, b, log_a, log_b)


def _accumulate(masks: np.ndarray, log_w: np.ndarray, b: np.ndarray, log_a: np.ndarray, log_b: np.ndarray):
    """Block weights W(block) = sum over partitions holding it of w E[1/K | b], and W0."""
    per = log_w[:, None] + log_a[b][:, None] + np.zeros(masks.shape)
    valid = masks > 0
    flat_m, flat_w = masks[valid], per[valid]
    order = np.argsort(flat_m, kind="stable")
    flat_m, flat_w = flat_m[order], flat_w[order]
    uniq, start = np.unique(flat_m, return_index=True)
    weights = {int(m): float(_lse(w, axis=0)) for m, w in zip(uniq, np.split(flat_w, start[1:]), strict=True)}
    w0 = log_w + log_b[b]
    return weights, float(_lse(w0, axis=0)) if np.isfinite(w0).any() else -math.inf


def _aniso_predictive_from_weights(
    h: ShapeHypothesis, x: np.ndarray, weights: dict[int, float], w0: float, query: np.ndarray
) -> np.ndarray:
    """sum_blocks W p(q | block) + W0 p0(q). Blocks go in order of weight; the rest are skipped once
    W plus an upper bound of the block's density (its sharpest node's peak over P(inside)) is
    BLOCK_PRUNE_NATS below the smallest total so far: a light block can still dominate at a query
    far from the heavy ones (an empty component's p0 beside the context's blocks), so weight alone
    does not decide."""
    bits = np.arange(x.shape[0])
    blocks = [(w0, 0)] + sorted(((w, m) for m, w in weights.items()), reverse=True)
    blocks.sort(key=lambda b: -b[0])
    total = None
    for w, mask in blocks:
        if not np.isfinite(w):
            continue
        pts = x[((mask >> bits) & 1).astype(bool)]
        stats = (float(len(pts)), pts.sum(0), _features(pts).sum(0))
        if total is not None and w + _log_density_bound(h, *stats) < total.min() - BLOCK_PRUNE_NATS:
            continue
        term = w + h.log_block_predictive(*stats, query)
        total = term if total is None else np.logaddexp(total, term)
    assert total is not None
    return total


def _log_density_bound(h: ShapeHypothesis, n: float, s_sum: np.ndarray, sq: np.ndarray) -> float:
    """An upper bound of log p(q | block) over all q: max over nodes of the Gaussian's peak divided by
    P(mean inside | block) (the truncation ratio's numerator is <= 1)."""
    n_arr = np.asarray(n)
    m1, m2, v1, v2 = h.posterior(n_arr, s_sum)
    peak = -LOG_2PI - 0.5 * np.log((v1 + h.lam1) * (v2 + h.lam2))
    if h.truncated:
        peak = peak - h.log_inside(m1, m2, v1, v2)
    return float(peak.max())


def _aniso_gibbs_weights(
    h: ShapeHypothesis, context: np.ndarray, cfg: GibbsConfig, rng: np.random.Generator
) -> list[tuple[dict[int, float], float]]:
    """Collapsed Gibbs over labelled assignments (means and shapes integrated out, K folded into the
    partition prior), for contexts (T, N, 2): per task the block weights of the distinct partitions
    visited after burn-in, each weighted by its exact posterior within that set."""
    t, n = context.shape[:2]
    c, k = cfg.chains, h.kmax
    exact_h, h = h, dataclasses.replace(h, limit=math.inf)
    # The chains walk the untruncated model (no rectangle masses: most of the cost); the visited
    # partitions are weighted by the exact, truncated posterior below, so the walk only has to find
    # the partitions with mass, and truncating the means at mean_limit barely moves those.
    x = np.broadcast_to(context[:, None], (t, c, n, 2))
    f = _features(x)  # (T, C, N, 3)
    cnt, s_sum, sq = np.zeros((t, c, k)), np.zeros((t, c, k, 2)), np.zeros((t, c, k, 3))
    base = np.zeros((t, c, k))
    z = np.full((t, c, n), -1)
    eye = np.eye(k)
    ti, ci = np.meshgrid(np.arange(t), np.arange(c), indexing="ij")

    def add(idx: np.ndarray | int, n_now: int) -> None:
        xi, fi = x[ti, ci, idx], f[ti, ci, idx]
        gain = h.log_marginal(cnt + 1, s_sum + xi[:, :, None], sq + fi[:, :, None])  # (T, C, K)
        lp = partition_prior(h.kmin, h.kmax, n_now)[0]
        b = (cnt > 0).sum(-1)
        # a labelled state with b blocks has prior p(partition) / (kmax! / (kmax - b)!)
        lab = lp - np.array([math.lgamma(k + 1) - math.lgamma(max(k - j, 0) + 1) for j in range(k + 2)])
        prior = np.where(cnt == 0, lab[np.minimum(b + 1, k + 1)][..., None], lab[b][..., None])
        new = np.argmax(gain - base + prior + rng.gumbel(size=base.shape), axis=-1)
        oh = eye[new]
        cnt[...] += oh
        s_sum[...] += oh[..., None] * xi[:, :, None]
        sq[...] += oh[..., None] * fi[:, :, None]
        base[ti, ci, new] = gain[ti, ci, new]
        z[ti, ci, idx] = new

    def remove(i: int) -> None:
        old = z[:, :, i]
        oh = eye[old]
        cnt[...] -= oh
        s_sum[...] -= oh[..., None] * x[:, :, i, None]
        sq[...] -= oh[..., None] * f[:, :, i, None]
        base[ti, ci, old] = h.log_marginal(cnt[ti, ci, old], s_sum[ti, ci, old], sq[ti, ci, old])

    order = np.argsort(rng.random((t, c, n)), axis=-1)
    for j in range(n):
        add(order[:, :, j], j + 1)
    states = []
    lp_n = partition_prior(h.kmin, h.kmax, n)[0]
    lab_n = lp_n - np.array([math.lgamma(k + 1) - math.lgamma(max(k - j, 0) + 1) for j in range(k + 2)])
    for sweep in range(cfg.burn_in + cfg.sweeps):
        for i in range(n):
            remove(i)
            add(i, n)
        if sweep < cfg.burn_in:
            joint = base + (lab_n[(cnt > 0).sum(-1)] / k)[..., None]  # spread: .sum(-1) is log p(z, D)
            _restart_stuck(joint, (cnt, s_sum, sq, base, z), cfg.stuck_nats)
        else:
            states.append(z.copy())
    zs = np.stack(states, 2)  # (T, C, S, N)
    lp, log_a, log_b = partition_prior(h.kmin, h.kmax, n)
    bits = 1 << np.arange(n)
    out = []
    for i in range(t):
        flat = zs[i].reshape(-1, n)
        masks = np.sort(np.stack([((flat == j) * bits).sum(-1) for j in range(k)], -1), axis=-1)
        masks = np.unique(masks, axis=0)  # the distinct partitions visited (label order removed)
        b = (masks > 0).sum(1)
        # Weight the visited partitions by their exact posterior, not by visit counts: single-site
        # Gibbs moves between modes (one block vs two) rarely, and with K a range the chains can sit
        # in different modes; exact weights over the visited set are right whenever every partition
        # of non-negligible mass was visited by some chain.
        blocks, inverse = np.unique(masks, return_inverse=True)
        member = ((blocks[:, None] & bits) > 0).astype(np.float64)
        log_m = exact_h.log_marginal(member.sum(1), member @ context[i], member @ _features(context[i]))
        log_m = np.where(blocks == 0, 0.0, log_m)[inverse.reshape(masks.shape)]
        joint = lp[b] + log_m.sum(1)
        out.append(_accumulate(masks, joint - _lse(joint, axis=0), b, log_a, log_b))
    return out


ANISO_EXACT_MAX_PARTITIONS = 25000  # exact enumeration up to this many set partitions (and N <= 12)


def aniso_log_predictive_batch(
    context: np.ndarray, query: np.ndarray, prior: MixturePrior, method: str = "auto",
    gibbs: GibbsConfig | None = None, rule: ShapeRule = ShapeRule(),
) -> np.ndarray:
    """log p(q | D) (T, M) under an anisotropic prior (see the section comment): exact
    enumeration of the partitions while there are at most ANISO_EXACT_MAX_PARTITIONS, else
    collapsed Gibbs; the shape on the rule's nodes either way."""
    h = shape_hypothesis(prior, rule)
    n = context.shape[1]
    exact = _enumerates(method, n, h.kmax, ANISO_EXACT_MAX_PARTITIONS) and (method == "exact" or n <= 12)
    if method == "exact" and (n > 14 or n_partitions(n, h.kmax) > 10 * ANISO_EXACT_MAX_PARTITIONS):
        raise ValueError(f"exact enumeration of {n} points into {h.kmax} components is too large; use gibbs")
    if exact or n == 0:
        weights = [_aniso_block_weights(h, ctx) for ctx in context]
    else:
        cfg = gibbs or GibbsConfig()
        weights = _aniso_gibbs_weights(h, context, cfg, np.random.default_rng(cfg.seed))
    return np.stack([
        _aniso_predictive_from_weights(h, ctx, w, w0, q)
        for ctx, (w, w0), q in zip(context, weights, query, strict=True)
    ])
