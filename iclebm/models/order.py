"""Order ensembles: a causal model's density averaged over orderings of its context.

A causal transformer reads its context in order, so E(x | D) may depend on the order of D, which a
Bayesian learner on exchangeable data never does. The order ensemble is the test-time fix (TabPFN's
density mode does the same): for K orderings pi_1..pi_K of the context (pi_1 the given order)

    E_ens(x | D) = -log (1/K) sum_k exp(-E(x | pi_k(D))) / Z_k,   Z_k = grid sum of exp(-E(. | pi_k(D)))

over the box on an ORDER_Z_RESOLUTION grid (`iclebm.grid.log_z_on_grid`). Each ordering is normalised
before the mean, so no ordering dominates by its arbitrary energy offset, and E_ens is a normalised
negative log density. All K orderings of all B contexts go through one batched `energy` call.
"""

from __future__ import annotations

import itertools
import math
from typing import Protocol

import torch

from iclebm.card import box_of
from iclebm.grid import Box, grid_points, log_z_on_grid

ORDER_Z_RESOLUTION = 100  # the standard grid of the app's landscape: Z_k on 100 x 100 cell centres


class EnergyModel(Protocol):
    def energy(
        self, query: torch.Tensor, context: torch.Tensor, chunk: int | None = None,
    ) -> torch.Tensor: ...


def orderings(n: int, orders: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(K, n) index orderings of n points: the identity first, then K - 1 uniformly random permutations.
    When orders >= n! every ordering is returned once instead (K = n!, identity first), so the
    ensemble is then exactly invariant to the order of the context."""
    if int(orders) < 1:
        raise ValueError(f"orders must be >= 1, got {orders}")
    if n <= 1:
        return torch.arange(n).reshape(1, n)  # one ordering only
    if n <= 8 and orders >= math.factorial(n):
        return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long).reshape(-1, n)
    rest = [torch.randperm(n, generator=generator) for _ in range(int(orders) - 1)]
    return torch.stack([torch.arange(n), *rest])


def permuted_contexts(context: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) contexts and (K, N) orderings -> (B*K, N, 2), task-major (row b*K + k)."""
    b, n, _ = context.shape
    k = order.shape[0]
    idx = order.to(context.device)[None].expand(b, k, n)
    out = torch.gather(context[:, None].expand(b, k, n, 2), 2, idx[..., None].expand(b, k, n, 2))
    return out.reshape(b * k, n, 2)


def ordering_energies(
    model: EnergyModel, query: torch.Tensor, context: torch.Tensor, order: torch.Tensor, box: Box,
    resolution: int = ORDER_Z_RESOLUTION, chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E(query | pi_k(context)) (B, K, M) and log Z_k (B, K) over the box grid, for each ordering of `order`.
    Query and grid go through the model as one query set per permuted context."""
    b, m = query.shape[0], query.shape[1]
    k = order.shape[0]
    grid, area = grid_points(box, resolution)
    grid = grid.to(device=query.device, dtype=query.dtype)
    ctx = permuted_contexts(context, order)
    q = torch.cat([query[:, None].expand(b, k, m, 2).reshape(b * k, m, 2),
                   grid[None].expand(b * k, -1, -1)], dim=1)
    # about 4096 query tokens per pass over all B*K contexts: one 80k-token pass is ~2x slower on a CPU
    # (memory traffic) than K separate calls, 4096-token passes match them
    e = model.energy(q, ctx, chunk or max(64, 4096 // (b * k))).reshape(b, k, -1)
    return e[..., :m], log_z_on_grid(e[..., m:].double(), area).to(e.dtype)


def ensemble_energy(
    model: EnergyModel, query: torch.Tensor, context: torch.Tensor, orders: int,
    generator: torch.Generator | None = None, box: Box = (-12.0, 12.0),
    resolution: int = ORDER_Z_RESOLUTION, chunk: int | None = None,
) -> torch.Tensor:
    """(B, M, 2), (B, N, 2) -> (B, M): -log of the mean over `orders` orderings of each ordering's
    grid-normalised density (module docstring). orders = 1 is `model.energy` itself, unnormalised."""
    if int(orders) == 1:
        return model.energy(query, context, chunk)
    order = orderings(context.shape[1], int(orders), generator)
    e, log_z = ordering_energies(model, query, context, order, box, resolution, chunk)
    log_p = -(e + log_z[..., None])
    return -(torch.logsumexp(log_p, dim=1) - math.log(order.shape[0]))


def prefix_ensembles(
    model, query: torch.Tensor, context: torch.Tensor, lengths: list[int] | torch.Tensor, orders: int,
    generator: torch.Generator | None = None, chunk: int | None = None,
) -> torch.Tensor:
    """(B, M, 2), (B, N, 2), P lengths -> (B, P, M): the order ensemble of every prefix context[:, :n]
    (orderings of the prefix's own points, drawn per prefix), over the box of the model's card."""
    box = box_of(model)
    lens = [int(v) for v in torch.as_tensor(lengths).reshape(-1).tolist()]
    return torch.stack([ensemble_energy(model, query, context[:, :n], orders, generator, box, chunk=chunk)
                        for n in lens], dim=1)
