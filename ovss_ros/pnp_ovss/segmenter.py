"""PnP-OVSS (Luo et al., CVPR 2024) behind the engine's face: BLIP's image-text matching model, GradCAM on
its cross-attention, Salience Dropout, class presence from the match score, blur + DenseCRF. The steps are
one file each in this folder; frame_batch.py runs them on a batch."""
from __future__ import annotations

import os
import threading
from typing import Optional

import numpy as np
import torch

from ..engine.config import vision_autocast_dtype
from ..engine.image_io import preprocess, preprocess_torch
from ..engine.loading import dtype_name
from ..engine.segmenter import Segmenter
from . import text_pass, vision_attention
from .compiled import CompiledPasses, warm_up
from .config import PRESETS, SegmenterConfig, make_config
from .frame_batch import FrameBatch, FrameInput
from .model_check import ModelCheck
from .model_loading import LoadedModel, load_blip, wrap_blip
from .text_cache import TextCache


def _config_or_none(preset: str, overrides: dict) -> Optional[SegmenterConfig]:
    try:
        return make_config(preset, **overrides)
    except ValueError:
        return None


def _fits(check: ModelCheck, cfg: Optional[SegmenterConfig]) -> bool:
    try:
        return cfg is not None and check.check_config(cfg) is cfg
    except ValueError:
        return False


class PnpOvssSegmenter(Segmenter):
    """PnP-OVSS on a BLIP ITM model. Not thread-safe: one caller at a time."""

    method = "pnp_ovss"
    presence_kind = "itm_probability"
    config_class = SegmenterConfig

    def __init__(self, loaded: LoadedModel, config: Optional[SegmenterConfig] = None):
        self.check = ModelCheck.from_loaded(loaded)   # every check of settings and vocabularies
        self.text: Optional[TextCache] = None         # the vocabulary's text, prepared once
        self._mean = torch.tensor(loaded.image_mean, dtype=torch.float32, device=loaded.device)
        self._std = torch.tensor(loaded.image_std, dtype=torch.float32, device=loaded.device)
        # no one reads the ViT's attention probabilities: its self-attention runs fused (this model only)
        self._vision_model = vision_attention.use_sdpa(loaded.model.vision_model)
        self._compile_swap = threading.Lock()     # only for swapping passes: never held while compiling
        self.compiled: Optional[CompiledPasses] = None
        self._text_span = None                    # the compiled text stretches once they are ready
        super().__init__(loaded, config)
        self._apply_compile()

    @classmethod
    def _load(cls, model, preset, device, dtype, local_files_only, processor, overrides) -> "PnpOvssSegmenter":
        if not isinstance(model, (str, os.PathLike)):
            if isinstance(model, torch.nn.Module):
                if processor is None:
                    raise TypeError("an in-memory model needs processor= (its BlipProcessor or tokenizer)")
                return cls.from_model(model, processor, preset=preset, device=device, dtype=dtype, **overrides)
            raise TypeError(f"model: expected a Hugging Face id, a local directory or a "
                            f"BlipForImageTextRetrieval, got {type(model).__name__}")
        config = make_config(preset, **overrides)       # a bad parameter fails before the model loads
        loaded = load_blip(model, device=device or "auto", dtype=dtype or "float32",
                           local_files_only=local_files_only)
        return cls._for_preset(loaded, config, preset, overrides)

    @classmethod
    def from_model(cls, model, processor, preset: str = "paper", device=None, dtype=None,
                   **overrides) -> "PnpOvssSegmenter":
        """An in-memory transformers `BlipForImageTextRetrieval` and its `BlipProcessor` (or tokenizer).
        The model is set to eval mode and frozen in place; device/dtype None keep it where and as it is."""
        config = make_config(preset, **overrides)
        return cls._for_preset(wrap_blip(model, processor, device, dtype), config, preset, overrides)

    @classmethod
    def _for_preset(cls, loaded: LoadedModel, config: SegmenterConfig, preset: str,
                    overrides) -> "PnpOvssSegmenter":
        try:
            return cls(loaded, config)
        except ValueError as exc:        # the preset does not fit this model: name one that does
            check = ModelCheck.from_loaded(loaded)
            fits = [p for p in PRESETS if p != preset and _fits(check, _config_or_none(p, overrides))]
            if not fits:
                raise
            raise ValueError(f"{exc}; the `{fits[0]}` preset fits this model") from exc

    def _check_config(self, cfg: SegmenterConfig) -> SegmenterConfig:
        return self.check.check_config(cfg)

    def _config_changed(self) -> None:
        self._apply_compile()

    def _prepare_text(self, classes) -> tuple[str, ...]:
        names, presence = self.check.prompts(classes, self._config)   # VocabularyError names the problem
        self.text = TextCache(self.model, presence, self._config.prompt_mode == "per_class",
                              lambda sel: self.check.single_caption(sel, self._config), names, self.device)
        return names

    # -- frames ---------------------------------------------------------------------------------
    def vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image tokens [F, N+1, D] of model inputs [F, 3, S, S] (no gradient: GradCAM starts at the text)."""
        return self.run_vision(self._vision_model, pixel_values)

    def run_vision(self, vision_model, pixel_values: torch.Tensor) -> torch.Tensor:
        """vision() through `vision_model` (the ViT or its compiled form) under this model's settings."""
        param_dtype = next(self.model.parameters()).dtype
        cast = vision_autocast_dtype(self._config.vision_dtype, dtype_name(param_dtype), self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=getattr(torch, cast or "float32"),
                                             enabled=cast is not None):
            out = vision_model(pixel_values=pixel_values.to(param_dtype), interpolate_pos_encoding=True)
        return out.last_hidden_state.to(param_dtype)

    def _numpy_input(self, rgb: np.ndarray) -> FrameInput:
        if self._device_preprocessing():        # the uint8 frame goes up once; the tensor face's steps there
            frame = self._tensor_input(torch.from_numpy(rgb).to(self.device))
            frame.rgb_host, frame.rgb_device = rgb, None    # DenseCRF reads the host copy: no download
            return frame
        pixels = preprocess(rgb, self.input_size, self.loaded.image_mean, self.loaded.image_std)
        return FrameInput(torch.from_numpy(pixels).to(self.device), rgb.shape[:2], None, rgb_host=rgb)

    def _tensor_input(self, frame: torch.Tensor) -> FrameInput:
        return FrameInput(preprocess_torch(frame, self.input_size, self._mean, self._std), tuple(frame.shape[:2]),
                          None, rgb_device=frame)

    def _run_frames(self, inputs, forced, want, watch):
        for frame, present in zip(inputs, forced):
            frame.present = present
        return FrameBatch(self, inputs, want, watch).run()

    # -- compilation ------------------------------------------------------------------------------
    def _apply_compile(self) -> None:
        """compile=torch_compile: the ViT and the text layers go through torch.compile (PyTorch 2), compiled
        on a thread of its own (compiled.py); frames run eager until it is done (wait_compiled)."""
        want = self._config.compile == "torch_compile"
        with self._compile_swap:
            if want == (self.compiled is not None):
                return
            self.compiled = CompiledPasses(self.model) if want else None
            self._vision_model, self._text_span = self.model.vision_model, None
        if want:
            self.compiled.start(lambda passes: warm_up(self, passes), self._use_compiled)

    def _use_compiled(self, passes: CompiledPasses) -> None:
        with self._compile_swap:
            if self.compiled is passes:    # still wanted: compile was not switched off (or on anew) meanwhile
                self._vision_model, self._text_span = passes.vision, passes.text

    def wait_compiled(self, timeout: Optional[float] = None) -> bool:
        """compile=torch_compile: wait for the compilation; True once frames run compiled."""
        passes = self.compiled
        return passes is not None and passes.wait(timeout) and self._text_span is passes.text

    def itm(self, prefix, kv, image_bias=None, capture=()):
        """text_pass.itm_pass on this model (compiled once compile=torch_compile's compilation is done)."""
        return text_pass.itm_pass(self.model, prefix, kv, image_bias, capture, span=self._text_span)
