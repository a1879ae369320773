"""Count the places where the host would wait for the device, on any device (a CPU run shows them too).

A GPU pipeline is fast when the host queues work and never waits; each read of a tensor's value on the host
(`.item()`, `float(t)`, `.tolist()`, `.cpu()`, `.numpy()`, `if tensor:`) and each op whose output size
depends on the data (`nonzero`, boolean-mask indexing, `unique`) makes it wait. The counter sees Python-level
reads through a TorchFunctionMode and data-dependent ops through a TorchDispatchMode, so a CPU test can hold
the engine to its budget (frame_batch.HOST_SYNCS).
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# `.numpy()` is not counted: a device tensor needs `.cpu()` first, which is. Downloads with `.to("cpu")` are
# not counted either (on a CPU run they look like the uploads): the engine downloads with `.cpu()` only.
_READS = {"item", "tolist", "cpu", "__bool__", "__int__", "__float__", "__index__", "__array__"}
# (`item`, `float(t)`, `if t:` reach aten as `_local_scalar_dense`; they are counted once, at the Python level)
_DATA_DEPENDENT = {"nonzero", "masked_select", "_unique2", "unique_dim",
                   "unique_consecutive", "equal", "allclose", "repeat_interleave"}


class _Reads(TorchFunctionMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _READS:
            self.counts[name] += 1
        return func(*args, **kwargs)


class _DataDependent(TorchDispatchMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        if name in ("index", "index_put", "index_put_") and _bool_index(args):
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
def count_host_syncs():
    """`with count_host_syncs() as counts:` -> a Counter of host-sync operations by name."""
    counts: Counter = Counter()
    with _Reads(counts), _DataDependent(counts):
        yield counts


def sync_device(device) -> None:
    """Wait until the work queued on `device` is done; nothing on a CPU. The device is named: a bare
    `torch.cuda.synchronize()` waits for the current device, which is not the model's on `cuda:1`."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
