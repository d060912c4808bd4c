"""The "Your data" panel of the Density and Regression pages: upload a CSV/TSV, paste text or pick a
real example data set, and use it as the page's context; download the context as CSV.

The logic is plain functions (`prepare`, `bad_rows_message`, `context_csv`, `current_map`), tested
without a browser; `data_panel` only lays out widgets. The context is replaced through the page's
`PointEditor.set_points`, so the version key, undo, the points table and the share link behave as for
any other edit; on any error the context stays as it was. Bad rows are reported by row number and the
good rows kept (the app's mode; `render` on the command line is strict instead).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

from iclebm.data.examples import EXAMPLES, load_example
from iclebm.data.points import BadRow, points_csv, read_points
from iclebm.data.rescale import SUBSET_KINDS, AffineMap, choose_subset, fit_into_box, outside_box
from iclebm.errors import DataError
from iclebm.grid import Box
from iclebm.probes.landscape import Trajectory
from iclebm.ui.guard import flash
from iclebm.ui.point_editor import PointEditor

POLICIES = ("reject", "rescale into the box")
SOURCES = ("paste", "upload", "example")
SHOWN_BAD_ROWS = 8  # more than this are counted, not listed


@dataclass
class Prepared:
    """Points ready for the context (box coordinates), the map from the data (None: used as given),
    the two columns' names and the messages for the user as (level, text)."""

    points: list[tuple[float, float]]
    mapping: AffineMap | None
    columns: tuple[str, str]
    messages: list[tuple[str, str]] = field(default_factory=list)


def bad_rows_message(bad: list[BadRow]) -> str:
    shown = "; ".join(map(str, bad[:SHOWN_BAD_ROWS]))
    more = f"; and {len(bad) - SHOWN_BAD_ROWS} more" if len(bad) > SHOWN_BAD_ROWS else ""
    return f"{len(bad)} bad row(s) skipped, the good rows kept: {shown}{more}."


def prepare(points: np.ndarray, columns: tuple[str, str], box: Box, cap: int, policy: str = POLICIES[0],
            subset: str = "random", seed: int = 0, mapping: AffineMap | None = None,
            bad: list[BadRow] | None = None) -> Prepared:
    """Points in the data's units (or already in the box, with their `mapping`) -> the context: points
    outside the box rejected with their count, or all of them rescaled into it (policy); a subset
    beyond `cap`. DataError when nothing is left (the caller then keeps the context)."""
    msgs: list[tuple[str, str]] = [("warning", bad_rows_message(bad))] if bad else []
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lo, hi = box
    if mapping is None and policy == POLICIES[1]:
        mapping = fit_into_box(pts, box)
        pts = mapping.to_box(pts)
        msgs.append(("info", f"Rescaled into the box [{lo:g}, {hi:g}]²: {mapping.describe(columns)}. The "
                             "axes are the model's; the CSV download gives your units back."))
    else:
        out = outside_box(pts, box)
        if out.all():
            raise DataError(f"all {len(pts)} points lie outside the box [{lo:g}, {hi:g}]²; choose "
                            "'rescale into the box' to map them into it")
        if out.any():
            msgs.append(("warning", f"{int(out.sum())} of {len(pts)} points lie outside the box "
                                    f"[{lo:g}, {hi:g}]² and were rejected; choose 'rescale into the box' "
                                    "to keep them."))
            pts = pts[~out]
    idx, note = choose_subset(len(pts), cap, subset, seed)
    if note:
        msgs.append(("info", note))
    return Prepared([(float(x), float(y)) for x, y in pts[idx]], mapping, columns, msgs)


def context_csv(points: list, loaded: dict | None) -> str:
    """The context as CSV: in the data's units and column names while it comes from rescaled data
    (`current_map`), else the model's coordinates as x, y."""
    if loaded and loaded.get("map"):
        m = AffineMap.from_dict(loaded["map"])
        return points_csv(m.to_data(points) if points else [], tuple(loaded["columns"]))
    return points_csv(points)


def current_map(points: list, loaded: dict | None) -> dict | None:
    """The loaded data's record while the context still holds any of its points (clicks and edits
    keep the map; a draw, a probe or Clear replaces every point and with them the map)."""
    if not loaded or not points:
        return None
    return loaded if set(map(tuple, points)) & set(map(tuple, loaded["points"])) else None


GIF_RESOLUTION = 48  # the film strip's panels: small multiples need little resolution


def gif_bytes(model: object, points: list, what: str, trajectory: Trajectory | None = None,
              suffix: str = ".gif") -> bytes:
    """An animated GIF (or MP4: `suffix`) of the film strip, a Langevin run (`trajectory`: the page's
    own) or the thinking, drawn on the server by `iclebm.render_figure` from the same probes the page
    draws."""
    from iclebm.render.figures import render_figure  # matplotlib: loaded on the first export only

    with tempfile.TemporaryDirectory() as folder:
        out = render_figure(model, points, Path(folder) / f"{what}{suffix}", what, GIF_RESOLUTION,
                            trajectory=trajectory)
        return out.read_bytes()


def mp4_missing() -> str | None:
    """Why MP4 export is off here (no encoder), or None when it works."""
    from iclebm.errors import CapabilityError
    from iclebm.render.figures import ffmpeg_path

    try:
        ffmpeg_path()
    except CapabilityError as e:
        return str(e)
    return None


def animation_buttons(label: str, name: str, make: Callable[[str], bytes], key: str, disabled: bool,
                      help: str) -> None:
    """Two downloads of one animation, side by side: GIF, and MP4 where an encoder is here (else the
    button stays, disabled, saying what to install). `make(suffix)` draws it only when clicked."""
    c1, c2 = st.columns([2, 1])
    c1.download_button(f"{label} GIF", data=lambda: make(".gif"), file_name=f"{name}.gif", mime="image/gif",
                       on_click="ignore", disabled=disabled, key=f"{key}_gif", width="stretch", help=help)
    missing = mp4_missing()
    c2.download_button("MP4", data=lambda: make(".mp4"), file_name=f"{name}.mp4", mime="video/mp4",
                       on_click="ignore", disabled=disabled or missing is not None, key=f"{key}_mp4",
                       width="stretch", help=missing or help)


# ---- the widgets --------------------------------------------------------------------------


def _key(prefix: str, name: str) -> str:
    return f"{prefix}_data_{name}"


def _source_data(prefix: str) -> str | bytes | None:
    ss = st.session_state
    kind = ss.get(_key(prefix, "source"), SOURCES[0])
    if kind == "upload":
        f = ss.get(_key(prefix, "file"))
        return None if f is None else f.getvalue()
    if kind == "paste":
        return ss.get(_key(prefix, "text")) or None
    return None


def _peek_columns(data: str | bytes | None) -> list[str] | None:
    """The table's column names when it has more than two (for the pickers); None otherwise or when
    it cannot be read (the Load button then says why)."""
    if data is None:
        return None
    try:
        t = read_points(data)
    except DataError:
        return None
    if t.n_columns <= 2:
        return None
    return list(t.header) if t.header else [f"column {i}" for i in range(t.n_columns)]


def on_load(editor: PointEditor, box: Box, cap: int, prefix: str) -> None:
    """The Load button: replace the context, or keep it and say why not."""
    ss = st.session_state
    try:
        if ss.get(_key(prefix, "source")) == "example":
            ex = load_example(ss.get(_key(prefix, "example")) or next(iter(EXAMPLES)), box)
            prep = prepare(ex.points, ex.example.columns, box, cap, subset=ss.get(_key(prefix, "subset"),
                           "random"), mapping=ex.mapping)
            prep.messages.insert(0, ("info", f"Source: {ex.example.source}. Standardised into the box: "
                                             f"{ex.mapping.describe(ex.example.columns)}."))
        else:
            data = _source_data(prefix)
            if data is None:
                raise DataError("nothing to load: upload a file or paste some rows first")
            columns = None
            if _key(prefix, "xcol") in ss and _peek_columns(data):
                columns = (int(ss[_key(prefix, "xcol")]), int(ss[_key(prefix, "ycol")]))
            t = read_points(data, columns)
            prep = prepare(t.points, t.columns, box, cap, ss.get(_key(prefix, "policy"), POLICIES[0]),
                           ss.get(_key(prefix, "subset"), "random"), bad=t.bad)
    except DataError as e:
        flash("error", f"Not loaded, the context is unchanged: {e}")
        return
    ss[editor.queue], ss[editor.feeding], ss[editor.source] = [], False, None
    editor.set_points(prep.points)
    ss[_key(prefix, "loaded")] = {"map": prep.mapping.as_dict() if prep.mapping else None,
                                  "columns": list(prep.columns), "points": prep.points}
    for level, text in prep.messages:
        flash(level, text)
    flash("success", f"Loaded {len(prep.points)} point(s) as the context.")


def data_panel(editor: PointEditor, box: Box, cap: int, kind: str, prefix: str, model: object = None
               ) -> None:
    """The expander: source, column pickers, out-of-box policy, subset, Load; the map in use; CSV; with a
    density `model`, a GIF of the film strip."""
    ss = st.session_state
    with st.expander("Your data", expanded=False):
        source = st.segmented_control("source", SOURCES, key=_key(prefix, "source"), default=SOURCES[0],
                                      required=True, label_visibility="collapsed")
        if source == "upload":
            st.file_uploader("CSV or TSV, header optional", type=["csv", "tsv", "txt", "dat"],
                             key=_key(prefix, "file"))
        elif source == "paste":
            st.text_area("one point per line: x, y (comma, tab, semicolon or spaces)", height=110,
                         key=_key(prefix, "text"), placeholder="x,y\n1.2, 3.4\n-0.5, 2.0")
        else:
            names = sorted(EXAMPLES, key=lambda n: EXAMPLES[n].kind != kind)  # this page's kind first
            st.selectbox("example", names, key=_key(prefix, "example"),
                         format_func=lambda n: f"{n}: {' vs '.join(EXAMPLES[n].columns)}")
            name = ss.get(_key(prefix, "example")) or names[0]
            st.caption(EXAMPLES[name].source)
            if model is not None and EXAMPLES[name].kind == kind:
                comparison(model, name, prefix)
        header = _peek_columns(_source_data(prefix)) if source != "example" else None
        if header:
            c1, c2 = st.columns(2)
            c1.selectbox("x column", range(len(header)), index=0, format_func=header.__getitem__,
                         key=_key(prefix, "xcol"))
            c2.selectbox("y column", range(len(header)), index=1, format_func=header.__getitem__,
                         key=_key(prefix, "ycol"))
        c1, c2 = st.columns(2)
        c1.radio("points outside the box", POLICIES, key=_key(prefix, "policy"), disabled=source == "example")
        c2.radio(f"more than {cap} points: keep", SUBSET_KINDS, index=2, key=_key(prefix, "subset"))
        st.button("Use as context", type="primary", key=_key(prefix, "load"), on_click=on_load,
                  args=(editor, box, cap, prefix), width="stretch")
        points = list(ss.get(editor.points, []))
        loaded = current_map(points, ss.get(_key(prefix, "loaded")))
        if loaded and loaded.get("map"):
            m = AffineMap.from_dict(loaded["map"])
            st.caption(f"Map in use: {m.describe(tuple(loaded['columns']))}; the download undoes it.")
        st.download_button("Download context as CSV", data=context_csv(points, loaded),
                           file_name="context.csv", mime="text/csv", on_click="ignore",
                           key=_key(prefix, "csv"), width="stretch", disabled=not points)
        if model is not None and kind == "density":
            gif_buttons(model, points, prefix)
        elif model is not None:
            animation_buttons("Thinking", "thinking",
                              lambda sfx: gif_bytes(model, points, "thinking", suffix=sfx),
                              _key(prefix, "think"), not points,
                              "ŷ(x) per thinking step on p(y | x, context), the card's thinking")


COMPARE_SPLITS = 5  # seconds in the app; `python -m iclebm examples` takes 20 by default


def comparison(model: object, name: str, prefix: str) -> None:
    """The model beside the baselines on the example data set: held-out NLL over random context/test
    splits (`iclebm.evaluation.examples`), computed when asked."""
    from iclebm.evaluation.examples import example_markdown, example_table

    ss = st.session_state
    key = _key(prefix, "compare")
    sig = ((getattr(model, "card", None) or {}).get("name"), (getattr(model, "card", None) or {}).get(
        "weights_sha256"), name)
    if st.button(f"Compare the model with the baselines on {name}", key=f"{key}_run", width="stretch",
                 help=f"{COMPARE_SPLITS} random splits of the data set: the first n points are the "
                      "context, the rest are scored"):
        with st.spinner(f"Scoring the model and the baselines on {COMPARE_SPLITS} splits of {name}…"):
            ss[key] = {"sig": sig, "table": example_table(model, name, splits=COMPARE_SPLITS)}
    res = ss.get(key)
    if res and res["sig"] == sig:
        table = res["table"]
        st.markdown("Held-out NLL (nats/point, box coordinates; lower is better), mean ± s.e. over "
                    f"{table['splits']} splits, {table['n_test']} test points each:\n\n"
                    + example_markdown(table, "nll"))
        if "mse" in table:
            st.markdown("MSE of the point prediction (ols/ridge/knn NLL assumes the prior's noise):\n\n"
                        + example_markdown(table, "mse"))


def gif_buttons(model: object, points: list, prefix: str) -> None:
    """Made only when clicked (a callable `data`): nothing is drawn for a page that is never exported.
    (The Langevin GIF sits under the sampler's own figure, where its run is known to be current.)"""
    animation_buttons("Film strip", "film-strip",
                      lambda sfx: gif_bytes(model, points, "filmstrip", suffix=sfx),
                      _key(prefix, "strip"), not points, "p(x | first n points), one frame per n")
