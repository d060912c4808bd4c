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


PendingRow = tuple[float | None, float | None]  # a new table row still missing a value


@dataclass
class EditResult:
    points: list[Point]
    messages: list[str] = field(default_factory=list)
    changed: bool = False  # the context points changed
    # New rows only partly filled in: the table keeps showing them (below the points) until both
    # values are in, so a half-typed row is never lost when the table is redrawn.
    pending: list[PendingRow] = field(default_factory=list)


def _cell(value: Any) -> tuple[float | None, bool]:
    """A table cell as (number or None when empty, whether it is bad: text that is not a finite number)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, False
    number = parse_number(value)
    return number, number is None


def _edit_point(i: int, old: Point, row: Mapping[str, Any], box: Box) -> tuple[Point, str | None]:
    """An edit of context point i: the new point, or the old one and why the edit was refused."""
    new = list(old)
    for axis, name in enumerate("xy"):
        if name not in row:
            continue
        number, _ = _cell(row[name])
        if number is None:
            what = "is empty" if _cell(row[name]) == (None, False) else f"= {row[name]!r} is not a number"
            return old, f"Row {i + 1} rejected: {name} {what}; kept ({old[0]:.3f}, {old[1]:.3f})."
        new[axis] = number
    problem = point_problem(new[0], new[1], box)
    if problem is not None:
        return old, f"Row {i + 1} rejected: {problem}; kept ({old[0]:.3f}, {old[1]:.3f})."
    return (new[0], new[1]), None


def _edit_new_row(label: str, old: PendingRow, row: Mapping[str, Any], box: Box
                  ) -> tuple[Point | None, PendingRow | None, list[str]]:
    """A new row (typed in, or an earlier pending row edited): (a complete point, or the row still
    pending, or neither when it was refused outright) and messages. A bad cell keeps its old value."""
    cells = list(old)
    msgs: list[str] = []
    for axis, name in enumerate("xy"):
        if name not in row:
            continue
        number, bad = _cell(row[name])
        if bad:
            msgs.append(f"{label}: {name} = {row[name]!r} is not a number; not taken.")
        else:
            cells[axis] = number
    x, y = cells
    if x is not None and y is not None:
        problem = point_problem(x, y, box)
        if problem is None:
            return (x, y), None, msgs
        msgs.append(f"{label} rejected: {problem}.")
        x, y = old
    if msgs and x is None and y is None:
        return None, None, msgs  # refused and nothing valid left to keep
    return None, (x, y), msgs


def apply_editor_changes(
    points: Sequence[Point], changes: Mapping[str, Any] | None, box: Box, max_context: int,
    pending: Sequence[PendingRow] = (),
) -> EditResult:
    """Apply an `st.data_editor` edit state {edited_rows, added_rows, deleted_rows} to a table that
    shows the context points (rows 0..n-1) followed by the `pending` half-filled new rows.

    Cells arrive as typed (the table's columns are text, so letters are not turned into 0 on the
    way). A bad edit of a point (not a number, empty, NaN/inf, outside the box) is refused and the
    point keeps its old value; a bad cell of a new row is refused and the rest of the row kept. A new
    row with one value is kept pending (every one of them, not only the first); a complete valid one
    joins the context. Every refusal is one message; the caller redraws the table from the result.
    """
    pts = [tuple(p) for p in points]
    rows: list[PendingRow] = [tuple(r) for r in pending]  # type: ignore[misc]
    if not changes:
        return EditResult(pts, pending=rows)  # type: ignore[arg-type]
    n = len(pts)
    msgs: list[str] = []
    out: list[Point | None] = list(pts)  # type: ignore[arg-type]
    rows_out: list[PendingRow | None] = list(rows)
    done: list[Point] = []
    edited = changes.get("edited_rows") or {}
    for key, row in edited.items():
        i = _index(key)
        if i is None or not isinstance(row, Mapping):
            continue
        if 0 <= i < n:
            out[i], msg = _edit_point(i, pts[i], row, box)  # type: ignore[arg-type]
            msgs += [msg] if msg else []
        elif 0 <= i - n < len(rows):
            point, rows_out[i - n], m = _edit_new_row(f"Row {i + 1}", rows[i - n], row, box)
            msgs += m
            done += [point] if point else []
    for key in changes.get("deleted_rows") or []:
        i = _index(key)
        if i is not None and 0 <= i < n:
            out[i] = None
        elif i is not None and 0 <= i - n < len(rows):
            rows_out[i - n] = None
    for j, row in enumerate(changes.get("added_rows") or []):
        label = f"New row {len(rows) + j + 1}"
        point, still, m = _edit_new_row(label, (None, None), row if isinstance(row, Mapping) else {}, box)
        msgs += m
        done += [point] if point else []
        rows_out.append(still)
    kept, cap = cap_context([p for p in out if p is not None] + done, max_context)
    if cap:
        msgs.append(cap)
    return EditResult(kept, msgs, kept != pts, [r for r in rows_out if r is not None])


def _index(key: Any) -> int | None:
    try:
        return int(key)
    except (TypeError, ValueError):
        return None
