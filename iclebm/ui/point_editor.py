"""Editing a page's context points: clicks on the canvas, undo / clear, the points table, and
feeding a drawn task's points into the context one at a time.

The Density and Regression pages each keep their own points under their own session-state
keys; a `PointEditor` names those keys (and the widget keys), and its methods are the
callbacks and panels both pages share. Points are a list of (x, y) floats; the version key
changes on every edit and keys the points table and the canvas revision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from iclebm.ui import state as S
from iclebm.ui.canvas import new_clicks
from iclebm.ui.guard import flash

EDIT_KINDS = ("edited_rows", "added_rows", "deleted_rows")


@dataclass(frozen=True)
class PointEditor:
    points: str  # session key of the list of (x, y) points
    version: str  # bumped on every edit
    box: str  # the page's box and context cap, stored for the callbacks
    cap: str
    canvas: str  # widget key of the click canvas
    table: str  # prefix of the points table's widget key (the version is appended)
    undo: str  # button keys
    clear: str
    last_added: str  # the last clicked point
    source: str  # what the points were drawn from (forgotten on clear)
    queue: str  # points still to feed
    feeding: str  # whether feeding plays
    last_feed: str  # time.monotonic() of the last feed
    also_set: tuple[tuple[str, Any], ...] = ()  # further keys set on every edit

    # ---- the points -------------------------------------------------------------------

    def set_points(self, pts: list, note: str | None = None, level: str = "info") -> None:
        """Replace the context; bumps the version that keys the table and canvas revision."""
        ss = st.session_state
        ss[self.points] = [(float(x), float(y)) for x, y in pts]
        ss[self.version] = ss.get(self.version, 0) + 1
        ss.pop(self.last_added, None)  # a click sets it again after this; any other edit makes it stale
        for key, value in self.also_set:
            ss[key] = value
        if note:
            flash(level, note)

    def remember(self, box: tuple[float, float], cap: int) -> None:
        """Store the box and context cap for the callbacks (they run before the page script)."""
        st.session_state[self.box], st.session_state[self.cap] = box, cap

    def enforce_cap(self) -> None:
        """Drop the oldest points beyond the cap (e.g. after a smaller model was selected)."""
        ss = st.session_state
        if len(ss[self.points]) > ss[self.cap]:
            pts, msg = S.cap_context(ss[self.points], ss[self.cap])
            self.set_points(pts, msg, "warning")

    def last_click_note(self) -> str:
        last = st.session_state.get(self.last_added)
        return "" if last is None else f" · last click added ({last[0]:.3f}, {last[1]:.3f})"

    # ---- callbacks (run before the script, so the page drawn next already shows the change) ----

    def on_canvas_click(self) -> None:
        """Add every click not applied yet (clicks made during a busy run arrive together)."""
        ss = st.session_state
        box, cap = ss[self.box], ss[self.cap]
        for click in new_clicks(self.canvas):
            point, problem = S.click_to_point(click, box)
            if problem:
                flash("warning", problem)
                continue
            assert point is not None
            pts, msg = S.add_point(ss[self.points], point[0], point[1], box, cap)
            self.set_points(pts, msg, "warning")
            ss[self.last_added] = point

    def on_undo(self) -> None:
        self.set_points(S.undo_point(st.session_state[self.points]))

    def on_clear(self) -> None:
        ss = st.session_state
        ss[self.queue], ss[self.feeding], ss[self.source] = [], False, None
        ss[self.pending_key()] = []
        self.set_points([])

    # ---- the points table ---------------------------------------------------------------

    def table_key(self) -> str:
        # The version in the key gives a fresh editor whenever the context changes elsewhere.
        return f"{self.table}-{st.session_state[self.version]}"

    def pending_key(self) -> str:
        """Session key of the table's half-filled new rows (kept across redraws of the table)."""
        return f"{self.table}_pending"

    def apply_table_edits(self) -> None:
        """Apply the points table's pending edits before anything is drawn.

        Done in the script body rather than an on_change callback so that edits seeded
        through session state (AppTest) take the same path as edits from the browser.
        Every edit redraws the table from the result (a fresh editor key), so a refused value
        never stays on screen and its message shows once, not on every rerun.
        """
        ss = st.session_state
        changes = ss.get(self.table_key())
        if not isinstance(changes, dict) or not any(changes.get(k) for k in EDIT_KINDS):
            return
        result = S.apply_editor_changes(ss[self.points], changes, ss[self.box], ss[self.cap],
                                        ss.get(self.pending_key(), []))
        for m in result.messages:
            flash("warning", m)
        ss[self.pending_key()] = result.pending
        if result.changed:
            self.set_points(result.points)
        else:
            ss[self.version] += 1  # redraw the table from the (unchanged) valid context

    def context_panel(self, box: tuple[float, float], caption: str) -> None:
        """Undo / Clear buttons and the editable points table."""
        ss = st.session_state
        c1, c2 = st.columns(2)
        c1.button("↶ Undo", on_click=self.on_undo, disabled=not ss[self.points], width="stretch",
                  key=self.undo)
        c2.button("✕ Clear", on_click=self.on_clear, width="stretch", key=self.clear,
                  disabled=not ss[self.points] and not ss[self.queue])
        pending = ss.get(self.pending_key(), [])
        lo, hi = box
        # Text columns: the typed text reaches apply_editor_changes as typed, so letters are refused
        # with a message (a number column turns them into 0 in the browser and the point moves).
        st.data_editor(
            points_frame(ss[self.points], pending), key=self.table_key(), num_rows="dynamic", height=230,
            width="stretch", hide_index=True, disabled=["#"],
            column_config={
                "#": st.column_config.NumberColumn("#", width="small", help="order in the context"),
                "x": st.column_config.TextColumn("x", help=f"a number in [{lo:g}, {hi:g}]"),
                "y": st.column_config.TextColumn("y", help=f"a number in [{lo:g}, {hi:g}]"),
            },
        )
        if pending:
            st.caption(f"{len(pending)} new row(s) without # wait for a value; they join the context "
                       "once both x and y are in.")
        st.caption(caption)

    # ---- feeding a drawn task's points ---------------------------------------------------

    def feed(self, pts: list, all_at_once: bool) -> None:
        """Put drawn points into the context now, or queue them to feed one per tick."""
        ss = st.session_state
        if all_at_once:
            ss[self.queue], ss[self.feeding] = [], False
            self.set_points(pts)
        else:
            self.set_points([])
            ss[self.queue], ss[self.feeding] = pts, True
            ss[self.last_feed] = time.monotonic()

    def feed_one(self) -> None:
        ss = st.session_state
        if not ss[self.queue]:
            return
        x, y = ss[self.queue].pop(0)
        pts, msg = S.add_point(ss[self.points], x, y, ss[self.box], ss[self.cap])
        self.set_points(pts, msg, "warning")
        ss[self.last_feed] = time.monotonic()

    def feed_tick(self, tick_s: float) -> None:
        """A ticker fragment's body: feeds one point per tick while playing, then a full rerun
        redraws the canvas.

        The fragment also runs inside every full run; the clock check keeps those runs
        (including the one each feed triggers) from feeding a second point at once.
        """
        ss = st.session_state
        if not ss.get(self.feeding) or not ss.get(self.queue):
            return
        if time.monotonic() - ss.get(self.last_feed, 0.0) < 0.9 * tick_s:
            return
        self.feed_one()
        st.rerun()

    def feed_status(self, noun: str, ticker: Callable[[], None]) -> None:
        """'N points still to feed' and, while playing, the page's ticker fragment."""
        ss = st.session_state
        queue = ss[self.queue]
        if queue:
            playing = " · playing" if ss[self.feeding] else " · paused"
            st.caption(f"{len(queue)} {noun}(s) still to feed{playing}")
        if ss[self.feeding] and queue:
            ticker()
        elif ss[self.feeding]:
            ss[self.feeding] = False


def _text(v: float | None) -> str | None:
    return None if v is None else f"{v:.3f}"


def points_frame(points: list, pending: list) -> pd.DataFrame:
    """The points table: the context (numbered) and then the half-filled new rows (no number),
    values as text to 3 decimals (edits keep the full precision of the cells not edited)."""
    rows = [(p[0], p[1]) for p in points] + [tuple(r) for r in pending]
    return pd.DataFrame({
        "#": pd.Series(list(range(1, len(points) + 1)) + [None] * len(pending), dtype="Int64"),
        "x": pd.Series([_text(r[0]) for r in rows], dtype=object),
        "y": pd.Series([_text(r[1]) for r in rows], dtype=object),
    })
