"""The sidebar every page shares: model selector, model card, checkpoint upload.

`render(url_path)` returns the `AppContext` of the page's selected model (None when no model
loads). Selection is by family: the density pages offer density models (session key
`model_choice`), the Regression page regression models (`reg_model`); each is remembered on its
own, so a density model picked on any density page is the model of every density page.
`models.switch_model` changes it from a page (upload, training).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from iclebm.checkpoints import integrity_note, load_checkpoint_bytes
from iclebm.errors import CheckpointError
from iclebm.models.energy import EnergyTransformer
from iclebm.models.mixture import MixtureDensityTransformer
from iclebm.ui import share
from iclebm.ui.card_view import card_markdown
from iclebm.ui.guard import flash, guarded
from iclebm.ui.models import (
    CHOICE_KEY,
    DENSITY_FAMILY,
    REGRESSION_FAMILY,
    AppContext,
    add_session_model,
    checkpoint_dir,
    default_path,
    make_context,
    model_options,
    option_family,
    option_label,
    page_family,
    resolve_model,
    switch_model,
)

TRAINING_STATUS_S = 3.0  # refresh of the sidebar's training line while a run is going


def render(url_path: str = "") -> AppContext | None:
    """Draw the sidebar for the page at `url_path`; its model's context, or None if none loads."""
    ctx = None
    with guarded("Loading the model"):
        ctx = _render(url_path)
    share.set_model(ctx.option if ctx is not None else None)
    with guarded("Training status"):
        training_status()
    st.sidebar.caption("Share: the address bar always holds a link to this page as you see it.")
    if ctx is not None and ctx.option.startswith("session:"):
        st.sidebar.warning(LOCAL_MODEL_NOTE.format(name=ctx.option.split(":", 1)[1]))
    return ctx


# Shown next to the share note for as long as such a model is selected.
LOCAL_MODEL_NOTE = ("The link cannot carry **{name}**: it was uploaded or trained in this browser session "
                    "and exists nowhere else, so the link opens this view on the default model. Save it "
                    "to checkpoints/ (Train page) to link to it.")
FAMILY_TEXT = {DENSITY_FAMILY: ("Density model", "density models (2-D point clouds)"),
               REGRESSION_FAMILY: ("Regression model", "regression models (E(y | x, D))")}


def training_status() -> None:
    """While a live-training run exists: its status on every page, refreshed while the run is
    going (starting, running, single steps). The refresh pings the run, which keeps it going
    while you look at another page (a run nobody looks at pauses after `idle_pause` seconds)."""
    trainer = st.session_state.get("trainer")
    if trainer is None:
        return
    with st.sidebar:
        if trainer.active:
            _training_status_live()
        else:
            _training_status_line()


def _training_status_line() -> None:
    trainer = st.session_state.get("trainer")
    if trainer is None:
        return
    snap = trainer.poll(with_model=False)
    rate = f" · {snap.steps_per_s:.1f} steps/s" if snap.status == "running" else ""
    st.caption(f"Live training: **{snap.status}** · step {snap.step}{rate} (Train page)")
    if snap.message and snap.status in ("paused", "diverged", "error", "stopped"):
        # why it stopped (idle, watchdog, crash) stays until the user acts on the Train page
        (st.error if snap.status != "paused" else st.info)(snap.message)


@st.fragment(run_every=TRAINING_STATUS_S)
def _training_status_live() -> None:
    trainer = st.session_state.get("trainer")
    if trainer is not None:
        trainer.ping()  # a page of this session is open: the run keeps going
    _training_status_line()
    if trainer is not None and not trainer.active:
        st.rerun()  # paused (here, elsewhere or by itself), diverged, stopped: back to the static line


def _render(url_path: str) -> AppContext | None:
    ss = st.session_state
    family = page_family(url_path)
    key = CHOICE_KEY[family]
    label, what = FAMILY_TEXT[family]
    st.sidebar.header("Model")
    options = model_options(family)
    if f"_pending_{key}" in ss:  # set by switch_model() in the previous run
        ss[key] = ss.pop(f"_pending_{key}")
    _apply_link_model(url_path, family, options)
    if ss.get(key) not in options and options:
        preferred = f"file:{default_path().stem}"
        ss[key] = preferred if preferred in options else options[0]
    if options:
        st.sidebar.selectbox(label, options, key=key, format_func=option_label, persist_state="session",
                             help=f"This page shows {what}: shipped checkpoints from checkpoints/, plus "
                                  "models uploaded or trained in this browser session. The choice holds on "
                                  "every page of this kind.")
    upload_box()
    if not options and family == DENSITY_FAMILY:
        st.sidebar.error(f"No checkpoints in {checkpoint_dir()}.")
        return None  # the page says the shipped checkpoint is missing and how to get it back
    if not options:
        how = ("with `python -m iclebm train --preset linreg`" if family == REGRESSION_FAMILY
               else "on the Train page")
        ss["no_model_note"] = (f"No {what} in {checkpoint_dir()}: upload one in the sidebar, or train one "
                               f"{how}.")
        return None
    ss.pop("no_model_note", None)
    option = ss[key]
    try:
        model, model_key = resolve_model(option)
    except CheckpointError as e:
        st.sidebar.error(f"Could not load {option_label(option)}: {e}")
        ss["model_error"] = str(e)
        return None
    with st.sidebar.expander("Model card", expanded=False):
        card_summary(model.card, model)
    return make_context(model, model_key, option)


def _apply_link_model(url_path: str, family: str, options: list[str]) -> None:
    """A link's `model=NAME` selects checkpoints/NAME for the page's family, once, before the selector
    exists; a name that is not there, or a model of the other family, is refused with a message."""
    wanted = share.link_model(url_path or "density")
    if not wanted:
        return
    option = f"file:{wanted}"
    if option in options:
        st.session_state[CHOICE_KEY[family]] = option
    elif option_family(option) != family and wanted in {o.split(":", 1)[1] for o in model_options(
            REGRESSION_FAMILY if family == DENSITY_FAMILY else DENSITY_FAMILY)}:
        flash("warning", f"The link names the model {wanted!r}, which is not one of the "
                         f"{FAMILY_TEXT[family][1]} this page shows; showing the default.")
    else:
        flash("warning", f"The link names the model {wanted!r}, which is not in checkpoints/; "
                         "showing the default model.")


def model_kind(model: EnergyTransformer | MixtureDensityTransformer) -> str:
    """One line on what the model outputs (the two architectures share the backbone)."""
    cfg = model.config
    if isinstance(model, MixtureDensityTransformer):
        return f"parametric: a {cfg.n_components}-component Gaussian mixture per context, exact NLL"
    return f"energy, scale {cfg.energy_scale:g}" + (" (per-length calibrated)" if cfg.length_scales else "")


CARD_TABLE_CSS = (".st-key-model_card table { font-size: 0.8rem; } "
                  ".st-key-model_card th, .st-key-model_card td { padding: 0.2rem 0.45rem; }")


def card_summary(card: dict, model: EnergyTransformer | MixtureDensityTransformer) -> None:
    """The card as a readable summary, with the raw JSON one click away."""
    # The evaluation table (n, model, Bayes, gap) in the narrow sidebar: Streamlit's default cell
    # padding left its last column cut off at 1280 px whenever a scrollbar took its share.
    st.html(f"<style>{CARD_TABLE_CSS}</style>")
    with st.container(key="model_card"):
        st.markdown(card_markdown(card))
    st.caption(f"Loaded: {model_kind(model)} · {integrity_note(card)}")
    with st.expander("Raw card (JSON)", expanded=False):
        st.json(card, expanded=1)


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
            family = switch_model(add_session_model(Path(up.name).stem or "upload", model))
            pages = "the Regression page now uses it" if family == REGRESSION_FAMILY else \
                "every density page (Density, Inside, Train) now uses it"
            flash("success", f"Loaded {up.name}, a {family} model; {pages}.")
            st.rerun()
    if ss.get("upload_error"):
        st.sidebar.error(ss["upload_error"])


def missing_model_page() -> None:
    """What every page shows when no model loads: the reason and the ways out."""
    if st.session_state.get("no_model_note"):
        st.info(st.session_state["no_model_note"])
        return
    st.error(
        f"Could not load a model. The shipped checkpoint is expected at {default_path()}"
        + (f" ({st.session_state['model_error']})" if st.session_state.get("model_error") else "")
        + ". Pick another checkpoint or upload one in the sidebar; or restore the shipped file "
          "(e.g. `git checkout checkpoints/`) and press Retry."
    )
    if st.button("Retry", key="retry_load"):
        st.cache_resource.clear()
        st.rerun()
