"""Live training for the explorer: one background training thread per browser session.

The thread never calls Streamlit. The UI talks to it through `LiveTrainer`
(play / pause / step / reset / close) and reads `poll()`, a consistent snapshot
taken under the trainer's lock. Design points:

- The thread holds only the `Trainer` and a small control block, never the
  `LiveTrainer`; when a session ends and its `LiveTrainer` is garbage-collected, a
  finaliser closes the control block and the thread exits.
- If nobody polls for `idle_timeout` seconds (the tab was closed), training pauses,
  so an abandoned session does not burn the CPU.
- A non-finite step is skipped by `Trainer` (last good weights restored); when the
  run keeps diverging (`TrainingDivergedError`) the thread pauses with a message
  and the last good weights stay.
- Fine-tuning works on a deep copy: the shared, cached model is never trained in place.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import TrainingDivergedError
from ..mdn import MixtureDensityTransformer, MixtureTrainer
from ..model import EnergyConfig, EnergyTransformer
from ..presets import get_preset
from ..training import TrainConfig, Trainer

MODES = ("scratch", "finetune")
# Widget bounds: absurd values cannot be entered in the UI, and `make_configs` clamps too.
BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (1e-5, 1e-2),
    "batch_size": (1, 64),
    "context_len": (4, 64),
    "chains": (1, 8),
    "langevin_steps": (1, 50),
    "step_size": (1e-3, 0.5),
    "noise_std": (0.0, 2.0),
    "n_layer": (1, 6),
    "d_model": (8, 128),
}


def _small_defaults() -> dict[str, Any]:
    """UI defaults = the `small` preset, tuned to concentrate visibly within ~2 min on 2 cores."""
    p = get_preset("small")
    t = p.train
    return {
        "lr": t.lr, "batch_size": t.batch_size, "context_len": t.context_len, "chains": t.chains,
        "langevin_steps": t.langevin_steps, "step_size": t.step_size, "noise_std": t.noise_std,
        "n_layer": p.model.n_layer, "d_model": p.model.d_model,
    }


FAST_DEFAULTS: dict[str, Any] = _small_defaults()


def _clamp(name: str, value: float) -> float:
    lo, hi = BOUNDS[name]
    return min(max(value, lo), hi)


def make_configs(
    mode: str, settings: dict[str, Any], base: EnergyTransformer | None = None
) -> tuple[TrainConfig, EnergyConfig | None]:
    """Train (and, from scratch, model) configs from UI settings, on top of the `small` preset."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    preset = get_preset("small")
    s = {**FAST_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    train = replace(
        preset.train,
        lr=float(_clamp("lr", float(s["lr"]))),
        batch_size=int(_clamp("batch_size", int(s["batch_size"]))),
        context_len=int(_clamp("context_len", int(s["context_len"]))),
        chains=int(_clamp("chains", int(s["chains"]))),
        langevin_steps=int(_clamp("langevin_steps", int(s["langevin_steps"]))),
        step_size=float(_clamp("step_size", float(s["step_size"]))),
        noise_std=float(_clamp("noise_std", float(s["noise_std"]))),
        seed=int(s.get("seed", 0)),
    )
    if mode == "finetune":
        if base is None:
            raise ValueError("fine-tuning needs a base model")
        card = base.card or {}
        if isinstance(card.get("task"), dict):
            train = replace(train, task=card["task"])
        if card.get("box"):
            train = replace(train, box=tuple(card["box"]))
        # The base model was trained on contexts up to its own max_context.
        train = replace(train, context_len=min(train.context_len, base.config.max_context))
        return train, None
    n_head = 4
    d_model = int(_clamp("d_model", int(s["d_model"])))
    d_model = max(n_head, d_model - d_model % n_head)
    model_cfg = replace(preset.model, n_layer=int(_clamp("n_layer", int(s["n_layer"]))), d_model=d_model,
                        n_head=n_head)
    train = replace(train, context_len=min(train.context_len, model_cfg.max_context))
    return train, model_cfg


@dataclass
class _Control:
    """State shared by the UI and the worker thread (guarded by `cond`)."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    running: bool = False
    pending_steps: int = 0
    closed: bool = False
    status: str = "paused"  # paused | running | diverged | error | closed
    message: str | None = None
    busy: bool = False  # a step is executing right now
    last_poll: float = field(default_factory=time.monotonic)
    step_times: deque = field(default_factory=lambda: deque(maxlen=30))
    idle_timeout: float = 120.0


def _halt(ctl: _Control, status: str, message: str) -> None:
    """Stop the run after a failed step, keeping the weights, and say why."""
    with ctl.cond:
        ctl.busy = False
        ctl.running, ctl.pending_steps = False, 0
        ctl.status = status
        ctl.message = message


def _worker(trainer: Trainer, ctl: _Control) -> None:
    while True:
        with ctl.cond:
            while not ctl.closed and not ctl.running and ctl.pending_steps == 0:
                ctl.cond.wait(timeout=1.0)
            if ctl.closed:
                ctl.status = "closed"
                return
            if ctl.running and time.monotonic() - ctl.last_poll > ctl.idle_timeout:
                ctl.running = False
                ctl.status = "paused"
                ctl.message = "Paused: no browser has looked at this run for a while."
                continue
            if ctl.pending_steps > 0 and not ctl.running:
                ctl.pending_steps -= 1
            ctl.busy = True
        try:
            metrics = trainer.step()
        except TrainingDivergedError as e:
            _halt(ctl, "diverged", f"Training diverged and was paused; the last good weights are kept. {e}")
            continue
        except Exception as e:  # noqa: BLE001 - any failure pauses the run with its reason
            _halt(ctl, "error", f"Training stopped: {type(e).__name__}: {e}")
            continue
        with ctl.cond:
            ctl.busy = False
            ctl.cond.notify_all()
            ctl.step_times.append(time.monotonic())
            if metrics.get("skipped"):
                ctl.message = metrics.get("event") or "A non-finite step was skipped."
            if not ctl.running and ctl.status == "running":
                ctl.status = "paused"


@dataclass
class Snapshot:
    step: int
    history: list[dict]
    status: str
    message: str | None
    steps_per_s: float
    model: EnergyTransformer | None  # eval-mode copy; None unless requested


class LiveTrainer:
    """A trainer that runs in its own thread; all methods are safe to call from the UI."""

    def __init__(
        self, mode: str = "scratch", settings: dict[str, Any] | None = None,
        base_model: EnergyTransformer | None = None, idle_timeout: float = 120.0, max_bad_steps: int = 5,
    ) -> None:
        self.mode = mode
        self.settings = dict(settings or {})
        self.train_config, self.model_config = make_configs(mode, self.settings, base_model)
        self._base = base_model
        self._max_bad = max_bad_steps
        self._idle_timeout = idle_timeout
        self._start_fresh()

    # ---- lifecycle -------------------------------------------------------------------

    def _start_fresh(self) -> None:
        if self.mode == "finetune":
            assert self._base is not None
            model = copy.deepcopy(self._base)
            for p in model.parameters():  # a cached model may have been frozen for inference
                p.requires_grad_(True)
            model.card = dict(self._base.card or {})
            # A parametric model fine-tunes by exact NLL (its objective); an energy model by CD.
            cls = MixtureTrainer if isinstance(model, MixtureDensityTransformer) else Trainer
            self.trainer = cls(model=model, config=self.train_config, max_bad_steps=self._max_bad)
        else:
            self.trainer = Trainer(config=self.train_config, model_config=self.model_config,
                                   max_bad_steps=self._max_bad)
        self._ctl = _Control(idle_timeout=self._idle_timeout)
        self._thread = threading.Thread(target=_worker, args=(self.trainer, self._ctl), daemon=True,
                                        name="iclebm-live-training")
        self._thread.start()
        # Close the worker when this object goes away with its session.
        self._finalizer = weakref.finalize(self, _close_control, self._ctl)

    def close(self) -> None:
        _close_control(self._ctl)
        self._finalizer.detach()

    def reset(self) -> None:
        """Stop the current run and start again from the initial weights (a new thread)."""
        self.close()
        self._thread.join(timeout=30)
        self._start_fresh()

    # ---- controls --------------------------------------------------------------------

    def play(self) -> None:
        with self._ctl.cond:
            if self._ctl.closed:
                return
            self._ctl.running = True
            self._ctl.status = "running"
            self._ctl.message = None
            self._ctl.last_poll = time.monotonic()
            self._ctl.cond.notify_all()

    def pause(self) -> None:
        with self._ctl.cond:
            self._ctl.running = False
            self._ctl.pending_steps = 0
            if self._ctl.status == "running":
                self._ctl.status = "paused"
            self._ctl.cond.notify_all()

    def step(self, n: int = 1) -> None:
        """Queue n single updates (while paused)."""
        with self._ctl.cond:
            if self._ctl.closed or self._ctl.running:
                return
            self._ctl.pending_steps += max(0, int(n))
            if self._ctl.status in ("diverged", "error"):
                self._ctl.message = None
            self._ctl.status = "paused"
            self._ctl.cond.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until queued single steps are done (for tests and scripts); False on timeout."""
        end = time.monotonic() + timeout
        with self._ctl.cond:
            while self._ctl.pending_steps > 0 or self._ctl.busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._ctl.cond.wait(timeout=min(left, 0.1))
        return True

    @property
    def running(self) -> bool:
        return self._ctl.running

    @property
    def status(self) -> str:
        return self._ctl.status

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- reading ---------------------------------------------------------------------

    def poll(self, with_model: bool = False) -> Snapshot:
        """Metrics so far (and, if asked, an eval-mode copy of the weights), under the lock."""
        with self._ctl.cond:
            self._ctl.last_poll = time.monotonic()
            times = list(self._ctl.step_times)
            status, message = self._ctl.status, self._ctl.message
        if with_model:
            model, history = self.trainer.snapshot()
            model.card = self.card()
        else:
            with self.trainer.lock:
                history = list(self.trainer.history)
            model = None
        rate = 0.0
        if len(times) >= 2 and time.monotonic() - times[-1] < 30:
            rate = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
        return Snapshot(step=self.trainer.step_count, history=history, status=status, message=message,
                        steps_per_s=rate, model=model)

    def card(self) -> dict:
        """A checkpoint card describing this run (task prior, box, sampler, training)."""
        base_card = dict(self._base.card) if (self.mode == "finetune" and self._base is not None) else {}
        preset = get_preset("small")
        return {
            "name": base_card.get("name", "live") + ("-finetuned" if self.mode == "finetune" else ""),
            "task": self.train_config.task,
            "box": list(self.train_config.box),
            "sampler": base_card.get("sampler") or preset.sampler.to_dict(),
            "training": {
                "source": "iclebm explorer live training",
                "mode": self.mode,
                "base": base_card.get("name") if self.mode == "finetune" else None,
                "steps": int(self.trainer.step_count),
                "config": self.train_config.to_dict(),
            },
        }


def _close_control(ctl: _Control) -> None:
    with ctl.cond:
        ctl.closed = True
        ctl.running = False
        ctl.cond.notify_all()
