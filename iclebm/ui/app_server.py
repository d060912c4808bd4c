"""Start the app as a local server for a headless browser: the browser tests and docs/screenshots.py.

`streamlit run app.py` runs in its own process group on a free port; the context manager
yields its URL once the port accepts connections and stops that group (and only it) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(root: Path, log: Path | None = None, env: dict[str, str] | None = None,
               start_s: float = 60.0) -> Iterator[str]:
    """Serve root/app.py; its output goes to `log` (default: discarded), `env` adds variables."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
    )
    see = f"; see {log}" if log else ""
    try:
        deadline = time.monotonic() + start_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early{see}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start within {start_s:g} s{see}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # only the server started here (its own session)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass  # the group has gone already
        if log:
            out.close()  # type: ignore[union-attr]
