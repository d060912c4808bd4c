"""A clickable canvas as a Streamlit fragment: a click redraws the canvas first, then the page.

A click used to rerun the whole page before the new picture could go out; the panels after the
canvas (points table, film strip, charts, the share link) then competed with the browser's drawing
for the two cores. In a fragment the click reruns only the canvas; its callback (`on_click`) marks
that the rest of the page is stale, and the fragment asks for the full run once the new figure has
gone out. That run finds the picture cached and its figure unchanged, which the browser skips.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from iclebm.ui.guard import guarded

_STALE = "_iclebm_page_stale_after_click"


def page_run_started() -> None:
    """Call in the full page run before the fragment: this run draws everything, so no second one."""
    st.session_state.pop(_STALE, None)


def on_click(apply: Callable[[], None]) -> Callable[[], None]:
    """The canvas callback: apply the click, and mark the rest of the page stale."""

    def callback() -> None:
        apply()
        st.session_state[_STALE] = True

    return callback


@st.fragment
def canvas_fragment(draw: Callable[[], None], what: str) -> None:
    """Run `draw` (which renders the canvas with `on_click(...)`) as a fragment; after a click, the
    full page run follows."""
    with guarded(what):
        draw()
    if st.session_state.pop(_STALE, False):
        st.rerun(scope="app")
