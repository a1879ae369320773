"""The one loaded Segmenter, its vocabulary and the vocabulary version, behind one lock.

Topic, parameter and service all call set_vocabulary() here: one path, one version counter. The engine
prepares the text (tokenised prompts) inside set_vocabulary, so it happens once per change, never per frame."""
from __future__ import annotations

import gc
import threading
from typing import Optional, Sequence

from ovss_ros.prompts import VocabularyError


class EngineState:
    def __init__(self) -> None:
        self.lock = threading.RLock()     # held by the worker for a whole segment() call
        self.segmenter = None
        self.names: tuple = ()
        self.version = 0                  # 0 = no vocabulary yet
        self.preparations = 0             # text preparations so far (diagnostics; tests check it)
        self.pending: Optional[list] = None   # asked for while no model was loaded

    def set_vocabulary(self, names: Sequence[str]) -> tuple[bool, str]:
        """Apply a vocabulary. Returns (changed, message); raises VocabularyError with the reason if refused,
        leaving the current vocabulary in use."""
        if isinstance(names, str):
            raise VocabularyError("vocabulary must be a list of class names")
        names = list(names)
        with self.lock:
            if self.segmenter is None:
                self.pending = names
                return False, "stored: applied when the model is loaded (node not configured or deactivated)"
            if self.names and [str(n).strip() for n in names] == list(self.names):
                return False, "unchanged"
            new = self.segmenter.set_vocabulary(names)   # raises VocabularyError; old one stays
            self.preparations += 1
            if new == self.names:
                return False, "unchanged"
            self.names, self.version = new, self.version + 1
            return True, f"vocabulary version {self.version}: {len(new)} classes"

    def attach(self, segmenter) -> Optional[str]:
        """Use a freshly loaded segmenter: re-apply the current vocabulary (same version), then any pending
        one. Returns an error text if the pending vocabulary was refused."""
        with self.lock:
            self.segmenter = segmenter
            if self.names:
                segmenter.set_vocabulary(self.names)
                self.preparations += 1
            pending, self.pending = self.pending, None
        if pending is not None:
            try:
                self.set_vocabulary(pending)
            except VocabularyError as exc:
                return str(exc)
        return None

    def release(self) -> None:
        """Drop the model (waits for a running frame) and give its memory back, GPU included."""
        with self.lock:
            seg, self.segmenter = self.segmenter, None
            on_cuda = seg is not None and getattr(getattr(seg, "device", None), "type", "") == "cuda"
            del seg
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()
