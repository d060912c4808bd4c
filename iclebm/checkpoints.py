"""Checkpoints: safetensors weights (never pickle) plus a JSON card.

A checkpoint is `NAME.safetensors`; its card (model config, task prior, box,
sampler defaults, training config and command, evaluation table) is stored twice:
inside the safetensors metadata, so one downloaded or uploaded file is complete,
and beside it as `NAME.json` for people to read. The sidecar wins when both exist.
The card's "arch" says which model class the weights belong to (EnergyTransformer or
the parametric MixtureDensityTransformer); a card without it is an energy transformer.

Saves are atomic: each file is written to a temporary name in the same folder and
renamed over the target, so a crash mid-save leaves the previous file intact.

Integrity: the card carries `weights_sha256`, a SHA-256 over the weights (for each tensor in
name order: its name, dtype, shape and raw bytes). Loading recomputes it and raises
CheckpointError on a mismatch (e.g. flipped bits in the weight data). Cards written before
the hash existed still load; `integrity_note` says that they are unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from iclebm.errors import CheckpointError
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.models.mixture import MixtureConfig, MixtureDensityTransformer

CARD_KEY = "iclebm_card"
FORMAT = "iclebm-checkpoint/1"
PACKAGE_DIR = Path(__file__).resolve().parent
# The shipped checkpoints live in the repository's checkpoints/ folder.
CHECKPOINT_DIR = PACKAGE_DIR.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "mog2d.safetensors"
MAX_HEADER_BYTES = 100_000_000
HASH_KEY = "weights_sha256"
# The card's "arch" names the model class; a card without one is an energy transformer
# (every checkpoint written before the parametric peer existed).
DEFAULT_ARCH = "energy_transformer"
ARCHITECTURES: dict[str, tuple[type, type]] = {
    DEFAULT_ARCH: (EnergyConfig, EnergyTransformer),
    "mixture_density_transformer": (MixtureConfig, MixtureDensityTransformer),
}
Model = EnergyTransformer | MixtureDensityTransformer


def arch_of(model: Model) -> str:
    for name, (_, cls) in ARCHITECTURES.items():
        if isinstance(model, cls):
            return name
    raise ValueError(f"not an iclebm model: {type(model).__name__}")


def card_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash of a set of weights: SHA-256 over name, dtype, shape and bytes of each, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _tensors_and_card(model: Model, card: dict | None) -> tuple[dict[str, torch.Tensor], dict]:
    """The float32 CPU weights and the full card (format, arch, model config, content hash) to store."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    card = {
        **(card if card is not None else model.card), "format": FORMAT, "arch": arch_of(model),
        "model": model.config.to_dict(),
    }
    card[HASH_KEY] = weights_sha256(tensors)
    return tensors, card


def checkpoint_bytes(model: Model, card: dict | None = None) -> bytes:
    """The .safetensors bytes of a model with its card embedded (for saving or downloading)."""
    tensors, card = _tensors_and_card(model, card)
    return st_save(tensors, metadata={CARD_KEY: json.dumps(card)})


def save_checkpoint(model: Model, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Write weights + card atomically. Returns the .safetensors path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    tensors, card = _tensors_and_card(model, card)
    data = st_save(tensors, metadata={CARD_KEY: json.dumps(card)})
    _atomic_write(path, data)
    _atomic_write(card_path(path), (json.dumps(card, indent=2) + "\n").encode())
    model.card = card
    return path


def _read_header(data: bytes, name: str) -> dict:
    """Parse and sanity-check the safetensors header so bad files fail with a clear reason."""
    if len(data) < 8:
        raise CheckpointError(f"{name} is too short to be a safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    # A safetensors header length can itself start with 0x80 or "PK"; only call it a pickle /
    # zip when the bytes do not also read as a plausible safetensors header.
    plausible = n <= MAX_HEADER_BYTES and 8 + n <= len(data) and data[8:9] == b"{"
    if not plausible and (data[:1] == b"\x80" or data[:2] == b"PK"):
        raise CheckpointError(
            f"{name} looks like a pickle/torch.save file; "
            "iclebm loads only safetensors (pickles can run code)"
        )
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise CheckpointError(
            f"{name} is not a valid safetensors file (header claims {n} bytes; the file has {len(data)}): "
            "it is truncated or not safetensors"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{name} has a corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} has a corrupt safetensors header")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > len(data):
        raise CheckpointError(
            f"{name} is truncated: the header describes {8 + n + end} bytes, the file has {len(data)}"
        )
    return header


def load_checkpoint_bytes(
    data: bytes, name: str = "checkpoint", card: dict | None = None
) -> Model:
    """Load a model from .safetensors bytes (e.g. an upload). Raises CheckpointError with the reason."""
    header = _read_header(data, name)
    if card is None:
        meta = header.get("__metadata__") or {}
        if CARD_KEY not in meta:
            raise CheckpointError(
                f"{name} is a safetensors file but not an iclebm checkpoint (no card inside)"
            )
        try:
            card = json.loads(meta[CARD_KEY])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{name} has a corrupt card: {e}") from None
    if not isinstance(card, dict) or not isinstance(card.get("model"), dict):
        raise CheckpointError(f"{name}: the card has no model config")
    arch = card.get("arch", DEFAULT_ARCH)
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise CheckpointError(f"{name}: unknown model architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    config_cls, model_cls = ARCHITECTURES[arch]
    try:
        config = config_cls.from_dict(card["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: the card's model config is invalid: {e}") from None
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{name} could not be read as safetensors: {e}") from None
    model = model_cls(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{name} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{name}: weight {key} has shape {tuple(tensors[key].shape)}, "
                f"the config needs {tuple(ref.shape)}"
            )
        if not bool(torch.isfinite(tensors[key]).all()):
            raise CheckpointError(f"{name}: weight {key} contains NaN or inf")
    _verify_hash(tensors, card, header, name)
    model.load_state_dict(tensors)
    model.card = card
    return model.eval()


def _verify_hash(tensors: dict[str, torch.Tensor], card: dict, header: dict, name: str) -> None:
    """Check the weights against every content hash on record (the card used, and the embedded card)."""
    recorded = {"card": card.get(HASH_KEY)}
    try:
        embedded = json.loads((header.get("__metadata__") or {}).get(CARD_KEY) or "{}")
        recorded["embedded card"] = embedded.get(HASH_KEY) if isinstance(embedded, dict) else None
    except json.JSONDecodeError:
        pass
    recorded = {k: v for k, v in recorded.items() if v is not None}
    if not recorded:
        return  # written before content hashes: loads unverified (see integrity_note)
    actual = weights_sha256(tensors)
    for where, expected in recorded.items():
        if not isinstance(expected, str) or expected.lower() != actual:
            raise CheckpointError(
                f"{name}: the weights do not match the {where}'s content hash "
                f"({HASH_KEY} {str(expected)[:16]}..., the weights hash to {actual[:16]}...): "
                "the file is corrupted or was modified"
            )


def integrity_note(card: dict) -> str:
    """One line for the card view: verified against a content hash, or an old card without one."""
    digest = card.get(HASH_KEY) if isinstance(card, dict) else None
    if isinstance(digest, str):
        return f"Weights verified against the card's SHA-256 ({digest[:12]}...)."
    return "This checkpoint predates content hashes: its weights loaded unverified."


def load_checkpoint(path: str | os.PathLike | None = None) -> Model:
    """Load a checkpoint (default: the shipped model) in eval mode with `model.card` set."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if path.suffix != ".safetensors" and not path.exists():
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    card = None
    side = card_path(path)
    if side.is_file():
        try:
            card = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"the card {side} is not valid JSON: {e}") from None
    return load_checkpoint_bytes(data, name=path.name, card=card)


def read_card(path: str | os.PathLike) -> dict:
    """The card of a checkpoint without building the model (sidecar, else embedded)."""
    path = Path(path)
    side = card_path(path)
    try:
        if side.is_file():
            return json.loads(side.read_text())
        header = _read_header(path.read_bytes(), path.name)
        return json.loads((header.get("__metadata__") or {})[CARD_KEY])
    except CheckpointError:
        raise
    except (OSError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read the card of {path}: {e}") from None


def list_checkpoints(folder: str | os.PathLike = CHECKPOINT_DIR) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    # Training resume state lives beside checkpoints but is not a model.
    return sorted(p for p in folder.glob("*.safetensors") if not p.name.endswith(".trainstate.safetensors"))


