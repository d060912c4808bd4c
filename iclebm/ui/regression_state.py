"""The Regression page's state and its share link (pure code, no Streamlit; unit-tested).

URL parameters: pts (x,y;x,y;...), view (density | energy), k (thinking steps shown),
ols / bayes (overlays, 1/0), task (family,seed,n of a drawn task), plus the shared model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from iclebm.card import prior_from_card
from iclebm.grid import Box
from iclebm.tasks import REGRESSION_FAMILIES, RegressionTask
from iclebm.ui.state import _choice, _first, _flag, decode_points, encode_points, parse_number

Point = tuple[float, float]
REG_VIEWS = ("density", "energy")
MAX_STEPS = 100


@dataclass
class RegState:
    points: list[Point] = field(default_factory=list)
    view: str = "density"
    k: int = 20
    ols: bool = True
    bayes: bool = True
    task: dict | None = None  # {"family", "seed", "n"} of a drawn task


def encode_reg(state: RegState) -> dict[str, str]:
    q: dict[str, str] = {}
    if state.points:
        q["pts"] = encode_points(state.points)
    q["view"] = state.view
    q["k"] = str(int(state.k))
    q["ols"] = "1" if state.ols else "0"
    q["bayes"] = "1" if state.bayes else "0"
    if state.task:
        q["task"] = f"{state.task['family']},{int(state.task['seed'])},{int(state.task['n'])}"
    return q


def decode_reg(params: Mapping[str, Any], box: Box, max_context: int) -> tuple[RegState, list[str]]:
    """Lenient: bad parts fall back to defaults with a warning."""
    state = RegState()
    state.points, warnings = decode_points(params.get("pts"), box, max_context)
    state.view = _choice(params.get("view"), REG_VIEWS, state.view, "view", "showing the density", warnings)
    k = _first(params.get("k"))
    if k is not None:
        val = parse_number(k)
        if val is None or not 0 <= val <= MAX_STEPS:
            warnings.append(f"Ignored the link's thinking steps {k!r} (0..{MAX_STEPS}).")
        else:
            state.k = int(val)
    state.ols = _flag(_first(params.get("ols")), state.ols)
    state.bayes = _flag(_first(params.get("bayes")), state.bayes)
    task = _first(params.get("task"))
    if task:
        parts = task.split(",")
        nums = [parse_number(p) for p in parts[1:]]
        readable = all(v is not None and v >= 0 for v in nums)
        if len(parts) == 3 and parts[0] in REGRESSION_FAMILIES and readable:
            state.task = {"family": parts[0], "seed": int(nums[0]), "n": int(min(nums[1], max_context))}
        else:
            warnings.append("Ignored the link's task settings (unreadable).")
    return state, warnings


def draw_task(task_card: dict, seed: int, n: int, box: Box) -> tuple[RegressionTask, list[Point]]:
    """A task from the prior in `task_card` and n of its points (y clamped into the box)."""
    prior = prior_from_card(task_card)
    g = torch.Generator().manual_seed(int(seed))
    task = prior.sample_task(g)
    pts = task.sample(int(n), g).double().numpy()
    pts = np.clip(pts, box[0], box[1])
    return task, [(float(x), float(y)) for x, y in pts]
