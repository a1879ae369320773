"""compile=torch_compile: the compiled ViT and text layers of one model, compiled off the caller's thread.

- Owned by its segmenter: each instance compiles private copies (own code object and globals) of its ViT's
  forward and of the text stretch function (`text_pass.layer_span`), so two models share no compiled
  function, dynamo cache entry or recompile budget (dynamo's limit is 8 graphs per code object: shared, a
  node reloading its model a few times would pass it and run eager).
- Batch sizes: the warm-up runs the ViT at 1 frame, then at 2 with the batch dimension marked dynamic: that
  second graph serves every later batch size (1..N cameras, pixel-mode subsets) without another compile.
- Off the caller's thread: `start()` runs the warm-up (both passes on stand-in inputs: zeros, never a real
  frame or vocabulary) on a thread of its own. Until it is done the segmenter runs eager, so a compile never
  holds the engine lock, and never stalls the node's worker, which applies vocabulary and parameter changes.
- Every graph compiled is counted per pass (`graphs`): tests and diagnostics see recompiles.
"""
from __future__ import annotations

import threading
import types
from typing import Callable, Optional

import torch

from . import text_pass

BACKEND = "inductor"    # tests swap in a cheaper backend; the graph count does not depend on it


def _private_copy(fn):
    """`fn` with a code object and globals of its own: dynamo keeps graphs and recompile counts per code
    object, and stores each compiled graph as a global of the function it compiled (here: in the copy's)."""
    copy = types.FunctionType(fn.__code__.replace(co_name=fn.__name__), dict(fn.__globals__), fn.__name__,
                              fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__dict__.update(fn.__dict__)
    return copy


def _compiled_forward(module, backend):
    """torch.compile of `module`'s forward through a private copy: a model's compiled graphs and recompile
    budget are its own (compiling the module itself files them under its class's forward, for every model)."""
    return torch.compile(types.MethodType(_private_copy(type(module).forward), module), backend=backend)


def _counting(backend, graphs: dict, key: str):
    compile_graph = torch._dynamo.lookup_backend(backend) if isinstance(backend, str) else backend

    def count_and_compile(gm, example_inputs):
        compiled_graph = compile_graph(gm, example_inputs)
        graphs[key] += 1      # after: dynamo hands a graph again when it restarts its analysis
        return compiled_graph
    return count_and_compile


class CompiledSpans:
    """text_pass.layer_span compiled once per kind of stretch (its length, where it starts and ends, the
    dropout bias or none, gradient or none). Each kind is a private copy of the function, so dynamo's
    recompile limit (8 per function) counts only the shape specialisations of one kind (sizes 1 vs more);
    one function for every kind would pass that limit with GradCAM on every layer and then run eager."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self._kinds: dict[tuple, Callable] = {}

    def __call__(self, layers, keys, values, h, probs, self_bias, bias, from_prefix, stop_at_probs, head):
        kind = (len(layers), probs is None, from_prefix, stop_at_probs, bias is None, torch.is_grad_enabled(),
                h.requires_grad)
        fn = self._kinds.get(kind)
        if fn is None:
            fn = self._kinds[kind] = torch.compile(_private_copy(text_pass.layer_span), dynamic=True,
                                                   backend=self._backend)
        return fn(layers, keys, values, h, probs, self_bias, bias, from_prefix, stop_at_probs, head)

    @property
    def kinds(self) -> int:
        return len(self._kinds)


class CompiledPasses:
    """The compiled ViT (`vision`) and text stretch (`text`) of one BLIP model, and the warm-up's state."""

    def __init__(self, model, backend=None) -> None:
        backend = backend or BACKEND
        self.graphs = {"vision": 0, "text": 0}    # graphs compiled so far, per pass
        self.vision = _compiled_forward(model.vision_model, _counting(backend, self.graphs, "vision"))
        self.text = CompiledSpans(_counting(backend, self.graphs, "text"))
        self.ready = threading.Event()
        self.error: Optional[str] = None          # why the warm-up failed (the segmenter then stays eager)
        self._thread: Optional[threading.Thread] = None

    @property
    def state(self) -> str:
        if self.ready.is_set():
            return "ready"
        return f"failed: {self.error}" if self.error else "compiling"

    def start(self, warm_up: Callable[["CompiledPasses"], None],
              on_ready: Callable[["CompiledPasses"], None]) -> None:
        """Run warm_up(self) on a thread of its own, then on_ready(self) (not on failure: eager stays)."""
        def run() -> None:
            try:
                warm_up(self)
            except Exception as exc:   # noqa: BLE001 - a compiler missing on this machine: keep serving eager
                self.error = f"{type(exc).__name__}: {exc}"
                return
            self.ready.set()
            on_ready(self)
        self._thread = threading.Thread(target=run, name="ovss-compile", daemon=True)
        self._thread.start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the warm-up ended; True if the compiled passes are in use."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready.is_set()


# stand-in caption count and length: sizes no model dimension has (heads, head size, tokens), so that dynamo's
# duck sizing does not tie them to one and recompile when a real frame's sizes differ
WARM_CAPTIONS, WARM_LENGTH = 3, 7


def warm_up(seg, passes: CompiledPasses) -> None:
    """The passes `seg`'s current settings run, on stand-in inputs: the ViT at 1 then 2 frames (the second
    compile makes the batch dimension symbolic); at 1 and 2 frames, the text stretches of class presence
    (presence=itm; with the captured layers for prompt_mode per_class) and of GradCAM (with the dropout
    bias when attention-mode dropout runs a second round)."""
    model, device, cfg = seg.model, seg.device, seg.config
    dtype = next(model.parameters()).dtype
    layers = seg.check.layers(cfg.gradcam_layer)
    width = model.text_encoder.config.hidden_size
    passes_run = [(False, layers)]
    if cfg.dropout_mode == "attention" and cfg.dropout_rounds > 1:
        passes_run.append((True, layers))
    if cfg.presence == "itm":
        passes_run.append((False, layers if cfg.prompt_mode == "per_class" else ()))
    for frames in (1, 2):
        pixels = torch.zeros(frames, 3, seg.input_size, seg.input_size, device=device)
        if frames > 1:
            torch._dynamo.mark_dynamic(pixels, 0)     # the batch dimension, and nothing else, symbolic
        kv = text_pass.image_kv(model, seg.run_vision(passes.vision, pixels))
        rows, length = frames * WARM_CAPTIONS, WARM_LENGTH
        prefix = text_pass.TextPrefix(torch.zeros(rows, length, width, dtype=dtype, device=device),
                                      torch.ones(rows, length, dtype=dtype, device=device),
                                      torch.zeros(rows, 1, 1, length, dtype=dtype, device=device))
        bias = torch.zeros(frames, kv.keys[0].shape[2], dtype=dtype, device=device)
        for with_bias, capture in passes_run:
            logits, probs = text_pass.itm_pass(model, prefix, kv, bias if with_bias else None, capture,
                                               span=passes.text)
            if capture:
                torch.autograd.grad(logits[:, 1].sum(), [probs[i] for i in capture])
