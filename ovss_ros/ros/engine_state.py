"""What the node's engine is: the checks of the configured model, the engine settings, the vocabulary and its
version, and (while active) the loaded Segmenter.

Checking and applying are separate. `check_*` run on the caller's thread, change nothing and raise with the
reason; `apply_*` run on the worker thread only (between frames), so a vocabulary or settings change never
waits for a frame in flight and text preparation never runs on an executor thread. The model's text side
(tokenizer, sizes) is known from configure on, so a vocabulary is checked the same way while inactive as
while active.

Either method: the checker and config are PnP-OVSS's (ModelCheck, SegmenterConfig) or PGSeg's (PGSegCheck,
PGSegConfig); which fields shape the text comes from the config's knob table."""
from __future__ import annotations

import gc
import threading
from typing import Sequence

from ovss_ros.engine.vocabulary import VocabularyError

from .knobs import knobs_of
from .process_tuning import release_free_memory


def _prompts_differ(a, b) -> bool:
    return any(getattr(a, k) != getattr(b, k) for k in knobs_of(a).prompt_fields)


class EngineState:
    def __init__(self, checker, config) -> None:
        self.lock = threading.RLock()     # held by the worker for a whole frame, and while swapping models
        self.checker = checker            # ModelCheck / PGSegCheck of the configured model
        self.config = checker.check_config(config)
        self.segmenter = None
        self.names: tuple = ()
        self.version = 0                  # 0 = no vocabulary yet; +1 per applied change
        self.preparations = 0             # text preparations so far (diagnostics; tests check it)

    # -- checks: no side effects ------------------------------------------------------------------
    def check_vocabulary(self, names: Sequence[str]) -> tuple:
        if isinstance(names, str):
            raise VocabularyError("vocabulary must be a list of class names")
        return self.checker.check_vocabulary(list(names), self.config)

    def check_config(self, changes: dict):
        """The engine settings after `changes`, or ValueError/VocabularyError with the reason."""
        new = self.checker.check_config(self.config.replace(**changes))
        if self.names and _prompts_differ(new, self.config):
            self.checker.check_vocabulary(list(self.names), new)   # the vocabulary in use must still fit
        return new

    # -- applying: worker thread ------------------------------------------------------------------
    def apply_vocabulary(self, names: Sequence[str]) -> bool:
        """Use a checked vocabulary; True if it changed. Prepares the text when a model is loaded."""
        with self.lock:
            names = self.checker.check_vocabulary(list(names), self.config)
            if names == self.names:
                return False
            if self.segmenter is not None:
                self.segmenter.set_vocabulary(names)
                self.preparations += 1
            self.names, self.version = names, self.version + 1
            return True

    def accept_config(self, config) -> None:
        """Settings that passed check_config: later vocabularies are checked against them at once; the
        loaded model takes them in apply_config, on the worker thread."""
        self.config = config

    def apply_config(self) -> None:
        with self.lock:
            seg, config = self.segmenter, self.config
            if seg is None or seg.config == config:
                return
            prompts_changed = _prompts_differ(config, seg.config)
            seg.update_config(**config.to_dict())
            if prompts_changed and seg.vocabulary:
                self.preparations += 1

    def attach(self, segmenter) -> None:
        """Use a freshly loaded segmenter with the current settings and vocabulary (same version)."""
        with self.lock:
            segmenter.update_config(**self.config.to_dict())
            if self.names:
                segmenter.set_vocabulary(self.names)
                self.preparations += 1
            self.segmenter = segmenter

    def release(self, wait: bool = True) -> bool:
        """Drop the model and give its memory back, GPU included. wait=False gives up (returns False) when
        a frame holds the engine, e.g. at shutdown, where the process is about to end anyway."""
        if not self.lock.acquire(blocking=wait):
            return False
        try:
            seg, self.segmenter = self.segmenter, None
            on_cuda = seg is not None and getattr(getattr(seg, "device", None), "type", "") == "cuda"
            del seg
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()
            release_free_memory()   # the freed model and frames, back to the system (process_tuning says why)
            return True
        finally:
            self.lock.release()
