"""MixtureDensityTransformer: the parametric in-context peer of the energy model.

Same backbone and context handling as `EnergyTransformer` (Linear(2 -> d) point embedding
with the same input scale, pre-norm causal `Block`s, no positional embeddings), but the
output is a density in closed form: at each position an M-component full-covariance
Gaussian mixture for the next point, trained by exact likelihood. This is the constrained
form that the paper argues against; it is exactly normalised, so it needs no grid, no
Langevin and no calibration.

Shapes: B batch (tasks), N context points, M query points, P prefix groups, K mixture
components, D model width.

Design: the token sequence is [start, x_1, ..., x_N], where `start` is a learned vector
(the "empty context"). With the causal mask, the hidden state of token j has seen the
start token and x_1..x_j only, so a readout of token j is a density for x_{j+1} given
x_<=j; the density for position n depends only on x_<n by construction. Consequences:
- `energies(seq)` of N points runs the N tokens [start, x_1..x_{N-1}] once and scores x_n
  under the mixture read out at token n-1 (x_N itself is never embedded).
- `encode_context(context)` runs the N+1 tokens [start, x_1..x_N] once and yields the
  mixture for every prefix length n = 0..N. A query never enters the transformer: E(q |
  x_<n) is the closed-form mixture of prefix n evaluated at q. A heatmap therefore costs one
  context pass plus M mixture evaluations, and every prefix length is free.
- A start token (rather than a separate n = 0 head) lets the empty-context density share
  the readout with all others, and lets every later token attend to it (a no-op sink).

The mixture of token j: logits (K,), means (K, 2) and a Cholesky factor of each covariance,
L = [[a, 0], [r b, b]] with a, b >= min_std, so that Sigma = L L^T = [[a^2, r a b],
[r a b, b^2 (1 + r^2)]] is positive definite for every output (r is an unbounded shear).
E(x | D) = -log p(x | D) exactly, so exp(-E) integrates to 1 over the plane (tested on the
grid), and -grad E is the score that Langevin and the arrow field use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from iclebm.card import box_of
from iclebm.models.backbone import (
    BackboneConfig,
    Block,
    _chunks,
    check_batches,
    check_lengths,
    init_weights,
)
from iclebm.models.energy import EnergyTransformer
from iclebm.models.order import ensemble_energy, prefix_ensembles

LOG_2PI = math.log(2 * math.pi)
ARCH = "mixture_density_transformer"


@dataclass
class MixtureConfig(BackboneConfig):
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    mlp_ratio: int = 4
    max_context: int = 64  # longest context accepted (the model saw sequences up to this length)
    input_scale: float = 0.25  # coordinates are multiplied by this before embedding
    n_components: int = 8  # K, mixture components per position
    min_std: float = 0.05  # floor on the Cholesky diagonal (data units)
    init_std: float = 3.0  # component width at initialisation (about the prior predictive)

    def __post_init__(self) -> None:
        self._check_backbone("n_components")
        for name in ("input_scale", "min_std", "init_std"):
            v = float(getattr(self, name))
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number")
        if not self.init_std > self.min_std:
            raise ValueError("init_std must exceed min_std")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MixtureParams:
    """Gaussian mixtures with batch shape S: log_weights (*S, K) (normalised), means (*S, K, 2),
    log_a, log_b, shear (*S, K): the Cholesky factor [[a, 0], [shear * b, b]] of each covariance."""

    log_weights: torch.Tensor
    means: torch.Tensor
    log_a: torch.Tensor
    log_b: torch.Tensor
    shear: torch.Tensor

    def map(self, fn) -> MixtureParams:
        """Apply fn to every field; fn gets (tensor, is_means) so it can treat the extra axis."""
        return MixtureParams(
            fn(self.log_weights, False), fn(self.means, True), fn(self.log_a, False),
            fn(self.log_b, False), fn(self.shear, False),
        )

    def detach(self) -> MixtureParams:
        return self.map(lambda t, _: t.detach())

    def select(self, lengths: torch.Tensor) -> MixtureParams:
        """Prefix axis 1 -> the entries at `lengths` (P,): (B, N+1, K...) -> (B, P, K...)."""
        return self.map(lambda t, _: t.index_select(1, lengths))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x (*S', 2), S' broadcastable with S -> (*broadcast)."""
        d = x[..., None, :] - self.means  # (*S, K, 2)
        z1 = d[..., 0] * torch.exp(-self.log_a)
        z2 = d[..., 1] * torch.exp(-self.log_b) - self.shear * z1
        log_n = -0.5 * (z1 * z1 + z2 * z2) - self.log_a - self.log_b - LOG_2PI  # (*S, K)
        return torch.logsumexp(self.log_weights + log_n, dim=-1)

    def covariances(self) -> torch.Tensor:
        """(*S, K, 2, 2) covariance matrices L L^T."""
        a, b, r = self.log_a.exp(), self.log_b.exp(), self.shear
        c12 = r * a * b
        return torch.stack([torch.stack([a * a, c12], -1), torch.stack([c12, b * b * (1 + r * r)], -1)], -2)


@dataclass
class MixtureCache:
    """An encoded context: the mixture for every prefix length n = 0..N, batch shape (B, N+1)."""

    params: MixtureParams
    length: int

    def detach(self) -> MixtureCache:
        return MixtureCache(self.params.detach(), self.length)


class MixtureDensityTransformer(nn.Module):
    arch = ARCH

    def __init__(self, config: MixtureConfig) -> None:
        super().__init__()
        self.config = config
        d, k = config.d_model, config.n_components
        self.embed = nn.Linear(2, d)
        self.start = nn.Parameter(torch.zeros(d))  # the empty-context token
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])  # type: ignore[arg-type]
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, 6 * k)  # per component: logit, mean (2), raw a, raw b, shear
        self.card: dict = {}  # filled by load_checkpoint / the trainer
        init_weights(self, config.n_layer)
        nn.init.normal_(self.start, mean=0.0, std=0.02)
        self._init_head()

    def _init_head(self) -> None:
        """Start near a broad, symmetric-broken mixture: widths init_std, means spread ~ init_std."""
        k, cfg = self.config.n_components, self.config
        with torch.no_grad():
            bias = self.head.bias.view(k, 6)
            bias.zero_()
            bias[:, 1:3].normal_(0.0, cfg.init_std * cfg.input_scale)
            # softplus(raw) = log(init_std / min_std) at raw = bias
            bias[:, 3:5] = math.log(math.expm1(math.log(cfg.init_std / cfg.min_std)))

    # Shared with the energy model (they only use self.embed, dtype and config.max_context).
    dtype = EnergyTransformer.dtype
    device = EnergyTransformer.device
    _check_points = EnergyTransformer._check_points
    _check_context = EnergyTransformer._check_context
    _check_sequence = EnergyTransformer._check_sequence

    # ---- the network ------------------------------------------------------------------

    def _hidden(self, points: torch.Tensor) -> torch.Tensor:
        """Tokens [start, points]: (B, T, 2) -> (B, T+1, D) final hidden states (causal)."""
        b = points.shape[0]
        h = self.embed(points * self.config.input_scale)
        h = torch.cat([self.start.expand(b, 1, -1), h], dim=1)
        for block in self.blocks:
            h, _, _ = block.forward_context(h)
        return self.ln_f(h)

    def _mixture(self, h: torch.Tensor) -> MixtureParams:
        """(..., D) hidden states -> mixtures with batch shape (...)."""
        cfg = self.config
        raw = self.head(h).unflatten(-1, (cfg.n_components, 6))  # (..., K, 6)
        log_min = math.log(cfg.min_std)
        return MixtureParams(
            log_weights=raw[..., 0].log_softmax(-1),
            means=raw[..., 1:3] / cfg.input_scale,
            log_a=log_min + F.softplus(raw[..., 3]),
            log_b=log_min + F.softplus(raw[..., 4]),
            shear=raw[..., 5],
        )

    def mixture(self, context: torch.Tensor) -> MixtureParams:
        """The predicted mixture for every prefix: (B, N, 2) -> params with batch shape (B, N+1)."""
        return self.encode_context(context).params

    # ---- cached evaluation --------------------------------------------------------------

    def encode_context(self, context: torch.Tensor) -> MixtureCache:
        """Run [start, x_1..x_N] once: the mixture of every prefix length 0..N. context: (B, N, 2)."""
        context = self._check_context(context)
        return MixtureCache(self._mixture(self._hidden(context)), context.shape[1])

    def energy_cached(
        self, query: torch.Tensor, cache: MixtureCache, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """-log p(query[:, p, m] | context[:, :lengths[p]]) from an encoded context.

        query: (B, P, M, 2), or (B, 1, M, 2) shared by all groups; lengths: (P,) ints in [0, N]
        (default: all N for every group). Returns (B, P, M).
        """
        p, n = query.shape[1], cache.length
        if lengths is None:
            lengths = torch.full((1,), n, dtype=torch.long)
        else:
            lengths = torch.as_tensor(lengths).long()
            check_lengths(lengths, p, n)
        params = cache.params.select(lengths.to(cache.params.means.device))  # (B, P, K...)
        # one more axis for the M queries: (B, P, 1, K...)
        params = params.map(lambda t, is_means: t.unsqueeze(-3 if is_means else -2))
        return -params.log_prob(query)

    # ---- public energies (the EnergyTransformer contract) ---------------------------------

    def energies(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) -> (B, N): E(x_n | x_<n) = -log p(x_n | x_<n) at every position."""
        seq = self._check_sequence(seq)
        params = self._mixture(self._hidden(seq[:, :-1]))  # (B, N): token n-1 predicts x_n
        return -params.log_prob(seq)

    def energy(
        self, query: torch.Tensor, context: torch.Tensor, chunk: int | None = None, orders: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, M, 2), (B, N, 2) -> (B, M): -log p(q | context). N = 0 is the empty context.
        orders > 1: the order ensemble, as `EnergyTransformer.energy`."""
        if int(orders) != 1:
            return ensemble_energy(self, query, self._check_context(context), int(orders), generator,
                                   box_of(self), chunk=chunk)
        n = self._check_context(context).shape[1]
        return self.energy_at_prefixes(query, context, [n], chunk)[:, 0]

    def energy_at_prefixes(
        self, query: torch.Tensor, context: torch.Tensor, lengths: list[int] | torch.Tensor,
        chunk: int | None = None, orders: int = 1, generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, M, 2), (B, N, 2), P lengths -> (B, P, M): -log p(q | context[:, :lengths[p]]).
        orders > 1: each prefix's order ensemble (see `energy`)."""
        if int(orders) != 1:
            context = self._check_context(context)
            return prefix_ensembles(self, query, context, lengths, int(orders), generator, chunk)
        query = self._check_points(query, "query")
        cache = self.encode_context(context)
        check_batches(query, cache.params.means.shape[0])
        lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
        size = chunk or max(256, (1 << 22) // max(1, lengths.shape[0] * self.config.n_components))
        out = [self.energy_cached(q[:, None], cache, lengths) for q in _chunks(query, size)]
        return torch.cat(out, dim=2)

    # every prefix n = 0..N through energy_at_prefixes, as in the energy model
    energy_all_prefixes = EnergyTransformer.energy_all_prefixes


# ---- training: exact negative log-likelihood of the next point -----------------------------




