"""A second device on every machine: tensors that compute on the CPU but report `meta` as their
device, and refuse, as CUDA does, to meet plain CPU tensors in one operation.

Inside `virtual_device()`, `model.to(VIRTUAL)` moves a model there and every tensor made with
`device=VIRTUAL` (or moved there with `.to`) lives there; any operator that mixes such a tensor
with a CPU tensor of one or more dimensions raises `DeviceMixError`, naming the operator. A
0-dim CPU tensor is allowed beside it, as CUDA allows. Values are real (the CPU computes them),
so `.item()`, `bool(...)` and data-dependent branches work, unlike on the real `meta` device;
`.numpy()` needs a `.cpu()` first, as on a GPU. So a CPU-only machine (CI) finds the class of bug
"a tensor created without the model's device" that otherwise only a GPU shows. Slow (every
operator passes through Python): for small models and tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from iclebm.errors import IclebmError

VIRTUAL = torch.device("meta")  # the reported device: a type every PyTorch build knows
_CPU = torch.device("cpu")
# Operators that legitimately take tensors of two devices: the copies behind `.to` and `.copy_`.
_TRANSFERS = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


class DeviceMixError(IclebmError, RuntimeError):
    """A CPU tensor met a tensor on the model's (virtual) device in one operator."""


class VirtualTensor(torch.Tensor):
    """A CPU tensor `elem` that reports device `meta`."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> VirtualTensor:
        return torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            device=VIRTUAL, requires_grad=elem.requires_grad, layout=elem.layout)

    def __init__(self, elem: torch.Tensor) -> None:
        self.elem = elem

    def __repr__(self) -> str:  # type: ignore[override]
        return f"VirtualTensor({self.elem!r})"

    def __deepcopy__(self, memo: dict) -> VirtualTensor:
        out = VirtualTensor(self.elem.detach().clone())
        if self.requires_grad:
            out.requires_grad_(True)
        return out

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return _run(func, args, kwargs or {})


def _is_virtual(device: Any) -> bool:
    return device is not None and torch.device(device).type == VIRTUAL.type


def _check_mixing(func: Any, flat: list) -> bool:
    """True when a virtual tensor takes part; raises when a CPU tensor (ndim >= 1) is beside it."""
    if not any(isinstance(a, VirtualTensor) for a in flat):
        return False
    if func in _TRANSFERS:
        return True
    for a in flat:
        if isinstance(a, torch.Tensor) and not isinstance(a, VirtualTensor) and a.is_meta:
            raise DeviceMixError(f"{func}: a data-less meta tensor of shape {tuple(a.shape)}: PyTorch made "
                                 "it inside, e.g. for a list index (index on the CPU or with a tensor)")
        if isinstance(a, torch.Tensor) and not isinstance(a, VirtualTensor) and a.dim() > 0:
            raise DeviceMixError(
                f"{func}: a {a.device} tensor of shape {tuple(a.shape)} meets tensors on the model's device "
                "(made without device=...; on a GPU: 'Expected all tensors to be on the same device')")
    return True


def _check_generator(func: Any, kwargs: dict, on_virtual: bool) -> None:
    """A CPU generator cannot draw on another device (CUDA: "Expected a 'cuda' device type for generator")."""
    g = kwargs.get("generator")
    if on_virtual and isinstance(g, torch.Generator) and g.device.type == "cpu":
        raise DeviceMixError(f"{func}: a CPU generator draws on the model's device (draw on the CPU, move)")


def _run(func: Any, args: tuple, kwargs: dict) -> Any:
    """Run an operator on the CPU values; wrap its results when it acts on or creates virtual tensors."""
    flat, _ = tree_flatten((args, kwargs))
    on_virtual = _check_mixing(func, flat)
    target = kwargs.get("device")
    _check_generator(func, kwargs, on_virtual or _is_virtual(target))
    if _is_virtual(target):
        kwargs = {**kwargs, "device": _CPU}
        wrap_out = True
    elif target is not None and func in _TRANSFERS:  # .to(cpu) leaves the virtual device
        wrap_out = False
    else:
        wrap_out = on_virtual
    owners: dict[int, VirtualTensor] = {}

    def unwrap(a: Any) -> Any:
        if isinstance(a, VirtualTensor):
            owners[id(a.elem)] = a
            return a.elem
        return a

    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    if not wrap_out:
        return out

    def wrap(o: Any) -> Any:
        if isinstance(o, torch.Tensor) and not isinstance(o, VirtualTensor):
            return owners[id(o)] if id(o) in owners else VirtualTensor(o)  # in-place ops return their input
        return o

    return tree_map(wrap, out)


class _VirtualMode(TorchDispatchMode):
    """Catches the factory calls (`torch.zeros(..., device=VIRTUAL)`) that have no tensor argument."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        if _is_virtual(kwargs.get("device")) or any(isinstance(a, VirtualTensor) for a in flat):
            return _run(func, args, kwargs)
        return func(*args, **kwargs)


def _from_data(make: Any) -> Any:
    """torch.tensor / torch.as_tensor from Python data bypass the dispatcher's Python modes, so
    `device=VIRTUAL` would give a real, empty meta tensor: build on the CPU, then move."""

    def build(data: Any, *args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        if _is_virtual(device):
            return make(data, *args, **kwargs).to(VIRTUAL)
        return make(data, *args, device=device, **kwargs)

    return build


@contextlib.contextmanager
def virtual_device() -> Iterator[torch.device]:
    """Inside, VIRTUAL (yielded) is a working device that refuses to mix with the CPU."""
    saved = torch.tensor, torch.as_tensor
    torch.tensor, torch.as_tensor = _from_data(torch.tensor), _from_data(torch.as_tensor)
    try:
        with _VirtualMode():
            yield VIRTUAL
    finally:
        torch.tensor, torch.as_tensor = saved
