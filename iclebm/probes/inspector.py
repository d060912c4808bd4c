"""Look inside the model: attention of a query over the context, and leave-one-out influence.

- `model.attention(query, context)` (in iclebm.models.energy) gives, per layer, the query's attention
  weights over the N context points and, last, over itself: (B, H, M, N + 1).
- `influence(model, query, context)` -> (B, M, N): E(q | D without point j) - E(q | D).
  Positive: removing x_j raises the energy at q, i.e. x_j supports the density there.
  All N leave-one-out contexts run as one batch of B*N contexts of length N - 1 (removing a
  point changes the hidden states of every later context point, so each needs its own pass).
- `inspect_query`: both for one query, as numpy, for the CLI and the app.
- `grid_attention` / `grid_influence` + `dominant_point`: which context point a query at
  each grid cell attends to most (or leans on most), for the heatmap mode.
- `parse_points` / `parse_query` / `format_*`: text in and out for the CLI.

Numbers in, numpy arrays out; no Streamlit, no Plotly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from iclebm.grid import Box, grid_points
from iclebm.models.energy import EnergyTransformer

# ---- leave-one-out influence ---------------------------------------------------------------


def leave_one_out_contexts(context: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) -> (B, N, N - 1, 2): entry [b, j] is context b without its point j (order kept)."""
    n = context.shape[1]
    if n == 0:
        return context.new_zeros(context.shape[0], 0, 0, 2)
    keep = ~torch.eye(n, dtype=torch.bool, device=context.device)  # (N, N): row j drops column j
    others = torch.arange(n, device=context.device).expand(n, n)[keep].reshape(n, n - 1)  # (N, N - 1)
    return context[:, others]


def influence(
    model: EnergyTransformer, query: torch.Tensor, context: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """(B, M, 2), (B, N, 2) -> (B, M, N): E(q | D without x_j) - E(q | D), as the model reports E
    (calibrated, so the removal also changes the length-dependent temperature)."""
    context = model._check_context(context)
    query = model._check_points(query, "query")
    b, n, _ = context.shape
    m = query.shape[1]
    full = model.energy(query, context, chunk=chunk)  # (B, M)
    if n == 0:
        return full.new_zeros(b, m, 0)
    loo = leave_one_out_contexts(context).reshape(b * n, n - 1, 2)
    q = query[:, None].expand(b, n, m, 2).reshape(b * n, m, 2)
    removed = model.energy(q, loo, chunk=chunk).reshape(b, n, m)  # all N removals in one call
    return (removed - full[:, None]).transpose(1, 2)


# ---- one query -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspection:
    query: np.ndarray  # (2,)
    points: np.ndarray  # (N, 2) the context
    weights: np.ndarray  # (L, H, N + 1) attention over the context points and, last, itself
    influence: np.ndarray  # (N,) E(q | D without x_j) - E(q | D)
    energy: float  # E(q | D)
    seconds: float

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])


def require_attention(model: object) -> None:
    """ValueError unless the model is an energy transformer (the only one with query attention)."""
    if not isinstance(model, EnergyTransformer):
        raise ValueError(
            f"the attention inspector needs an energy transformer; this is a {type(model).__name__}, "
            "whose queries never enter the transformer (their density is read out in closed form)"
        )


def inspect_query(
    model: EnergyTransformer, points: np.ndarray | list, query: np.ndarray | list | tuple
) -> Inspection:
    """Attention weights and influence of every context point for one query location."""
    require_attention(model)
    t0 = time.perf_counter()
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    q_np = np.asarray(query, dtype=np.float64).reshape(2)
    context = torch.as_tensor(pts, dtype=model.dtype)[None]
    q = torch.as_tensor(q_np, dtype=model.dtype).reshape(1, 1, 2)
    with torch.no_grad():
        weights = torch.stack([w[0, :, 0] for w in model.attention(q, context)])  # (L, H, N + 1)
        infl = influence(model, q, context)[0, 0]  # (N,)
        energy = model.energy(q, context)[0, 0]
    return Inspection(
        query=q_np, points=pts, weights=weights.double().cpu().numpy(),
        influence=infl.double().cpu().numpy(),
        energy=float(energy), seconds=time.perf_counter() - t0,
    )


# ---- heatmap mode ----------------------------------------------------------------------------


def grid_attention(
    model: EnergyTransformer, points: np.ndarray | list, box: Box, resolution: int
) -> np.ndarray:
    """Attention of a query at every grid cell: (L, H, R, R, N + 1), rows = y (one batched call)."""
    require_attention(model)
    grid, _ = grid_points(box, resolution)
    context = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 2), dtype=model.dtype)[None]
    with torch.no_grad():
        weights = torch.stack([w[0] for w in model.attention(grid.to(model.dtype)[None], context)])
    n_layer, n_head, _, n1 = weights.shape
    return weights.reshape(n_layer, n_head, resolution, resolution, n1).float().cpu().numpy()


def grid_influence(
    model: EnergyTransformer, points: np.ndarray | list, box: Box, resolution: int
) -> np.ndarray:
    """Influence of every context point on a query at every grid cell: (R, R, N), rows = y."""
    grid, _ = grid_points(box, resolution)
    context = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 2), dtype=model.dtype)[None]
    with torch.no_grad():
        infl = influence(model, grid.to(model.dtype)[None], context)[0]  # (R*R, N)
    return infl.reshape(resolution, resolution, -1).float().cpu().numpy()


def dominant_point(scores: np.ndarray) -> np.ndarray:
    """Index of the largest score along the last axis: (..., K) -> (...) int. Ties go to the
    lowest index. For attention weights (K = N + 1) index N means the query's own key."""
    if scores.shape[-1] == 0:
        raise ValueError("no context points to choose from")
    return np.argmax(scores, axis=-1)


def reduce_heads(weights: np.ndarray, layer: int | None, head: int | None) -> np.ndarray:
    """(L, H, ..., K) -> (..., K): one layer/head, or the mean over layers (layer=None) and/or
    heads (head=None). The mean of attention rows is still a distribution."""
    w = weights.mean(axis=0) if layer is None else weights[layer]
    return w.mean(axis=0) if head is None else w[head]


# ---- text in and out (CLI) -------------------------------------------------------------------


def parse_points(text: str) -> np.ndarray:
    """'x,y;x,y;...' -> (N, 2) float64. An empty string is the empty context. ValueError with the
    offending item on anything else (wrong arity, not a number, NaN/inf)."""
    items = [s.strip() for s in text.replace("\n", ";").split(";")]
    items = [s for s in items if s]
    out = np.zeros((len(items), 2))
    for i, item in enumerate(items):
        out[i] = parse_query(item, what=f"point {i + 1}")
    return out


def parse_query(text: str, what: str = "query") -> np.ndarray:
    """'x,y' -> (2,) float64, or ValueError naming what is wrong."""
    parts = [p.strip() for p in text.strip().strip("()").split(",")]
    if len(parts) != 2:
        raise ValueError(f"{what} {text.strip()!r} is not of the form x,y")
    try:
        xy = np.array([float(p) for p in parts])
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r} has a coordinate that is not a number") from None
    if not np.isfinite(xy).all():
        raise ValueError(f"{what} {text.strip()!r} is not finite")
    return xy


def check_in_box(xy: np.ndarray, box: Box, what: str = "query") -> None:
    lo, hi = box
    if not (lo <= xy[..., 0]).all() or not (xy[..., 0] <= hi).all() or not (lo <= xy[..., 1]).all() or not (
        xy[..., 1] <= hi
    ).all():
        raise ValueError(f"{what} lies outside the box [{lo:g}, {hi:g}]^2")


def format_attention_tables(insp: Inspection) -> str:
    """One table per layer: rows = context points (and 'self'), columns = heads."""
    n_layer, n_head, _ = insp.weights.shape
    labels = [f"{j + 1} ({x:+.2f}, {y:+.2f})" for j, (x, y) in enumerate(insp.points)] + ["self (query)"]
    width = max(len(s) for s in labels)
    lines = []
    for layer in range(n_layer):
        lines.append(f"layer {layer + 1}: attention of the query over the context")
        lines.append(" " * width + "".join(f"  {f'head {h + 1}':>8}" for h in range(n_head)))
        for j, label in enumerate(labels):
            lines.append(label.ljust(width) + "".join(f"  {insp.weights[layer, h, j]:8.4f}" for h in
                                                      range(n_head)))
        lines.append("")
    return "\n".join(lines)


def format_influence_table(insp: Inspection) -> str:
    lines = [f"E(q | D) = {insp.energy:.4f}; influence = E(q | D without x_j) - E(q | D)"]
    lines.append(f"{'j':>3}  {'x':>8}  {'y':>8}  {'influence':>10}")
    for j, ((x, y), v) in enumerate(zip(insp.points, insp.influence, strict=True)):
        lines.append(f"{j + 1:>3}  {x:8.3f}  {y:8.3f}  {v:10.4f}")
    if insp.n_points == 0:
        lines.append("(empty context: nothing to remove)")
    return "\n".join(lines)

