"""Devices: `--device auto|cpu|cuda|cuda:N|mps`, bf16 autocast and optional torch.compile.

The library creates every tensor on the model's device (`model.device`); task sampling and
random draws that must not depend on the device happen on the CPU and are moved. CPU is the
default and the tested path; CUDA and MPS paths are written to the same rules.
"""

from __future__ import annotations

import contextlib
import platform
import sys

import torch

from iclebm.errors import IclebmError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(IclebmError, ValueError):
    """A requested device does not exist on this machine."""


def _cuda_device(name: str) -> torch.device:
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
        raise DeviceError(f"--device {name}: no CUDA GPU is available ({build}); use --device cpu or auto")
    dev = torch.device(name)
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..{count - 1})")
    return dev


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch.device for a --device value; raises DeviceError naming the problem.

    auto: CUDA when present, else CPU (MPS only on request: evaluation needs float64, which MPS lacks).
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        try:
            return _cuda_device(name)
        except RuntimeError as e:  # a malformed index such as cuda:x
            raise DeviceError(f"--device {name}: {e}") from None
    if name == "mps":
        if sys.platform != "darwin":
            raise DeviceError(f"--device mps needs macOS (Apple GPU); this machine runs {platform.system()}")
        if not torch.backends.mps.is_available():
            raise DeviceError("--device mps: this torch build or Mac has no MPS backend available")
        return torch.device("mps")
    raise DeviceError(f"unknown device {name!r}; choose one of auto, cpu, cuda, cuda:N, mps")


def check_amp(amp: bool, device: torch.device) -> None:
    """bf16 autocast is offered on CUDA only (CPU bf16 matmuls are slower than float32 here)."""
    if amp and device.type != "cuda":
        raise DeviceError(f"--amp (bf16 autocast) needs a CUDA device; the run uses {device.type}")


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when amp, else a no-op context."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    """A one-line name for tables and cards, e.g. 'cuda (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    return device.type


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for honest timings on asynchronous devices)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile each transformer block's context and query passes (in place; returns model).

    The model is used through several methods rather than one forward, so the blocks' two
    passes are what get compiled (dynamic shapes: context and query counts vary). The first
    calls pay the compilation; `python -m iclebm bench --compile` measures the effect.
    """
    for block in model.blocks:
        block.forward_context = torch.compile(block.forward_context, dynamic=True)
        block.forward_query = torch.compile(block.forward_query, dynamic=True)
    return model
