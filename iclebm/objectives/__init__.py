"""Training objectives: one registry of their names, so the trainer, the fine-tune probe, the CLI,
the cards and the pages agree on what each objective is called.

`exact` and `cd` are the canonical names; `nll` (the name the contexts-to-weights probe and its
share links used for the exact objective) is still read as an alias, and never written.
"""

from __future__ import annotations

from dataclasses import dataclass

from iclebm.errors import UnknownObjectiveError


@dataclass(frozen=True)
class Objective:
    """One objective: canonical name, the label the pages show, a one-line help, old names read."""

    name: str
    label: str
    help: str
    aliases: tuple[str, ...] = ()


# Order = the order the pages list them in (the exact objective is the default of every page).
OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("exact", "exact likelihood (normalised NLL)",
                  "the NLL normalised over the box (densities: grid plus importance points in 2-D; "
                  "regression: 1-D quadrature over y)", aliases=("nll",)),
        Objective("cd", "contrastive divergence", "contrastive divergence with Langevin negatives"),
    )
}
_ALIASES: dict[str, str] = {a: o.name for o in OBJECTIVES.values() for a in (o.name, *o.aliases)}


def resolve_objective(name: str) -> str:
    """The canonical name of an objective given by its name or an alias ("nll" -> "exact").

    Raises UnknownObjectiveError (a ValueError) listing the valid names for anything else."""
    canonical = _ALIASES.get(name) if isinstance(name, str) else None
    if canonical is None:
        valid = ", ".join(f"{o.name!r}" + "".join(f" (or {a!r})" for a in o.aliases)
                          for o in OBJECTIVES.values())
        raise UnknownObjectiveError(f"unknown objective {name!r}; the objectives are {valid}")
    return canonical


def objective_label(name: str) -> str:
    """The label the pages show for an objective (given by name or alias)."""
    return OBJECTIVES[resolve_objective(name)].label
