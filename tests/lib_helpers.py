"""Shared helpers for the library tests (imported as a module; not a conftest, so that it
cannot clash with the app tests' fixtures): tiny random models with non-trivial attention."""

from __future__ import annotations

from collections.abc import Callable

import torch

from iclebm.models.energy import EnergyConfig, EnergyTransformer


def random_model(
    seed: int = 0, dtype: torch.dtype = torch.float64, std: float = 0.5, **overrides
) -> EnergyTransformer:
    """A tiny EnergyTransformer whose weights are redrawn with a large std.

    The default init (std 0.02) makes attention nearly uniform and the output nearly
    constant, which would let a wrong mask or cache pass an equality test; std 0.5
    gives peaked attention and energies that clearly depend on the context.
    """
    cfg = {"n_layer": 2, "n_head": 2, "d_model": 16, "mlp_ratio": 2, "max_context": 16, "base_std": 4.0}
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = EnergyTransformer(EnergyConfig(**cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("ln") or ".ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            elif p.ndim >= 2:
                p.normal_(0.0, std)
            else:
                p.normal_(0.0, 0.1)
    return model.to(dtype).eval()


def zero_head_model(
    base_std: float = 2.0, dtype: torch.dtype = torch.float64, **overrides
) -> EnergyTransformer:
    """A model whose learned part is exactly 0: E(x | D) = energy_scale * |x|^2 / (2 base_std^2)."""
    model = random_model(dtype=dtype, base_std=base_std, **overrides)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    return model


def naive_energy(
    model: EnergyTransformer, query: torch.Tensor, context: torch.Tensor,
    energies: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The reference the cached path must equal: append each query to the context and run the
    plain causal forward. (B, M, 2), (B, N, 2) -> (B, M). `energies` defaults to model.energies
    (pass model.learned_energies for the network part alone)."""
    energies = energies or model.energies
    b, m, _ = query.shape
    n = context.shape[1]
    seq = torch.cat([context[:, None].expand(b, m, n, 2), query[:, :, None]], dim=2).reshape(b * m, n + 1, 2)
    return energies(seq)[:, -1].reshape(b, m)
