"""Train: train a small model live, or fine-tune a copy of the selected one, in a trainer
process of this browser session (`iclebm.ui.jobs.trainer_process`: niced, capped, never blocking
the page); watch the loss, the ICL curve of the current weights (with its history) and the
film strip on the current context; switch every page to the result, save it to
runs/ (checkpoints/ holds the shipped models, which the app never writes) or download it. Below:
the models on disk.

URL (share link): the properties of `iclebm.ui.page_tables.TRAIN` that differ from their
defaults (mode, obj, lr, batch, chains, lsteps, lstep, lnoise, layers, d, pool, cpool), plus the model.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import streamlit as st

from iclebm.card import is_regression
from iclebm.checkpoints import checkpoint_bytes, read_card, save_checkpoint
from iclebm.errors import CheckpointError
from iclebm.models.energy import EnergyTransformer
from iclebm.objectives import OBJECTIVES, objective_label
from iclebm.probes import landscape as L
from iclebm.ui import compute, share
from iclebm.ui import figures as P
from iclebm.ui import page_tables as T
from iclebm.ui.canvas import chart, fragment_body
from iclebm.ui.card_view import card_markdown
from iclebm.ui.guard import flash, guarded, show_flash
from iclebm.ui.jobs.live_settings import BOUNDS
from iclebm.ui.jobs.trainer_process import LiveSnapshot, PoolConfig, ProcessTrainer, TrainerPool
from iclebm.ui.models import (
    AppContext,
    add_session_model,
    checkpoint_dir,
    file_options,
    runs_dir,
    switch_model,
)

PAGE = "train"
TRAIN_REFRESH_S = 3.0  # the live view's refresh; each costs app CPU in every training session
STRIP_REFRESH_S = 6.0
KEEP = "session"  # widgets keep their values while another page is shown
MODE_LABELS = {"scratch": "scratch (fast preset)", "finetune": "fine-tune the loaded model"}


@st.cache_resource
def trainer_pool() -> TrainerPool:
    """One pool for the whole app: at most ICLEBM_MAX_TRAINERS (default: the cores) trainer processes;
    the idle pause and the divergence watchdog's limits from ICLEBM_* too (`PoolConfig.from_env`)."""
    return TrainerPool(PoolConfig.from_env())


def render(ctx: AppContext) -> None:
    init_state()
    restore_link()
    share.publish(T.TRAIN, share.session_values(T.TRAIN))  # before drawing: the address bar never lags
    st.markdown("### Train a model live")
    st.caption("Training runs in a low-priority process of its own for this browser session; the rest of "
               "the app stays usable. The film strip is drawn on the Density page's context.")
    share.show_link_warnings(PAGE)
    show_flash()
    model = ctx.model
    if is_regression((model.card or {}).get("task")):
        st.info("The sidebar's model is a regression model; live training here trains density models, so "
                "fine-tuning it is off. Train regression models with "
                "`python -m iclebm train --preset linreg`.")
        model = None
    with guarded("Live training"):
        training_panel(model, ctx.box)
    with guarded("Checkpoints"):
        checkpoints_panel()
    with guarded("Share link"):
        share.publish(T.TRAIN, share.session_values(T.TRAIN))


# ---- page state and its share link ---------------------------------------------------------


def init_state() -> None:
    """The form's defaults (the `fast` preset) live in session state, from the property table."""
    for p in T.TRAIN.props:
        st.session_state.setdefault(p.name, p.default)


def restore_link() -> None:
    """The first time the page runs in a session: the training form from the URL."""
    values = share.restore_once(T.TRAIN)
    if values is not None:
        share.apply(T.TRAIN, values)


# ---- live training ---------------------------------------------------------------------------


def training_panel(model: EnergyTransformer | None, box: tuple[float, float]) -> None:
    ss = st.session_state
    st.subheader("Live training")
    c = st.columns([1.3, 1, 1, 1, 1, 1])
    # Defaults and bounds come from the property table (page_tables.TRAIN), via session state.
    mode = c[0].radio("start from", list(T.TRAIN_MODES), key="tr_mode", format_func=MODE_LABELS.get,
                      persist_state=KEEP)
    lr = c[1].select_slider("learning rate", T.TRAIN_LR_CHOICES, key="tr_lr",
                            format_func=lambda v: f"{v:g}", persist_state=KEEP)
    batch = c[1].number_input("batch (tasks)", *map(int, BOUNDS["batch_size"]), key="tr_batch",
                              persist_state=KEEP)
    chains = c[2].number_input("chains / position", *map(int, BOUNDS["chains"]), key="tr_chains",
                               persist_state=KEEP)
    lsteps = c[2].number_input("Langevin steps", *map(int, BOUNDS["langevin_steps"]), key="tr_lsteps",
                               persist_state=KEEP)
    lstep = c[3].number_input("Langevin step size", *BOUNDS["step_size"], format="%.3f", key="tr_lstep",
                              persist_state=KEEP)
    lnoise = c[3].number_input("Langevin noise", *BOUNDS["noise_std"], format="%.3f", key="tr_lnoise",
                               persist_state=KEEP)
    scratch = mode == "scratch"
    n_layer = c[4].number_input("layers", *map(int, BOUNDS["n_layer"]), key="tr_layers", disabled=not scratch,
                                persist_state=KEEP)
    d_model = c[4].select_slider("width d", T.TRAIN_D_CHOICES, key="tr_d", disabled=not scratch,
                                 persist_state=KEEP)
    objective = st.radio("objective", list(OBJECTIVES), key="tr_objective", horizontal=True,
                         format_func=objective_label, persist_state=KEEP,
                         help="Exact: the NLL normalised over the box (possible in 2-D), Z estimated "
                              "from a coarse jittered grid plus importance points around the context; "
                              "CD: contrastive divergence with Langevin negatives (chains and Langevin "
                              "settings apply to CD only). Reset to apply.")
    pool = st.columns([1, 2])[0].number_input(
        "task pool size M (0 = ∞, a fresh task every time)", *map(int, BOUNDS["task_pool"]), key="tr_pool",
        persist_state=KEEP,
        help="Train on M tasks drawn once from the prior (memorise or generalise, Raventós et al. 2023): a "
             "small pool is memorised, a large one teaches the model to learn. The ICL curve then shows both "
             "yardsticks, the pool's Bayes predictive and the prior's. Reset to apply.")
    settings = {"lr": lr, "batch_size": batch, "chains": chains, "langevin_steps": lsteps, "step_size": lstep,
                "noise_std": lnoise, "n_layer": n_layer, "d_model": d_model, "objective": objective,
                "task_pool": pool}
    trainer: ProcessTrainer | None = ss.get("trainer")
    with c[5]:
        # One short word: at 1280 px with the sidebar open this column is ~130 px wide.
        label = "New run" if trainer is None else "↺ Reset"
        if st.button(label, key="tr_new", width="stretch",
                     help="Start a new run with the settings on the left (the current run is discarded)"):
            if trainer is not None:
                trainer.close()
            if not scratch and model is None:
                st.error("Load a model first to fine-tune it.")
            else:
                ss["trainer"] = trainer_pool().create("scratch" if scratch else "finetune", settings,
                                                      base_model=None if scratch else model)
                st.rerun()
        running = trainer is not None and trainer.wants_run and trainer.active
        if st.button("▶ Play", key="tr_play", width="stretch", disabled=trainer is None or running):
            trainer.play()  # type: ignore[union-attr]
            st.rerun()
        if st.button("❚❚ Pause", key="tr_pause", width="stretch", disabled=not running):
            trainer.pause()  # type: ignore[union-attr]
            st.rerun()
        if st.button("Step ▸", key="tr_step", width="stretch", disabled=trainer is None or running):
            trainer.step(1)  # type: ignore[union-attr]  # the fragment shows the result when it lands
            st.rerun()
    pool_line()
    if trainer is None:
        st.caption("Press New run to create a trainer; it trains in a process of its own for this browser "
                   "session while the rest of the page stays usable.")
        return
    if trainer.active:
        training_live(box)
    else:
        training_static(box)
    training_actions(trainer)


def pool_line() -> None:
    """The app's trainers at a glance (every session's, as their processes report now)."""
    pool = trainer_pool()
    counts = pool.summary()
    shown = " · ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    st.caption(f"Trainers in this app: {shown} (at most {pool.config.max_trainers} run at once).")


def status_line(snap: LiveSnapshot) -> str:
    """State and step; the rate only while running (a paused run has none)."""
    rate = f" · {snap.steps_per_s:.1f} steps/s" if snap.status == "running" else ""
    return f"**{snap.status}** · step {snap.step}{rate}"


def _training_view(box: tuple[float, float]) -> None:
    ss = st.session_state
    trainer: ProcessTrainer | None = ss.get("trainer")
    if trainer is None:
        return
    snap = trainer.poll(with_model=False)
    if snap.message:
        if snap.status in ("diverged", "error", "stopped"):
            hint = " Press Reset to start a fresh trainer." if snap.status == "stopped" else ""
            st.error(snap.message + hint)
        else:
            st.info(snap.message)
    tmodel = trainer.model()  # the last weights received (None until the trainer has started)
    left, right = st.columns([1.6, 1])
    with left:
        objective = objective_label(trainer.train_config.objective)
        st.markdown(f"{status_line(snap)} · {trainer.mode} · {objective}")
        if snap.history:
            chart(P.loss_figure(snap.history), key="loss_chart")
        else:
            st.caption("No steps yet: press Play or Step." if snap.status != "waiting" else
                       "Training starts as soon as a slot is free.")
    with right:
        on_pool = False
        if trainer.pool_size:
            on_pool = st.toggle(f"on tasks from the pool (M = {trainer.pool_size})", key="tr_curve_pool",
                                help="Off: held-out tasks from the prior (does it generalise?). On: tasks "
                                     "from the training pool (has it memorised them?).")
        curves = trainer.icl_curves(on_pool=on_pool)
        if curves:
            chart(P.icl_history_figure(curves), key="train_icl")
        else:
            st.caption("The ICL curve of the current weights appears after the first steps.")
    if tmodel is None:
        return
    pts = list(ss["points"])
    step = _strip_step(trainer, tuple(map(tuple, pts)))
    strip = compute.session_memo(
        "train_strip", (id(trainer), step, tuple(map(tuple, pts))),
        lambda: L.compute_film_strip(tmodel, np.asarray(pts, dtype=np.float64).reshape(-1, 2), box, 30))
    context = np.asarray(pts).reshape(-1, 2) if pts else None
    chart(P.film_strip_figure(strip.xs, strip.log_density, strip.lengths, box, context, height=190),
          key="train_strip")
    st.caption(f"The weights at step {step} on the Density page's context: p(x | first n points) for "
               f"n = {', '.join(map(str, strip.lengths))}." if pts else
               f"The weights at step {step} with an empty context; add points on the Density page.")


def _strip_step(trainer: ProcessTrainer, context: tuple) -> int:
    """The weights step the film strip shows: the newest, but while training runs at most one new
    strip every STRIP_REFRESH_S (each costs a model pass and a figure in the app's own process, for
    every session that trains); a new context or a pause shows the newest weights at once."""
    ss = st.session_state
    last = ss.get("_strip_shown")  # (trainer id, context, step, time)
    now = time.monotonic()
    step = trainer.weights_step
    if (last is not None and last[0] == id(trainer) and last[1] == context and trainer.active
            and now - last[3] < STRIP_REFRESH_S):
        return last[2]
    ss["_strip_shown"] = (id(trainer), context, step, now)
    return step


@st.fragment(run_every=TRAIN_REFRESH_S)
def training_live(box: tuple[float, float]) -> None:
    trainer: ProcessTrainer | None = st.session_state.get("trainer")
    if trainer is not None:
        trainer.ping()  # this page still shows the run: it must not pause for want of a viewer
    with fragment_body():
        _training_view(box)
    if trainer is not None and not trainer.active:
        st.rerun()  # paused, diverged or stopped: switch to the static view


@st.fragment
def training_static(box: tuple[float, float]) -> None:
    with fragment_body():
        _training_view(box)


def training_actions(trainer: ProcessTrainer) -> None:
    c1, c2, c3, c4 = st.columns([1, 1.3, 1, 1])
    if c1.button("Use on every page", key="tr_use", width="stretch",
                 help="Switch every page (and the sidebar's selector) to a snapshot of this model"):
        snap = trainer.poll(with_model=True)
        assert snap.model is not None
        for p in snap.model.parameters():
            p.requires_grad_(False)
        flash("success", f"Every density page now uses the trained model (step {snap.step}).")
        switch_model(add_session_model(f"trained-{trainer.mode}-step{snap.step}", snap.model))
        st.rerun()
    name = c2.text_input("checkpoint name", value=f"live-{trainer.mode}", key="tr_name", persist_state=KEEP,
                         label_visibility="collapsed", placeholder="new checkpoint name")
    if c3.button("Save to runs/", key="tr_save", width="stretch",
                 help="runs/ beside checkpoints/, which holds the shipped models and is never written"):
        save_trained(trainer, name)
    stem = _safe_name(name) or "live"

    def weights() -> bytes:  # runs on click, in another thread (no st.* calls)
        snap = trainer.poll(with_model=True)
        assert snap.model is not None
        return checkpoint_bytes(snap.model, trainer.card())

    c4.download_button("Download .safetensors", data=weights,
                       file_name=f"{stem}.safetensors", key="tr_download", width="stretch",
                       mime="application/octet-stream", on_click="ignore")
    c4.download_button("Download card .json", data=lambda: json.dumps(trainer.card(), indent=2),
                       file_name=f"{stem}.json", key="tr_download_card", width="stretch",
                       mime="application/json", on_click="ignore")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip())[:60].strip("._")


def save_trained(trainer: ProcessTrainer, name: str) -> None:
    """Save the trained model to runs/NAME.safetensors (and its card), never over a model on disk."""
    clean = _safe_name(name)
    if not clean:
        st.error("Give the checkpoint a name (letters, digits, - or _).")
        return
    existing = file_options().get(clean)
    if existing is not None and existing.parent.resolve() != runs_dir().resolve():
        st.error(f"{clean} is a shipped model in checkpoints/; it is never overwritten. Pick another name.")
        return
    target = runs_dir() / f"{clean}.safetensors"
    if target.exists():
        st.error(f"runs/{clean}.safetensors exists already; pick another name.")
        return
    snap = trainer.poll(with_model=True)
    assert snap.model is not None
    card = trainer.card()
    card["name"] = clean
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        path = save_checkpoint(snap.model, target, card)
    except OSError as e:
        st.error(f"Could not save to {runs_dir()}: {e}")
        return
    st.success(f"Saved {path.name} (step {snap.step}) to {runs_dir()}; it is now in the model selector "
               "(marked runs/).")


# ---- checkpoints on disk -----------------------------------------------------------------------


def checkpoints_panel() -> None:
    st.subheader("Models on disk")
    st.caption(f"Shipped in {checkpoint_dir()} (never overwritten) and saved here in {runs_dir()} · pick "
               "one in the sidebar's selector.")
    for name, path in file_options().items():
        try:
            card = read_card(path)
            cfg = card.get("model", {})
            with st.expander(f"**{name}** ({path.parent.name}/) — {cfg.get('n_layer', '?')} layers × "
                             f"d={cfg.get('d_model', '?')}, max context {cfg.get('max_context', '?')}"):
                st.markdown(card_markdown(card))
                with st.expander("Raw card (JSON)"):
                    st.json(card, expanded=1)
        except (CheckpointError, OSError) as e:
            st.markdown(f"**{name}** — unreadable card: {e}")
