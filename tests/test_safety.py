"""Issue 16, in-process: every bad CLI input is one line and exit code 2 before any work, the shipped
models never change, resume checks identity, checkpoints survive a save killed at any step, cards are
validated before a model is built, and the library refuses bad priors and unbounded dynamics."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save
from safety_cases import API_CASES, BAD_CARDS, CLI_CASES, fill, make_fixtures, write_bad_card

from iclebm import checkpoints
from iclebm.checkpoints import (
    CHECKPOINT_DIR,
    card_path,
    load_checkpoint,
    load_checkpoint_bytes,
    save_checkpoint,
)
from iclebm.cli import main
from iclebm.errors import CheckpointError, IclebmError
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.tasks import MixturePrior

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, str]:
    return make_fixtures(tmp_path_factory.mktemp("safety"))


@pytest.mark.parametrize("name,argv", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input_is_one_line_and_exit_2(name, argv, fixtures, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the table names the shipped models as checkpoints/...
    shipped, scratch = tree_digest(CHECKPOINT_DIR), tree_digest(Path(fixtures["tmp"]))
    rc = main(fill(argv, fixtures))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (name, rc, err)
    assert len(lines) == 1 and "error" in lines[0], (name, err)
    assert "Traceback" not in err
    assert tree_digest(CHECKPOINT_DIR) == shipped, f"{name} changed a shipped model"
    assert tree_digest(Path(fixtures["tmp"])) == scratch, f"{name} changed a file"


def test_messages_say_where_to_write_instead(fixtures, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["train", "--preset", "small", "--steps", "1", "--out", "checkpoints/mog2d.safetensors"])
    assert "runs/mog2d.safetensors" in capsys.readouterr().err
    main(["train", "--preset", "small", "--steps", "1", "--out", fixtures["tmp"] + "/run.txt"])
    assert "run.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("name,code", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_library_input_raises_a_typed_error(name, code):
    with pytest.raises((ValueError, IclebmError)):
        exec(code, {})


@pytest.mark.parametrize("kw", [dict(mean_limit=-1), dict(mean_limit=math.nan), dict(mean_std=math.nan),
                                dict(component_std=(0.5, 0.3)), dict(component_std=-0.1),
                                dict(n_components=0), dict(n_components=(2, 1)), dict(aspect_ratio=0.5),
                                dict(mean_limit=1e-9)])
def test_mixture_prior_refuses_invalid_ranges_at_construction(kw):
    with pytest.raises(ValueError):
        MixturePrior(**kw)


def test_valid_priors_sample_as_before():
    g = torch.Generator().manual_seed(3)
    task = MixturePrior().sample_task(g)
    assert task.means.shape == (3, 2) and bool((task.means.abs() <= 8.0).all())


def test_cli_errors_show_the_traceback_with_debug(fixtures, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(CheckpointError):
        main(["evaluate", "--checkpoint", fixtures["bad_n_head_0"], "--tasks", "2", "--debug"])


def test_unexpected_failure_is_one_line_and_exit_1(monkeypatch, capsys):
    import iclebm.cli as cli

    def boom(path=None):
        raise KeyError("surprise")

    monkeypatch.setattr(cli, "load_checkpoint", boom)
    assert cli.main(["inspect", "--points", "", "--query", "0,0"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "KeyError" in err and "--debug" in err


# ---- resume -------------------------------------------------------------------------------------

TINY = ["--preset", "small", "--quiet", "--batch-size", "2"]


def test_zero_step_resume_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    assert main(["train", *TINY, "--steps", "1", "--out", str(out)]) == 0
    before = tree_digest(tmp_path)
    assert main(["train", *TINY, "--steps", "1", "--resume", "--out", str(out)]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert tree_digest(tmp_path) == before


def test_resume_state_from_another_version_is_refused(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    assert main(["train", *TINY, "--steps", "1", "--out", str(out)]) == 0
    state = out.with_name("r.trainstate.safetensors")
    old_state = state.read_bytes()
    assert main(["train", *TINY, "--steps", "2", "--resume", "--out", str(out)]) == 0
    state.write_bytes(old_state)  # as if the run died between writing the checkpoint and its state
    before = tree_digest(tmp_path)
    capsys.readouterr()
    assert main(["train", *TINY, "--steps", "3", "--resume", "--out", str(out)]) == 2
    assert "another version" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before


# ---- atomic checkpoints -------------------------------------------------------------------------


def tiny(seed: int) -> EnergyTransformer:
    torch.manual_seed(seed)
    return EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=16))


STEPS = ("weights written", "weights renamed", "card written", "card renamed")


@pytest.mark.parametrize("crash_at", STEPS)
def test_a_save_killed_at_any_step_leaves_a_checkpoint_that_agrees_with_its_card(tmp_path, monkeypatch,
                                                                                crash_at):
    path = save_checkpoint(tiny(1), tmp_path / "m.safetensors", {"name": "first"})

    def hook(step: str) -> None:
        if step == crash_at:
            raise KeyboardInterrupt  # as abrupt as a kill, for the code after this point
    monkeypatch.setattr(checkpoints, "SAVE_HOOK", hook)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tiny(2), path, {"name": "second"})
    monkeypatch.setattr(checkpoints, "SAVE_HOOK", None)
    loaded = load_checkpoint(path)  # never refused: weights and card are one file
    expected = tiny(1) if crash_at == "weights written" else tiny(2)
    assert loaded.card["name"] == ("first" if crash_at == "weights written" else "second")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), expected.state_dict().values(),
                                                   strict=True))
    assert json.loads(card_path(path).read_text()) == loaded.card  # the copy is regenerated if stale


def test_no_tmp_file_survives_a_later_successful_save(tmp_path):
    path = save_checkpoint(tiny(1), tmp_path / "m.safetensors", {"name": "a"})
    for leftover in (".m.safetensors.abc123.tmp", ".m.json.xyz.tmp"):
        (tmp_path / leftover).write_bytes(b"half a file")  # what a kill -9 mid-write leaves
    save_checkpoint(tiny(2), path, {"name": "b"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_shipped_old_pairs_load_unchanged():
    before = tree_digest(CHECKPOINT_DIR)
    for path in sorted(CHECKPOINT_DIR.glob("*.safetensors")):
        model = load_checkpoint(path)
        assert model.card == json.loads(card_path(path).read_text())
    assert tree_digest(CHECKPOINT_DIR) == before


# ---- cards validated before a model is built ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_CARDS))
def test_bad_cards_are_a_checkpoint_error(tmp_path, name):
    path = write_bad_card(tmp_path / f"{name}.safetensors", BAD_CARDS[name])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_checkpoint_bytes(path.read_bytes(), name="upload")


def test_the_size_cap_allows_four_times_the_paper_model():
    big = EnergyConfig(n_layer=12, n_head=8, d_model=256, max_context=256)  # 8x the paper's 6 x 128
    assert checkpoints._estimated_parameters(big.to_dict()) < checkpoints.MAX_PARAMETERS
    model = EnergyTransformer(EnergyConfig(n_layer=6, n_head=8, d_model=128))
    n = sum(p.numel() for p in model.parameters())
    assert checkpoints._estimated_parameters(model.config.to_dict()) >= 0.9 * n  # the estimate is not low
    assert 4 * n < checkpoints.MAX_PARAMETERS


def test_a_huge_card_is_refused_before_any_allocation(tmp_path, monkeypatch):
    model = tiny(0)
    card = {"model": {**model.config.to_dict(), "n_layer": 64, "d_model": 4096}}  # each under its own cap
    data = st_save({k: v.contiguous() for k, v in model.state_dict().items()},
                   metadata={checkpoints.CARD_KEY: json.dumps(card)})
    built = []

    def record(self, cfg) -> None:
        built.append(cfg)
        raise AssertionError("the model was built")

    monkeypatch.setattr(checkpoints.EnergyTransformer, "__init__", record)
    with pytest.raises(CheckpointError, match="parameters"):
        load_checkpoint_bytes(data)
    assert built == []


# ---- dynamics bounds ----------------------------------------------------------------------------


def test_thinking_config_bounds():
    from iclebm.dynamics.thinking import MAX_STARTS, ThinkingConfig

    with pytest.raises(ValueError):
        ThinkingConfig(starts=MAX_STARTS + 1)
    with pytest.raises(ValueError):
        ThinkingConfig(steps=10**9)
    ThinkingConfig(steps=200, starts=16)


def test_first_signal_asks_to_stop_and_a_second_aborts_at_once():
    import os
    import signal

    from iclebm.cli import _StopSignals

    with _StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time_out = 100_000
        while stop.signum is None and time_out:  # the handler runs between bytecodes
            time_out -= 1
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
