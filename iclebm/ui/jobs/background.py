"""A computation in a daemon thread with a progress fraction, polled by a page fragment.

The thread never touches Streamlit: it calls `fn(progress)`, where `progress(fraction, label)` records
how far it got and raises `JobCancelled` once `stop()` was called, so a job whose inputs went stale
ends at its next progress report instead of computing a result nobody will see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


class JobCancelled(Exception):
    """Raised inside the job's thread (from its progress callback) after `stop()`."""


@dataclass(frozen=True)
class JobStatus:
    fraction: float  # 0..1
    label: str  # what it is doing now
    seconds: float  # since the start (or the whole run, once finished)
    running: bool
    error: str | None = None  # the failure's message, never a traceback
    cancelled: bool = False


class ThreadJob:
    """Work in a daemon thread that shares its state with the page under a lock: `stop()` raises a
    flag the work checks, `running` and `join()` follow the thread. Subclasses set their state, then
    `_start(...)` runs `self._run(...)` in the thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, *args: Any, **kwargs: Any) -> None:
        self._thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self._thread.start()

    def _run(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class BackgroundJob(ThreadJob):
    """`fn(progress)` in a daemon thread; `key` says which inputs it was started for."""

    def __init__(self, key: Hashable, fn: Callable[[Callable[[float, str], None]], Any]) -> None:
        super().__init__()
        self.key = key
        self._fn = fn
        self._fraction, self._label = 0.0, "starting"
        self._result: Any = None
        self._error: str | None = None
        self._cancelled = False
        self._t0 = time.perf_counter()
        self._seconds: float | None = None
        self._start()

    def _progress(self, fraction: float, label: str) -> None:
        if self._stop.is_set():
            raise JobCancelled(label)
        with self._lock:
            self._fraction, self._label = min(1.0, max(0.0, float(fraction))), str(label)

    def _run(self) -> None:
        try:
            result = self._fn(self._progress)
        except JobCancelled:
            with self._lock:
                self._cancelled = True
        except Exception as e:  # noqa: BLE001 - shown to the user as a message, never a traceback
            with self._lock:
                self._error = f"{type(e).__name__}: {e}"
        else:
            with self._lock:
                self._result, self._fraction, self._label = result, 1.0, "done"
        finally:
            with self._lock:
                self._seconds = time.perf_counter() - self._t0

    def status(self) -> JobStatus:
        with self._lock:
            seconds = self._seconds if self._seconds is not None else time.perf_counter() - self._t0
            return JobStatus(self._fraction, self._label, seconds, self._seconds is None, self._error,
                             self._cancelled)

    def result(self) -> Any:
        """The function's return value once it finished without error (None before)."""
        with self._lock:
            return self._result
