"""Which model the app shows: checkpoints on disk, models uploaded or trained in this session,
and the one the sidebar selected (the same on every page).

A selector option is "file:NAME" (checkpoints/NAME.safetensors) or "session:NAME" (held in
session state). `AppContext` is what every page receives: the selected model and its box.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from iclebm.card import box_of
from iclebm.checkpoints import CHECKPOINT_DIR, DEFAULT_CHECKPOINT, list_checkpoints, load_checkpoint
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


# The app opens on the generalist when it is there: it was trained on 1-6 rotated elliptical
# components of many sizes, so free clicking (5 clusters, a ring, a line, a wide blob) gets a
# better landscape than from the 3-narrow-component specialist (README: "The generalist").
APP_DEFAULT = "mog2d-wide.safetensors"


def default_path() -> Path:
    """The app's default checkpoint (ICLEBM_CHECKPOINT; else the generalist, else the shipped mog2d)."""
    if os.environ.get("ICLEBM_CHECKPOINT"):
        return Path(os.environ["ICLEBM_CHECKPOINT"])
    wide = checkpoint_dir() / APP_DEFAULT
    return wide if wide.exists() else checkpoint_dir() / DEFAULT_CHECKPOINT.name


@st.cache_resource(show_spinner=False, max_entries=8)
def _file_model(path: str, mtime: float) -> EnergyTransformer:
    """A checkpoint from disk, shared read-only by all sessions (never trained in place)."""
    model = load_checkpoint(path)
    for p in model.parameters():  # inference only: gradients flow to queries, not weights
        p.requires_grad_(False)
    return model


def file_options() -> dict[str, Path]:
    paths = {p.stem: p for p in list_checkpoints(checkpoint_dir())}
    default = default_path()
    if default.exists():
        paths.setdefault(default.stem, default)
    return paths


def model_options() -> list[str]:
    default = default_path().stem
    files = [f"file:{name}" for name in sorted(file_options(), key=lambda n: (n != default, n))]
    return files + [f"session:{name}" for name in st.session_state.get("session_models", {})]


def option_label(option: str) -> str:
    kind, name = option.split(":", 1)
    return f"{name}  (checkpoints/)" if kind == "file" else f"{name}  (this session)"


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


def switch_model(option: str) -> None:
    """Select a model for every page. The selector widget already exists in this run, so the
    choice is applied at the top of the next run."""
    st.session_state["_pending_model"] = option
    st.rerun()


def add_session_model(name: str, model: EnergyTransformer) -> str:
    """Keep `model` in this browser session under a unique name; returns its selector option."""
    models = st.session_state.setdefault("session_models", {})
    base, i = name, 2
    while name in models:
        name, i = f"{base} ({i})", i + 1
    models[name] = {"model": model.eval(), "key": f"session:{uuid.uuid4().hex}"}
    return f"session:{name}"
