"""Which model the app shows: checkpoints on disk, models uploaded or trained in this session,
and the one the sidebar selected, by family: the density pages (Density, Inside, Train) show the
selected density model, the Regression page the selected regression model; each is remembered
on its own (session keys `model_choice` and `reg_model`).

A selector option is "file:NAME" (checkpoints/NAME.safetensors, the shipped models, or
runs/NAME.safetensors, the models the Train page saved) or "session:NAME" (held in session
state). `AppContext` is what every page receives: the selected model and its box.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from iclebm.card import box_of, is_regression
from iclebm.checkpoints import (
    CHECKPOINT_DIR,
    app_default_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_card,
)
from iclebm.errors import CheckpointError
from iclebm.models.energy import EnergyTransformer


@dataclass(frozen=True)
class AppContext:
    """The selected model, as every page sees it in this run."""

    model: EnergyTransformer
    model_key: str  # changes whenever the weights may differ: keys every memoised computation
    option: str  # the selector option, "file:NAME" or "session:NAME"
    box: tuple[float, float]
    max_context: int


def checkpoint_dir() -> Path:
    """The folder the selector lists (ICLEBM_CHECKPOINT_DIR, default checkpoints/)."""
    return Path(os.environ.get("ICLEBM_CHECKPOINT_DIR", str(CHECKPOINT_DIR)))


def runs_dir() -> Path:
    """Where the Train page saves models (ICLEBM_RUNS_DIR, default runs/ beside the checkpoints folder):
    checkpoints/ holds the shipped models, which no tool writes to (the CLI's `_check_output`)."""
    return Path(os.environ.get("ICLEBM_RUNS_DIR", str(checkpoint_dir().parent / "runs")))


def default_path() -> Path:
    """The app's default model (`iclebm.checkpoints.app_default_checkpoint`) in the selector's folder."""
    return app_default_checkpoint(checkpoint_dir())


@st.cache_resource(show_spinner=False, max_entries=8)
def _file_model(path: str, mtime: float) -> EnergyTransformer:
    """A checkpoint from disk, shared read-only by all sessions (never trained in place)."""
    model = load_checkpoint(path)
    for p in model.parameters():  # inference only: gradients flow to queries, not weights
        p.requires_grad_(False)
    return model


def file_options() -> dict[str, Path]:
    """Models on disk by name: the checkpoints folder's, the default, then runs/ (a saved run never
    hides a shipped model of the same name; the Train page refuses such a name anyway)."""
    paths = {p.stem: p for p in list_checkpoints(checkpoint_dir())}
    default = default_path()
    if default.exists():
        paths.setdefault(default.stem, default)
    for p in list_checkpoints(runs_dir()):
        paths.setdefault(p.stem, p)
    return paths


DENSITY_FAMILY, REGRESSION_FAMILY = "density", "regression"
FAMILIES = (DENSITY_FAMILY, REGRESSION_FAMILY)
# The session key of each family's selection (the sidebar selector's key on that family's pages).
CHOICE_KEY = {DENSITY_FAMILY: "model_choice", REGRESSION_FAMILY: "reg_model"}
# Pages by URL path that show regression models; every other page shows density models.
REGRESSION_PAGES = frozenset({"regression"})


def page_family(url_path: str) -> str:
    return REGRESSION_FAMILY if url_path in REGRESSION_PAGES else DENSITY_FAMILY


@st.cache_data(show_spinner=False, max_entries=256)
def _file_family(path: str, mtime: float) -> str:
    """A checkpoint's family from its card (an unreadable card counts as density: loading it says why)."""
    try:
        return REGRESSION_FAMILY if is_regression(read_card(path).get("task")) else DENSITY_FAMILY
    except (CheckpointError, OSError):
        return DENSITY_FAMILY


def model_family(model: EnergyTransformer) -> str:
    return REGRESSION_FAMILY if is_regression((model.card or {}).get("task")) else DENSITY_FAMILY


def option_family(option: str) -> str:
    """The family of a selector option (a file's card, or a session model's)."""
    kind, _, name = option.partition(":")
    if kind == "session":
        entry = st.session_state.get("session_models", {}).get(name)
        return DENSITY_FAMILY if entry is None else model_family(entry["model"])
    path = file_options().get(name)
    if path is None or not path.exists():
        return DENSITY_FAMILY
    return _file_family(str(path), path.stat().st_mtime)


def model_options(family: str = DENSITY_FAMILY) -> list[str]:
    """The selector's options for one family: files first (the default first), then session models."""
    default = default_path().stem
    files = [f"file:{name}" for name in sorted(file_options(), key=lambda n: (n != default, n))]
    options = files + [f"session:{name}" for name in st.session_state.get("session_models", {})]
    return [o for o in options if option_family(o) == family]


def option_label(option: str) -> str:
    kind, name = option.split(":", 1)
    if kind != "file":
        return f"{name}  (this session)"
    path = file_options().get(name)
    saved = path is not None and path.parent.resolve() == runs_dir().resolve()
    return f"{name}  (runs/)" if saved else f"{name}  (checkpoints/)"


def resolve_model(option: str) -> tuple[EnergyTransformer, str]:
    """(model, cache key) for a selector option; raises CheckpointError with the reason."""
    kind, name = option.split(":", 1)
    if kind == "session":
        entry = st.session_state.get("session_models", {}).get(name)
        if entry is None:
            raise CheckpointError(f"the session model {name!r} is gone")
        return entry["model"], entry["key"]
    path = file_options().get(name)
    if path is None:
        raise CheckpointError(f"no checkpoint named {name!r} in {checkpoint_dir()}")
    mtime = path.stat().st_mtime
    return _file_model(str(path), mtime), f"file:{path}:{mtime}"


def make_context(model: EnergyTransformer, model_key: str, option: str) -> AppContext:
    box = tuple(float(v) for v in box_of(model))
    return AppContext(model, model_key, option, box, int(model.config.max_context))  # type: ignore[arg-type]


def switch_model(option: str) -> str:
    """Select a model for every page of its family (returned). The selector widget already exists
    in this run, so the choice is applied at the top of the next run."""
    family = option_family(option)
    st.session_state[f"_pending_{CHOICE_KEY[family]}"] = option
    return family


def add_session_model(name: str, model: EnergyTransformer) -> str:
    """Keep `model` in this browser session under a unique name; returns its selector option."""
    models = st.session_state.setdefault("session_models", {})
    base, i = name, 2
    while name in models:
        name, i = f"{base} ({i})", i + 1
    models[name] = {"model": model.eval(), "key": f"session:{uuid.uuid4().hex}"}
    return f"session:{name}"
