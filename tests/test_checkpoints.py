"""Checkpoints: bit-exact round trips, atomic saves, and a CheckpointError for every bad file."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from lib_helpers import random_model
from safetensors.torch import save as st_save

from iclebm import CheckpointError, checkpoints
from iclebm.card import box_of
from iclebm.checkpoints import (
    card_path,
    checkpoint_bytes,
    list_checkpoints,
    load_checkpoint,
    load_checkpoint_bytes,
    read_card,
    save_checkpoint,
)
from iclebm.models.energy import EnergyConfig, EnergyTransformer

CARD = {
    "name": "tiny",
    "task": {"n_components": 3, "mean_std": 3.0, "component_std": [0.33, 0.5]},
    "box": [-12.0, 12.0],
    "sampler": {"steps": 50, "step_size": 0.05, "noise_std": 0.316, "grad_clip": 20.0},
    "training": {"steps": 7, "command": "python -m iclebm train --preset small"},
}


def tiny(seed: int = 0):
    return random_model(seed=seed, dtype=torch.float32)


def assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip_is_bit_exact(tmp_path):
    model = tiny()
    path = save_checkpoint(model, tmp_path / "m.safetensors", CARD)
    assert path.exists() and card_path(path).exists()
    loaded = load_checkpoint(path)
    assert_same_weights(model, loaded)
    assert loaded.config == model.config
    assert not loaded.training
    for key, value in CARD.items():
        assert loaded.card[key] == value
    assert loaded.card["model"] == model.config.to_dict()
    q, ctx = torch.randn(1, 5, 2), torch.randn(1, 4, 2)
    assert torch.equal(model.energy(q, ctx), loaded.energy(q, ctx))
    assert read_card(path)["training"]["steps"] == 7
    assert box_of(loaded) == (-12.0, 12.0)
    assert list_checkpoints(tmp_path) == [path]


def test_save_writes_exactly_the_named_path_and_embedded_card_is_enough(tmp_path):
    model = tiny()
    for wrong in ("noext", "run.txt"):
        with pytest.raises(ValueError, match="must end in .safetensors"):
            save_checkpoint(model, tmp_path / wrong, CARD)
    assert list(tmp_path.iterdir()) == []
    path = save_checkpoint(model, tmp_path / "noext.safetensors", CARD)
    card_path(path).unlink()
    loaded = load_checkpoint(path)  # the card inside the safetensors metadata is enough
    assert loaded.card["name"] == "tiny"
    assert_same_weights(model, loaded)
    assert json.loads(card_path(path).read_text()) == loaded.card  # the readable copy is regenerated
    assert load_checkpoint(tmp_path / "noext").card["name"] == "tiny"  # suffix optional on load too


def _rewrite_embedded_card(path, card: dict) -> None:
    """Replace the card inside a checkpoint file (the source of truth since format 2)."""
    from safetensors.torch import load as st_load

    tensors = st_load(path.read_bytes())
    path.write_bytes(st_save(tensors, metadata={checkpoints.CARD_KEY: json.dumps(card)}))


def test_bytes_round_trip_is_bit_exact():
    model = tiny(seed=3)
    data = checkpoint_bytes(model, CARD)
    loaded = load_checkpoint_bytes(data, name="upload")
    assert_same_weights(model, loaded)
    assert loaded.card["task"] == CARD["task"]
    assert checkpoint_bytes(loaded, loaded.card) == data  # deterministic serialisation


def test_energy_scale_survives_round_trip(tmp_path):
    model = tiny()
    model.config.energy_scale = 0.37
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "s.safetensors", CARD))
    assert loaded.config.energy_scale == 0.37


def test_save_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(tiny(seed=1), tmp_path / "m.safetensors", CARD)
    before_weights, before_card = path.read_bytes(), card_path(path).read_text()

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(checkpoints.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tiny(seed=2), path, {**CARD, "name": "other"})
    monkeypatch.undo()
    assert path.read_bytes() == before_weights
    assert card_path(path).read_text() == before_card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temp files left
    assert_same_weights(load_checkpoint(path), tiny(seed=1))


def test_crash_while_writing_keeps_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(tiny(seed=1), tmp_path / "m.safetensors", CARD)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.os, "fsync", crash)
    with pytest.raises(OSError):
        save_checkpoint(tiny(seed=2), path, CARD)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- every bad checkpoint raises CheckpointError ------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("cut", [0, 5, 100, -10])
def test_truncated_file(tmp_path, cut):
    data = checkpoint_bytes(tiny(), CARD)
    path = tmp_path / "t.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "r.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_checkpoint_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")


def test_torch_pickle_renamed(tmp_path):
    path = tmp_path / "p.safetensors"
    torch.save(tiny().state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    legacy = tmp_path / "legacy.safetensors"
    torch.save(tiny().state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError):
        load_checkpoint(legacy)


def test_safetensors_without_card(tmp_path):
    path = tmp_path / "plain.safetensors"
    path.write_bytes(st_save({k: v.contiguous() for k, v in tiny().state_dict().items()}))
    with pytest.raises(CheckpointError, match="no card"):
        load_checkpoint(path)


def test_shape_mismatch_with_card(tmp_path):
    path = save_checkpoint(tiny(), tmp_path / "m.safetensors", CARD)
    card = json.loads(card_path(path).read_text())
    card["model"]["d_model"] = 32
    _rewrite_embedded_card(path, card)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)
    card["model"]["d_model"] = 16
    card["model"]["n_layer"] = 3
    _rewrite_embedded_card(path, card)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_invalid_model_config_in_card(tmp_path):
    path = save_checkpoint(tiny(), tmp_path / "m.safetensors", CARD)
    card = json.loads(card_path(path).read_text())
    card["model"]["n_head"] = 5  # 16 is not divisible by 5
    _rewrite_embedded_card(path, card)
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(path)
    del card["model"]
    _rewrite_embedded_card(path, card)
    with pytest.raises(CheckpointError, match="no model config"):
        load_checkpoint(path)


def test_nan_weights():
    model = tiny()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint_bytes(checkpoint_bytes(model, CARD))
    with torch.no_grad():
        model.head.weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="NaN or inf"):
        load_checkpoint_bytes(checkpoint_bytes(model, CARD))


def test_corrupt_sidecar_json(tmp_path):
    """An old pair (format 1): the sidecar is the card, so a broken one is refused."""
    old = tmp_path / "old.safetensors"
    old.write_bytes(checkpoints.DEFAULT_CHECKPOINT.read_bytes())
    card_path(old).write_text('{"model": {"d_model": 16,')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(old)
    with pytest.raises(CheckpointError):
        read_card(old)


def test_stale_or_broken_sidecar_of_a_new_checkpoint_is_regenerated(tmp_path):
    """Format 2: the embedded card is the truth; the .json beside it is a copy, rewritten when stale."""
    path = save_checkpoint(tiny(), tmp_path / "m.safetensors", CARD)
    truth = json.loads(card_path(path).read_text())
    for stale in ('{"model": {"d_model": 16,', json.dumps({**truth, "name": "edited"})):
        card_path(path).write_text(stale)
        assert load_checkpoint(path).card == truth
        assert json.loads(card_path(path).read_text()) == truth
        card_path(path).write_text(stale)
        assert read_card(path) == truth


def test_checkpoint_error_messages_name_the_file(tmp_path):
    path = tmp_path / "named.safetensors"
    path.write_bytes(b"short")
    with pytest.raises(CheckpointError, match="named.safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("magic", [b"\x80", b"PK"])
def test_valid_file_whose_header_length_looks_like_a_pickle_magic(magic):
    """A safetensors file starts with its header length (8 bytes, little endian): a length of
    0x..80 makes byte 0 equal pickle's 0x80, and 0x4B50 makes the file start with b"PK" (zip).
    Such files are valid checkpoints and must load."""
    model = tiny()

    def data_for(pad: int) -> bytes:
        return checkpoint_bytes(model, {**CARD, "pad": "x" * pad})

    n0 = struct.unpack("<Q", data_for(0)[:8])[0]
    target = ((n0 >> 8) + 1) << 8 | 0x80 if magic == b"\x80" else 0x4B50
    assert target > n0
    found = None
    for pad in range(max(0, target - n0 - 16), target - n0 + 16):
        data = data_for(pad)
        if struct.unpack("<Q", data[:8])[0] == target:
            found = data
            break
    assert found is not None and found.startswith(magic)
    loaded = load_checkpoint_bytes(found, name="lucky")
    assert_same_weights(model, loaded)


# ---- content hash ----------------------------------------------------------------------


def _flip_weight_byte(data: bytes, offset_in_data: int = 0) -> bytes:
    """Flip the lowest bit of one byte of the tensor data (a float's low mantissa byte: stays finite)."""
    (n,) = struct.unpack("<Q", data[:8])
    i = 8 + n + offset_in_data
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def test_card_carries_a_content_hash_that_verifies(tmp_path):
    model = tiny()
    path = save_checkpoint(model, tmp_path / "m.safetensors", CARD)
    digest = read_card(path)[checkpoints.HASH_KEY]
    assert digest == checkpoints.weights_sha256(model.state_dict()) and len(digest) == 64
    assert load_checkpoint(path).card[checkpoints.HASH_KEY] == digest
    assert "verified" in checkpoints.integrity_note(load_checkpoint(path).card)
    other = tiny(seed=1)
    assert checkpoints.weights_sha256(other.state_dict()) != digest


def test_shipped_checkpoint_with_a_flipped_byte_is_rejected(tmp_path):
    shipped = checkpoints.DEFAULT_CHECKPOINT
    assert checkpoints.HASH_KEY in read_card(shipped), "the shipped card should carry its content hash"
    data = shipped.read_bytes()
    for offset in (0, 1001, len(data) - 8 - struct.unpack("<Q", data[:8])[0] - 1):
        copy = tmp_path / f"flipped{offset}.safetensors"
        copy.write_bytes(_flip_weight_byte(data, offset))
        with pytest.raises(CheckpointError, match="content hash"):
            load_checkpoint(copy)  # no sidecar: the embedded card's hash
        card_path(copy).write_text(card_path(shipped).read_text())
        with pytest.raises(CheckpointError, match="content hash"):
            load_checkpoint(copy)  # with the sidecar card
    copy = tmp_path / "intact.safetensors"
    copy.write_bytes(data)
    assert_same_weights(load_checkpoint(copy), load_checkpoint(shipped))


def test_upload_with_a_flipped_byte_is_rejected():
    data = checkpoint_bytes(tiny(), CARD)
    load_checkpoint_bytes(data)
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_checkpoint_bytes(_flip_weight_byte(data, 17), name="upload")


def test_old_checkpoint_without_hash_still_loads(tmp_path):
    model = tiny()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    card = {**CARD, "model": model.config.to_dict()}
    path = tmp_path / "old.safetensors"
    path.write_bytes(st_save(tensors, metadata={checkpoints.CARD_KEY: json.dumps(card)}))
    loaded = load_checkpoint(path)
    assert_same_weights(model, loaded)
    assert checkpoints.HASH_KEY not in loaded.card
    assert "unverified" in checkpoints.integrity_note(loaded.card)


def test_fourier_model_round_trips(tmp_path):
    model = EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8, fourier_features=4))
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "f.safetensors", CARD))
    assert_same_weights(model, loaded) and loaded.config == model.config
    q, ctx = torch.randn(1, 5, 2), torch.randn(1, 4, 2)
    assert torch.equal(model.energy(q, ctx), loaded.energy(q, ctx))
