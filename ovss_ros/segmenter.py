"""The engine's face: set a vocabulary once (text prepared and cached), then segment many frames."""
from __future__ import annotations

import os
from typing import Collection, Optional, Sequence, Union

import numpy as np
import torch

from . import text_pass
from .config import PRESETS, SegmenterConfig, make_config, vision_autocast_dtype
from .frame_batch import FrameBatch, FrameInput, FrameOutput
from .image_io import check_frame_tensor, preprocess, preprocess_torch, to_rgb_uint8
from .model_check import ModelCheck
from .model_loading import DEFAULT_MODEL, LoadedModel, dtype_name, load_blip, wrap_blip
from .prompts import VocabularyError
from .result import SegmentationResult, TensorResult
from .segmenter_common import OUTPUTS, Stopwatch, check_outputs, resolve_present  # noqa: F401 (public here too)
from .text_cache import TextCache

_PROMPT_FIELDS = {"prompt_template", "prompt_mode", "gradcam_rows", "max_classes", "max_class_name_length"}


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


class Segmenter:
    """PnP-OVSS on a BLIP ITM model. Not thread-safe: one caller at a time."""

    method = "pnp_ovss"

    def __init__(self, loaded: LoadedModel, config: Optional[SegmenterConfig] = None):
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.check = ModelCheck.from_loaded(loaded)   # every check of settings and vocabularies
        self.text: Optional[TextCache] = None         # the vocabulary's text, prepared once
        self.profile = False                          # True: per-stage timings wait for the GPU at each stage
        self._mean = torch.tensor(loaded.image_mean, dtype=torch.float32, device=self.device)
        self._std = torch.tensor(loaded.image_std, dtype=torch.float32, device=self.device)
        self._vision_model = self.model.vision_model
        self._config = self._checked(config or make_config("paper"))
        self._apply_compile()

    @classmethod
    def from_pretrained(cls, model=DEFAULT_MODEL, preset: Optional[str] = None, device=None, dtype=None,
                        local_files_only: Optional[bool] = None, processor=None, method: Optional[str] = None,
                        **overrides):
        """`model`: a Hugging Face id or local directory (device None = "auto", dtype None = float32), or an
        in-memory `BlipForImageTextRetrieval` with `processor=` its BlipProcessor or tokenizer (then this is
        `from_model`: device/dtype None keep the model as it is). `overrides` are engine parameters.

        `method`: "pnp_ovss" or "pgseg"; None = what the checkpoint is (BLIP -> pnp_ovss, GroupViT -> pgseg).
        A checkpoint of the other kind is one ModelLoadError naming both. PGSeg returns a `PGSegSegmenter`
        (same calls and results). `preset` None = the method's published protocol ("paper" / "pgseg")."""
        from .pgseg.loading import METHODS, check_method, detect_method

        if method is not None and method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {list(METHODS)}")
        if isinstance(model, (str, os.PathLike)):
            found = detect_method(model, local_files_only)
            if method is not None and found != method:
                check_method({"pnp_ovss": "blip", "pgseg": "groupvit"}[found], method, str(model))
            method = found
        elif method is None and type(model).__name__ in ("PGSegModel", "GroupViTModel"):
            method = "pgseg"
        if method == "pgseg":
            # one-way: pgseg.segmenter shares segmenter_common with this module, never imports it; loaded on
            # first use so a BLIP-only process skips the GroupViT code
            from .pgseg.segmenter import PGSegSegmenter

            if not isinstance(model, (str, os.PathLike)) and processor is None:
                raise TypeError("an in-memory GroupViT model needs processor= (its CLIP tokenizer)")
            return PGSegSegmenter.from_pretrained(model, preset=preset or "pgseg", device=device, dtype=dtype,
                                                  local_files_only=local_files_only, tokenizer=processor,
                                                  **overrides)
        preset = preset or "paper"
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
                   **overrides) -> "Segmenter":
        """An in-memory transformers `BlipForImageTextRetrieval` and its `BlipProcessor` (or tokenizer).
        The model is set to eval mode and frozen in place; device/dtype None keep it where and as it is."""
        config = make_config(preset, **overrides)
        return cls._for_preset(wrap_blip(model, processor, device, dtype), config, preset, overrides)

    @classmethod
    def _for_preset(cls, loaded: LoadedModel, config: SegmenterConfig, preset: str, overrides) -> "Segmenter":
        try:
            return cls(loaded, config)
        except ValueError as exc:        # the preset does not fit this model: name one that does
            check = ModelCheck.from_loaded(loaded)
            fits = [p for p in PRESETS if p != preset and _fits(check, _config_or_none(p, overrides))]
            if not fits:
                raise
            raise ValueError(f"{exc}; the `{fits[0]}` preset fits this model") from exc

    # -- configuration -------------------------------------------------------------------------
    @property
    def config(self) -> SegmenterConfig:
        return self._config

    def _checked(self, cfg: SegmenterConfig) -> SegmenterConfig:
        return self.check.check_config(cfg)

    def update_config(self, **changes) -> SegmenterConfig:
        """Change engine parameters at run time; the text cache is rebuilt only if prompts change."""
        new = self._checked(self._config.replace(**changes))
        old, self._config = self._config, new
        vocab = self.vocabulary
        if vocab and any(getattr(old, k) != getattr(new, k) for k in _PROMPT_FIELDS):
            try:
                self.set_vocabulary(vocab)
            except VocabularyError:
                self._config = old
                self.set_vocabulary(vocab)
                raise
        self._apply_compile()
        return new

    # -- vocabulary (the expensive text part, paid once per change) ------------------------------
    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.text.names if self.text is not None else ()

    def set_vocabulary(self, classes: Sequence[str]) -> tuple[str, ...]:
        """Check the class names and prepare everything about their text that does not depend on images."""
        names, presence = self.check.prompts(classes, self._config)   # VocabularyError names the problem
        self.text = TextCache(self.model, presence, self._config.prompt_mode == "per_class",
                              lambda sel: self.check.single_caption(sel, self._config), names, self.device)
        return names

    # -- frames ---------------------------------------------------------------------------------
    def vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image tokens [F, N+1, D] of model inputs [F, 3, S, S] (no gradient: GradCAM starts at the text)."""
        param_dtype = next(self.model.parameters()).dtype
        cast = vision_autocast_dtype(self._config.vision_dtype, dtype_name(param_dtype), self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=getattr(torch, cast or "float32"),
                                             enabled=cast is not None):
            out = self._vision_model(pixel_values=pixel_values.to(param_dtype), interpolate_pos_encoding=True)
        return out.last_hidden_state.to(param_dtype)

    def _resolve_present(self, present):
        return resolve_present(self.vocabulary, present)

    def _start(self, presents, count: int) -> list:
        if self.text is None:
            raise VocabularyError("no vocabulary set: call set_vocabulary() first")
        presents = list(presents) if presents is not None else [None] * count
        if len(presents) != count:
            raise ValueError(f"{count} frames but {len(presents)} present lists")
        return [self._resolve_present(p) for p in presents]

    @property
    def input_size(self) -> int:
        return self._config.image_size or self.loaded.native_image_size

    @torch.no_grad()
    def segment_batch(self, images: Sequence, presents: Optional[Sequence] = None,
                      outputs: Collection[str] = ("labels",)) -> list[SegmentationResult]:
        """Segment several frames (e.g. one per camera; sizes may differ) with one ViT pass and one text pass
        per round; results in input order. `presents`: per frame, forced classes or None. A bad frame raises
        for the whole batch (ImageError), as segment() would for it alone."""
        want = check_outputs(outputs)
        forced = self._start(presents, len(images))
        if not images:
            return []
        watch = Stopwatch(self.device, self.profile)
        cfg = self._config
        rgbs = [to_rgb_uint8(im, cfg.max_image_pixels) for im in images]
        frames = [FrameInput(torch.from_numpy(preprocess(rgb, self.input_size, self.loaded.image_mean,
                                                         self.loaded.image_std)).to(self.device),
                             rgb.shape[:2], p, rgb_host=rgb) for rgb, p in zip(rgbs, forced)]
        watch.lap("preprocess")
        outs = FrameBatch(self, frames, want, watch).run()
        results = [self._to_numpy(o) for o in outs]     # the download of what was asked for
        timings = watch.finish()
        for r in results:
            r.timings = dict(timings)
        return results

    def segment(self, image, present: Optional[Sequence[Union[str, int]]] = None,
                outputs: Collection[str] = ("labels",)) -> SegmentationResult:
        """Segment one RGB image (numpy H x W [x 3|4] or PIL). `present` forces the classes to segment (e.g.
        ground truth), bypassing class presence. `outputs`: what to return besides labels (see OUTPUTS)."""
        return self.segment_batch([image], [present], outputs)[0]

    @torch.no_grad()
    def segment_torch_batch(self, frames: Sequence[torch.Tensor], presents: Optional[Sequence] = None,
                            outputs: Collection[str] = ("labels",)) -> list[TensorResult]:
        """The tensor face: H x W x 3 uint8 tensors on the model's device in, device tensors out. Resize and
        normalisation run on the device (`image_io.preprocess_torch`, within one 8-bit level of the numpy
        face's PIL resize); nothing goes to the host but what HOST_SYNCS lists."""
        want = check_outputs(outputs)
        forced = self._start(presents, len(frames))
        if not frames:
            return []
        watch = Stopwatch(self.device, self.profile)
        max_pixels = self._config.max_image_pixels
        inputs = []
        for frame, p in zip(frames, forced):
            frame = check_frame_tensor(frame, max_pixels).to(self.device)
            inputs.append(FrameInput(preprocess_torch(frame, self.input_size, self._mean, self._std),
                                     tuple(frame.shape[:2]), p, rgb_device=frame))
        watch.lap("preprocess")
        outs = FrameBatch(self, inputs, want, watch).run()
        label_dtype = torch.uint8 if len(self.vocabulary) <= 254 else torch.int32
        results = [TensorResult(o.labels.to(label_dtype), self.vocabulary, o.presence, o.present,
                                o.confidence, o.class_maps, o.raw_maps) for o in outs]
        timings = watch.finish()     # on a GPU: work queued, not necessarily done (see Segmenter.profile)
        for r in results:
            r.timings = dict(timings)
        return results

    def segment_torch(self, frame: torch.Tensor, present: Optional[Sequence[Union[str, int]]] = None,
                      outputs: Collection[str] = ("labels",)) -> TensorResult:
        """One frame through the tensor face (see segment_torch_batch)."""
        return self.segment_torch_batch([frame], [present], outputs)[0]

    def _to_numpy(self, o: FrameOutput) -> SegmentationResult:
        n = len(self.vocabulary)
        present = np.zeros(n, dtype=bool)
        present[o.present] = True
        label_dtype = np.uint8 if n <= 254 else np.uint16

        def host(t):
            return None if t is None else t.float().cpu().numpy()

        return SegmentationResult(o.labels.cpu().numpy().astype(label_dtype), self.vocabulary, o.presence,
                                  present, np.asarray([i + 1 for i in o.present], np.int64),
                                  host(o.class_maps), host(o.confidence), {}, host(o.raw_maps))

    # -- compilation ------------------------------------------------------------------------------
    def _apply_compile(self) -> None:
        """compile=torch_compile: the ViT and the text layers go through torch.compile (PyTorch 2); the first
        frame of each new shape pays the compilation."""
        compiled = self._config.compile == "torch_compile"
        if compiled == (self._vision_model is not self.model.vision_model):
            return
        if compiled:
            self._vision_model = torch.compile(self.model.vision_model, dynamic=False)
        else:
            self._vision_model = self.model.vision_model

    def itm(self, prefix, kv, image_bias=None, capture=()):
        """text_pass.itm_pass on this model (compiled when compile=torch_compile)."""
        return text_pass.itm_pass(self.model, prefix, kv, image_bias, capture,
                                  compiled=self._config.compile == "torch_compile")
