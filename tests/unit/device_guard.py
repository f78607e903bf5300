"""A stand-in for a second device on a CPU-only machine, to catch CUDA-only device bugs.

On CUDA, joining a CPU tensor (not 0-dim) with a tensor on the model's device raises; on CPU the
same code runs silently. `DeviceGuard` (a `TorchFunctionMode`) tags every tensor as *host* or
*device* and raises `DeviceMixError` where CUDA would:

* device: parameters of a module moved with ``.to(d)`` (and their ``.grad``), results of
  ``.to(d)`` and of factories with ``device=d`` where ``d`` is not a host tensor's ``.device``
  nor the string ``"cpu"``, and results of ops with a device input;
* host: everything else (``torch.as_tensor(numpy)``, ``torch.randn(..., generator=g)``,
  ``.cpu()``, a host tensor's ``.device`` used as a target);
* an op joining host (dim > 0) and device tensors raises, except copies (``to``, ``copy_``) and
  indexing a device tensor with host indices (CUDA allows both).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

CROSSING = {"to", "cpu", "cuda", "copy_", "numpy", "tolist", "item", "__get__", "__set__",
            "detach", "clone", "__repr__", "__format__", "size", "dim", "numel", "data_ptr",
            "__len__", "__bool__", "__float__", "__int__", "__index__"}


class DeviceMixError(AssertionError):
    """A host tensor joined with model-device tensors (an error on CUDA)."""


def _tensors(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 2 and isinstance(obj, list | tuple):
        for x in obj:
            yield from _tensors(x, depth + 1)
    elif depth < 2 and isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x, depth + 1)


class DeviceGuard(TorchFunctionMode):
    """Raise `DeviceMixError` where CUDA would reject mixing host and device tensors."""

    def __init__(self, model_device: str | None = None) -> None:
        """`model_device`: a device string the code under test moves models and inputs to with
        ``.to(str)`` (e.g. the encoders' ``"cpu"``), counted as the device; default: the string
        ``"cpu"`` means the host."""
        super().__init__()
        self.model_device = model_device
        self._device: dict[int, weakref.ref[torch.Tensor]] = {}
        self._host_devices: list[torch.device] = []  # kept alive so that ids stay unique
        self.ops = 0

    def is_device(self, t: torch.Tensor) -> bool:
        ref = self._device.get(id(t))
        return ref is not None and ref() is t

    def _mark(self, out: Any) -> None:
        for t in _tensors(out):
            self._device[id(t)] = weakref.ref(t)

    def _target_is_device(self, target: Any) -> bool | None:
        """None: not a device target (a dtype, ...)."""
        if isinstance(target, torch.Tensor):
            return self.is_device(target)
        if isinstance(target, str):
            if target == self.model_device:
                return True
            return not target.startswith("cpu") if target not in ("float", "double") else None
        if isinstance(target, torch.device):
            return not any(target is d for d in self._host_devices)
        return None

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        name = getattr(func, "__name__", "")
        if name == "__get__" and getattr(func, "__self__", None) is torch.Tensor.device:
            if not self.is_device(args[0]):
                self._host_devices.append(out)
            return out
        if name == "__get__":  # a property (.grad, .data, .T, ...) lives where its tensor does
            if args and isinstance(args[0], torch.Tensor) and self.is_device(args[0]):
                self._mark(out)
            return out
        if name in ("to", "cuda"):
            targets = [self._target_is_device(a) for a in (*args[1:], kwargs.get("device"),
                                                           kwargs.get("other"))]
            known = [t for t in targets if t is not None]
            dev = known[0] if known else self.is_device(args[0])
            if name == "cuda" or dev:
                self._mark(out)
            return out
        if (name == "__set__" and getattr(func, "__self__", None) is torch.Tensor.data
                and len(args) == 2 and isinstance(args[0], torch.Tensor)):
            # ``param.data = moved`` (how Module.to moves a parameter): it follows the value
            if isinstance(args[1], torch.Tensor) and self.is_device(args[1]):
                self._mark(args[0])
            else:
                self._device.pop(id(args[0]), None)
            return out
        if name in CROSSING:
            if name in ("detach", "clone") and self.is_device(args[0]):
                self._mark(out)
            return out
        ins = list(_tensors(args)) + list(_tensors(kwargs))
        if name == "__getitem__":  # a device tensor may take host indices
            ins = ins[:1] if self.is_device(args[0]) else ins
        if name == "__setitem__" and self.is_device(args[0]):
            ins = [args[0], *_tensors(args[2:])]
        dev_in = [t for t in ins if self.is_device(t)]
        host_in = [t for t in ins if not self.is_device(t) and t.dim() > 0]
        if dev_in and host_in:
            raise DeviceMixError(
                f"{name}: host tensor(s) {[tuple(t.shape) for t in host_in]} joined with "
                f"model-device tensor(s) {[tuple(t.shape) for t in dev_in]}")
        target = kwargs.get("device")
        made_on_device = target is not None and bool(self._target_is_device(target))
        if dev_in or made_on_device:
            self._mark(out)
        return out
