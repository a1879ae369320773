"""Count the places where the host would wait for the device, on any device (a CPU run shows them too).

A GPU pipeline is fast when the host queues work and never waits. The host waits on:
- reads of a device tensor's values: `.item()`, `float(t)`, `if t:`, `.tolist()`, `.cpu()`, `.numpy()`;
- ops whose output size depends on the data: `nonzero`, boolean-mask indexing, `unique`;
- uploads of host data: `torch.tensor(data, device=dev)`, `torch.as_tensor(x, device=dev)`,
  `.to(dev)` / `.cuda()` / `dev_t.copy_(x)` / `dev_t[i] = x` of a host tensor, and indexing a device tensor
  with a host tensor, a Python list or a numpy array (torch uploads the index). A blocking copy waits for
  the device's queue; a `non_blocking` copy from pinned memory does not and is not counted.

`count_host_syncs(device)` counts them as they would happen with the model on `device` — the accelerator.
On a CPU run (the tests) nothing is copied, so the counter tracks which tensors would live on the host:
those made from host data (`torch.from_numpy`, `torch.tensor`/`as_tensor`/`asarray` of Python or numpy
data, any factory such as `torch.zeros`) without naming `device`, results of `.cpu()`, and results of ops
whose tensor inputs are all on the host. Every other tensor is on the device (parameters, tensors made before
the count, results of device ops). Reads of host tensors are free and not counted. Python-level calls are
seen through a TorchFunctionMode (`torch.from_numpy`, which skips it, is wrapped for the duration),
data-dependent ops through a TorchDispatchMode, so a CPU test can hold the engine to its budget
(frame_batch.HOST_SYNCS, pgseg.segmenter.HOST_SYNCS). Limits: on a CPU run a moved tensor is a new alias of
the same memory, and a host tensor created before the count is taken for a device one; `.to("cpu")` of a
device tensor is a download only beside a real accelerator (on the CPU standing in for one it names the
device itself).

`count_device_to_host_bytes(device)` counts the same reads in bytes (what crosses the bus device -> host),
so a test can hold each output set to its size (test/engine/test_device_transfers.py).
"""
from __future__ import annotations

import time
import weakref
from collections import Counter
from contextlib import contextmanager
from typing import Union

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Downloads with `.to("cpu")` are not counted (the engine downloads with `.cpu()` only).
_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "__array__"}
# (`item`, `float(t)`, `if t:` reach aten as `_local_scalar_dense`; they are counted once, at the Python level)
_DATA_DEPENDENT = {"nonzero", "masked_select", "_unique2", "unique_dim",
                   "unique_consecutive", "equal", "allclose", "repeat_interleave"}
_FROM_DATA = {"tensor", "as_tensor", "asarray"}


class _Placement:
    """Which tensors would be on the host with the model on `device` (weak references by object id)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._host: dict[int, weakref.ref] = {}

    def on_host(self, t) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        if self.device.type != "cpu" and t.device.type == "cpu":
            return True                 # a real CPU tensor beside an accelerator
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def mark(self, out, host: bool):
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                if host:
                    self._host[id(t)] = weakref.ref(t)
                else:
                    self._host.pop(id(t), None)
        return out

    def is_target(self, device) -> bool:
        if device is None:
            return False
        device = torch.device(device)
        return device.type == self.device.type and (device.index is None or self.device.index is None
                                                    or device.index == self.device.index)


def _host_data(x) -> bool:
    """Python or numpy data (not a tensor)."""
    return isinstance(x, (list, tuple, np.ndarray, np.generic, int, float, bool))


def _target(name: str, args, kwargs):
    """The device a `.to`/`.cuda` call moves to, None for a dtype-only `.to`."""
    if name == "cuda":
        return torch.device("cuda", args[1] if len(args) > 1 and isinstance(args[1], int) else None)
    if "device" in kwargs:
        return kwargs["device"]
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            return a
        if isinstance(a, torch.Tensor):
            return a.device
    return None


def _is_host(device) -> bool:
    return device is not None and torch.device(device).type == "cpu"


class _Reads(TorchFunctionMode):
    def __init__(self, counts: Counter, place: _Placement, copied: Counter):
        super().__init__()
        self.counts, self.place, self.copied = counts, place, copied

    def _read(self, name: str, t) -> None:
        self.counts[name] += 1
        if isinstance(t, torch.Tensor):     # the whole tensor comes down (an item: one element)
            self.copied[name] += t.numel() * t.element_size()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        place = self.place
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        host_in = bool(tensors) and all(place.on_host(t) for t in tensors)
        if name in _READS:
            if not place.on_host(args[0]):
                self._read(name, args[0])
            out = func(*args, **kwargs)
            if name == "cpu" and isinstance(out, torch.Tensor):
                out = place.mark(out if out is not args[0] else out.view_as(out), True)
            return out
        if name == "to" and place.device.type != "cpu" and tensors and not place.on_host(tensors[0]) and \
                _is_host(_target(name, args, kwargs)):
            self._read("to(cpu)", tensors[0])
            return place.mark(func(*args, **kwargs), True)
        if name in ("to", "cuda", "as_tensor") and tensors and place.on_host(tensors[0]) and \
                place.is_target(_target(name, args, kwargs)):
            pinned_async = kwargs.get("non_blocking", False) and tensors[0].is_pinned()
            if not pinned_async:
                self.counts[f"upload ({name})"] += 1
            out = func(*args, **kwargs)
            return place.mark(out if out is not tensors[0] else out.view_as(out), False)
        if name in _FROM_DATA and args and not isinstance(args[0], torch.Tensor):
            out = func(*args, **kwargs)
            if place.is_target(kwargs.get("device")):
                if _host_data(args[0]):
                    self.counts[f"upload (torch.{name})"] += 1
                return place.mark(out, False)
            return place.mark(out, True)
        if name in ("copy_", "__setitem__") and len(args) > 1 and not place.on_host(args[0]):
            src = args[-1]
            if place.on_host(src) or (name == "copy_" and _host_data(src)):
                self.counts[f"upload ({name})"] += 1
        if name in ("__getitem__", "__setitem__") and not place.on_host(args[0]) and _uploads_index(args[1], place):
            self.counts[f"upload ({name} index)"] += 1
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) or isinstance(out, (tuple, list)):
            if not tensors:         # a factory: on the host unless it names the device
                return place.mark(out, not place.is_target(kwargs.get("device")))
            return place.mark(out, host_in)
        return out


def _uploads_index(index, place: _Placement) -> bool:
    """A host tensor, list or numpy array in an index is copied to the indexed tensor's device."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (list, np.ndarray)) or place.on_host(p) for p in parts)


class _DataDependent(TorchDispatchMode):
    def __init__(self, counts: Counter, place: _Placement):
        super().__init__()
        self.counts, self.place = counts, place

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        tensors = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
        if tensors and all(self.place.on_host(t) for t in tensors):
            pass                        # host data: no device to wait for
        elif name in ("index", "index_put", "index_put_") and _bool_index(args):
            self.counts[f"aten.{name}(bool mask)"] += 1
        elif name in _DATA_DEPENDENT:
            if not (name == "repeat_interleave" and not isinstance(args[1] if len(args) > 1 else None,
                                                                   torch.Tensor)):
                self.counts[f"aten.{name}"] += 1
        return func(*args, **(kwargs or {}))


def _bool_index(args) -> bool:
    """Indexing with a boolean mask has a data-dependent size (a nonzero inside, also where no `nonzero` op
    is dispatched)."""
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


@contextmanager
def _counting(device):
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    counts: Counter = Counter()
    copied: Counter = Counter()
    place = _Placement(torch.device(device))
    from_numpy = torch.from_numpy

    def host_from_numpy(a):
        return place.mark(from_numpy(a), True)

    torch.from_numpy = host_from_numpy
    try:
        with _Reads(counts, place, copied), _DataDependent(counts, place):
            yield counts, copied
    finally:
        torch.from_numpy = from_numpy


@contextmanager
def count_host_syncs(device: Union[str, torch.device, None] = None):
    """`with count_host_syncs(device) as counts:` -> a Counter of host-sync operations by name, as they would
    be with the model on `device` (default: the current accelerator if there is one, else the CPU taken as
    one; pass the model's device)."""
    with _counting(device) as (counts, _):
        yield counts


@contextmanager
def count_device_to_host_bytes(device: Union[str, torch.device, None] = None):
    """`with count_device_to_host_bytes(device) as copied:` -> a Counter of the bytes read from the device to
    the host, by read (`cpu`, `tolist`, `item`, ...; sum(copied.values()) is the total), as they would be with
    the model on `device` (the same stand-in as count_host_syncs). A host tensor's reads cost nothing, so
    `.cpu().numpy()` counts once."""
    with _counting(device) as (_, copied):
        yield copied


def sync_device(device) -> None:
    """Wait until the work queued on `device` is done; nothing on a CPU. The device is named: a bare
    `torch.cuda.synchronize()` waits for the current device, which is not the model's on `cuda:1`."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds per stage. On a GPU, stage laps wait for the device only when profiling (a wait per stage
    would serialise the host and the device); `total` is always measured after the results are ready."""

    def __init__(self, device: torch.device, profile: bool):
        self.device = device
        self.sync = profile
        self.times: dict[str, float] = {}
        self.t0 = self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.sync:
            sync_device(self.device)      # the model's device, not the current one
        now = time.perf_counter()
        self.times[stage] = self.times.get(stage, 0.0) + now - self.t
        self.t = now

    def finish(self) -> dict:
        self.times["total"] = time.perf_counter() - self.t0
        return self.times
