"""python -m iclebm inspect: tables on the shipped model, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import iclebm
from iclebm.cli import main
from iclebm.probes.inspector import inspect_query

ROOT = Path(__file__).resolve().parents[1]


def test_inspect_prints_attention_and_influence_tables(capsys):
    assert main(["inspect", "--points", "0,0; 2,1; -3,2.5", "--query", "1,1"]) == 0
    out = capsys.readouterr().out
    model = iclebm.load_checkpoint()
    insp = inspect_query(model, [[0, 0], [2, 1], [-3, 2.5]], (1, 1))
    n_layer, n_head = model.config.n_layer, model.config.n_head
    assert out.count("layer ") == n_layer and f"head {n_head}" in out
    row = next(line for line in out.splitlines() if line.startswith("2 (+2.00, +1.00)"))
    assert row.split()[-n_head:] == [f"{insp.weights[0, h, 1]:.4f}" for h in range(n_head)]
    influence_rows = out.split("influence\n")[1].splitlines()
    assert [float(r.split()[-1]) for r in influence_rows] == pytest.approx(insp.influence, abs=1e-4)


def test_inspect_empty_context_says_so(capsys):
    assert main(["inspect", "--points", "", "--query", "0,0"]) == 0
    out = capsys.readouterr().out
    assert "empty context" in out and "self (query)" in out and "0.0000" not in out


@pytest.mark.parametrize(
    "points,query,message",
    [
        ("0,0;1,1", "13,0", "outside the box"),
        ("0,0;1", "1,1", "point 2"),
        ("0,0;a,1", "1,1", "not a number"),
        (";".join(["1,1"] * 65), "1,1", "at most 64"),
        ("0,0", "1", "query"),
    ],
)
def test_inspect_bad_input_is_one_line_exit_2(points, query, message, capsys):
    assert main(["inspect", "--points", points, "--query", query]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_inspect_subprocess_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "iclebm", "inspect", "--points", "0,0", "--query", "0,99"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "outside the box" in proc.stderr


def test_ctx2weights_prints_the_comparison_table(capsys):
    args = ["ctx2weights", "--steps", "2", "--points", "6", "--heldout", "20", "--resolution", "12"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "in context: NLL(D)" in out and "true mixture held-out NLL" in out
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0] in ("0", "1", "2")]
    assert [r[0] for r in rows] == ["0", "1", "2"] and all(len(r) == 6 for r in rows)
    assert all(0.0 <= float(r[5]) <= 1.0 and float(r[4]) >= 0.0 for r in rows)  # Hellinger, symmetric KL


@pytest.mark.parametrize("args,message", [(["--points", "0"], "--points"), (["--lr", "5"], "learning rate"),
                                          (["--steps", "0"], "steps")])
def test_ctx2weights_bad_input_exit_2(args, message, capsys):
    assert main(["ctx2weights", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
