"""The sidebar every page shares: model selector, model card, checkpoint upload.

`render()` returns the `AppContext` of the selected model (None when no model loads).
The selection is one session-state key, `model_choice`, so a model picked on any page is
the model of every page; `models.switch_model` changes it from a page (upload, training).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from iclebm.checkpoints import integrity_note, load_checkpoint_bytes
from iclebm.errors import CheckpointError
from iclebm.models.energy import EnergyTransformer
from iclebm.models.mixture import MixtureDensityTransformer
from iclebm.ui import share
from iclebm.ui.guard import flash, guarded
from iclebm.ui.models import (
    AppContext,
    add_session_model,
    checkpoint_dir,
    default_path,
    make_context,
    model_options,
    option_label,
    resolve_model,
    switch_model,
)

TRAINING_STATUS_S = 3.0  # refresh of the sidebar's training line while a run is going


def render() -> AppContext | None:
    """Draw the sidebar; the selected model's context, or None if it does not load."""
    ctx = None
    with guarded("Loading the model"):
        ctx = _render()
    share.set_model(ctx.option if ctx is not None else None)
    with guarded("Training status"):
        training_status()
    st.sidebar.caption("Share: the address bar always holds a link to this page as you see it.")
    return ctx


def training_status() -> None:
    """While a live-training run exists: its status on every page. Polling it here also keeps
    a run going while you look at another page (an unpolled run pauses after two minutes)."""
    trainer = st.session_state.get("trainer")
    if trainer is None:
        return
    with st.sidebar:
        if trainer.running:
            _training_status_live()
        else:
            _training_status_line()


def _training_status_line() -> None:
    trainer = st.session_state.get("trainer")
    if trainer is None:
        return
    snap = trainer.poll(with_model=False)
    st.caption(f"Live training: **{snap.status}** · step {snap.step} · {snap.steps_per_s:.1f} steps/s "
               "(Train page)")


@st.fragment(run_every=TRAINING_STATUS_S)
def _training_status_live() -> None:
    _training_status_line()
    trainer = st.session_state.get("trainer")
    if trainer is not None and not trainer.running:
        st.rerun()  # stopped (paused elsewhere, diverged): back to the static line


def _render() -> AppContext | None:
    ss = st.session_state
    st.sidebar.header("Model")
    options = model_options()
    if "_pending_model" in ss:  # set by switch_model() in the previous run
        ss["model_choice"] = ss.pop("_pending_model")
    _apply_link_model(options)
    if not options:
        st.sidebar.error(f"No checkpoints in {checkpoint_dir()}.")
    if ss.get("model_choice") not in options and options:
        preferred = f"file:{default_path().stem}"
        ss["model_choice"] = preferred if preferred in options else options[0]
    if options:
        st.sidebar.selectbox("Checkpoint", options, key="model_choice", format_func=option_label,
                             help="Shipped checkpoints from checkpoints/, plus models uploaded or trained "
                                  "in this browser session. The choice holds on every page.")
    upload_box()
    if not options:
        return None
    option = ss["model_choice"]
    try:
        model, key = resolve_model(option)
    except CheckpointError as e:
        st.sidebar.error(f"Could not load {option_label(option)}: {e}")
        ss["model_error"] = str(e)
        return None
    with st.sidebar.expander("Model card", expanded=False):
        card_summary(model.card, model)
    return make_context(model, key, option)


def _apply_link_model(options: list[str]) -> None:
    """A link's `model=NAME` selects checkpoints/NAME once per session, before the selector exists."""
    wanted = share.link_model()
    if not wanted:
        return
    option = f"file:{wanted}"
    if option in options:
        st.session_state["model_choice"] = option
    else:
        flash("warning", f"The link names the model {wanted!r}, which is not in checkpoints/; "
                         "showing the shipped model.")


def model_kind(model: EnergyTransformer | MixtureDensityTransformer) -> str:
    """One line on what the model outputs (the two architectures share the backbone)."""
    cfg = model.config
    if isinstance(model, MixtureDensityTransformer):
        return f"parametric: a {cfg.n_components}-component Gaussian mixture per context, exact NLL"
    return f"energy, scale {cfg.energy_scale:g}" + (" (per-length calibrated)" if cfg.length_scales else "")


def card_summary(card: dict, model: EnergyTransformer | MixtureDensityTransformer) -> None:
    cfg = model.config
    st.markdown(f"**{card.get('name', '?')}** · {cfg.n_layer} layers · d={cfg.d_model} · {cfg.n_head} heads"
                f" · max context {cfg.max_context} · {model_kind(model)}")
    st.caption(integrity_note(card))
    training = card.get("training") or {}
    if training:
        st.caption("Training")
        st.json(training, expanded=False)
    if card.get("evaluation"):
        st.caption("Evaluation")
        st.json(card["evaluation"], expanded=False)
    st.caption("Task prior / sampler")
    st.json({"task": card.get("task"), "box": card.get("box"), "sampler": card.get("sampler")},
            expanded=False)


def upload_box() -> None:
    ss = st.session_state
    up = st.sidebar.file_uploader("Upload a checkpoint (.safetensors)", type=None, key="upload",
                                  help="Only safetensors files with an iclebm card are accepted; "
                                       "pickles are refused.")
    if up is None:
        ss.pop("upload_error", None)
        return
    if ss.get("_upload_seen") != up.file_id:
        ss["_upload_seen"] = up.file_id
        try:
            model = load_checkpoint_bytes(up.getvalue(), name=up.name)
        except CheckpointError as e:
            ss["upload_error"] = f"Upload rejected, the current model stays loaded: {e}"
        else:
            ss.pop("upload_error", None)
            for p in model.parameters():
                p.requires_grad_(False)
            flash("success", f"Loaded {up.name}; every page now uses it.")
            switch_model(add_session_model(Path(up.name).stem or "upload", model))
    if ss.get("upload_error"):
        st.sidebar.error(ss["upload_error"])


def missing_model_page() -> None:
    """What every page shows when no model loads: the reason and the ways out."""
    st.error(
        f"Could not load a model. The shipped checkpoint is expected at {default_path()}"
        + (f" ({st.session_state['model_error']})" if st.session_state.get("model_error") else "")
        + ". Pick another checkpoint or upload one in the sidebar; or restore the shipped file "
          "(e.g. `git checkout checkpoints/`) and press Retry."
    )
    if st.button("Retry", key="retry_load"):
        st.cache_resource.clear()
        st.rerun()
