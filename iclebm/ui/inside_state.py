"""The Inside page's view as one state object that round-trips through the URL (pure code).

Keys: pts and mix (the shared context and the mixture it was drawn from, encoded as on the
Density page), q (the query "x,y"), mode (query | attention | influence), layer and head
(1-based, absent = mean), and the contexts-to-weights settings k, lr, short, obj (a canonical
objective name of `iclebm.objectives`; old links' obj=nll is read as exact, absent = exact).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iclebm.errors import UnknownObjectiveError
from iclebm.objectives import OBJECTIVES, resolve_objective
from iclebm.probes.ctx2weights import BOUNDS
from iclebm.ui import state as S

MODES = ("query", "attention", "influence")
LR_CHOICES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
DEFAULT_K = 100
DEFAULT_LR = 1e-3
DEFAULT_OBJECTIVE = "exact"


@dataclass
class InsideState:
    points: list[S.Point] = field(default_factory=list)
    mixture: dict | None = None
    query: S.Point | None = None
    mode: str = "query"
    layer: int | None = None  # 0-based; None = mean over layers (heatmap modes)
    head: int | None = None  # 0-based; None = mean over heads
    k: int = DEFAULT_K
    lr: float = DEFAULT_LR
    short: int = 0  # the fine-tuned model reads the first `short` points of D
    objective: str = DEFAULT_OBJECTIVE  # a name of iclebm.objectives.OBJECTIVES


def encode_inside(state: InsideState) -> dict[str, str]:
    base = S.encode_share(S.ShareState(points=list(state.points), mixture=state.mixture))
    q = {key: base[key] for key in ("pts", "mix") if key in base}
    if state.query is not None:
        q["q"] = f"{S._fmt(state.query[0])},{S._fmt(state.query[1])}"
    if state.mode != "query":
        q["mode"] = state.mode
    if state.layer is not None:
        q["layer"] = str(state.layer + 1)
    if state.head is not None:
        q["head"] = str(state.head + 1)
    if state.k != DEFAULT_K:
        q["k"] = str(int(state.k))
    if state.lr != DEFAULT_LR:
        q["lr"] = f"{state.lr:g}"
    if state.short:
        q["short"] = str(int(state.short))
    objective = resolve_objective(state.objective)  # links carry the canonical name
    if objective != DEFAULT_OBJECTIVE:
        q["obj"] = objective
    return q


def _index(raw: str | None, size: int, what: str, warnings: list[str]) -> int | None:
    if raw is None:
        return None
    v = S.parse_number(raw)
    if v is None or not float(v).is_integer() or not 1 <= v <= size:
        warnings.append(f"Ignored the link's {what}={raw!r} (allowed: 1 to {size}).")
        return None
    return int(v) - 1


def _integer(raw: str | None, bounds: tuple[float, float], what: str, default: int,
             warnings: list[str]) -> int:
    if raw is None:
        return default
    v = S.parse_number(raw)
    lo, hi = bounds
    if v is None or not float(v).is_integer() or not lo <= v <= hi:
        warnings.append(f"Ignored the link's {what}={raw!r} (allowed: integers {lo:g} to {hi:g}).")
        return default
    return int(v)


def _objective(raw: str | None, default: str, warnings: list[str]) -> str:
    """A link's obj= by name or alias (old links say nll) -> the canonical name; unknown keeps default."""
    if raw is None:
        return default
    try:
        return resolve_objective(raw)
    except UnknownObjectiveError:
        warnings.append(f"Unknown objective {raw!r} in the link; using the {OBJECTIVES[default].label}.")
        return default


def decode_inside(
    params: Mapping[str, Any], box: S.Box, max_context: int, n_layer: int, n_head: int
) -> tuple[InsideState, list[str]]:
    """Parse an Inside link leniently: a bad part keeps its default and adds a warning."""
    shared, warnings = S.decode_share({k: params[k] for k in ("pts", "mix") if k in params}, box, max_context)
    st = InsideState(points=shared.points, mixture=shared.mixture)
    raw_q = S._first(params.get("q"))
    if raw_q is not None:
        xy = raw_q.split(",")
        problem = "not x,y" if len(xy) != 2 else S.point_problem(xy[0], xy[1], box)
        if problem:
            warnings.append(f"Ignored the link's query {raw_q!r}: {problem}.")
        else:
            st.query = (float(xy[0]), float(xy[1]))
    st.mode = S._choice(params.get("mode"), MODES, st.mode, "mode", "inspecting one query", warnings)
    st.layer = _index(S._first(params.get("layer")), n_layer, "layer", warnings)
    st.head = _index(S._first(params.get("head")), n_head, "head", warnings)
    st.k = _integer(S._first(params.get("k")), BOUNDS["steps"], "k", st.k, warnings)
    raw = S._first(params.get("lr"))
    if raw is not None:
        v = S.parse_number(raw)
        match = [c for c in LR_CHOICES if v is not None and math.isclose(v, c, rel_tol=1e-6)]
        if not match:
            allowed = ", ".join(f"{c:g}" for c in LR_CHOICES)
            warnings.append(f"Ignored the link's lr={raw!r} (allowed: {allowed}).")
        else:
            st.lr = match[0]
    st.short = _integer(S._first(params.get("short")), BOUNDS["short"], "short", st.short, warnings)
    st.objective = _objective(S._first(params.get("obj")), st.objective, warnings)
    return st, warnings
