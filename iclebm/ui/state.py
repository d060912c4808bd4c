"""Pure state updates for the explorer (no Streamlit): context edits, click and table
validation, the context cap, and the share-link (URL query) round trips of the pages.

Points are plain lists of (x, y) float pairs so they survive session state, JSON and
URLs unchanged. Every update returns the new list plus messages for the user; the
caller's list is never mutated, and a rejected input never damages the valid context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iclebm.grid import Box

Point = tuple[float, float]

VIEWS = ("energy", "density")
# Digits kept in share links: 1e-4 of a unit is far below the 1%-of-box click tolerance.
URL_DIGITS = 4


# ---- single points ---------------------------------------------------------------------


def parse_number(value: Any) -> float | None:
    """A finite float from a number or numeric text; None for anything else (NaN, inf, '', 'abc')."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def point_problem(x: Any, y: Any, box: Box) -> str | None:
    """Why (x, y) cannot be a context point, or None when it can."""
    fx, fy = parse_number(x), parse_number(y)
    if fx is None or fy is None:
        return f"({x!r}, {y!r}) is not a pair of finite numbers"
    lo, hi = box
    if not (lo <= fx <= hi and lo <= fy <= hi):
        return f"({fx:.3g}, {fy:.3g}) lies outside the box [{lo:g}, {hi:g}]²"
    return None


def cap_context(points: Sequence[Point], max_context: int) -> tuple[list[Point], str | None]:
    """Keep the newest max_context points (the model reads no more); say so when it drops any."""
    pts = [tuple(p) for p in points]
    if len(pts) <= max_context:
        return pts, None  # type: ignore[return-value]
    dropped = len(pts) - max_context
    msg = (f"The model reads at most {max_context} context points: kept the newest {max_context}, "
           f"dropped the oldest {dropped}.")
    return pts[-max_context:], msg  # type: ignore[return-value]


def add_point(
    points: Sequence[Point], x: Any, y: Any, box: Box, max_context: int
) -> tuple[list[Point], str | None]:
    """Append (x, y) if valid; returns the new points and a message (rejection or cap)."""
    problem = point_problem(x, y, box)
    if problem is not None:
        return [tuple(p) for p in points], f"Point not added: {problem}."  # type: ignore[misc]
    pts = [tuple(p) for p in points] + [(float(x), float(y))]
    return cap_context(pts, max_context)  # type: ignore[arg-type]


def add_points(
    points: Sequence[Point], new: Sequence[Sequence[Any]], box: Box, max_context: int
) -> tuple[list[Point], list[str]]:
    """Append many points; invalid ones are skipped and reported in one message."""
    pts = [tuple(p) for p in points]
    bad = 0
    for p in new:
        if len(p) != 2 or point_problem(p[0], p[1], box) is not None:
            bad += 1
            continue
        pts.append((float(p[0]), float(p[1])))
    msgs = [f"Skipped {bad} point(s) outside the box or not finite."] if bad else []
    pts, cap = cap_context(pts, max_context)  # type: ignore[arg-type]
    if cap:
        msgs.append(cap)
    return pts, msgs


def undo_point(points: Sequence[Point]) -> list[Point]:
    return [tuple(p) for p in points][:-1]  # type: ignore[misc]


# ---- clicks -----------------------------------------------------------------------------


def pixel_to_data(px: float, py: float, width: float, height: float, box: Box) -> Point:
    """Plot-area pixel (origin top-left, y down) -> data coordinates on linear axes over box.

    The browser canvas does this with Plotly's own axis transforms; this mirror exists
    for tests and for any caller that only has pixels.
    """
    if not (width > 0 and height > 0):
        raise ValueError("plot area must have positive size")
    lo, hi = box
    return lo + (hi - lo) * px / width, hi - (hi - lo) * py / height


def click_to_point(payload: Any, box: Box) -> tuple[Point | None, str | None]:
    """Validate a canvas click payload {"x", "y", ...}: (point, None) or (None, reason)."""
    if not isinstance(payload, Mapping):
        return None, "the click carried no coordinates"
    problem = point_problem(payload.get("x"), payload.get("y"), box)
    if problem is not None:
        return None, f"Click ignored: {problem}."
    return (float(payload["x"]), float(payload["y"])), None


# ---- the points table ---------------------------------------------------------------------


@dataclass
class EditResult:
    points: list[Point]
    messages: list[str] = field(default_factory=list)
    changed: bool = False
    pending: bool = False  # a new row is only partly filled in: keep the editor as it is


def apply_editor_changes(
    points: Sequence[Point], changes: Mapping[str, Any] | None, box: Box, max_context: int
) -> EditResult:
    """Apply an `st.data_editor` edit state {edited_rows, added_rows, deleted_rows}.

    A bad edit of an existing row (not a number, NaN/inf, outside the box) is rejected
    and that row keeps its old value; a bad new row is dropped; rows with an empty
    cell are treated as still being typed (`pending`) unless they are entirely bad.
    """
    pts = [tuple(p) for p in points]
    if not changes:
        return EditResult(pts)  # type: ignore[arg-type]
    msgs: list[str] = []
    out: list[Point | None] = list(pts)  # type: ignore[arg-type]
    changed = False
    edited = changes.get("edited_rows") or {}
    for key, row in edited.items():
        try:
            i = int(key)
        except (TypeError, ValueError):
            continue
        if not 0 <= i < len(pts) or not isinstance(row, Mapping):
            continue
        x = row.get("x", pts[i][0])
        y = row.get("y", pts[i][1])
        problem = point_problem(x, y, box)
        if problem is not None:
            msgs.append(f"Row {i + 1} rejected: {problem}; kept ({pts[i][0]:.3f}, {pts[i][1]:.3f}).")
            continue
        new = (float(x), float(y))  # type: ignore[arg-type]
        if new != pts[i]:
            out[i] = new
            changed = True
    for key in changes.get("deleted_rows") or []:
        try:
            i = int(key)
        except (TypeError, ValueError):
            continue
        if 0 <= i < len(out) and out[i] is not None:
            out[i] = None
            changed = True
    pending = False
    kept = [p for p in out if p is not None]
    for j, row in enumerate(changes.get("added_rows") or []):
        row = row if isinstance(row, Mapping) else {}
        x, y = row.get("x"), row.get("y")
        filled = [v for v in (x, y) if not (v is None or (isinstance(v, str) and not v.strip()))]
        if len(filled) < 2 and all(parse_number(v) is not None for v in filled):
            pending = True  # an empty cell next to valid ones: the user is still typing
            continue
        problem = point_problem(x, y, box)
        if problem is not None:
            msgs.append(f"New row {j + 1} rejected: {problem}.")
            continue
        kept.append((float(x), float(y)))  # type: ignore[arg-type]
        changed = True
    kept, cap = cap_context(kept, max_context)
    if cap:
        msgs.append(cap)
    return EditResult(kept, msgs, changed, pending)


# ---- share links ---------------------------------------------------------------------------


@dataclass
class ShareState:
    """What a shared link restores."""

    points: list[Point] = field(default_factory=list)
    view: str = "energy"
    log: bool = False
    contours: bool = True
    arrows: bool = True
    model: str | None = None  # checkpoint name (file stem) under checkpoints/
    n_shown: int | None = None  # scrubbed prefix length on the main canvas (None = all)
    mixture: dict | None = None  # a drawn mixture: {"k", "spread", "width": [lo, hi], "seed"[, "ratio"]}


def _fmt(v: float) -> str:
    s = f"{v:.{URL_DIGITS}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def encode_points(points: Sequence[Point]) -> str:
    """A link's pts parameter: x,y;x,y;... (URL_DIGITS decimals)."""
    return ";".join(f"{_fmt(x)},{_fmt(y)}" for x, y in points)


def decode_points(value: Any, box: Box, max_context: int) -> tuple[list[Point], list[str]]:
    """A link's pts parameter (absent: no points) leniently: unreadable or out-of-box points
    are skipped and the oldest beyond max_context dropped, with a warning for each."""
    pts: list[Point] = []
    warnings: list[str] = []
    raw = _first(value)
    if not raw:
        return pts, warnings
    bad = 0
    for part in raw.split(";"):
        xy = part.split(",")
        if len(xy) != 2 or point_problem(xy[0], xy[1], box) is not None:
            bad += 1
            continue
        pts.append((float(xy[0]), float(xy[1])))
    if bad:
        warnings.append(f"The link had {bad} unreadable or out-of-box point(s); they were skipped.")
    pts, cap = cap_context(pts, max_context)
    if cap:
        warnings.append(cap)
    return pts, warnings


def encode_share(state: ShareState) -> dict[str, str]:
    """Flat str -> str query parameters; defaults are left out to keep links short."""
    q: dict[str, str] = {}
    if state.points:
        q["pts"] = encode_points(state.points)
    q["view"] = state.view
    q["log"] = "1" if state.log else "0"
    q["contours"] = "1" if state.contours else "0"
    q["arrows"] = "1" if state.arrows else "0"
    if state.model:
        q["model"] = state.model
    if state.n_shown is not None:
        q["n"] = str(int(state.n_shown))
    if state.mixture:
        q["mix"] = encode_mixture(state.mixture)
    return q


def encode_mixture(m: dict) -> str:
    """k,spread,width_lo,width_hi,seed[,ratio_lo,ratio_hi]; k is "3" or a range "1-6". Isotropic
    mixtures with a fixed k keep the old five-part form, so old links and new ones agree."""
    k = m["k"]
    k_txt = f"{int(k[0])}-{int(k[1])}" if isinstance(k, (list, tuple)) else str(int(k))
    lo, hi = m["width"]
    parts = [k_txt, _fmt(float(m["spread"])), _fmt(float(lo)), _fmt(float(hi)), str(int(m["seed"]))]
    if "ratio" in m:
        parts += [_fmt(float(m["ratio"][0])), _fmt(float(m["ratio"][1]))]
    return ",".join(parts)


def decode_mixture(text: str) -> dict | None:
    """The inverse of `encode_mixture`; None for anything unreadable or out of range."""
    parts = text.split(",")
    if len(parts) not in (5, 7):
        return None
    k_lo, _, k_hi = parts[0].partition("-")
    ks = [parse_number(k_lo), parse_number(k_hi or k_lo)]
    nums = [parse_number(p) for p in parts[1:]]
    if any(v is None for v in ks + nums):
        return None
    spread, lo, hi, seed = nums[:4]  # type: ignore[misc]
    if not (1 <= ks[0] <= ks[1] <= 16 and spread > 0 and 0 < lo <= hi):  # type: ignore[operator]
        return None
    mix = {"k": int(ks[0]) if ks[0] == ks[1] else [int(ks[0]), int(ks[1])], "spread": float(spread),
           "width": [float(lo), float(hi)], "seed": int(seed)}
    if len(nums) == 6:
        r_lo, r_hi = float(nums[4]), float(nums[5])  # type: ignore[arg-type]
        if not 1.0 <= r_lo <= r_hi <= 16.0:
            return None
        mix["ratio"] = [r_lo, r_hi]
    return mix


def _first(v: Any) -> str | None:
    if isinstance(v, (list, tuple)):
        v = v[-1] if v else None
    return None if v is None else str(v)


def _flag(v: str | None, default: bool) -> bool:
    if v is None:
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def _choice(value: Any, allowed: Sequence[str], default: str, what: str, fallback: str,
            warnings: list[str]) -> str:
    """A link's value among `allowed`; an unknown one keeps `default` and adds a warning."""
    v = _first(value)
    if v is None:
        return default
    if v in allowed:
        return v
    warnings.append(f"Unknown {what} {v!r} in the link; {fallback}.")
    return default


def decode_share(
    params: Mapping[str, Any], box: Box, max_context: int
) -> tuple[ShareState, list[str]]:
    """Parse query parameters leniently: bad parts fall back to defaults with a warning."""
    state = ShareState()
    state.points, warnings = decode_points(params.get("pts"), box, max_context)
    state.view = _choice(params.get("view"), VIEWS, state.view, "view", "showing energy", warnings)
    state.log = _flag(_first(params.get("log")), state.log)
    state.contours = _flag(_first(params.get("contours")), state.contours)
    state.arrows = _flag(_first(params.get("arrows")), state.arrows)
    model = _first(params.get("model"))
    if model:
        state.model = model
    n = _first(params.get("n"))
    if n is not None:
        val = parse_number(n)
        if val is None or val < 0:
            warnings.append(f"Ignored the link's prefix length {n!r}.")
        else:
            state.n_shown = min(int(val), len(state.points))
    mix = _first(params.get("mix"))
    if mix:
        state.mixture = decode_mixture(mix)
        if state.mixture is None:
            warnings.append("Ignored the link's mixture settings (unreadable).")
    return state, warnings


# ---- the Train page's settings in a link ------------------------------------------------------

TRAIN_MODES = ("scratch", "finetune")
# setting -> URL key; the values are the Train page's form (see iclebm.ui.jobs.live_settings.BOUNDS).
TRAIN_URL_KEYS = {"lr": "lr", "batch_size": "batch", "chains": "chains", "langevin_steps": "lsteps",
                  "step_size": "lstep", "noise_std": "lnoise", "n_layer": "layers", "d_model": "d"}
TRAIN_INTS = frozenset({"batch_size", "chains", "langevin_steps", "n_layer", "d_model"})
# Settings the form offers as a fixed list of choices.
TRAIN_CHOICES: dict[str, tuple[float, ...]] = {
    "lr": (1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2),
    "d_model": (8, 16, 32, 48, 64, 96, 128),
}


@dataclass
class TrainState:
    """What a Train-page link restores: the start mode and the form's settings."""

    mode: str = "scratch"
    settings: dict[str, float] = field(default_factory=dict)  # name -> value, names of TRAIN_URL_KEYS


def encode_train(state: TrainState, defaults: Mapping[str, Any]) -> dict[str, str]:
    """Query parameters for the settings that differ from `defaults` (short links)."""
    q: dict[str, str] = {}
    if state.mode != "scratch":
        q["mode"] = state.mode
    for name, key in TRAIN_URL_KEYS.items():
        value = state.settings.get(name)
        if value is None or value == defaults.get(name):
            continue
        q[key] = str(int(value)) if name in TRAIN_INTS else f"{float(value):g}"
    return q


def decode_train(
    params: Mapping[str, Any], defaults: Mapping[str, Any], bounds: Mapping[str, tuple[float, float]]
) -> tuple[TrainState, list[str]]:
    """Parse a Train link leniently: a bad value keeps its default and adds a warning."""
    state = TrainState(settings={name: defaults[name] for name in TRAIN_URL_KEYS})
    warnings: list[str] = []
    state.mode = _choice(params.get("mode"), TRAIN_MODES, state.mode, "training mode",
                         "starting from scratch", warnings)
    for name, key in TRAIN_URL_KEYS.items():
        raw = _first(params.get(key))
        if raw is None:
            continue
        value = parse_number(raw)
        lo, hi = bounds[name]
        ok = value is not None and lo <= value <= hi
        if ok and name in TRAIN_INTS:
            ok = float(value).is_integer()  # type: ignore[arg-type]
        if ok and name in TRAIN_CHOICES:
            ok = any(math.isclose(value, c, rel_tol=1e-9) for c in TRAIN_CHOICES[name])  # type: ignore[arg-type]
        if not ok:
            warnings.append(f"Ignored the link's {key}={raw!r} (allowed: {_allowed(name, lo, hi)}).")
            continue
        if name in TRAIN_CHOICES:
            value = min(TRAIN_CHOICES[name], key=lambda c: abs(c - value))  # type: ignore[operator]
        state.settings[name] = int(value) if name in TRAIN_INTS else float(value)  # type: ignore[arg-type]
    return state, warnings


def _allowed(name: str, lo: float, hi: float) -> str:
    if name in TRAIN_CHOICES:
        return ", ".join(f"{c:g}" for c in TRAIN_CHOICES[name])
    return f"{'integers ' if name in TRAIN_INTS else ''}{lo:g} to {hi:g}"
