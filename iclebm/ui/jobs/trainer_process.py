"""Live training in child processes: one low-priority process per browser session, with a cap.

Threads in the app's own process contend with page reruns for one interpreter (4 threaded
trainers made a click take 2.5 s to redraw). Here each session's trainer is a child process
(forkserver, else spawn), niced below the app and limited to `threads` torch threads:

    page (parent)                                   trainer process (child)
    ProcessTrainer.play/pause/step/reset          -> command queue -> Trainer.step() loop
    ProcessTrainer.poll() (never blocks)          <- result queue  <- status, new metrics,
                                                                      weights as checkpoint bytes

- Weights cross the boundary as safetensors checkpoint bytes with the card's SHA-256, so a
  snapshot is bit-exact and verified on arrival. The parent keeps the last snapshot it got:
  after a divergence (the child pauses with the last good weights) or a crash of the child,
  the weights shown stay the last good ones.
- `TrainerPool` caps the number of live trainer processes (default: the number of cores).
  A trainer beyond the cap is "waiting" (for a free slot) and starts, in order, when one frees.
- A trainer ends when its handle is closed or garbage-collected (its browser session ended)
  or when nobody has polled it for `session_timeout` seconds; the pool's reaper thread then
  stops the process (close command, then terminate, then kill) and reaps it. A child also
  exits by itself when its parent process is gone, so no orphans are left behind.
- A child that dies (killed, out of memory, a bug) is reported in its session as
  "Training stopped: ..."; `reset()` starts a fresh process.
- A running child pauses itself when no command came for `idle_pause` seconds. The page's live
  refreshes (the Train page's view, the sidebar's status line) send `ping()`, so a run goes on
  while any page of its session is open and pauses once none is.
- The divergence watchdog (`iclebm.training.watchdog`) judges every step and every ICL curve; a
  trip pauses the run as "diverged" with the cause and the weights of the last healthy check.
- Every status report carries how many commands the child has applied, so the handle shows the
  state its last command asked for (Pause: "paused" at once) until the child has caught up, and
  knows that a pause it did not ask for came from the child (idle, watchdog). The child also
  writes its state and step to a small shared array, so `TrainerPool.summary()` sees every
  session's trainer without draining anyone's queue.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from iclebm.card import pool_entries, prior_of
from iclebm.checkpoints import checkpoint_bytes, load_checkpoint_bytes
from iclebm.errors import TrainingDivergedError
from iclebm.evaluation.icl_curve import CURVE_NS, ValidationSet
from iclebm.models.energy import EnergyTransformer
from iclebm.models.mixture import MixtureDensityTransformer
from iclebm.tasks import DENSITY, TaskPool
from iclebm.training.presets import get_preset
from iclebm.training.trainer import MixtureTrainer, Trainer
from iclebm.training.watchdog import Watchdog, WatchdogLimits
from iclebm.ui.jobs.live_settings import LIVE_PRESET, MODES, make_configs

HISTORY_LIMIT = 20_000  # metrics rows kept per trainer (bounded memory)
# A trainer's lifecycle as the page sees it:
#   waiting (no free slot) -> starting (process importing torch) -> paused | running
#   -> diverged | error (child alive, paused with a message) | stopped (child died) | closed
STATES = ("waiting", "starting", "paused", "running", "diverged", "error", "stopped", "closed")


@dataclass
class PoolConfig:
    max_trainers: int = os.cpu_count() or 1  # live trainer processes at once
    nice: int = 19  # added to the child's niceness (19: lowest priority): page reruns come first
    threads: int = 1  # torch threads per trainer process
    session_timeout: float = 600.0  # close a trainer nobody polled for this long (tab closed)
    idle_pause: float = 120.0  # a running trainer that got no ping for this long pauses (the page's
    # live refresh pings it every few seconds, so keep this well above that refresh)
    status_every: float = 0.25  # seconds between status messages while running
    weights_every: float = 2.0  # seconds between weight snapshots while running
    stop_grace: float = 3.0  # seconds a closed child gets to exit before terminate / kill
    curve_every: float = 4.0  # seconds between ICL curves of the current weights (0: none)
    curve_tasks: int = 8  # validation tasks of the ICL curve (fixed: drawn once per trainer)
    curve_resolution: int = 60  # grid cells per axis normalising its densities
    curve_share: float = 0.2  # at most this share of a trainer's wall time goes to ICL curves: with
    # several trainers on few cores a curve takes longer, so the curves come less often instead
    watchdog: WatchdogLimits = field(default_factory=WatchdogLimits)  # when a diverging run pauses

    def __post_init__(self) -> None:
        if int(self.max_trainers) < 1:
            raise ValueError("max_trainers must be >= 1")
        if int(self.threads) < 1:
            raise ValueError("threads must be >= 1")
        for name in ("session_timeout", "idle_pause"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PoolConfig:
        """The app's pool config: the defaults, changed by the ICLEBM_* variables of ENV_KEYS
        (tests drive the idle pause and the watchdog past their limits in seconds this way)."""
        env = os.environ if environ is None else environ
        pool: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for var, (target, name, kind) in ENV_KEYS.items():
            raw = str(env.get(var, "")).strip()
            if not raw:
                continue
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{var}={raw!r} is not a {kind.__name__}") from None
            if name == "max_trainers" and value == 0:
                continue  # 0: one per core, the default
            (pool if target == "pool" else limits)[name] = value
        return cls(**pool, watchdog=WatchdogLimits(**limits))


# environment variable -> (pool or watchdog limits, field, type); unset keeps the default
ENV_KEYS: dict[str, tuple[str, str, type]] = {
    "ICLEBM_MAX_TRAINERS": ("pool", "max_trainers", int),
    "ICLEBM_IDLE_PAUSE_S": ("pool", "idle_pause", float),
    "ICLEBM_SESSION_TIMEOUT_S": ("pool", "session_timeout", float),
    "ICLEBM_CURVE_EVERY_S": ("pool", "curve_every", float),
    "ICLEBM_WATCHDOG_ENERGY": ("watchdog", "energy_bound", float),
    "ICLEBM_WATCHDOG_WARMUP": ("watchdog", "warmup_steps", int),
    "ICLEBM_WATCHDOG_MARGIN": ("watchdog", "icl_margin", float),
    "ICLEBM_WATCHDOG_STRIKES": ("watchdog", "icl_strikes", int),
}


@dataclass
class LiveSnapshot:
    """What the page sees of a live trainer at one poll: its status, metrics and (if asked) weights."""

    step: int
    history: list[dict]
    status: str  # one of STATES
    message: str | None
    steps_per_s: float
    model: EnergyTransformer | None  # eval-mode copy; None unless requested


def default_trainer_factory(spec: dict) -> Trainer:
    """Build the child's Trainer from a picklable spec (mode, settings, base checkpoint bytes)."""
    base = load_checkpoint_bytes(spec["base"], name="base model") if spec.get("base") else None
    train_cfg, model_cfg = make_configs(spec["mode"], spec["settings"], base)
    if base is not None and spec["mode"] == "finetune":
        base.train()
        for p in base.parameters():
            p.requires_grad_(True)
        # A parametric model fine-tunes by exact NLL (its objective); an energy model by its objective.
        cls = MixtureTrainer if isinstance(base, MixtureDensityTransformer) else Trainer
        return cls(model=base, config=train_cfg, max_bad_steps=spec.get("max_bad_steps", 5))
    return Trainer(config=train_cfg, model_config=model_cfg, max_bad_steps=spec.get("max_bad_steps", 5))


# ---- the child process ------------------------------------------------------------------------


class _Child:
    """The trainer loop inside the child process."""

    def __init__(self, cmd_q: Any, out_q: Any, spec: dict, cfg: PoolConfig,
                 factory: Callable[[dict], Trainer], board: Any = None) -> None:
        self.cmd_q, self.out_q, self.spec, self.cfg, self.factory = cmd_q, out_q, spec, cfg, factory
        self.board = board  # shared [state index, step]: the pool reads it without the queues
        self.trainer = factory(spec)
        self.running = False
        self.pending = 0
        self.status, self.message = "paused", None
        self.sent_rows = 0
        self.step_times: deque[float] = deque(maxlen=30)
        self.last_ping = time.monotonic()
        self.last_status = 0.0
        self.last_weights = 0.0
        self.weights_dirty = True
        self.vset: ValidationSet | None = None
        self.pool_vset: ValidationSet | None = None  # a pool run's curve on tasks from its pool
        self.yards: tuple[dict, dict] | None = None  # Bayes lines (prior's, pool's) on vset, pool_vset
        self.last_curve = 0.0
        self.curve_seconds = 0.0  # wall time the last curve took
        self.curve_step = -1
        self.handled = 0  # commands applied; the parent knows which of its commands a status reflects
        self.watchdog = Watchdog(cfg.watchdog)
        self.good = (0, self.trainer._good_state)  # (step, weights) the last healthy ICL check saw

    # -- messages to the parent --
    def send_status(self) -> None:
        history = self.trainer.history
        if len(history) > 2 * HISTORY_LIMIT:  # bounded memory on a long run
            del history[:HISTORY_LIMIT]
            self.sent_rows = max(0, self.sent_rows - HISTORY_LIMIT)
        rows = history[self.sent_rows :]
        self.sent_rows = len(self.trainer.history)
        times = list(self.step_times)
        rate = (len(times) - 1) / max(times[-1] - times[0], 1e-9) if len(times) >= 2 else 0.0
        self.out_q.put(("status", {
            "step": self.trainer.step_count, "rows": rows, "status": self.status, "message": self.message,
            "steps_per_s": rate if self.running else 0.0, "pending": self.pending, "pid": os.getpid(),
            "acked": self.handled,
        }))
        if self.board is not None:
            self.board[0], self.board[1] = STATES.index(self.status), self.trainer.step_count
        self.last_status = time.monotonic()

    def send_weights(self) -> None:
        model = self.trainer.model
        card = {"training": {"steps": int(self.trainer.step_count), "config": self.trainer.config.to_dict()}}
        self.out_q.put(("weights", {"step": self.trainer.step_count, "bytes": checkpoint_bytes(model, card)}))
        self.last_weights = time.monotonic()
        self.weights_dirty = False

    def send_curve(self) -> None:
        """NLL vs n of the current weights on fixed validation tasks (evaluated here, not in the page)."""
        cfg, tcfg = self.cfg, self.trainer.config
        pool = self.trainer.pool
        if self.vset is None:
            prior = prior_of({"task": tcfg.task}, DENSITY, "the live ICL curve")
            ns = [n for n in CURVE_NS if n <= self.trainer.model.config.max_context]
            self.vset = ValidationSet.draw(prior, tcfg.box, n_tasks=int(cfg.curve_tasks), ns=ns)
            self.pool_vset = self.yards = None
            if pool is not None:  # a pool run: both yardsticks, on prior tasks and on the pool's tasks
                self.pool_vset = ValidationSet.draw(prior, tcfg.box, n_tasks=int(cfg.curve_tasks), ns=ns,
                                                    draws=pool)
                self.yards = (self.vset.yardsticks(prior, pool), self.pool_vset.yardsticks(prior, pool))
        v = self.vset
        t0 = time.monotonic()
        nll = v.model_curve(self.trainer.model, int(cfg.curve_resolution))
        payload = {"step": self.trainer.step_count, "ns": v.ns, "nll": nll,
                   "prior_predictive": v.prior_predictive, "oracle": v.oracle}
        if self.pool_vset is not None and self.yards is not None:
            pv = self.pool_vset
            payload.update(self.yards[0])
            payload["pool"] = {"nll": pv.model_curve(self.trainer.model, int(cfg.curve_resolution)),
                               "prior_predictive": pv.prior_predictive, "oracle": pv.oracle, **self.yards[1]}
        self.curve_seconds = time.monotonic() - t0
        self.out_q.put(("curve", payload))
        self.curve_step = self.trainer.step_count
        self.last_curve = time.monotonic()
        cause = self.watchdog.check_curve(self.trainer.step_count, v.ns, nll, v.prior_predictive)
        if cause is not None:
            self.trip(cause, rewind=True)
        elif self.watchdog.healthy_curve:
            # Between steps the model's weights are the trainer's last good state (a fresh dict per step).
            self.good = (self.trainer.step_count, self.trainer._good_state)

    def curve_interval(self) -> float:
        """Seconds from one curve to the next: curve_every, or longer when curves are slow."""
        return max(self.cfg.curve_every, self.curve_seconds / max(self.cfg.curve_share, 1e-3))

    def halt(self, status: str, message: str) -> None:
        self.running, self.pending = False, 0
        self.step_times.clear()
        self.status, self.message = status, message
        self.send_weights()  # the Trainer restored the last good weights
        self.send_status()

    def trip(self, cause: str, rewind: bool) -> None:
        """The watchdog saw a divergence: pause, and (rewind) go back to the weights of the last
        healthy ICL check, with that step count; otherwise keep the Trainer's last finite weights."""
        tr = self.trainer
        if rewind and self.good[0] < tr.step_count:
            step, state = self.good
            with tr.lock:
                tr.model.load_state_dict(state)
                tr._good_state = state
                tr.optimizer.state.clear()  # Adam's moments come from the diverging steps
                tr.step_count = step
                del tr.history[sum(1 for row in tr.history if row.get("step", 0) < step):]
            self.sent_rows = min(self.sent_rows, len(tr.history))
            self.curve_step = -1
            self.out_q.put(("rewind", step))
            kept = f"the weights of step {step} (the last healthy check) are restored"
        else:
            kept = f"the last good weights (step {tr.step_count}) are kept"
        self.watchdog.reset()
        self.halt("diverged", f"Training diverged and was paused: {cause}; {kept}. Lower the learning rate "
                              "or the Langevin step size and noise, then press Reset (or Play to go on).")

    # -- commands from the parent --
    def handle(self, cmd: str, arg: Any) -> bool:
        """Apply one command; False to exit."""
        self.last_ping = time.monotonic()
        if cmd == "close":
            return False
        self.handled += 1
        if cmd == "play":
            self.running, self.status, self.message = True, "running", None
        elif cmd == "pause":
            self.running, self.pending = False, 0
            self.step_times.clear()  # a paused run has no rate
            if self.status == "running":
                self.status = "paused"
        elif cmd == "step" and not self.running:
            self.pending += max(0, int(arg))
            self.message = None  # the user acted: why it had stopped is old news
            if self.status in ("diverged", "error"):
                self.status = "paused"
        elif cmd == "reset":
            if arg is not None:
                self.spec = {**self.spec, "settings": arg}
            self.trainer = self.factory(self.spec)
            self.running, self.pending, self.sent_rows = False, 0, 0
            self.status, self.message = "paused", None
            self.step_times.clear()
            self.vset, self.curve_step = None, -1
            self.watchdog = Watchdog(self.cfg.watchdog)
            self.good = (0, self.trainer._good_state)
            self.out_q.put(("reset", None))
            self.weights_dirty = True
        elif cmd == "ping":
            pass
        self.send_status()
        return True

    def drain(self, block: bool) -> bool:
        try:
            cmd, arg = self.cmd_q.get(timeout=0.2) if block else self.cmd_q.get_nowait()
        except queue.Empty:
            return True
        if not self.handle(cmd, arg):
            return False
        while True:  # apply everything queued before the next step
            try:
                cmd, arg = self.cmd_q.get_nowait()
            except queue.Empty:
                return True
            if not self.handle(cmd, arg):
                return False

    def one_step(self) -> None:
        if not self.running:
            self.pending -= 1
        try:
            metrics = self.trainer.step()
        except TrainingDivergedError as e:
            self.halt("diverged", f"Training diverged and was paused; the last good weights are kept. {e}")
            return
        except Exception as e:  # noqa: BLE001 - any failure pauses the run with its reason
            self.halt("error", f"Training stopped: {type(e).__name__}: {e}")
            return
        self.step_times.append(time.monotonic())
        self.weights_dirty = True
        cause = self.watchdog.check_step(metrics)
        if cause is not None:
            # A non-finite step was undone by the Trainer (its last finite weights are sound); an
            # energy run-away goes back to the last healthy ICL check.
            self.trip(cause, rewind=not metrics.get("skipped"))

    def loop(self) -> None:
        parent = mp.parent_process()
        self.send_weights()
        self.send_status()
        while True:
            busy = self.running or self.pending > 0
            if not self.drain(block=not busy):
                return
            if parent is not None and not parent.is_alive():
                return  # the app is gone: never outlive it
            now = time.monotonic()
            if self.running and now - self.last_ping > self.cfg.idle_pause:
                self.running, self.status = False, "paused"
                self.step_times.clear()
                self.message = (f"Paused: no open page has looked at this run for {self.cfg.idle_pause:g} s "
                                "(a run keeps going while its Train page or any page of its session is "
                                "open). Press Play to go on.")
                self.send_status()
            if self.running or self.pending > 0:
                self.one_step()
                if not self.running and self.pending == 0:
                    self.send_weights()  # single steps: show their result at once
                    self.send_status()
            now = time.monotonic()
            if self.weights_dirty and now - self.last_weights > self.cfg.weights_every:
                self.send_weights()
            if (self.cfg.curve_every > 0 and self.curve_step != self.trainer.step_count
                    and now - self.last_curve > self.curve_interval()):
                self.send_curve()
            if now - self.last_status > (self.cfg.status_every if self.running else 1.0):
                self.send_status()


def _child_main(cmd_q: Any, out_q: Any, spec: dict, cfg: PoolConfig,
                factory: Callable[[dict], Trainer], board: Any = None) -> None:
    try:
        os.nice(int(cfg.nice))
    except OSError:
        pass
    torch.set_num_threads(int(cfg.threads))
    try:
        _Child(cmd_q, out_q, spec, cfg, factory, board).loop()
    except BaseException as e:  # noqa: BLE001 - report, then exit; the parent shows the reason
        out_q.put(("fatal", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
        raise
    finally:
        out_q.close()
        out_q.join_thread()


# ---- the parent side --------------------------------------------------------------------------


class _Record:
    """Everything the pool needs about one trainer; the handle holds it, the pool points to it."""

    def __init__(self, spec: dict, factory: Callable[[dict], Trainer]) -> None:
        self.spec = spec
        self.factory = factory
        self.process: Any = None
        self.board: Any = None  # shared with the child: [index in STATES, step]
        self.cmd_q: Any = None
        self.out_q: Any = None
        self.state = "waiting"
        self.closed = False
        self.backlog: list[tuple[str, Any]] = []  # commands given while waiting for a slot
        self.last_poll = time.monotonic()
        self.lock = threading.Lock()


def _context() -> Any:
    """forkserver where available: one clean server process imports torch and iclebm once, and
    each trainer is forked from it in milliseconds (spawn re-imports torch per trainer: seconds).
    The server is started from no thread of ours, so forking it is safe."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["iclebm.ui.jobs.trainer_process"])
        return ctx
    return mp.get_context("spawn")


class TrainerPool:
    """Starts trainer processes up to a cap, queues the rest, and reaps ended ones."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self._ctx = _context()
        self._lock = threading.RLock()
        self._active: list[_Record] = []  # hold a slot (process started)
        self._waiting: deque[_Record] = deque()
        self._ending: list[Any] = []  # (process, deadline) pairs being stopped
        self._handles: weakref.WeakSet[ProcessTrainer] = weakref.WeakSet()
        self._reaper: threading.Thread | None = None
        self._shutdown = threading.Event()

    # -- public --
    def create(self, mode: str = "scratch", settings: dict[str, Any] | None = None,
               base_model: EnergyTransformer | None = None,
               factory: Callable[[dict], Trainer] = default_trainer_factory,
               max_bad_steps: int = 5) -> ProcessTrainer:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        settings = dict(settings or {})
        make_configs(mode, settings, base_model)  # bad settings fail here, in the page, with the reason
        spec = {"mode": mode, "settings": settings, "max_bad_steps": max_bad_steps,
                "base": checkpoint_bytes(base_model) if base_model is not None else None}
        handle = ProcessTrainer(self, _Record(spec, factory), base_model)
        with self._lock:
            self._handles.add(handle)
            self._waiting.append(handle._rec)
            self._schedule()
        self._ensure_reaper()
        return handle

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def summary(self) -> dict[str, int]:
        """How many of this app's trainers are in each state, as their processes report it now
        (whether or not a page polls them): {"running": 2, "paused": 1, "waiting": 1, ...}."""
        counts: dict[str, int] = {}
        with self._lock:
            recs = list(self._active) + list(self._waiting)
        for rec in recs:
            alive = rec.process is not None and rec.process.is_alive()
            state = STATES[rec.board[0]] if alive and rec.board is not None else rec.state
            if rec.process is not None and not alive:
                state = "stopped"
            counts[state] = counts.get(state, 0) + 1
        return counts

    def queue_position(self, rec: _Record) -> int | None:
        with self._lock:
            return list(self._waiting).index(rec) + 1 if rec in self._waiting else None

    def shutdown(self) -> None:
        """Close every trainer and wait for their processes (tests, app exit)."""
        with self._lock:
            recs = list(self._active) + list(self._waiting)
        for rec in recs:
            self.release(rec)
        self._shutdown.set()
        self._reap(wait=True)

    # -- slots --
    def _schedule(self) -> None:
        with self._lock:
            for rec in list(self._active):
                if rec.closed or (rec.process is not None and not rec.process.is_alive()):
                    self._active.remove(rec)
            while self._waiting and len(self._active) < int(self.config.max_trainers):
                rec = self._waiting.popleft()
                if rec.closed:
                    continue
                self._start(rec)
                self._active.append(rec)

    def _start(self, rec: _Record) -> None:
        rec.cmd_q, rec.out_q = self._ctx.Queue(), self._ctx.Queue()
        rec.board = self._ctx.RawArray("q", [STATES.index("starting"), 0])
        rec.process = self._ctx.Process(
            target=_child_main, args=(rec.cmd_q, rec.out_q, rec.spec, self.config, rec.factory, rec.board),
            daemon=True, name="iclebm-trainer",
        )
        rec.process.start()
        rec.state = "starting"
        for cmd in rec.backlog:
            rec.cmd_q.put(cmd)
        rec.backlog.clear()

    def restart(self, rec: _Record) -> None:
        """A fresh process for a trainer whose child died (keeps its place if it had a slot)."""
        with self._lock:
            self._stop_process(rec)
            if rec in self._active:
                self._active.remove(rec)
            rec.closed = False
            rec.state = "waiting"
            if rec not in self._waiting:
                self._waiting.append(rec)
            self._schedule()

    def release(self, rec: _Record) -> None:
        """End a trainer (non-blocking): the reaper stops and reaps its process."""
        with self._lock:
            rec.closed = True
            rec.state = "closed"
            if rec in self._waiting:
                self._waiting.remove(rec)
            if rec in self._active:
                self._active.remove(rec)
            self._stop_process(rec)
            self._schedule()

    def _stop_process(self, rec: _Record) -> None:
        proc = rec.process
        if proc is None:
            return
        try:
            rec.cmd_q.put_nowait(("close", None))
        except (ValueError, OSError, queue.Full):
            pass
        self._ending.append((proc, time.monotonic() + self.config.stop_grace, rec.cmd_q, rec.out_q))
        rec.process = None

    # -- reaping --
    def _ensure_reaper(self) -> None:
        with self._lock:
            if self._reaper is None or not self._reaper.is_alive():
                self._shutdown.clear()
                self._reaper = threading.Thread(target=self._reap_loop, daemon=True, name="iclebm-reaper")
                self._reaper.start()

    def _reap_loop(self) -> None:
        while not self._shutdown.wait(0.25):
            now = time.monotonic()
            with self._lock:
                for rec in list(self._active) + list(self._waiting):
                    if now - rec.last_poll > self.config.session_timeout:
                        self.release(rec)
                self._schedule()
            self._reap(wait=False)

    def _reap(self, wait: bool) -> None:
        """Join ended processes; terminate, then kill, those past their grace period."""
        while True:
            with self._lock:
                ending = list(self._ending)
            for item in ending:
                proc, deadline, cmd_q, out_q = item
                _drain(out_q)  # a child blocked on a full pipe could not exit
                proc.join(timeout=0.05)
                if proc.exitcode is None and time.monotonic() > deadline:
                    proc.terminate()
                    proc.join(timeout=1.0)
                    if proc.exitcode is None:
                        proc.kill()
                        proc.join(timeout=1.0)
                if proc.exitcode is not None:
                    for q in (cmd_q, out_q):
                        q.close()
                        q.cancel_join_thread()
                    with self._lock:
                        if item in self._ending:  # another reaper (thread or caller) may have taken it
                            self._ending.remove(item)
            with self._lock:
                left = len(self._ending)
            if not wait or left == 0:
                return
            time.sleep(0.05)


def _drain(q: Any) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except (queue.Empty, OSError, ValueError, EOFError):
            return out


def _finalize(pool: TrainerPool, rec: _Record) -> None:
    pool.release(rec)


CURVE_REFS = ("ns", "prior_predictive", "oracle", "bayes", "bayes_pool")  # a curve message's reference lines


class ProcessTrainer:
    """One session's trainer (a handle to its process); every method returns at once.

    The API matches `live_training.LiveTrainer`: play, pause, step, reset, close, poll.
    """

    def __init__(self, pool: TrainerPool, rec: _Record, base_model: EnergyTransformer | None) -> None:
        self.pool = pool
        self._rec = rec
        self.mode = rec.spec["mode"]
        self.settings = dict(rec.spec["settings"])
        self.train_config, self.model_config = make_configs(self.mode, self.settings, base_model)
        self._base_card = dict(base_model.card or {}) if base_model is not None else {}
        self._history: deque[dict] = deque(maxlen=HISTORY_LIMIT)
        self._status: dict[str, Any] = {"step": 0, "status": "waiting", "message": None, "steps_per_s": 0.0}
        self._weights: dict | None = None  # last {"step", "bytes"} received
        self._model: EnergyTransformer | None = None  # decoded lazily from _weights
        self._model_step = -1
        self.wants_run = False  # Play pressed and not paused since
        self._sent = 0  # commands sent to the current process (the child counts those it applied)
        self._state_cmd = 0  # number of the last play / pause / step / reset: until the child has
        # applied it, the page shows the state that command asked for, not the child's older reports
        self._step_target: int | None = None  # single steps asked for and not yet done
        self._curves: list[tuple[int, list[float]]] = []  # (step, NLL at each n), oldest first
        self._curve_ref: dict[str, Any] | None = None  # ns, prior_predictive, oracle (+ bayes, bayes_pool)
        self._pool_curves: list[tuple[int, list[float]]] = []  # a pool run's curves on its pool's tasks
        self._pool_ref: dict[str, Any] | None = None
        self._finalizer = weakref.finalize(self, _finalize, pool, rec)

    # -- commands --
    def _send(self, cmd: str, arg: Any = None) -> None:
        rec = self._rec
        with rec.lock:
            if rec.closed:
                return
            if rec.process is None:
                rec.backlog.append((cmd, arg))
            else:
                rec.cmd_q.put((cmd, arg))
            self._sent += 1
            if cmd != "ping":
                self._state_cmd = self._sent

    def ping(self) -> None:
        """Tell the child that a page still shows this run (a running child that gets no ping for
        `PoolConfig.idle_pause` seconds pauses itself). The page's live refresh calls this."""
        if self._rec.process is not None:  # a waiting trainer has no idle clock; no backlog of pings
            self._send("ping")

    def play(self) -> None:
        self.wants_run = True
        self._send("play")
        self._status.update(status="running" if self.started else self._status["status"], message=None)

    def pause(self) -> None:
        """Pause; the status says so at once (the child's last reports still say running)."""
        self.wants_run = False
        self._send("pause")
        if self._status.get("status") == "running":
            self._status.update(status="paused", steps_per_s=0.0)

    def step(self, n: int = 1) -> None:
        self._step_target = (self._step_target or int(self._status.get("step", 0))) + max(0, int(n))
        self._send("step", int(n))
        self._status["message"] = None

    def reset(self, settings: dict[str, Any] | None = None) -> None:
        """Start again from the initial weights (optionally with new settings, model size included).
        A trainer whose process died gets a fresh process."""
        if settings is not None:
            if self.mode == "scratch":
                self.train_config, self.model_config = make_configs(self.mode, settings, None)
            self.settings = dict(settings)
            self._rec.spec = {**self._rec.spec, "settings": dict(settings)}
        self._history.clear()
        self._weights, self._model, self._model_step = None, None, -1
        self.wants_run, self._step_target = False, None
        self._curves, self._curve_ref = [], None
        self._pool_curves, self._pool_ref = [], None
        self._status.update(step=0, message=None, steps_per_s=0.0)
        if self._rec.state == "stopped":
            self._status["status"] = "waiting"
            self._sent = self._state_cmd = 0  # a fresh process counts from 0
            self.pool.restart(self._rec)
        else:
            self._send("reset", self.settings if settings is not None else None)

    def close(self) -> None:
        self._finalizer()

    # -- reading --
    @property
    def started(self) -> bool:
        return self._rec.process is not None

    @property
    def pid(self) -> int | None:
        proc = self._rec.process
        return proc.pid if proc is not None else None

    def _receive(self) -> None:
        rec = self._rec
        rec.last_poll = time.monotonic()
        if rec.out_q is None or rec.closed:
            return
        for kind, payload in _drain(rec.out_q):
            if kind == "status":
                self._history.extend(payload.pop("rows"))
                # A report older than the last command keeps the state that command set here.
                if (payload.get("acked", 0) < self._state_cmd
                        and self._status.get("status") in ("running", "paused")):
                    payload = {k: v for k, v in payload.items()
                               if k not in ("status", "message", "steps_per_s")}
                    rec.state = self._status["status"]
                else:
                    rec.state = payload["status"]
                self._status.update(payload)
            elif kind == "rewind":  # the watchdog went back to the weights of this step
                self._history = deque((r for r in self._history if r.get("step", 0) < payload),
                                      maxlen=HISTORY_LIMIT)
                self._curves = [c for c in self._curves if c[0] <= payload]
                self._pool_curves = [c for c in self._pool_curves if c[0] <= payload]
            elif kind == "weights":
                self._weights = payload
            elif kind == "curve":
                self._curves = [*self._curves[-49:], (payload["step"], payload["nll"])]
                self._curve_ref = {k: payload[k] for k in CURVE_REFS if k in payload}
                if "pool" in payload:
                    pool = payload["pool"]
                    self._pool_curves = [*self._pool_curves[-49:], (payload["step"], pool["nll"])]
                    self._pool_ref = {"ns": payload["ns"], **{k: pool[k] for k in CURVE_REFS if k in pool}}
            elif kind == "reset":
                self._history.clear()
                self._curves, self._curve_ref = [], None
                self._pool_curves, self._pool_ref = [], None
            elif kind == "fatal":
                self._status["message"] = f"Training stopped: {payload.splitlines()[0]}"
        proc = rec.process
        if proc is not None and not proc.is_alive() and not rec.closed:
            code = proc.exitcode
            why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            if not str(self._status.get("message") or "").startswith("Training stopped"):
                self._status["message"] = f"Training stopped: the trainer process ended ({why})."
            self._status["status"] = rec.state = "stopped"
            self.pool._schedule()

    def poll(self, with_model: bool = False) -> LiveSnapshot:
        """The latest status, metrics and (if asked) weights; never waits for the trainer."""
        self._receive()
        rec = self._rec
        own = ("waiting", "starting", "stopped", "closed")  # states only the parent knows
        status = rec.state if rec.state in own else self._status["status"]
        message = self._status.get("message")
        if status == "waiting":
            pos = self.pool.queue_position(rec)
            message = (f"Waiting for a free slot: {self.pool.config.max_trainers} trainers are running "
                       f"(you are number {pos} in the queue).") if pos else message
        model = self.model() if with_model else None
        return LiveSnapshot(step=int(self._status.get("step", 0)), history=list(self._history), status=status,
                        message=message, steps_per_s=float(self._status.get("steps_per_s", 0.0)), model=model)

    def model(self) -> EnergyTransformer | None:
        """An eval-mode copy of the last weights received (None before the first arrives)."""
        if self._weights is None:
            return None
        if self._model_step != self._weights["step"] or self._model is None:
            model = load_checkpoint_bytes(self._weights["bytes"], name="live snapshot")
            for p in model.parameters():
                p.requires_grad_(False)
            self._model, self._model_step = model, self._weights["step"]
        self._model.card = self.card(step=self._model_step)
        return self._model

    @property
    def weights_step(self) -> int | None:
        """The training step of the last weights received."""
        return None if self._weights is None else int(self._weights["step"])

    def icl_curves(self, on_pool: bool = False) -> dict[str, Any] | None:
        """The ICL curves received so far: {ns, prior_predictive, oracle, curves: [(step, nll list)]}
        (the last is the current weights'), or None before the first. A pool run's also carry the
        Bayes lines "bayes" (the prior's) and "bayes_pool" (the pool's); `on_pool`: its curves on
        tasks from the pool instead of held-out prior tasks."""
        ref, curves = (self._pool_ref, self._pool_curves) if on_pool else (self._curve_ref, self._curves)
        if ref is None:
            return None
        return {**ref, "curves": list(curves)}

    @property
    def pool_size(self) -> int:
        """M of a run on a finite task pool; 0 for the full prior."""
        return int(self.train_config.task_pool)

    def task_pool(self) -> TaskPool | None:
        """The run's task pool (drawn as the child draws it: same prior, size and seed)."""
        c = self.train_config
        if not c.task_pool:
            return None
        return TaskPool.draw(prior_of({"task": c.task}), c.task_pool, c.pool_seed)

    def wait(self, cond: Callable[[LiveSnapshot], bool], timeout: float = 60.0) -> LiveSnapshot:
        """Poll until cond(snapshot) holds (scripts and tests; the page never calls this)."""
        end = time.monotonic() + timeout
        while True:
            snap = self.poll()
            if cond(snap) or time.monotonic() > end:
                return snap
            time.sleep(0.02)

    @property
    def status(self) -> str:
        return self.poll().status

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def active(self) -> bool:
        """Whether the page should keep refreshing: waiting for a slot or starting, running, or
        single steps outstanding. False once paused, diverged, stopped or closed."""
        snap = self.poll()
        if snap.status in ("waiting", "starting"):
            return True
        if snap.status in ("diverged", "error", "stopped", "closed"):
            self.wants_run, self._step_target = False, None
            return False
        if self._step_target is not None and snap.step >= self._step_target:
            self._step_target = None
        if self.wants_run and snap.status == "paused" and self._status.get("acked", 0) >= self._state_cmd:
            self.wants_run = False  # the child paused by itself (nobody looked): Play is offered again
        return self.wants_run or self._step_target is not None

    def card(self, step: int | None = None) -> dict:
        """A checkpoint card describing this run (task prior, box, sampler, training)."""
        base = self._base_card if self.mode == "finetune" else {}
        preset = get_preset(LIVE_PRESET)
        return {
            "name": base.get("name", "live") + ("-finetuned" if self.mode == "finetune" else ""),
            "task": self.train_config.task,
            **pool_entries(self.task_pool()),
            "box": list(self.train_config.box),
            "sampler": base.get("sampler") or preset.sampler.to_dict(),
            "training": {
                "source": "iclebm explorer live training (trainer process)",
                "mode": self.mode,
                "base": base.get("name") if self.mode == "finetune" else None,
                "steps": int(self._status.get("step", 0) if step is None else step),
                "config": self.train_config.to_dict(),
            },
        }
