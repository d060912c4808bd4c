"""The model card as a readable summary: every shipped card renders its prior in words, the
architecture, the training command and time, and the evaluation table with its Bayes column and gap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iclebm.ui.card_view import card_markdown, evaluation_table, prior_words, training_lines

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted((ROOT / "checkpoints").glob("*.json"))


def test_every_checkpoint_ships_a_card():
    assert len(CARDS) >= 5


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.stem)
def test_every_shipped_card_reads_as_a_summary(path: Path):
    card = json.loads(path.read_text())
    text = card_markdown(card)
    assert text.startswith(f"**{card['name']}**")
    assert "{" not in text and "'" not in text.replace("'s ", "")  # no raw dict / repr leaks through
    assert prior_words(card["task"]) in text and "?" not in prior_words(card["task"])
    m = card["model"]
    shape = f"{m['n_layer']} layers × d={m['d_model']}, {m['n_head']} heads, max context {m['max_context']}"
    assert shape in text
    training = card["training"]
    assert f"Training: {training['steps']} steps in " in text and f"`{training['command']}`" in text
    e = card["evaluation"]
    table = evaluation_table(e)
    assert table in text and table.count("\n|") == len(e["ns"]) + 1  # header, rule, one row per n
    assert f"The oracle (the true task's own density) scores {e['nll']['oracle'][0]:.2f} at every n." in table
    model_nll = e["nll"]["model"]
    if "bayes" in e["nll"]:
        assert "| n | model | Bayes | gap |" in table
        n, gap = e["ns"][-1], model_nll[-1] - e["nll"]["bayes"][-1]
        assert f"| {n} | {model_nll[-1]:.2f} | {e['nll']['bayes'][-1]:.2f} | {gap:+.2f} |" in table
    else:
        assert "| n | model |\n" in table and "No Bayes-optimal column" in text
    if "mse" in e:
        assert "MSE of the predicted y" in text


def test_prior_words_by_family():
    words = prior_words({"family": "gaussian_mixture", "n_components": 3, "mean_std": 3.0,
                         "component_std": [0.33, 0.5], "mean_limit": 8.0})
    assert words == ("Gaussian mixtures of 3 component(s) in 2-D; means ~ N(0, 3²) within ±8; "
                     "component std 0.33–0.5.")
    assert "aspect ratio 1–4, rotation uniform (anisotropic)" in prior_words(
        {"n_components": [1, 6], "aspect_ratio": [1.0, 4.0], "rotation": "uniform"})
    assert prior_words({"family": "linear", "w_std": 0.5, "b_std": 1.0, "noise_std": 0.5,
                        "x_range": [-6.0, 6.0]}).endswith("noise std 0.5, x in [-6, 6].")
    assert prior_words({"family": "future", "width": [1, 2]}) == "Family future: width 1–2."


def test_evaluation_table_gap_and_missing_values():
    table = evaluation_table({"ns": [0, 4], "nll": {"model": [5.0, 3.5], "bayes": [4.9, None],
                                                    "oracle": [2.0, 2.0]}})
    assert table.splitlines() == ["| n | model | Bayes | gap |", "|---:|---:|---:|---:|",
                                  "| 0 | 5.00 | 4.90 | +0.10 |", "| 4 | 3.50 | — | — |", "",
                                  "The oracle (the true task's own density) scores 2.00 at every n."]
    varying = evaluation_table({"ns": [0, 4], "nll": {"model": [5.0, 3.5], "oracle": [2.0, 1.5]}})
    assert varying.splitlines()[0] == "| n | model | oracle |" and "| 4 | 3.50 | 1.50 |" in varying
    assert evaluation_table({}) == "" and evaluation_table({"ns": [0], "nll": {"kde": [1.0]}}) == ""


def test_a_card_without_training_or_evaluation_says_so():
    bare = {"name": "bare", "model": {"n_layer": 1, "d_model": 8, "n_head": 1, "max_context": 4}}
    text = card_markdown(bare)
    assert "Training: not recorded in the card." in text and "**Evaluation**: none in the card" in text
    assert training_lines({"steps": 10, "seconds": 30.0, "init": "a.safetensors",
                           "commands": ["python -m iclebm train a", "python -m iclebm train b"]}) == [
        "Training: 10 steps in 30 s, fine-tuned from `a.safetensors`.", "`python -m iclebm train a`",
        "`python -m iclebm train b`"]
