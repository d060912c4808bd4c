"""What a checkpoint's card says, read in one place: its box, its task family, its prior and what
that prior supports. Every page, trainer and evaluator asks here (or the family registry in
`iclebm.tasks`); a family mismatch is a TaskFamilyError, never a silent Gaussian-mixture fallback."""

from __future__ import annotations

import math
from typing import Any

from iclebm.errors import TaskFamilyError, TaskPoolError
from iclebm.grid import Box
from iclebm.tasks import DEFAULT_FAMILY, REGRESSION, Capabilities, Family, Prior, TaskPool, get_family

DEFAULT_BOX: Box = (-12.0, 12.0)


def card_of(model_or_card: Any) -> dict:
    """A model's card (`model.card`), or the card itself when given a dict; {} when there is none."""
    if isinstance(model_or_card, dict):
        return model_or_card
    return getattr(model_or_card, "card", None) or {}


def box_of(model: Any, default: Box = DEFAULT_BOX) -> Box:
    """The card's box [lo, hi]; the default when the card has none or a broken one."""
    box = card_of(model).get("box", default)
    lo, hi = float(box[0]), float(box[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        return default
    return lo, hi


def task_family(task: dict | None) -> str:
    """The family named by a card's "task" entry (old cards without one are Gaussian mixtures)."""
    if not task:
        return DEFAULT_FAMILY
    return str(task.get("family", DEFAULT_FAMILY))


def family_of(model_or_card: Any) -> Family:
    """The registered family of a model or card (a TaskFamilyError for an unknown one)."""
    return get_family(task_family(card_of(model_or_card).get("task")))


def is_regression(task: dict | None) -> bool:
    """Whether a card's "task" entry names a regression family (unknown families are not)."""
    name = task_family(task)
    try:
        return get_family(name).kind == REGRESSION
    except TaskFamilyError:
        return False


def prior_from_card(task: dict | None) -> Prior:
    """The single entry point that rebuilds a task prior from a card's "task" entry."""
    family = get_family(task_family(task))
    try:
        return family.prior.from_card(task or {})
    except (TypeError, ValueError) as e:
        raise TaskFamilyError(f"invalid {family.name} task prior in the card: {e}") from None


def prior_of(model_or_card: Any, kind: str | None = None, what: str = "this tool") -> Prior:
    """The training prior of a model (or card). With `kind` (DENSITY or REGRESSION), a model of the
    other kind is a TaskFamilyError that says which kind `what` needs."""
    task = card_of(model_or_card).get("task")
    family = get_family(task_family(task))
    if kind is not None and family.kind != kind:
        raise TaskFamilyError(f"{what}: needs a model trained on {kind} tasks; this model was trained on "
                              f"{family.label} tasks (family {family.name!r})")
    return prior_from_card(task)


def capabilities_of(model_or_card: Any) -> Capabilities:
    """What the model's training prior supports (kind, Bayes predictive, anisotropy)."""
    return prior_of(model_or_card).capabilities


def pool_size_of(model_or_card: Any) -> int:
    """M of a model trained on a finite pool of M tasks (the card's "task_pool"); 0: the full prior."""
    card = card_of(model_or_card)
    pool = card.get("pool")
    return int(card.get("task_pool") or (len(pool.get("tasks", ())) if isinstance(pool, dict) else 0))


def pool_of(model_or_card: Any) -> TaskPool | None:
    """The finite task pool a model was trained on, read from its card's "pool" entry (the tasks'
    own parameters); None for a model trained on the full prior. A card that names a pool size
    but stores no tasks is a TaskPoolError."""
    card = card_of(model_or_card)
    entry = card.get("pool")
    if entry is None:
        if card.get("task_pool"):
            raise TaskPoolError(f"the card says task_pool {card['task_pool']} but stores no pool tasks")
        return None
    if not isinstance(entry, dict):
        raise TaskPoolError("the card's \"pool\" entry must be an object with the pool's tasks")
    return TaskPool.from_card(prior_of(card), entry)


def pool_entries(pool: TaskPool | None) -> dict:
    """What a card says about a finite task pool: {"task_pool": M, "pool": {size, seed, tasks}}, or {}
    for a model trained on the full prior (old cards stay as they were)."""
    return {} if pool is None else {"task_pool": pool.size, "pool": pool.to_card()}

