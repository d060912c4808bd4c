"""What a checkpoint's card says, read in one place: its box, its task family and its prior."""

from __future__ import annotations

import math

import torch

from iclebm.tasks import DENSITY_FAMILIES, REGRESSION_FAMILIES, LinearPrior, MixturePrior, SinusoidPrior


def box_of(model: torch.nn.Module, default: tuple[float, float] = (-12.0, 12.0)) -> tuple[float, float]:
    box = model.card.get("box", default) if model.card else default
    lo, hi = float(box[0]), float(box[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        return default
    return lo, hi


def task_family(task: dict | None) -> str:
    """The family named by a card's "task" entry (old cards without one are Gaussian mixtures)."""
    if not task:
        return "gaussian_mixture"
    return str(task.get("family", "gaussian_mixture"))


def is_regression(task: dict | None) -> bool:
    return task_family(task) in REGRESSION_FAMILIES


def prior_from_card(task: dict | None) -> MixturePrior | LinearPrior | SinusoidPrior:
    """The single entry point that rebuilds a task prior from a card's "task" entry."""
    family = task_family(task)
    if family == "gaussian_mixture":
        return MixturePrior.from_card(task or {})
    if family in REGRESSION_FAMILIES:
        try:
            return REGRESSION_FAMILIES[family].from_card(task or {})
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid {family} task prior in the card: {e}") from None
    known = sorted([*DENSITY_FAMILIES, *REGRESSION_FAMILIES])
    raise ValueError(f"unknown task family {family!r}; known families: {known}")
