"""The Bayes-gap decomposition of an ICL curve: NLL(learner) - NLL(oracle) =
[NLL(Bayes) - NLL(oracle)] + [NLL(learner) - NLL(Bayes)].

The first band is the posterior variance: what no learner can avoid with n points, because the
task is not yet pinned down (it falls to 0 as n grows). The second is the learner's Bayes gap: what
it loses against the best possible in-context learner for the prior (0 for Bayes itself; it may dip
below 0 on a single task by chance, never in expectation). Both come from a table of
`iclebm.evaluation.density` (`in_context_nll`, `nll_curve_for_task`, or a card's "evaluation").
"""

from __future__ import annotations

from iclebm.errors import CapabilityError


def bayes_gap_decomposition(table: dict) -> dict:
    """{"ns", "posterior_variance": [bayes - oracle per n], "bayes_gap": {learner: [learner - bayes]}} for
    every column of the table but bayes and oracle. A table without both raises CapabilityError."""
    nll = table["nll"]
    if "bayes" not in nll or "oracle" not in nll:
        raise CapabilityError("the Bayes-gap decomposition needs the NLL table's bayes and oracle columns")
    bayes, oracle = nll["bayes"], nll["oracle"]
    return {
        "ns": list(table["ns"]),
        "posterior_variance": [b - o for b, o in zip(bayes, oracle, strict=True)],
        "bayes_gap": {name: [v - b for v, b in zip(vals, bayes, strict=True)]
                      for name, vals in nll.items() if name not in ("bayes", "oracle")},
    }
