"""The task-diversity figure (`python -m iclebm bench --task-diversity`): per preset, the model's NLL
at n = 16 on held-out prior tasks minus each Bayes predictive (and on the pool's own tasks minus the
pool's Bayes), against the pool size M (log axis; M = inf drawn at the right end). A memorising model
sits near 0 against the pool's Bayes and far above the prior's; a model that learned to learn sits
near 0 against the prior's."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from iclebm.evaluation.task_diversity import gap_series

TITLES = {"fast": "density (fast preset, Gaussian mixtures)", "linreg": "regression (linreg preset, linear)"}


def diversity_figure(rows: Sequence[dict], presets: Sequence[str], note: str = "") -> Figure:
    """One panel per preset: model - bayes (prior) and model - bayes_pool vs M on held-out prior tasks,
    and model - bayes_pool on the pool's own tasks. Pure: rows in, figure out."""
    fig = Figure(figsize=(5.2 * len(presets), 4.0), layout="constrained")
    axes = fig.subplots(1, len(presets), squeeze=False)[0]
    for ax, name in zip(axes, presets, strict=True):
        s = gap_series(rows, name)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.plot(s["M"], s["model - bayes"], "o-", color="C0", label="model - Bayes (prior)")
        ax.plot(s["M"], s["model - bayes_pool"], "s--", color="C3", label="model - Bayes (pool)")
        ax.plot(s["M"], s["pool tasks: model - bayes_pool"], "^:", color="C2",
                label="on the pool's own tasks: model - Bayes (pool)")
        # a small pool's Bayes is hopeless on new tasks (tens to hundreds of nats): log beyond 1 nat
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xscale("log", base=4)
        ticks = s["M"]
        ax.set_xticks(ticks, ["∞" if inf else f"{int(m)}" for m, inf in zip(ticks, s["is_inf"], strict=True)])
        ax.set_xlabel("task pool size M")
        ax.set_ylabel("NLL at n = 16 minus yardstick (nats/point)")
        ax.set_title(TITLES.get(name, name), fontsize=10)
        ax.legend(fontsize=8)
    if note:
        fig.suptitle(note, fontsize=9)
    return fig
