"""The command line end to end: train (and resume), evaluate, bench --quick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iclebm import bench
from iclebm.checkpoints import load_checkpoint, read_card
from iclebm.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "x.safetensors"
    assert main(["train", "--preset", "small", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_a_loadable_checkpoint(trained, capsys):
    assert trained.exists() and trained.with_suffix(".json").exists()
    card = read_card(trained)
    assert card["training"]["steps"] == 3
    assert card["training"]["preset"] == "small"
    assert "python -m iclebm train" in card["training"]["command"]
    assert {"task", "box", "sampler", "model"} <= set(card)
    model = load_checkpoint(trained)
    assert model.card["training"]["steps"] == 3


def test_train_resume_continues_the_step_count(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    assert main(["train", "--preset", "small", "--steps", "2", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--preset", "small", "--steps", "4", "--out", str(out), "--quiet", "--resume"]) == 0
    captured = capsys.readouterr()
    assert "resuming" in captured.err and "at step 2" in captured.err
    training = read_card(out)["training"]
    assert training["steps"] == 4
    # both invocations are on record, so the card says how the model was really trained
    assert len(training["commands"]) == 2 and "--resume" in training["commands"][1]


def test_fine_tune_with_exact_overrides_records_recipe_and_init(trained, tmp_path, capsys):
    out = tmp_path / "ft.safetensors"
    args = ["train", "--preset", "small", "--init", str(trained), "--objective", "exact", "--steps", "2",
            "--batch-size", "4", "--grid-resolution", "5", "--exact-positions", "3", "--kernel-points", "6",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    training = read_card(out)["training"]
    cfg = training["config"]
    assert (cfg["objective"], cfg["batch_size"], cfg["grid_resolution"]) == ("exact", 4, 5)
    assert (cfg["exact_positions"], cfg["kernel_points"]) == (3, 6)
    assert "--kernel-points 6" in training["command"]
    # the init's own recipe travels with the fine-tuned card
    assert training["init_training"]["steps"] == 3 and training["init_training"]["preset"] == "small"


def test_evaluate_prints_table_and_writes_json(trained, tmp_path, capsys):
    js = tmp_path / "out.json"
    args = ["evaluate", "--checkpoint", str(trained), "--tasks", "2", "--resolution", "40", "--json", str(js)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| n | model | bayes | oracle |" in text and "model - bayes | model - oracle |" in text
    table = json.loads(js.read_text())
    assert table["ns"] == [0, 1, 2, 4, 8, 16, 32]
    assert table["n_tasks"] == 2 and table["resolution"] == 40
    assert {"model", "bayes", "oracle", "kde_scott", "kde_scipy", "em_mixture", "em_bic", "gaussian",
            "prior_predictive"} <= set(table["nll"])


def test_evaluate_missing_checkpoint_is_a_clean_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err


def test_bench_quick_runs(trained, capsys):
    assert main(["bench", "--quick", "--checkpoint", str(trained), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {trained.name}" in out
    for label in (
        "(a) heatmap",
        "(a) same + grad",
        "(b) film strip",
        "(c) CD step",
        "(d) Langevin",
        "(e) app heatmap",
    ):
        assert label in out, label
    assert "max |cached - naive|" in out


def test_bench_falls_back_to_a_fresh_model(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "DEFAULT_CHECKPOINT", tmp_path / "absent.safetensors")
    model, source = bench.get_model(None)
    assert "fresh" in source and model.card["box"]


def test_module_entry_point_runs_as_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "iclebm", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for cmd in ("train", "evaluate", "bench"):
        assert cmd in proc.stdout


def test_bench_training_curve_quick_prints_both_objectives(capsys):
    args = ["bench", "--training-curve", "--quick", "--seconds", "1", "--eval-every", "1",
            "--presets", "fast", "--objectives", "cd,exact", "--threads", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "prior predictive" in out and "oracle" in out
    rows = [line for line in out.splitlines() if line.startswith("| fast |")]
    assert [r.split("|")[2].strip() for r in rows] == ["cd", "exact"]
    assert all("%" in r for r in rows)
