# ruff: noqa: E501  (a table: one case per line reads better than wrapped ones)
"""The bad-input table of issue 16, shared by tests/test_safety.py (in-process, on this tree) and
benchmarks/safety_fuzz.py (subprocesses, on any tree: the before/after counts).

Every CLI case is a bad input that must be refused with exit code 2 and one line, before any work,
leaving every existing file as it was. Placeholders in an argv: {tmp} a scratch folder, {file} a plain
file in it, {trained} a small-preset checkpoint of this recipe (not shipped), {bad_NAME} a checkpoint
whose card is broken in the way NAME says (see BAD_CARDS). Paths under checkpoints/ are the shipped
models. API cases are Python snippets that must raise a typed error (ValueError or an IclebmError)."""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED = "checkpoints/mog2d.safetensors"
MDN = "checkpoints/mdn2d.safetensors"
LINREG = "checkpoints/linreg.safetensors"
SMALL = ["train", "--preset", "small", "--quiet"]

CLI_CASES: list[tuple[str, list[str]]] = [
    # train: numeric flags
    ("steps 0", [*SMALL, "--steps", "0", "--out", "{tmp}/a.safetensors"]),
    ("steps -5", [*SMALL, "--steps", "-5", "--out", "{tmp}/a.safetensors"]),
    ("steps abc", [*SMALL, "--steps", "abc", "--out", "{tmp}/a.safetensors"]),
    ("threads -1", [*SMALL, "--steps", "1", "--threads", "-1", "--out", "{tmp}/a.safetensors"]),
    ("threads 0", [*SMALL, "--steps", "1", "--threads", "0", "--out", "{tmp}/a.safetensors"]),
    ("minutes -1", [*SMALL, "--minutes", "-1", "--out", "{tmp}/a.safetensors"]),
    ("minutes 0", [*SMALL, "--minutes", "0", "--out", "{tmp}/a.safetensors"]),
    ("minutes nan", [*SMALL, "--minutes", "nan", "--out", "{tmp}/a.safetensors"]),
    ("minutes inf", [*SMALL, "--minutes", "inf", "--out", "{tmp}/a.safetensors"]),
    ("batch-size 10^7", [*SMALL, "--steps", "1", "--batch-size", "10000000", "--out", "{tmp}/a.safetensors"]),
    ("batch-size 0", [*SMALL, "--steps", "1", "--batch-size", "0", "--out", "{tmp}/a.safetensors"]),
    ("lr -1", [*SMALL, "--steps", "1", "--lr", "-1", "--out", "{tmp}/a.safetensors"]),
    ("lr nan", [*SMALL, "--steps", "1", "--lr", "nan", "--out", "{tmp}/a.safetensors"]),
    ("seed -1", [*SMALL, "--steps", "1", "--seed", "-1", "--out", "{tmp}/a.safetensors"]),
    ("dist-timeout -1", [*SMALL, "--steps", "1", "--dist-timeout", "-1", "--out", "{tmp}/a.safetensors"]),
    ("save-every 0", [*SMALL, "--steps", "1", "--save-every", "0", "--out", "{tmp}/a.safetensors"]),
    ("log-every -1", [*SMALL, "--steps", "1", "--log-every", "-1", "--out", "{tmp}/a.safetensors"]),
    ("grid-resolution 0", [*SMALL, "--steps", "1", "--objective", "exact", "--grid-resolution", "0",
                           "--out", "{tmp}/a.safetensors"]),
    ("exact-positions -1", [*SMALL, "--steps", "1", "--exact-positions", "-1", "--out", "{tmp}/a.safetensors"]),
    ("unknown preset", ["train", "--preset", "nope", "--steps", "1", "--out", "{tmp}/a.safetensors"]),
    # train: outputs and shipped models
    ("train over shipped", [*SMALL, "--steps", "5", "--out", SHIPPED]),
    ("resume shipped linreg", [*SMALL, "--steps", "1", "--resume", "--out", LINREG]),
    ("resume shipped mdn2d", ["train", "--preset", "mdn2d", "--quiet", "--steps", "1", "--resume", "--out", MDN]),
    ("out run.txt", [*SMALL, "--steps", "1", "--out", "{tmp}/run.txt"]),
    ("out without suffix", [*SMALL, "--steps", "1", "--out", "{tmp}/run"]),
    ("out is a folder", [*SMALL, "--steps", "1", "--out", "{tmp}/folder.safetensors"]),
    ("out under a file", [*SMALL, "--steps", "1", "--out", "{file}/a.safetensors"]),
    ("out exists, no resume", [*SMALL, "--steps", "1", "--out", "{trained}"]),
    # train: identity and families
    ("resume other preset", ["train", "--preset", "mog2d", "--quiet", "--steps", "3", "--resume",
                             "--out", "{trained}"]),
    ("resume other objective", [*SMALL, "--steps", "3", "--resume", "--objective", "exact", "--out", "{trained}"]),
    ("resume regression preset", ["train", "--preset", "linreg", "--quiet", "--steps", "3", "--resume",
                                  "--out", "{trained}"]),
    ("init mdn2d into small", [*SMALL, "--steps", "1", "--init", MDN, "--out", "{tmp}/a.safetensors"]),
    ("init mog2d into mdn2d", ["train", "--preset", "mdn2d", "--quiet", "--steps", "1", "--init", SHIPPED,
                               "--out", "{tmp}/a.safetensors"]),
    ("init missing", [*SMALL, "--steps", "1", "--init", "{tmp}/missing.safetensors", "--out", "{tmp}/a.safetensors"]),
    # evaluate
    ("evaluate resolution 1 update-card", ["evaluate", "--resolution", "1", "--update-card", "--tasks", "2"]),
    ("evaluate resolution 0", ["evaluate", "--resolution", "0", "--tasks", "2"]),
    ("evaluate tasks 0", ["evaluate", "--tasks", "0"]),
    ("evaluate threads -1", ["evaluate", "--tasks", "2", "--threads", "-1"]),
    ("evaluate update shipped", ["evaluate", "--tasks", "2", "--resolution", "20", "--update-card"]),
    ("evaluate update shipped linreg", ["evaluate", "--checkpoint", LINREG, "--tasks", "2", "--update-card"]),
    ("evaluate json is a folder", ["evaluate", "--tasks", "2", "--resolution", "20", "--json", "{tmp}"]),
    ("evaluate json under a file", ["evaluate", "--tasks", "2", "--resolution", "20", "--json", "{file}/t.json"]),
    ("evaluate missing checkpoint", ["evaluate", "--checkpoint", "{tmp}/missing.safetensors", "--tasks", "2"]),
    ("evaluate torch pickle", ["evaluate", "--checkpoint", "{file}", "--tasks", "2"]),
    # calibrate
    ("calibrate over shipped", ["calibrate", "--checkpoint", SHIPPED, "--out", SHIPPED, "--tasks", "2"]),
    ("calibrate linreg", ["calibrate", "--checkpoint", LINREG, "--out", "{tmp}/c.safetensors", "--tasks", "2"]),
    ("calibrate mdn2d", ["calibrate", "--checkpoint", MDN, "--out", "{tmp}/c.safetensors", "--tasks", "2"]),
    ("calibrate eval-tasks 0", ["calibrate", "--checkpoint", SHIPPED, "--out", "{tmp}/c.safetensors",
                                "--eval-tasks", "0"]),
    ("calibrate resolution 1", ["calibrate", "--checkpoint", SHIPPED, "--out", "{tmp}/c.safetensors",
                                "--resolution", "1"]),
    ("calibrate out .txt", ["calibrate", "--checkpoint", SHIPPED, "--out", "{tmp}/c.txt", "--tasks", "2"]),
    ("calibrate out exists", ["calibrate", "--checkpoint", "{trained}", "--out", "{trained}", "--tasks", "2"]),
    # bench
    ("bench mdn2d", ["bench", "--quick", "--checkpoint", MDN]),
    ("bench linreg", ["bench", "--quick", "--checkpoint", LINREG]),
    ("bench repeats 0", ["bench", "--quick", "--repeats", "0", "--throughput-only"]),
    ("bench eval-every 0", ["bench", "--training-curve", "--quick", "--eval-every", "0", "--seconds", "1"]),
    ("bench seconds -1", ["bench", "--training-curve", "--quick", "--seconds", "-1"]),
    # compare
    ("compare linreg", ["compare", "--quick", "--checkpoints", LINREG]),
    ("compare tasks 0", ["compare", "--tasks", "0"]),
    ("compare resolution 1", ["compare", "--resolution", "1", "--tasks", "1"]),
    ("compare test 0", ["compare", "--test", "0", "--tasks", "1"]),
    ("compare json is a folder", ["compare", "--quick", "--json", "{tmp}"]),
    # ctx2weights
    ("ctx2weights linreg", ["ctx2weights", "--checkpoint", LINREG, "--steps", "1"]),
    ("ctx2weights heldout 0", ["ctx2weights", "--heldout", "0", "--steps", "1"]),
    ("ctx2weights resolution 0", ["ctx2weights", "--resolution", "0", "--steps", "1"]),
    ("ctx2weights points 0", ["ctx2weights", "--points", "0", "--steps", "1"]),
    ("ctx2weights short > points", ["ctx2weights", "--points", "8", "--short", "40", "--steps", "1"]),
    ("ctx2weights lr 0", ["ctx2weights", "--lr", "0", "--steps", "1"]),
    # inspect
    ("inspect bad points", ["inspect", "--points", "a,b", "--query", "1,1"]),
    ("inspect query outside box", ["inspect", "--points", "0,0", "--query", "100,100"]),
    ("inspect mdn2d", ["inspect", "--checkpoint", MDN, "--points", "0,0", "--query", "1,1"]),
    # broken cards
    ("card n_head 0", ["evaluate", "--checkpoint", "{bad_n_head_0}", "--tasks", "2"]),
    ("card n_layer string", ["evaluate", "--checkpoint", "{bad_n_layer_str}", "--tasks", "2"]),
    ("card box null", ["evaluate", "--checkpoint", "{bad_box_null}", "--tasks", "2", "--resolution", "20"]),
    ("card n_layer 10^6", ["evaluate", "--checkpoint", "{bad_n_layer_huge}", "--tasks", "2"]),
    ("card d_model 2^20", ["evaluate", "--checkpoint", "{bad_d_model_huge}", "--tasks", "2"]),
    ("card prior mean_limit -1", ["evaluate", "--checkpoint", "{bad_prior}", "--tasks", "2",
                                  "--resolution", "20"]),
    ("card max_context float", ["evaluate", "--checkpoint", "{bad_max_context_float}", "--tasks", "2"]),
    # the command line itself
    ("no command", []),
    ("unknown command", ["frobnicate"]),
]

# name -> how the card of a tiny valid checkpoint is broken (applied to its "model" entry or the card).
BAD_CARDS: dict[str, tuple[str, str, object]] = {
    "n_head_0": ("model", "n_head", 0),
    "n_layer_str": ("model", "n_layer", "4"),
    "box_null": ("card", "box", None),
    "n_layer_huge": ("model", "n_layer", 1_000_000),
    "d_model_huge": ("model", "d_model", 1_048_576),
    "prior": ("task", "mean_limit", -1),
    "max_context_float": ("model", "max_context", 64.5),
}

API_SETUP = """
import torch
from iclebm.models.energy import EnergyConfig, EnergyTransformer
model = EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=16, base_axes="y"))
model.card = {"task": {"family": "linear"}, "box": [-6.0, 6.0]}
ctx = torch.zeros(1, 4, 2)
"""

API_CASES: list[tuple[str, str]] = [
    ("MixturePrior mean_limit -1",
     "from iclebm.tasks import MixturePrior; MixturePrior(mean_limit=-1).sample_task()"),
    ("MixturePrior mean_std nan",
     "from iclebm.tasks import MixturePrior; MixturePrior(mean_std=float('nan')).sample_task()"),
    ("MixturePrior mean_std -1", "from iclebm.tasks import MixturePrior; MixturePrior(mean_std=-1.0)"),
    ("MixturePrior component_std lo > hi",
     "from iclebm.tasks import MixturePrior; MixturePrior(component_std=(0.5, 0.3))"),
    ("MixturePrior component_std nan",
     "from iclebm.tasks import MixturePrior; MixturePrior(component_std=float('nan'))"),
    ("MixturePrior K = 0", "from iclebm.tasks import MixturePrior; MixturePrior(n_components=0)"),
    ("MixturePrior tiny mean_limit",
     "from iclebm.tasks import MixturePrior; MixturePrior(mean_std=3.0, mean_limit=1e-9).sample_task()"),
    ("LinearPrior noise_std -1", "from iclebm.tasks import LinearPrior; LinearPrior(noise_std=-1)"),
    ("SinusoidPrior x_range lo > hi", "from iclebm.tasks import SinusoidPrior; SinusoidPrior(x_range=(1.0, 0.0))"),
    ("predict steps 10^9", API_SETUP + "from iclebm.dynamics.thinking import predict\n"
     "predict(model, torch.zeros(1, 3), ctx, steps=10**9)"),
    ("predict starts 10^7", API_SETUP + "from iclebm.dynamics.thinking import predict\n"
     "predict(model, torch.zeros(1, 3), ctx, steps=1, starts=10**7)"),
    ("predict step_size nan", API_SETUP + "from iclebm.dynamics.thinking import predict\n"
     "predict(model, torch.zeros(1, 3), ctx, steps=1, step_size=float('nan'))"),
    ("langevin steps 10^9", API_SETUP + "from iclebm.dynamics.langevin import langevin\n"
     "langevin(model, ctx, torch.zeros(8, 2), 10**9, 0.05, 0.1)"),
    ("langevin 2e6 particles", API_SETUP + "from iclebm.dynamics.langevin import langevin\n"
     "langevin(model, ctx, torch.zeros(2_000_000, 2), 1, 0.05, 0.1)"),
    ("langevin step_size inf", API_SETUP + "from iclebm.dynamics.langevin import langevin\n"
     "langevin(model, ctx, torch.zeros(8, 2), 1, float('inf'), 0.1)"),
]


def write_bad_card(path: Path, how: tuple[str, str, object]) -> Path:
    """A tiny valid checkpoint (no sidecar) whose embedded card is then broken as `how` says."""
    import torch
    from safetensors.torch import save as st_save

    from iclebm.models.energy import EnergyConfig, EnergyTransformer

    torch.manual_seed(0)
    model = EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=64))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    card = {"name": path.stem, "model": model.config.to_dict(), "box": [-12.0, 12.0],
            "task": {"family": "gaussian_mixture", "n_components": 3, "mean_std": 3.0,
                     "component_std": [0.33, 0.5], "mean_limit": 8.0}}
    where, key, value = how
    (card if where == "card" else card[where])[key] = value
    path.write_bytes(st_save(tensors, metadata={"iclebm_card": json.dumps(card)}))
    return path


def write_trained(path: Path) -> Path:
    """A checkpoint as `train --preset small --steps 1` writes it (random weights: only the card matters)."""
    import torch

    from iclebm.checkpoints import save_checkpoint
    from iclebm.models.energy import EnergyTransformer
    from iclebm.training.presets import get_preset

    preset = get_preset("small")
    torch.manual_seed(0)
    model = EnergyTransformer(preset.model)
    card = {"name": path.stem, "task": preset.train.task, "box": list(preset.box),
            "sampler": preset.sampler.to_dict(),
            "training": {"preset": "small", "steps": 1, "config": {**preset.train.to_dict(), "total_steps": 1}}}
    save_checkpoint(model, path, card)
    return path


def make_fixtures(tmp: Path) -> dict[str, str]:
    """Create the scratch files the placeholders name; returns placeholder -> path."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "folder.safetensors").mkdir(exist_ok=True)
    plain = tmp / "plain.bin"
    plain.write_bytes(b"\x80\x04not a checkpoint")
    values = {"tmp": str(tmp), "file": str(plain), "trained": str(write_trained(tmp / "trained.safetensors"))}
    for name, how in BAD_CARDS.items():
        values[f"bad_{name}"] = str(write_bad_card(tmp / f"bad_{name}.safetensors", how))
    return values


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) for a in argv]
