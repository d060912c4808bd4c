"""Checkpoints: safetensors weights (never pickle) plus a JSON card.

A checkpoint is `NAME.safetensors`; its card (model config, task prior, box,
sampler defaults, training config and command, evaluation table) is stored twice:
inside the safetensors metadata, so one downloaded or uploaded file is complete,
and beside it as `NAME.json` for people to read. Since format 2 the embedded card is the
source of truth: weights and card live in one file and are replaced by one rename, so no
crash can leave them disagreeing; the `.json` is a readable copy, regenerated when it is
missing or stale. Old pairs (format 1, the shipped models) load as before: their sidecar wins.
The card's "arch" says which model class the weights belong to (EnergyTransformer or
the parametric MixtureDensityTransformer); a card without it is an energy transformer.

Saves are atomic: each file is written to a temporary name in the same folder and
renamed over the target, so a crash mid-save leaves the previous file intact; a later
successful save removes the temporary files such a crash left behind.

Cards are validated before a model is built (types, ranges, the box, the task prior, and a cap
on the model's size), so a hostile or broken card is a CheckpointError, never a crash or an
allocation that runs out of memory.

Integrity: the card carries `weights_sha256`, a SHA-256 over the weights (for each tensor in
name order: its name, dtype, shape and raw bytes). Loading recomputes it and raises
CheckpointError on a mismatch (e.g. flipped bits in the weight data). Cards written before
the hash existed still load; `integrity_note` says that they are unverified.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from iclebm.card import prior_from_card
from iclebm.errors import CheckpointError, IclebmError
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.models.mixture import MixtureConfig, MixtureDensityTransformer

CARD_KEY = "iclebm_card"
FORMAT = "iclebm-checkpoint/2"  # 2: the embedded card is the truth; 1: the sidecar wins (old pairs)
OLD_FORMAT = "iclebm-checkpoint/1"
PACKAGE_DIR = Path(__file__).resolve().parent
# The shipped checkpoints live in the repository's checkpoints/ folder.
CHECKPOINT_DIR = PACKAGE_DIR.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "mog2d.safetensors"
# The app (and `render`) open on the generalist when it is there: trained on 1-6 rotated elliptical
# components of many sizes, it gets a better landscape from free clicking or a user's own data than the
# 3-narrow-component specialist (README: "The generalist").
APP_DEFAULT = "mog2d-wide.safetensors"
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
# Size caps checked on the card before any weight is allocated. The paper's model (6 layers, 8 heads,
# d = 128, MLP ratio 4) has about 1.2 M parameters; the cap allows 40x that.
MAX_PARAMETERS = 50_000_000
MAX_SIZES = {"n_layer": 64, "n_head": 64, "d_model": 4096, "mlp_ratio": 16, "max_context": 65_536,
             "n_components": 1024, "fourier_features": 4096}
# Test hook: called with the name of each step of a save ("weights written", "weights renamed",
# "card written", "card renamed"), so a test can crash a save between any two of them.
SAVE_HOOK: Callable[[str], None] | None = None


def _save_step(name: str) -> None:
    if SAVE_HOOK is not None:
        SAVE_HOOK(name)


def arch_of(model: Model) -> str:
    for name, (_, cls) in ARCHITECTURES.items():
        if isinstance(model, cls):
            return name
    raise ValueError(f"not an iclebm model: {type(model).__name__}")


def card_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def _atomic_write(path: Path, data: bytes, step: str = "file") -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`; on success,
    remove the temporary files of earlier saves of `path` that a kill left behind."""
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
        _save_step(f"{step} written")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _save_step(f"{step} renamed")
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


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


def _card_text(card: dict) -> str:
    return json.dumps(card, indent=2) + "\n"


def save_checkpoint(model: Model, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Write weights + card as one atomic file, then the readable `.json` copy. Returns the path,
    which must end in .safetensors (a ValueError otherwise: the file is exactly the one named)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a checkpoint path must end in .safetensors, got {str(path)!r}")
    tensors, card = _tensors_and_card(model, card)
    data = st_save(tensors, metadata={CARD_KEY: json.dumps(card)})
    _atomic_write(path, data, "weights")  # from here on the checkpoint is complete and self-consistent
    _atomic_write(card_path(path), _card_text(card).encode(), "card")
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


def _embedded_card(header: dict, name: str) -> dict | None:
    """The card inside the safetensors metadata (None when there is none)."""
    meta = header.get("__metadata__") or {}
    if CARD_KEY not in meta:
        return None
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{name} has a corrupt card: {e}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{name} has a corrupt card: not a JSON object")
    return card


def _is_old_pair(card: dict | None) -> bool:
    """Format 1 and older: the sidecar .json, when present, is the card (see the module docstring)."""
    return card is None or card.get("format", OLD_FORMAT) == OLD_FORMAT


def _check_field(name: str, key: str, value: object, default: object) -> None:
    """One model-config entry of a card: the type its default has, finite, a count >= 1 and capped."""
    def number(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = number(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, list | tuple) and len(value) == len(default) and all(map(number, value))
    else:  # an optional list of numbers (length_scales)
        ok = value is None or (isinstance(value, list) and len(value) <= 4096 and all(map(number, value)))
    if not ok:
        raise CheckpointError(f"{name}: the card's model config has an invalid {key}: {value!r}")
    if key in MAX_SIZES and not 1 <= value <= MAX_SIZES[key]:  # type: ignore[operator]
        if key == "fourier_features" and value == 0:
            return
        raise CheckpointError(f"{name}: the card's model config has {key} = {value}; "
                              f"it must lie in [1, {MAX_SIZES[key]}]")


def _estimated_parameters(model: dict) -> int:
    """About how many weights a config builds (blocks, embeddings, head), to refuse huge cards."""
    d = int(model.get("d_model", 64))
    blocks = int(model.get("n_layer", 4)) * (4 + 2 * int(model.get("mlp_ratio", 4))) * d * d
    embed = 2 * int(model.get("fourier_features", 0)) + 8 * int(model.get("n_components", 1)) + 4
    return blocks + d * embed


def _check_card(card: dict, header: dict, name: str) -> tuple[type, object]:
    """Validate a card before any model is built: arch, model config (types, ranges, size cap),
    box and task prior. Returns the model class and its config; CheckpointError with the reason."""
    if not isinstance(card.get("model"), dict):
        raise CheckpointError(f"{name}: the card has no model config")
    arch = card.get("arch", DEFAULT_ARCH)
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise CheckpointError(f"{name}: unknown model architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    config_cls, model_cls = ARCHITECTURES[arch]
    defaults = {f.name: getattr(config_cls(), f.name) for f in fields(config_cls)}
    for key, value in card["model"].items():
        if key in defaults:  # unknown keys are refused by from_dict below
            _check_field(name, key, value, defaults[key])
    n_params = _estimated_parameters({**defaults, **card["model"]})
    n_stored = sum(math.prod(int(d) for d in v.get("shape", [])) for k, v in header.items()
                   if k != "__metadata__" and isinstance(v, dict))
    if max(n_params, n_stored) > MAX_PARAMETERS:
        raise CheckpointError(f"{name}: the card describes a model of about {max(n_params, n_stored):,} "
                              f"parameters; iclebm loads at most {MAX_PARAMETERS:,}")
    try:
        config = config_cls.from_dict(card["model"])
    except (TypeError, ValueError, ArithmeticError) as e:
        raise CheckpointError(f"{name}: the card's model config is invalid: {e}") from None
    _check_box_and_task(card, name)
    return model_cls, config


def _check_box_and_task(card: dict, name: str) -> None:
    box = card.get("box")
    if "box" in card and not (
        isinstance(box, list | tuple) and len(box) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        and box[0] < box[1]
    ):
        raise CheckpointError(f"{name}: the card's box must be [lo, hi] with finite lo < hi, got {box!r}")
    task = card.get("task")
    if task is None:
        return
    if not isinstance(task, dict):
        raise CheckpointError(f"{name}: the card's task must be an object, got {task!r}")
    try:
        prior_from_card(task)
    except IclebmError as e:
        if "unknown task family" not in str(e):  # an unknown family is the tools' refusal, not the file's
            raise CheckpointError(f"{name}: {e}") from None


def load_checkpoint_bytes(
    data: bytes, name: str = "checkpoint", card: dict | None = None
) -> Model:
    """Load a model from .safetensors bytes (e.g. an upload); `card` replaces the embedded card.
    Raises CheckpointError with the reason, and only that: the app's upload box and every tool
    handle a refusal in one way."""
    try:
        return _load_bytes(data, name, card)
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, ArithmeticError, MemoryError) as e:
        raise CheckpointError(f"{name} could not be loaded ({type(e).__name__}: {e})") from None


def _load_bytes(data: bytes, name: str, card: dict | None) -> Model:
    header = _read_header(data, name)
    if card is None:
        card = _embedded_card(header, name)
        if card is None:
            raise CheckpointError(
                f"{name} is a safetensors file but not an iclebm checkpoint (no card inside)"
            )
    if not isinstance(card, dict):
        raise CheckpointError(f"{name}: the card is not a JSON object")
    model_cls, config = _check_card(card, header, name)
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


def _resolve(path: str | os.PathLike | None) -> Path:
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if path.suffix != ".safetensors" and not path.exists():
        path = path.with_suffix(".safetensors")
    return path


def _read_sidecar(side: Path) -> dict | None:
    if not side.is_file():
        return None
    try:
        card = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"the card {side} is not valid JSON: {e}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"the card {side} is not a JSON object")
    return card


def _refresh_sidecar(path: Path, card: dict, sidecar: dict | None) -> None:
    """Regenerate the readable .json copy when it is missing or stale (e.g. a save was killed between
    its two renames). Best effort: a read-only folder keeps the stale copy; the file is still right."""
    if sidecar == card:
        return
    try:
        _atomic_write(card_path(path), _card_text(card).encode(), "card")
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike | None = None) -> Model:
    """Load a checkpoint (default: the shipped model) in eval mode with `model.card` set."""
    path = _resolve(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    embedded = _embedded_card(_read_header(data, path.name), path.name)
    side = card_path(path)
    if _is_old_pair(embedded):
        return load_checkpoint_bytes(data, name=path.name, card=_read_sidecar(side))
    model = load_checkpoint_bytes(data, name=path.name, card=embedded)
    try:
        sidecar = _read_sidecar(side)
    except CheckpointError:
        sidecar = None  # a broken copy is regenerated like a missing one
    _refresh_sidecar(path, model.card, sidecar)
    return model


def read_card(path: str | os.PathLike) -> dict:
    """The card of a checkpoint without building the model (the embedded card; the sidecar of an
    old pair)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            header_bytes = f.read(n) if n <= MAX_HEADER_BYTES else b""
        header = json.loads(header_bytes) if header_bytes else {}
        embedded = _embedded_card(header, path.name) if isinstance(header, dict) else None
        if not _is_old_pair(embedded):
            return embedded  # type: ignore[return-value]
        sidecar = _read_sidecar(card_path(path))
        if sidecar is not None:
            return sidecar
        if embedded is None:
            raise CheckpointError(f"{path} holds no card")
        return embedded
    except CheckpointError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read the card of {path}: {e}") from None


def list_checkpoints(folder: str | os.PathLike = CHECKPOINT_DIR) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    # Training resume state lives beside checkpoints but is not a model.
    return sorted(p for p in folder.glob("*.safetensors") if not p.name.endswith(".trainstate.safetensors"))


def app_default_checkpoint(folder: Path | None = None) -> Path:
    """The app's default model: $ICLEBM_CHECKPOINT; else the generalist in `folder` (default
    $ICLEBM_CHECKPOINT_DIR or checkpoints/), else the shipped mog2d there."""
    if os.environ.get("ICLEBM_CHECKPOINT"):
        return Path(os.environ["ICLEBM_CHECKPOINT"])
    if folder is None:
        folder = Path(os.environ.get("ICLEBM_CHECKPOINT_DIR", str(CHECKPOINT_DIR)))
    wide = folder / APP_DEFAULT
    return wide if wide.exists() else folder / DEFAULT_CHECKPOINT.name
