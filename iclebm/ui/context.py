"""The context D that the pages share: the points (and the mixture they were drawn from).

The Density page edits it; other pages read it (the Train page draws the trained model's
landscape on it). Points are a list of (x, y) floats in `st.session_state["points"]`;
`pts_version` changes on every edit and keys the points table and the canvas revision.
"""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from iclebm.tasks import GaussianMixture
from iclebm.ui import compute, share
from iclebm.ui.page_state import Table
from iclebm.ui.point_editor import PointEditor
from iclebm.ui.state import cap_context

# The Density page edits the shared context through these keys (its widgets included).
POINTS = PointEditor(
    points="points", version="pts_version", box="_box", cap="_max_context", canvas="canvas", table="table",
    undo="undo", clear="clear", last_added="last_added", source="mixture", queue="feed_queue",
    feeding="feeding", last_feed="_last_feed", also_set=(("scrub_all", True),),
)


def init_context() -> None:
    ss = st.session_state
    ss.setdefault("points", [])
    ss.setdefault("pts_version", 0)
    ss.setdefault("scrub_all", True)
    ss.setdefault("mixture", None)  # the drawn mixture: {"k", "spread", "width", "seed", "limit"[, "ratio"]}


def points() -> list[tuple[float, float]]:
    return list(st.session_state.get("points", []))


def set_points(pts: list, note: str | None = None, level: str = "info") -> None:
    """Replace the context; bumps the version that keys the table and canvas revision."""
    POINTS.set_points(pts, note, level)


def restore_link(table: Table) -> None:
    """The first time a page that reads the Density page's context runs in a session: its state from
    the URL (defaults where it is silent), the link's points becoming the shared context."""
    values = share.restore_once(table)
    if values is None:
        return
    share.apply(table, values, skip=("points",))
    set_points(values["points"])


def context_for_model(max_context: int) -> list:
    """The shared points as a page that only reads them uses them: when there are more than the model
    reads, the newest `max_context` are kept, in the shared context too, with a warning saying so."""
    pts = list(st.session_state["points"])
    if len(pts) > max_context:
        pts, msg = cap_context(pts, max_context)
        set_points(pts, msg, "warning")
    return pts


def current_mixture() -> GaussianMixture | None:
    """The drawn mixture the points came from (None when they were clicked or loaded)."""
    mix = st.session_state.get("mixture")
    if not mix:
        return None
    return compute.mixture_of(mix)


def true_density_grid(box: tuple[float, float], res: int) -> np.ndarray | None:
    """The drawn mixture's exact log density on the landscape grid (None without a mixture)."""
    mix = st.session_state.get("mixture")
    if not mix:
        return None
    return compute.true_density(json.dumps(mix, sort_keys=True), box, res)
