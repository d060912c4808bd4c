"""The background job behind the trajectory map: result, progress, a typed error message, cancellation."""

from __future__ import annotations

import threading

from iclebm.ui.jobs.background import BackgroundJob


def test_result_and_progress_after_the_run() -> None:
    def work(progress):  # type: ignore[no-untyped-def]
        for i in range(4):
            progress(i / 4, f"step {i}")
        return 42

    job = BackgroundJob("k", work)
    job.join(10)
    status = job.status()
    assert not job.running and not status.running
    assert job.result() == 42 and status.fraction == 1.0 and status.error is None and not status.cancelled


def test_a_failure_is_a_message_not_a_traceback() -> None:
    def work(progress):  # type: ignore[no-untyped-def]
        raise ValueError("no context")

    job = BackgroundJob("k", work)
    job.join(10)
    status = job.status()
    assert status.error == "ValueError: no context" and job.result() is None and not status.running


def test_stop_cancels_at_the_next_progress_report() -> None:
    gate = threading.Event()
    reached = []

    def work(progress):  # type: ignore[no-untyped-def]
        progress(0.1, "first")
        gate.wait(10)
        progress(0.5, "second")  # raises: stop() was called meanwhile
        reached.append("after")
        return 1

    job = BackgroundJob("k", work)
    job.stop()
    gate.set()
    job.join(10)
    status = job.status()
    assert status.cancelled and not status.running and job.result() is None and reached == []
