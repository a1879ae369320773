"""Reading the authors' checkpoint files without running their code.

The released PGSeg and GroupViT files are `torch.save` pickles that hold, beside the weights, the training
config as an OmegaConf object. By default they are read with a restricted unpickler: torch's tensor-rebuild
functions, storage types, dtypes and plain containers are admitted; any other global becomes an inert
placeholder that keeps its state and runs nothing, so the weights load without omegaconf installed. Weights
that need such a class are refused by name. `trust_pickle=True` unpickles everything (runs code the file names).
"""
from __future__ import annotations

import codecs
import collections
import pickle
import re
import types
from pathlib import Path

import torch


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted; the message says why."""


# ---- messages ---------------------------------------------------------------------------------------------------

_TERMINAL_CODES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]"              # CSI: colours, cursor moves
                             r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"   # OSC: titles, links
                             r"|\x1b[@-Z\\-_]"                        # other two-byte escapes
                             r"|[\x00-\x08\x0b-\x1f\x7f]")            # remaining control characters


def one_line(text: object, limit: int = 600) -> str:
    """A library's message quoted on one line: terminal escape codes removed (torch colours its own), whitespace
    collapsed; cut only past `limit` characters, so the class or module it names survives."""
    flat = " ".join(_TERMINAL_CODES.sub(" ", str(text)).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


# ---- the restricted reader ----------------------------------------------------------------------------------------

class RefusedObject:
    """Stands in for a class or function the restricted reader does not admit. Pickle may call it, build it or
    fill it: it only keeps what it is given (so that messages can name it) and never runs anything."""

    refused_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[])
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):    # pickle may call what it built: another inert placeholder
        return type(self)(*args, **kwargs)

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __setitem__(self, key, value):      # dict-like classes are filled item by item
        self.__dict__["items"].append((key, value))

    def append(self, value):               # list-like ones element by element
        self.__dict__["items"].append(value)

    def extend(self, values):
        self.__dict__["items"].extend(values)

    def __repr__(self):
        return f"<refused {self.refused_name}>"


def _latin1_encode(text, encoding="latin1"):
    # pickle protocol 2 (torch.save's) stores bytes as _codecs.encode(text, 'latin1'); no other codec is needed
    if str(encoding).lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"codec {encoding!r} refused")
    return codecs.encode(text, "latin1")


_ADMITTED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("_codecs", "encode"): _latin1_encode,
}
_PLAIN_BUILTINS = {"set": set, "frozenset": frozenset, "complex": complex}


def _admitted(module: str, name: str):
    """The object an admitted global names, else None."""
    if (module, name) in _ADMITTED:
        return _ADMITTED[(module, name)]
    if module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS:   # protocol 2 says __builtin__
        return _PLAIN_BUILTINS[name]
    if module == "torch":      # storage types and dtypes: what tensors are rebuilt from
        value = getattr(torch, name, None) if isinstance(name, str) else None
        if isinstance(value, torch.dtype):
            return value
        if isinstance(value, type) and name.endswith("Storage") and issubclass(
                value, (torch.storage.TypedStorage, torch.UntypedStorage)):
            return value
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """torch.load subclasses this: it maps storage names itself and sets persistent_load to read the tensor
    data from the archive; every other global comes to find_class here."""

    def find_class(self, module, name):
        found = _admitted(module, name)
        if found is not None:
            return found
        # one placeholder class per name, so that repeated references stay one class
        stand_ins = self.__dict__.setdefault("_stand_ins", {})
        if (module, name) not in stand_ins:
            stand_ins[(module, name)] = type(str(name).rsplit(".", 1)[-1], (RefusedObject,),
                                             {"refused_name": f"{module}.{name}"})
        return stand_ins[(module, name)]


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


# What torch.load uses of its pickle_module: Unpickler for the data, load for the legacy format's headers,
# __name__ (to tell dill apart).
RESTRICTED_PICKLE = types.ModuleType("ovss_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
RESTRICTED_PICKLE.UnpicklingError = pickle.UnpicklingError


def refused_names(obj, _seen=None, _depth=0) -> list[str]:
    """Sorted names of the refused globals anywhere inside `obj` (containers and placeholders' contents)."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen or _depth > 200 or isinstance(obj, (torch.Tensor, str, bytes, int, float)):
        return []
    seen.add(id(obj))
    if isinstance(obj, type):
        return [obj.refused_name] if issubclass(obj, RefusedObject) else []
    found: set[str] = set()
    if isinstance(obj, RefusedObject):
        found.add(obj.refused_name)
        children = [obj.args, obj.kwargs, obj.state, obj.items]
    elif isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    else:
        children = []
    for child in children:
        found.update(refused_names(child, seen, _depth + 1))
    return sorted(found)


def _load(path: Path, trust_pickle: bool):
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0] or "?"
            raise ConversionError(
                f"--trust-pickle: unpickling {path} needs the Python module {exc.name!r}, which is not installed "
                "(the released checkpoints pickle their training config as an OmegaConf object): install it "
                f"(pip install {top}), or drop --trust-pickle: the default restricted reader skips the training "
                "config and reads the weights") from None
        except Exception as exc:     # whatever the file's classes raise: one line, not a traceback
            raise ConversionError(f"--trust-pickle: cannot unpickle {path}: {type(exc).__name__}: {one_line(exc)}; "
                                  "drop --trust-pickle to read the weights with the restricted reader") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE)
    except Exception as exc:         # a corrupt or foreign file can fail anywhere in pickle or torch
        raise ConversionError(f"cannot read {path} as a PyTorch checkpoint: {type(exc).__name__}: "
                              f"{one_line(exc)}") from None


def read_checkpoint(path: Path, trust_pickle: bool = False) -> tuple[dict, list[str]]:
    """(the model's state dict, the refused classes left as placeholders elsewhere in the file, e.g. the
    training config) from a checkpoint ({'model': ...}, {'state_dict': ...} or flat)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"cannot read {path}: no such file")
    top = _load(path, trust_pickle)
    obj, where = top, "the file"
    for key in ("model", "state_dict"):
        if isinstance(top, dict) and key in top:
            obj, where = top[key], f"the weights under {key!r}"
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        refused = refused_names(obj)
        if refused:
            raise ConversionError(
                f"{path}: {where} need {', '.join(refused)}, which the restricted reader refuses to unpickle (it "
                "admits tensors and plain containers only); --trust-pickle reads the file fully, running the code "
                "it names: only for a file from a source you trust")
        raise ConversionError(f"{path}: expected a state dict of tensors (or a dict with one under 'model')")
    skipped = refused_names([v for k, v in top.items() if v is not obj]) if isinstance(top, dict) else []
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}, skipped
