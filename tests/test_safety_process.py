"""Issue 16 in real processes: Ctrl-C / SIGTERM during `train` saves a complete checkpoint and exits
130 / 143 with one line; errors from `python -m iclebm` carry no traceback; a closed pipe is quiet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iclebm.checkpoints import load_checkpoint
from iclebm.training.resume import _resume_path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "iclebm", *args], cwd=ROOT, env=ENV, text=True,
                            stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_train_saves_and_exits_cleanly(tmp_path, sig):
    out = tmp_path / "run.safetensors"
    proc = cli("train", "--preset", "small", "--batch-size", "2", "--steps", "100000", "--quiet",
               "--log-every", "1", "--save-every", "100000", "--out", str(out), stdout=subprocess.DEVNULL)
    first = proc.stderr.readline()  # the first step's metrics: training has started
    assert json.loads(first)["step"] >= 0, first
    time.sleep(0.5)
    proc.send_signal(sig)
    try:
        rest = proc.stderr.read()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in rest.splitlines() if line.strip() and not line.startswith("{")]
    assert rc == 128 + sig, (rc, rest)
    assert "Traceback" not in rest
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({sig.name}): saved"), rest
    model = load_checkpoint(out)  # complete, and agrees with its card (the hash is checked)
    steps = model.card["training"]["steps"]
    assert steps >= 1 and str(steps) in lines[0]
    from safetensors import safe_open

    with safe_open(str(_resume_path(out)), "pt") as f:
        assert int(f.metadata()["step_count"]) == steps  # the resume state belongs to this checkpoint
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_errors_from_the_module_entry_point_have_no_traceback():
    proc = cli("evaluate", "--resolution", "0", stdout=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    proc = cli("evaluate", "--checkpoint", "missing.safetensors", "--tasks", "1", stdout=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_a_closed_pipe_is_quiet():
    proc = cli("inspect", "--points", "0,0; 1,1", "--query", "1,1", stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line (as `| head` after its lines)
    err = proc.stderr.read()
    rc = proc.wait(timeout=120)
    assert rc == 141 and "Traceback" not in err and "Exception ignored" not in err, (rc, err)
