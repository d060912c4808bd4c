"""A checkpoint card as people read it: the prior in words, the architecture, how it was trained
and the evaluation table with its Bayes column and the gap. Pure functions from the card dict to
markdown (no Streamlit); the sidebar and the Train page show the result with the raw JSON one
click away."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from iclebm.card import capabilities_of, pool_size_of
from iclebm.errors import IclebmError

ARCH_NAMES = {"energy_transformer": "energy transformer E(x | context)",
              "mixture_density_transformer": "mixture-density transformer (a Gaussian mixture per context)"}


def _num(v: Any) -> str:
    """A number as short text (3 significant digits); anything else as given."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.3g}"


def _span(v: Any) -> str:
    """A prior setting: a [lo, hi] range as 'lo–hi' (a fixed value when they agree), else the value."""
    if isinstance(v, (list, tuple)) and len(v) == 2:
        lo, hi = v
        return _num(lo) if lo == hi else f"{_num(lo)}–{_num(hi)}"
    return _num(v)


def _interval(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return f"[{_num(v[0])}, {_num(v[1])}]"
    return _num(v)


def prior_words(task: Mapping[str, Any] | None) -> str:
    """The training prior in one sentence (cards without a task entry are Gaussian mixtures)."""
    t = dict(task or {})
    family = str(t.pop("family", "gaussian_mixture"))
    if family == "gaussian_mixture":
        k, mean_std = _span(t.get("n_components", "?")), _num(t.get("mean_std", "?"))
        words = (f"Gaussian mixtures of {k} component(s) in 2-D; means ~ N(0, {mean_std}²) within "
                 f"±{_num(t.get('mean_limit', '?'))}; component std {_span(t.get('component_std', '?'))}")
        aspect = t.get("aspect_ratio", 1.0)
        if aspect not in (1, 1.0, [1.0, 1.0], (1.0, 1.0)):
            words += f"; aspect ratio {_span(aspect)}, rotation {t.get('rotation', 'none')} (anisotropic)"
        return words + "."
    if family == "linear":
        return (f"Linear regression y = w·x + b + noise: w ~ N(0, {_num(t.get('w_std', '?'))}²), "
                f"b ~ N(0, {_num(t.get('b_std', '?'))}²), noise std {_num(t.get('noise_std', '?'))}, "
                f"x in {_interval(t.get('x_range', '?'))}.")
    if family == "sinusoid":
        return ("Sinusoid regression y = A·sin(f·x + φ) + noise: "
                f"amplitude A {_span(t.get('amplitude', '?'))}, "
                f"frequency f {_span(t.get('frequency', '?'))}, phase φ {_span(t.get('phase', '?'))}, "
                f"noise std {_num(t.get('noise_std', '?'))}, x in {_interval(t.get('x_range', '?'))}.")
    rest = ", ".join(f"{k} {_span(v)}" for k, v in t.items())
    return f"Family {family}" + (f": {rest}." if rest else ".")


def architecture_words(card: Mapping[str, Any]) -> str:
    m = card.get("model") or {}
    arch = ARCH_NAMES.get(str(card.get("arch", "energy_transformer")), str(card.get("arch")))
    words = (f"{arch}: {m.get('n_layer', '?')} layers × d={m.get('d_model', '?')}, "
             f"{m.get('n_head', '?')} heads, max context {m.get('max_context', '?')}")
    if m.get("n_components"):
        words += f", {m['n_components']} mixture components"
    if m.get("length_scales"):
        words += ", per-length calibrated energy scale"
    return words + "."


def duration_words(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "?"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def training_lines(training: Mapping[str, Any] | None) -> list[str]:
    """How the model was trained: steps and time, device, the start point and the command(s)."""
    t = training or {}
    if not t:
        return ["Training: not recorded in the card."]
    where = f" on {t['device']}" if t.get("device") else ""
    lines = [f"Training: {t.get('steps', '?')} steps in {duration_words(t.get('seconds'))}{where}"
             + (f", objective {t['config']['objective']}" if (t.get("config") or {}).get("objective") else "")
             + (f", fine-tuned from `{t['init']}`" if t.get("init") else "") + "."]
    commands = t.get("commands") or ([t["command"]] if t.get("command") else [])
    lines += [f"`{c}`" for c in commands]
    if t.get("calibrate_command"):
        lines.append(f"then calibrated: `{t['calibrate_command']}`")
    return lines


def _row(values: Mapping[str, Sequence[float]], name: str, i: int) -> float | None:
    seq = values.get(name)
    if not isinstance(seq, (list, tuple)) or i >= len(seq):
        return None
    v = seq[i]
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _cell(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _constant(seq: Any) -> float | None:
    """The value of a per-n row that does not change with n (the oracle's), else None."""
    if not isinstance(seq, (list, tuple)) or not seq:
        return None
    vals = [float(v) for v in seq if isinstance(v, (int, float)) and math.isfinite(v)]
    return vals[0] if len(vals) == len(seq) and max(vals) - min(vals) < 1e-9 else None


def evaluation_table(evaluation: Mapping[str, Any] | None, metric: str = "nll") -> str:
    """The evaluation as a markdown table over n: model, Bayes-optimal and the gap model − Bayes,
    narrow enough for the sidebar. The oracle (the true density) does not depend on n, so it is said
    once under the table (a column only when it does vary). Without Bayes there is no gap column."""
    e = evaluation or {}
    values = e.get(metric) or {}
    ns = e.get("ns") or []
    if not ns or "model" not in values:
        return ""
    has_bayes = "bayes" in values
    oracle = _constant(values.get("oracle"))
    oracle_column = "oracle" in values and oracle is None
    head = ["n", "model"] + (["Bayes", "gap"] if has_bayes else []) + (["oracle"] if oracle_column else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for i, n in enumerate(ns):
        model = _row(values, "model", i)
        cells = [str(n), _cell(model)]
        if has_bayes:
            bayes = _row(values, "bayes", i)
            gap = None if model is None or bayes is None else model - bayes
            cells += [_cell(bayes), "—" if gap is None else f"{gap:+.2f}"]
        if oracle_column:
            cells.append(_cell(_row(values, "oracle", i)))
        lines.append("| " + " | ".join(cells) + " |")
    if oracle is not None:
        lines.append(f"\nThe oracle (the true task's own density) scores {oracle:.2f} at every n.")
    return "\n".join(lines)


def no_bayes_words(card: Mapping[str, Any]) -> str:
    """Why the evaluation has no Bayes-optimal column, from what the prior supports."""
    try:
        why = capabilities_of(dict(card)).why_no_bayes
    except IclebmError:
        why = None
    return f"No Bayes-optimal column: {why}." if why else "No Bayes-optimal column in this card's evaluation."


def pool_words(card: Mapping[str, Any]) -> str:
    """A pool model says so: it saw only M tasks of its prior ('' for a model of the full prior)."""
    try:
        m = pool_size_of(dict(card))
    except (TypeError, ValueError, AttributeError):
        m = 0
    if not m:
        return ""
    seed = (card.get("pool") or {}).get("seed", "?") if isinstance(card.get("pool"), Mapping) else "?"
    return (f"**Task pool**: trained on a finite pool of **M = {m}** tasks drawn once from this prior "
            f"(pool seed {seed}), not on fresh tasks: compare it with the pool's Bayes predictive "
            "(`bayes_pool`) as well as the prior's.")


def card_markdown(card: Mapping[str, Any]) -> str:
    """The whole summary: name, prior, architecture, training, evaluation tables (lower is better)."""
    parts = [f"**{card.get('name', 'unnamed')}**"]
    if card.get("description"):
        parts.append(str(card["description"]))
    parts.append(f"**Prior**: {prior_words(card.get('task'))}")
    box = card.get("box")
    if isinstance(box, (list, tuple)) and len(box) == 2:
        parts[-1] += f" Box [{_num(box[0])}, {_num(box[1])}]."
    if pool_words(card):
        parts.append(pool_words(card))
    parts.append(f"**Architecture**: {architecture_words(card)}")
    parts.append("  \n".join(training_lines(card.get("training"))))
    e = card.get("evaluation") or {}
    for metric, what in (("nll", "NLL of held-out points (nats, lower is better)"),
                         ("mse", "MSE of the predicted y (lower is better)")):
        table = evaluation_table(e, metric)
        if table:
            size = f" over {e['n_tasks']} tasks" if e.get("n_tasks") else ""
            note = "" if "bayes" in (e.get(metric) or {}) else f" {no_bayes_words(card)}"
            gap = "; gap = model − Bayes" if not note else ""
            parts.append(f"**Evaluation**: {what}{size}, by context size n{gap}.{note}\n\n" + table)
    if not e:
        parts.append("**Evaluation**: none in the card (`python -m iclebm evaluate --update-card`).")
    return "\n\n".join(parts)
