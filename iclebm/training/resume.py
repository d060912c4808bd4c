"""Resume state beside a checkpoint: the optimiser moments, the step stream and the step count.

The state is tied to the checkpoint it belongs to: it records the checkpoint's step count and
content hash (`weights_sha256`), and loading refuses a state that belongs to another version of the
checkpoint (e.g. a run killed between writing the two files), so a resume never mixes them."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from iclebm.checkpoints import HASH_KEY, _atomic_write, _read_header
from iclebm.errors import CheckpointError
from iclebm.training.trainer import Trainer


def _resume_path(out: Path) -> Path:
    return out.with_name(out.stem + ".trainstate.safetensors")


def save_train_state(trainer: Trainer, path: Path, checkpoint_card: dict | None = None) -> None:
    """Optimiser moments and RNG state as safetensors (no pickle), for --resume, written atomically;
    `checkpoint_card` (the card just saved) ties the state to that checkpoint."""
    tensors: dict[str, torch.Tensor] = {"generator": trainer.generator.get_state()}
    opt = trainer.optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, val in st.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(val).detach().clone()
    meta = {"step_count": str(trainer.step_count)}
    if checkpoint_card is not None and isinstance(checkpoint_card.get(HASH_KEY), str):
        meta["checkpoint_sha256"] = checkpoint_card[HASH_KEY]
    _atomic_write(path, st_save(tensors, metadata=meta), "train state")


def load_train_state(trainer: Trainer, path: Path, checkpoint_card: dict | None = None) -> None:
    """Restore the state saved by `save_train_state`; CheckpointError when it is unreadable or
    belongs to another version of the checkpoint (`checkpoint_card`: the card of the one resumed)."""
    try:
        data = path.read_bytes()
        meta = _read_header(data, path.name).get("__metadata__") or {}
        tensors = st_load(data)
        step_count = int(meta["step_count"])
    except (OSError, KeyError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"the resume state {path} is unreadable ({e}); delete it to resume "
                              "with a fresh optimiser") from None
    if checkpoint_card is not None:
        _check_tied(path, meta, step_count, checkpoint_card)
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


def _check_tied(path: Path, meta: dict, step_count: int, card: dict) -> None:
    """The state must be the one saved with this checkpoint: same content hash (older states
    without one: same step count)."""
    steps = (card.get("training") or {}).get("steps")
    recorded = meta.get("checkpoint_sha256")
    if recorded is not None:
        same = recorded == card.get(HASH_KEY)
    else:
        same = steps is None or int(steps) == step_count
    if not same:
        raise CheckpointError(
            f"the resume state {path.name} (step {step_count}) belongs to another version of its checkpoint "
            f"(step {steps}): delete it to resume from the checkpoint with a fresh optimiser")
