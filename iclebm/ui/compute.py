"""Memoised library calls for the pages, keyed by (model key, context, settings).

The numbers come from `iclebm.probes.landscape`; this module only caches them, so a widget that
does not touch a landscape never recomputes it. `model_key` (from `AppContext`) stands for
the weights: the model itself is not hashed (leading underscore).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from iclebm.models.energy import EnergyTransformer
from iclebm.probes import landscape as L


@st.cache_data(show_spinner=False, max_entries=256)
def landscape(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple, res: int,
              arrow_res: int) -> L.Landscape:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return L.compute_landscape(_model, pts, box, res, arrow_res)


@st.cache_data(show_spinner=False, max_entries=64)
def film_strip(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple, res: int) -> L.FilmStrip:
    return L.compute_film_strip(_model, np.asarray(points, dtype=np.float64).reshape(-1, 2), box, res)


@st.cache_data(show_spinner=False, max_entries=32)
def true_density(means: tuple, stds: tuple, box: tuple, res: int) -> np.ndarray:
    return L.true_log_density(L.mixture_from_params(means, stds), box, res)


def session_memo(name: str, key: Any, build: Callable[[], Any]) -> Any:
    """One-entry memo in session state: rebuild only when `key` changes (figures, per session)."""
    ss = st.session_state
    entry = ss.get(f"_memo_{name}")
    if entry is None or entry[0] != key:
        entry = (key, build())
        ss[f"_memo_{name}"] = entry
    return entry[1]
