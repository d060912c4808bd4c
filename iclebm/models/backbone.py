"""The transformer backbone shared by the energy model and the mixture-density peer: the config
checks, the pre-norm causal Block with its cached query path, the context cache and the init."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Self

import torch
from torch import nn


class BackboneConfig:
    """What the transformer configs (EnergyConfig, iclebm.models.mixture.MixtureConfig) share: the backbone's
    checks and a strict from_dict. Subclasses are dataclasses with n_layer, n_head, d_model,
    mlp_ratio and max_context fields."""

    n_layer: int
    n_head: int
    d_model: int
    mlp_ratio: int
    max_context: int

    def _check_backbone(self, *more_counts: str) -> None:
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        for name in ("n_layer", "n_head", "d_model", "mlp_ratio", "max_context", *more_counts):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> Self:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class ContextCache:
    """An encoded context: per-layer keys/values, lists of (B, H, N, hd), and the learned
    energies f(x_n | x_<n) at its own positions, (B, N), which come free with the pass."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int
    learned: torch.Tensor

    def detach(self) -> ContextCache:
        return ContextCache(
            [k.detach() for k in self.keys], [v.detach() for v in self.values], self.length,
            self.learned.detach(),
        )


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d)
        )

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., T, D) -> three (..., H, T, hd)."""
        *lead, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=-1)
        shape = (*lead, t, self.n_head, d // self.n_head)
        return tuple(z.reshape(shape).transpose(-3, -2) for z in (q, k, v))  # type: ignore[return-value]

    def forward_context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Plain causal self-attention. x: (B, N, D). Returns new x and this layer's k, v."""
        b, n, d = x.shape
        q, k, v = self._qkv(x)  # (B, H, N, hd)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        att = scores.masked_fill(causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.c_proj(y)
        x = x + self.mlp(self.ln_2(x))
        return x, k, v

    def forward_query(
        self, x: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor, hidden: torch.Tensor | None,
        groups: int | None = None, weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Query tokens attending to a cached context prefix and to themselves.

        x: (B, P, M, D) query hidden states, group p sees context positions j < lengths[p];
        k_ctx, v_ctx: (B, H, N, hd); hidden: (P, N) bool mask of context keys to hide, or None.
        x may also be (B, 1, M, D) with groups = P: the same queries under every prefix (the
        film strip); their projections are then computed once and broadcast over the groups.
        weights: if a list is given, this layer's normalised attention weights are appended to
        it, (B, H, P*M, N + 1): over the N context keys (hidden ones get 0) and, last, the
        query's own key. The default (None) path computes nothing extra.
        """
        b, p_in, m, d = x.shape
        p = groups or p_in
        hd = d // self.n_head
        q, k, v = self._qkv(x.reshape(b, p_in * m, d))  # (B, H, P_in*M, hd)
        if p_in != p:
            h = self.n_head
            q, k, v = (
                z.view(b, h, 1, m, hd).expand(-1, -1, p, -1, -1).reshape(b, h, p * m, hd) for z in (q, k, v)
            )
        q = q * (1.0 / math.sqrt(hd))  # scale the (P*M, hd) queries, not the (P*M, N) scores
        n = k_ctx.shape[2]
        # Each query's own key is one extra score beside the context scores: a dense mask
        # over every query's key would cost (P*M)^2 memory.
        s_self = (q * k).sum(-1, keepdim=True)  # (B, H, P*M, 1)
        if n == 0:
            y = v  # softmax over the single self score is 1
            if weights is not None:
                weights.append(torch.ones_like(s_self))
        else:
            # Softmax over [context scores, self score] by hand, in place on the big (P*M, N)
            # score tensor: no concatenated copy, no masked copy. Subtracting a detached max is
            # exact (the shift cancels between numerator and denominator, for values and grads).
            s_ctx = q @ k_ctx.transpose(-1, -2)  # (B, H, P*M, N)
            if hidden is not None:
                bias = torch.zeros(hidden.shape, dtype=s_ctx.dtype, device=s_ctx.device)
                bias.masked_fill_(hidden, float("-inf"))  # (P, N)
                h = self.n_head
                s_ctx = s_ctx.view(b, h, p, m, n).add_(bias[:, None, :]).view(b, h, p * m, n)
            shift = torch.maximum(s_ctx.amax(-1, keepdim=True), s_self).detach()
            e_ctx = s_ctx.sub_(shift).exp_()
            e_self = (s_self - shift).exp()
            denom = e_ctx.sum(-1, keepdim=True) + e_self  # (B, H, P*M, 1)
            y = (e_ctx @ v_ctx + e_self * v) / denom
            if weights is not None:
                weights.append(torch.cat([e_ctx, e_self], -1) / denom)
        y = y.transpose(1, 2).reshape(b, p, m, d)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln_2(x))


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        nn.init.zeros_(module.bias)


def init_weights(model: nn.Module, n_layer: int) -> None:
    """N(0, 0.02) Linear weights and zero biases, then GPT-2's scaled init of the residual projections."""
    model.apply(_init_linear)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


def check_batches(query: torch.Tensor, context_batch: int) -> None:
    if query.shape[0] != context_batch:
        raise ValueError(f"query batch ({query.shape[0]}) and context batch ({context_batch}) differ")


def check_lengths(lengths: torch.Tensor, p: int, n: int) -> None:
    """Prefix lengths for P query groups (or for one group shared by all) over a context of n points."""
    if lengths.ndim != 1 or (p != 1 and lengths.shape[0] != p):
        raise ValueError(f"lengths must have shape ({p},), got {tuple(lengths.shape)}")
    if bool((lengths < 0).any()) or bool((lengths > n).any()):
        raise ValueError(f"prefix lengths must lie in [0, {n}]")


def _chunks(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return list(x.split(size, dim=1)) if x.shape[1] > size else [x]
