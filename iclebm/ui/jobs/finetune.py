"""The Inside page's background fine-tune: `fine_tune` in a daemon thread, polled by the page."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from iclebm.grid import Box
from iclebm.models.energy import EnergyTransformer
from iclebm.probes.ctx2weights import FineTuneConfig, FineTuneResult, fine_tune
from iclebm.ui.jobs.background import ThreadJob


class FineTuneJob(ThreadJob):
    """`fine_tune` in a daemon thread. `poll()` returns a consistent copy of the progress; `stop()`
    cancels after the current step. The thread never touches Streamlit."""

    def __init__(self, model: EnergyTransformer, points: np.ndarray | list, config: FineTuneConfig, box: Box,
                 **kwargs) -> None:
        super().__init__()
        self.config = config
        self._result = FineTuneResult()
        self._start(model, np.asarray(points, dtype=np.float64).copy(), config, box, **kwargs)

    def _run(self, *args, **kwargs) -> None:
        def on_progress(partial: FineTuneResult) -> None:
            copied = replace(partial, snapshots=list(partial.snapshots), losses=list(partial.losses))
            with self._lock:
                self._result = copied

        try:
            result = fine_tune(*args, should_stop=self._stop.is_set, on_progress=on_progress, **kwargs)
        except Exception as e:  # noqa: BLE001 - reported to the UI as a message, never a traceback
            with self._lock:
                self._result = replace(self._result, status="error", message=f"the fine-tune failed: {e}")
            return
        with self._lock:
            self._result = result

    def poll(self) -> FineTuneResult:
        with self._lock:
            r = self._result
            return replace(r, snapshots=list(r.snapshots), losses=list(r.losses))
