"""A divergence watchdog for live training: pure decisions on the stream of training numbers.

A run that diverges rarely produces a NaN at once. With a large learning rate and Langevin step the
contrastive loss runs off to large negative values while the energies drift apart, and the model's
in-context NLL gets worse as it sees more points, ending far above the prior predictive (which a
model that ignores its context entirely would reach). The watchdog names the first of:

- a non-finite loss, energy or gradient at a step;
- a mean energy (of the data, of the negatives, or the log-partition estimate) beyond a stated bound;
- after a warm-up, the ICL NLL at n = `icl_n` worse than the prior predictive by more than
  `icl_margin` nats on `icl_strikes` consecutive curve refreshes (a fresh model is worse than
  the prior predictive, so the warm-up lets it learn first).

`Watchdog` only decides; the caller (the live trainer process) pauses the run and restores the
last weights the watchdog judged healthy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Metrics keys holding mean energies (see iclebm.objectives): data, negatives, log-partition.
ENERGY_KEYS = ("e_real", "e_neg", "log_z")


@dataclass(frozen=True)
class WatchdogLimits:
    """When the watchdog trips. The defaults never trip on a healthy run of the `fast` preset."""

    # Mean |energy| bound. Healthy models stay in the tens: the base term |x|^2 / (2 * 3^2) is at
    # most 32 on the corners of the ±12 box and the learned part is of the order of a log density.
    energy_bound: float = 1000.0
    warmup_steps: int = 200  # no ICL judgment before this step: a fresh model is worse than the prior
    icl_n: int = 16  # the context length whose NLL is compared with the prior predictive
    icl_margin: float = 0.5  # nats above the prior predictive that count as a strike
    icl_strikes: int = 3  # consecutive strikes that trip

    def __post_init__(self) -> None:
        if not self.energy_bound > 0:
            raise ValueError(f"energy_bound must be positive, got {self.energy_bound}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.icl_n < 0:
            raise ValueError(f"icl_n must be >= 0, got {self.icl_n}")
        if not self.icl_margin >= 0:
            raise ValueError(f"icl_margin must be >= 0, got {self.icl_margin}")
        if self.icl_strikes < 1:
            raise ValueError(f"icl_strikes must be >= 1, got {self.icl_strikes}")


def step_fault(metrics: Mapping[str, float], limits: WatchdogLimits) -> str | None:
    """The cause, if one training step's metrics show a divergence; None when they look healthy."""
    step = metrics.get("step", "?")
    loss = float(metrics.get("loss", 0.0))
    if not math.isfinite(loss):
        return f"the loss is not finite ({loss}) at step {step}"
    if metrics.get("skipped"):
        return f"the gradient or the updated weights are not finite at step {step}"
    for key in ENERGY_KEYS:
        if key not in metrics:
            continue
        value = float(metrics[key])
        if not math.isfinite(value):
            return f"the mean energy {key} is not finite ({value}) at step {step}"
        if abs(value) > limits.energy_bound:
            return (f"the mean energy {key} = {value:.4g} at step {step} is beyond the bound "
                    f"±{limits.energy_bound:g}")
    return None


def icl_gap(ns: Sequence[int], nll: Sequence[float], prior_predictive: float,
            n: int) -> tuple[int, float] | None:
    """(the n used, NLL at n minus the prior predictive): at n, else the longest context below it
    (a model with a shorter max context); None when the curve has no such n."""
    usable = [(k, v) for k, v in zip(ns, nll, strict=True) if 0 < k <= n]
    if not usable:
        return None
    k, v = max(usable)
    return k, float(v) - float(prior_predictive)


@dataclass
class Watchdog:
    """Feed it every step's metrics and every ICL curve; it returns the cause when the run diverges.

    `healthy_curve` tells the caller whether the weights the last curve was drawn on count as
    good (warm-up, or within the margin): those are the weights to restore after a trip.
    """

    limits: WatchdogLimits = field(default_factory=WatchdogLimits)
    strikes: list[tuple[int, float, float]] = field(default_factory=list)  # (step, NLL at n, prior pred.)
    healthy_curve: bool = True

    def check_step(self, metrics: Mapping[str, float]) -> str | None:
        return step_fault(metrics, self.limits)

    def check_curve(self, step: int, ns: Sequence[int], nll: Sequence[float],
                    prior_predictive: float) -> str | None:
        lim = self.limits
        bad = [v for v in nll if not math.isfinite(float(v))]
        if bad:
            self.healthy_curve = False
            return f"the ICL curve at step {step} is not finite"
        gap = icl_gap(ns, nll, prior_predictive, lim.icl_n)
        if step < lim.warmup_steps or gap is None:
            self.strikes.clear()
            self.healthy_curve = True
            return None
        n, excess = gap
        if excess <= lim.icl_margin:
            self.strikes.clear()
            self.healthy_curve = True
            return None
        self.healthy_curve = False
        self.strikes.append((step, excess + float(prior_predictive), float(prior_predictive)))
        if len(self.strikes) < lim.icl_strikes:
            return None
        steps = ", ".join(str(s) for s, _, _ in self.strikes[-lim.icl_strikes:])
        worst = max(v for _, v, _ in self.strikes[-lim.icl_strikes:])
        return (f"the ICL NLL at n = {n} was worse than the prior predictive ({float(prior_predictive):.2f}) "
                f"by more than {lim.icl_margin:g} nats on {lim.icl_strikes} checks in a row "
                f"(steps {steps}; up to {worst:.2f}): the model gets worse as it sees more points")

    def reset(self) -> None:
        self.strikes.clear()
        self.healthy_curve = True
