"""EnergyTransformer: a causal transformer that outputs E(x_n | x_<n) at every position.

Shapes: B batch (tasks), N context points, M query points, P prefix groups,
H heads, D model width, hd = D / H.

The fast path ("context once, queries as extra tokens"): with a causal mask the
hidden states of x_1..x_{n-1} never depend on later tokens, so E(q | x_<n) is the
output of one extra token q that, at every layer, attends to the cached keys and
values of the context positions j < n plus to its own key. A heatmap of M points
then costs one context pass plus M query tokens instead of M full sequences, and
every prefix length is one prefix-masked batch. `energies` is the plain causal
forward; the query path must (and is tested to) agree with appending q to the
prefix and running `energies`.

The energy is  E = energy_scale * (f_theta(x | D) + |x|^2 / (2 base_std^2)):
the network output f plus a fixed broad quadratic base, so that -grad E points
inward far from the data, where the learned part goes flat (for regression,
`base_axes="y"`: the base acts on y only). `energy_scale` is an
inverse temperature calibrated after training (1.0 for an uncalibrated model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from iclebm.card import box_of
from iclebm.errors import ContextTooLongError
from iclebm.models.backbone import (
    BackboneConfig,
    Block,
    ContextCache,
    _chunks,
    check_batches,
    check_lengths,
    init_weights,
)
from iclebm.models.order import ensemble_energy, prefix_ensembles


@dataclass
class EnergyConfig(BackboneConfig):
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    mlp_ratio: int = 4
    max_context: int = 64  # longest context accepted (no positional embeddings, but
    # the model only saw training sequences up to this length)
    input_scale: float = 0.25  # coordinates are multiplied by this before embedding
    base_std: float = 3.0  # width of the fixed quadratic base term; <= 0 disables it
    base_axes: str = "xy"  # coordinates the base term acts on: "xy" (densities) or "y" (regression:
    # E(y | x, D) is normalised over y per x, so a base over x would only shift each column)
    energy_scale: float = 1.0  # calibrated inverse temperature
    # Fourier features of the input (0: the plain linear embedding): the embedding also sees
    # sin/cos(w . x) for F fixed frequencies w, with |w| log-spaced in fourier_freqs (radians per
    # unit) and golden-angle directions. A dot product of two such feature vectors is a
    # shift-invariant kernel of x - x', so attention can weigh context points by distance from
    # the first layer on; with a linear embedding that takes a layer of MLP first.
    fourier_features: int = 0
    fourier_freqs: tuple[float, float] = (0.25, 4.0)
    # Optional calibrated inverse temperatures per context length, at n = 0, 1, 2, 4, ..., 2^(k-1)
    # (linear in log2(1 + n) in between, constant past the last knot); multiplies energy_scale.
    length_scales: list[float] | None = None

    def __post_init__(self) -> None:
        self._check_backbone()
        if not self.energy_scale > 0:
            raise ValueError("energy_scale must be positive")
        self.fourier_freqs = (float(self.fourier_freqs[0]), float(self.fourier_freqs[1]))
        if int(self.fourier_features) < 0 or not 0 < self.fourier_freqs[0] <= self.fourier_freqs[1]:
            raise ValueError("fourier_features must be >= 0 and fourier_freqs a range 0 < lo <= hi")
        if self.base_axes not in ("xy", "y"):
            raise ValueError(f"base_axes must be 'xy' or 'y', got {self.base_axes!r}")
        if self.length_scales is not None:
            self.length_scales = [float(v) for v in self.length_scales]
            if not self.length_scales or not all(v > 0 and math.isfinite(v) for v in self.length_scales):
                raise ValueError("length_scales must be a non-empty list of positive numbers")

    @staticmethod
    def length_knots(k: int) -> list[int]:
        """Context lengths at which length_scales are given: 0, 1, 2, 4, ..."""
        return [0] + [2**i for i in range(k - 1)]

    def scale_for_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Total inverse temperature for each context length (float64 tensor, lengths' shape)."""
        lengths = torch.as_tensor(lengths, dtype=torch.float64)
        if self.length_scales is None:
            return torch.full_like(lengths, self.energy_scale)
        dev = lengths.device  # the knots sit beside the lengths (the model's device in `energies`)
        knots = torch.log2(1 + torch.tensor(self.length_knots(len(self.length_scales)), dtype=torch.float64,
                                            device=dev))
        vals = torch.tensor(self.length_scales, dtype=torch.float64, device=dev)
        x = torch.log2(1 + lengths).clamp(max=float(knots[-1]))
        i = torch.searchsorted(knots, x, right=True).clamp(1, max(1, len(knots) - 1))
        if len(knots) == 1:
            return self.energy_scale * vals[0] * torch.ones_like(lengths)
        x0, x1, v0, v1 = knots[i - 1], knots[i], vals[i - 1], vals[i]
        return self.energy_scale * (v0 + (v1 - v0) * (x - x0) / (x1 - x0))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fourier_freqs"] = list(self.fourier_freqs)  # as JSON stores it
        return d






class EnergyTransformer(nn.Module):
    def __init__(self, config: EnergyConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        f = config.fourier_features
        self.embed = nn.Linear(2 + 2 * f, d)
        if f > 0:
            self.register_buffer("fourier_w", fourier_frequencies(f, *config.fourier_freqs))  # (F, 2)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        self.card: dict = {}  # filled by load_checkpoint / the trainer
        init_weights(self, config.n_layer)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    # ---- input checks ----------------------------------------------------------------

    def _check_points(self, x: torch.Tensor, name: str, allow_empty: bool = False) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != 2:
            raise ValueError(f"{name} must have shape (batch, points, 2), got {tuple(x.shape)}")
        if not allow_empty and x.shape[1] == 0:
            raise ValueError(f"{name} is empty: pass at least one point")
        if not x.is_floating_point():
            x = x.to(self.dtype)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or inf")
        return x.to(device=self.device, dtype=self.dtype)  # inputs follow the model's device

    def _check_context(self, context: torch.Tensor) -> torch.Tensor:
        context = self._check_points(context, "context", allow_empty=True)
        if context.shape[1] > self.config.max_context:
            raise ContextTooLongError(
                f"context has {context.shape[1]} points; this model reads at most "
                f"{self.config.max_context} (drop the oldest points or use a larger model)"
            )
        return context

    def _check_sequence(self, seq: torch.Tensor) -> torch.Tensor:
        """A sequence scored position by position: at most max_context context points plus one."""
        seq = self._check_points(seq, "seq")
        if seq.shape[1] > self.config.max_context + 1:
            raise ContextTooLongError(
                f"sequence has {seq.shape[1]} points; this model reads at most "
                f"{self.config.max_context} context points plus one"
            )
        return seq

    # ---- energy parts -----------------------------------------------------------------

    def base_energy(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 2) -> (...): the fixed quadratic base term (before energy_scale)."""
        if self.config.base_std <= 0:
            return x.new_zeros(x.shape[:-1])
        if self.config.base_axes == "y":
            x = x[..., 1:]
        return 0.5 * (x * x).sum(-1) / self.config.base_std**2

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 2) -> (..., D)."""
        scaled = x * self.config.input_scale
        if self.config.fourier_features == 0:
            return self.embed(scaled)
        phase = x @ self.fourier_w.T  # (..., F), raw coordinates: the frequencies are per unit
        return self.embed(torch.cat([scaled, phase.sin(), phase.cos()], -1))

    def _readout(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(h)).squeeze(-1)

    def learned_energies(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) -> (B, N): the network part f of E(x_n | x_<n), unscaled."""
        h = self._embed(seq)
        for block in self.blocks:
            h, _, _ = block.forward_context(h)
        return self._readout(h)

    def encode_context(self, context: torch.Tensor) -> ContextCache:
        """Run the context once and keep every layer's keys/values. context: (B, N, 2)."""
        context = self._check_context(context)
        keys, values = [], []
        h = self._embed(context)
        for block in self.blocks:
            h, k, v = block.forward_context(h)
            keys.append(k)
            values.append(v)
        return ContextCache(keys, values, context.shape[1], self._readout(h))

    def learned_energy_cached(
        self, query: torch.Tensor, cache: ContextCache, lengths: torch.Tensor | None = None,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Network part f of E(query[:, p, m] | context[:, :lengths[p]]).

        query: (B, P, M, 2), or (B, 1, M, 2) shared by all groups; lengths: (P,) ints in [0, N]
        (default: all N). Returns (B, P, M). weights: see `Block.forward_query` (one entry
        per layer is appended).
        """
        b, p, m, _ = query.shape
        n = cache.length
        hidden = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=query.device)
            check_lengths(lengths, p, n)
            p = lengths.shape[0]  # a (B, 1, M, 2) query is shared by all P prefix groups
            if bool((lengths < n).any()):
                hidden = torch.arange(n, device=query.device)[None, :] >= lengths[:, None]  # (P, N)
        h = self._embed(query)
        for block, k, v in zip(self.blocks, cache.keys, cache.values, strict=True):
            h = block.forward_query(h, k, v, hidden, groups=p, weights=weights)  # (B, P, M, D)
        return self._readout(h)

    def _total(self, f: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Calibrated energy; lengths (context length of each entry) broadcasts against f."""
        if self.config.length_scales is None:
            return self.config.energy_scale * (f + self.base_energy(x))
        scale = self.config.scale_for_lengths(lengths).to(dtype=f.dtype, device=f.device)
        return scale * (f + self.base_energy(x))

    # ---- public energies --------------------------------------------------------------

    def energies(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) -> (B, N): E(x_n | x_<n) at every position (plain causal forward)."""
        seq = self._check_sequence(seq)
        lengths = torch.arange(seq.shape[1], device=seq.device)[None, :]  # position n sees n points
        return self._total(self.learned_energies(seq), seq, lengths)

    def energy_cached(
        self, query: torch.Tensor, cache: ContextCache, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E(query | context prefix) from an encoded context. query: (B, P, M, 2) -> (B, P, M)."""
        if lengths is None:
            n_ctx = torch.full((query.shape[1],), cache.length)
        else:
            n_ctx = torch.as_tensor(lengths).cpu()
        return self._total(self.learned_energy_cached(query, cache, lengths), query, n_ctx[None, :, None])

    def energy(
        self, query: torch.Tensor, context: torch.Tensor, chunk: int | None = None, orders: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, M, 2), (B, N, 2) -> (B, M): E(q | context). N = 0 is the empty context.

        orders = K > 1: the order ensemble (`iclebm.models.order`): -log of the mean over K orderings
        of the context (the given one first, the others drawn with `generator`) of each ordering's
        density normalised on the standard grid over the card's box."""
        if int(orders) != 1:
            return ensemble_energy(self, query, self._check_context(context), int(orders), generator,
                                   box_of(self), chunk=chunk)
        query = self._check_points(query, "query")
        cache = self.encode_context(context)
        check_batches(query, cache.keys[0].shape[0])
        out = [
            self.energy_cached(q[:, None], cache)[:, 0]
            for q in _chunks(query, chunk or _chunk_size(1, cache.length, self.config))
        ]
        return torch.cat(out, dim=1)

    def attention(
        self, query: torch.Tensor, context: torch.Tensor, chunk: int | None = None
    ) -> list[torch.Tensor]:
        """(B, M, 2), (B, N, 2) -> list over layers of (B, H, M, N + 1) attention weights.

        Row m of head h is how query m, read as the next token after the context, attends
        over the N context points and, last, over itself (each row sums to 1). Computed by
        the same cached query path as `energy`; with N = 0 only the self weight (= 1) is left.
        """
        query = self._check_points(query, "query")
        cache = self.encode_context(context)
        check_batches(query, cache.keys[0].shape[0])
        per_chunk: list[list[torch.Tensor]] = []
        for q in _chunks(query, chunk or _chunk_size(1, cache.length, self.config)):
            w: list[torch.Tensor] = []
            self.learned_energy_cached(q[:, None], cache, weights=w)
            per_chunk.append(w)
        return [torch.cat(layer, dim=2) for layer in zip(*per_chunk, strict=True)]

    def energy_at_prefixes(
        self, query: torch.Tensor, context: torch.Tensor, lengths: list[int] | torch.Tensor,
        chunk: int | None = None, orders: int = 1, generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, M, 2), (B, N, 2), P lengths -> (B, P, M): E(q | context[:, :lengths[p]]).
        orders > 1: each prefix's order ensemble (see `energy`), its orderings drawn per prefix."""
        if int(orders) != 1:
            context = self._check_context(context)
            return prefix_ensembles(self, query, context, lengths, int(orders), generator, chunk)
        query = self._check_points(query, "query")
        cache = self.encode_context(context)
        check_batches(query, cache.keys[0].shape[0])
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=query.device).reshape(-1)
        p = lengths.shape[0]
        out = []
        for q in _chunks(query, chunk or _chunk_size(p, cache.length, self.config)):
            out.append(self.energy_cached(q[:, None], cache, lengths))  # shared by all P groups
        return torch.cat(out, dim=2)

    def energy_all_prefixes(
        self, query: torch.Tensor, context: torch.Tensor, orders: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, M, 2), (B, N, 2) -> (B, N+1, M): E(q | context[:, :n]) for n = 0..N (orders: see `energy`)."""
        context = self._check_context(context)
        return self.energy_at_prefixes(query, context, torch.arange(context.shape[1] + 1), orders=orders,
                                       generator=generator)










def fourier_frequencies(n: int, lo: float, hi: float) -> torch.Tensor:
    """(n, 2) fixed frequency vectors: norms log-spaced from lo to hi, golden-angle directions."""
    k = torch.arange(n, dtype=torch.float64)
    norm = lo * (hi / lo) ** (k / max(1, n - 1))
    angle = k * math.pi * (3 - math.sqrt(5))
    return (norm[:, None] * torch.stack([angle.cos(), angle.sin()], -1)).float()


def _chunk_size(p: int, n: int, cfg: EnergyConfig) -> int:
    """Queries per chunk so the (B, H, P*M, N+1) score tensor stays near 16M entries."""
    return max(256, (1 << 24) // max(1, p * (n + 1) * cfg.n_head))


