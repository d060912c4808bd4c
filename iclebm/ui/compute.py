"""Memoised library calls for the pages, keyed by (model key, context, settings).

The numbers come from `iclebm.probes.landscape`; this module only caches them, so a widget that
does not touch a landscape never recomputes it. `model_key` (from `AppContext`) stands for
the weights: the model itself is not hashed (leading underscore).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from iclebm.models.energy import EnergyTransformer
from iclebm.probes import landscape as L
from iclebm.tasks import GaussianMixture


@st.cache_data(show_spinner=False, max_entries=256)
def landscape(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple, res: int,
              arrow_res: int) -> L.Landscape:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return L.compute_landscape(_model, pts, box, res, arrow_res)


@st.cache_data(show_spinner=False, max_entries=64)
def film_strip(model_key: str, _model: EnergyTransformer, points: tuple, box: tuple, res: int) -> L.FilmStrip:
    return L.compute_film_strip(_model, np.asarray(points, dtype=np.float64).reshape(-1, 2), box, res)


@st.cache_data(show_spinner=False, max_entries=32)
def true_density(mixture_json: str, box: tuple, res: int) -> np.ndarray:
    """The drawn mixture's exact log density (keyed by its settings as JSON; anisotropic ones too)."""
    return L.true_log_density(mixture_of(json.loads(mixture_json)), box, res)


def mixture_of(mix: dict) -> GaussianMixture:
    """The task that the app's mixture settings {"k", "spread", "width", "seed"[, "limit", "ratio"]} draw."""
    task, _ = L.draw_mixture(mix["k"], mix["spread"], tuple(mix["width"]), mix["seed"], 0,
                             mix.get("limit", 8.0), tuple(mix.get("ratio", (1.0, 1.0))))
    return task


def session_memo(name: str, key: Any, build: Callable[[], Any]) -> Any:
    """One-entry memo in session state: rebuild only when `key` changes (figures, per session)."""
    ss = st.session_state
    entry = ss.get(f"_memo_{name}")
    if entry is None or entry[0] != key:
        entry = (key, build())
        ss[f"_memo_{name}"] = entry
    return entry[1]
