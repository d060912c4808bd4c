"""Pure state updates for the explorer (no Streamlit): context edits, click and table
validation and the context cap. The pages' share links are `iclebm.ui.page_state`.

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
