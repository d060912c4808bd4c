"""Resume state beside a checkpoint: the optimiser moments, the step stream and the step count."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from iclebm.training.trainer import Trainer


def _resume_path(out: Path) -> Path:
    return out.with_name(out.stem + ".trainstate.safetensors")


def save_train_state(trainer: Trainer, path: Path) -> None:
    """Optimiser moments and RNG state as safetensors (no pickle), for --resume."""
    tensors: dict[str, torch.Tensor] = {"generator": trainer.generator.get_state()}
    opt = trainer.optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, val in st.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(val).detach().clone()
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"step_count": str(trainer.step_count)})
    tmp.replace(path)


def load_train_state(trainer: Trainer, path: Path) -> None:
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        step_count = int(f.metadata()["step_count"])
    opt = trainer.optimizer.state_dict()
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    opt["state"] = state
    trainer.optimizer.load_state_dict(opt)
    trainer.generator.set_state(tensors["generator"])
    trainer.step_count = step_count
