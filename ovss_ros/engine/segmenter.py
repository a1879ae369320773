"""The engine's face, one for both methods: load a checkpoint (the method is read from it), set a vocabulary
once (its text prepared and cached), then segment many frames through the numpy face (`segment`,
`segment_batch`) or the tensor face (`segment_torch`, `segment_torch_batch`), asking for the outputs needed.

`Segmenter` owns everything but the method: settings updates, vocabulary versions, outputs on request,
forced classes, the two faces, batching, result building and timing. A method subclasses it and supplies its
steps (see "What a method supplies" below); `engine/methods.py` says which subclass a checkpoint needs.
"""
from __future__ import annotations

import os
from typing import Collection, Optional, Sequence, Union

import numpy as np
import torch

from .image_io import check_frame_tensor, to_rgb_uint8
from .loading import DEFAULT_MODEL
from .methods import REGISTRY, check_method, check_method_name, detect_method, module_method, segmenter_class
from .profiling import Stopwatch
from .result import FrameOutput, SegmentationResult, TensorResult
from .vocabulary import VocabularyError, normalize_name

# What segment() can return: labels always; the others only when asked for.
OUTPUTS = ("labels", "confidence", "class_maps", "raw_maps")
# How confidence and class maps come back (result.py): float32 in [0, 1], or "uint8" levels round(255 x)
# made on the model's device before the copy (a quarter of the bytes; what mono8 images publish).
SCORE_DTYPES = ("float32", "uint8")


def check_outputs(outputs: Collection[str]) -> frozenset:
    if isinstance(outputs, str):
        outputs = (outputs,)
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"unknown outputs {unknown}: expected some of {list(OUTPUTS)}")
    return frozenset(outputs) | {"labels"}


def resolve_present(vocab: Sequence[str], present: Optional[Sequence[Union[str, int]]]) -> Optional[list[int]]:
    """Forced classes (names normalised as the vocabulary's, case ignored, or vocabulary indices) as sorted
    indices."""
    if present is None:
        return None
    index = {n.casefold(): i for i, n in enumerate(vocab)}
    out = set()
    for p in present:
        if isinstance(p, (int, np.integer)) and not isinstance(p, bool) and 0 <= int(p) < len(vocab):
            out.add(int(p))
        elif isinstance(p, str) and normalize_name(p).casefold() in index:
            out.add(index[normalize_name(p).casefold()])
        else:
            raise VocabularyError(f"present class {p!r} is not in the vocabulary")
    return sorted(out)


def check_score_dtype(score_dtype: str) -> str:
    if score_dtype not in SCORE_DTYPES:
        raise ValueError(f"score_dtype={score_dtype!r}: expected one of {list(SCORE_DTYPES)}")
    return score_dtype


def score_levels(t: torch.Tensor) -> torch.Tensor:
    """Scores in [0, 1] -> uint8 levels round(255 x), on the tensor's device (as numpy's round: half to even)."""
    return t.float().clamp(0, 1).mul(255).round().to(torch.uint8)


def _scores(t: Optional[torch.Tensor], score_dtype: str) -> Optional[torch.Tensor]:
    if t is None:
        return None
    return score_levels(t) if score_dtype == "uint8" else t.float()


def _host(t) -> Optional[np.ndarray]:
    return None if t is None else t.cpu().numpy()        # one download, of what the caller asked for


def _device_labels(labels: torch.Tensor, classes: int, numpy: bool) -> torch.Tensor:
    """Label ids in the result's dtype, cast on the device so that only those bytes are copied: uint8 up to
    254 classes, above that int32 (tensor face) or int16 holding the numpy face's uint16 bit pattern (torch
    before 2.3 has no uint16; the host views it as uint16)."""
    if classes <= 254:
        return labels.to(torch.uint8)
    return labels.to(torch.int16 if numpy else torch.int32)


class Segmenter:
    """Open-vocabulary segmentation of RGB frames. `Segmenter.from_pretrained(model)` returns the subclass of
    the checkpoint's method (PnP-OVSS for BLIP, PGSeg for GroupViT). Not thread-safe: one caller at a time.

    What a method supplies: `method`, `presence_kind`, `config_class` (class attributes); `_load` (a
    classmethod building it from a checkpoint or an in-memory model); `_check_config`; `_prepare_text`
    (check a vocabulary, cache its text, return the names; a refused one raises VocabularyError before
    changing anything); `_numpy_input` / `_tensor_input` (one frame as
    the model takes it); `_run_frames` (the method's steps on a batch, one FrameOutput per frame); and
    optionally `_config_changed`."""

    method = ""
    presence_kind = ""
    config_class = None
    score_dtypes = SCORE_DTYPES      # what score_dtype= takes (the ROS outputs ask for uint8 where offered)

    def __new__(cls, loaded=None, config=None):
        """`Segmenter(loaded, config)` builds the loaded model's method (as `from_pretrained` does)."""
        if not cls.method and loaded is not None:
            method = module_method(loaded.model)
            if method is None:
                raise TypeError(f"no method runs a {type(loaded.model).__name__}: expected one of "
                                "BlipForImageTextRetrieval, PGSegModel, GroupViTModel")
            cls = segmenter_class(method)
        return super().__new__(cls)

    def __init__(self, loaded, config=None):
        """`loaded`: the method's loaded model (model, tokenizer, image statistics, device)."""
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.profile = False         # True: per-stage timings wait for the device at each stage
        self._names: tuple[str, ...] = ()
        self._vocabulary_version = 0
        if config is None:
            config = self.config_class.from_preset(REGISTRY[self.method].default_preset)
        self._config = self._check_config(config)

    # -- loading --------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model=DEFAULT_MODEL, preset: Optional[str] = None, device=None, dtype=None,
                        local_files_only: Optional[bool] = None, processor=None, method: Optional[str] = None,
                        **overrides) -> "Segmenter":
        """`model`: a Hugging Face id or local directory (device None = "auto", dtype None = float32), or an
        in-memory model with `processor=` its processor or tokenizer (device/dtype None keep it as it is).
        `overrides` are the method's settings.

        `method`: "pnp_ovss" or "pgseg"; None = what the checkpoint is (BLIP -> pnp_ovss, GroupViT -> pgseg;
        on a method's own class, that method). A checkpoint of the other kind is one ModelLoadError naming
        both. `preset` None = the method's published protocol ("paper" / "pgseg")."""
        if cls.method:
            if method is not None and method != cls.method:
                raise ValueError(f"{cls.__name__} runs method {cls.method!r}, not {method!r}")
            method = cls.method
        elif method is not None:
            check_method_name(method)
        if isinstance(model, (str, os.PathLike)):
            found = detect_method(model, local_files_only)
            if method is not None and found != method:
                check_method(REGISTRY[found].model_type, method, str(model))
            method = found
        elif method is None:
            method = module_method(model) or "pnp_ovss"
        impl = cls if cls.method == method else segmenter_class(method)
        return impl._load(model, preset or REGISTRY[method].default_preset, device, dtype, local_files_only,
                          processor, overrides)

    @classmethod
    def from_model(cls, model, processor, preset: Optional[str] = None, device=None, dtype=None,
                   **overrides) -> "Segmenter":
        """An in-memory model (transformers BlipForImageTextRetrieval, PGSegModel or GroupViTModel) and its
        processor or tokenizer; device/dtype None keep it where and as it is."""
        return cls.from_pretrained(model, preset=preset, device=device, dtype=dtype, processor=processor,
                                   **overrides)

    @classmethod
    def _load(cls, model, preset, device, dtype, local_files_only, processor, overrides) -> "Segmenter":
        raise NotImplementedError

    # -- settings -------------------------------------------------------------------------------------
    @property
    def config(self):
        return self._config

    def _check_config(self, cfg):
        """The settings checked against the loaded model (layer counts, patch size, dtype); returns them."""
        return cfg

    def _config_changed(self) -> None:
        """Called after every settings change."""

    def update_config(self, **changes):
        """Change settings at run time; the vocabulary's text is prepared again only if a prompt field
        changed (the settings class's PROMPT_FIELDS). A vocabulary the new settings refuse leaves the old
        settings and text in place and raises VocabularyError."""
        new = self._check_config(self._config.replace(**changes))
        old, self._config = self._config, new
        vocab = self.vocabulary
        if vocab and any(getattr(old, k) != getattr(new, k) for k in new.PROMPT_FIELDS):
            try:
                self.set_vocabulary(vocab)
            except VocabularyError:
                self._config = old       # a refused vocabulary changed nothing: the old text is in place
                raise
        self._config_changed()
        return new

    @property
    def input_size(self) -> int:
        """The model input's side (square warp or short side, as the method resizes)."""
        return self._config.image_size or self.loaded.native_image_size

    # -- vocabulary (the expensive text part, paid once per change) ----------------------------------------
    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self._names

    @property
    def vocabulary_version(self) -> int:
        """Counts the vocabularies prepared (0 = none yet): a result computed under another version used
        other text."""
        return self._vocabulary_version

    def set_vocabulary(self, classes: Sequence[str]) -> tuple[str, ...]:
        """Check the class names (VocabularyError names the problem; nothing changes then) and prepare
        everything about their text that does not depend on images. Returns the names as normalised."""
        names = self._prepare_text(classes)
        self._names = names
        self._vocabulary_version += 1
        return names

    def _prepare_text(self, classes: Sequence[str]) -> tuple[str, ...]:
        raise NotImplementedError

    # -- frames ---------------------------------------------------------------------------------------
    def _start(self, presents, count: int) -> list:
        if not self._names:
            raise VocabularyError("no vocabulary set: call set_vocabulary() first")
        presents = list(presents) if presents is not None else [None] * count
        if len(presents) != count:
            raise ValueError(f"{count} frames but {len(presents)} present lists")
        return [resolve_present(self._names, p) for p in presents]

    @torch.no_grad()
    def segment_batch(self, images: Sequence, presents: Optional[Sequence] = None,
                      outputs: Collection[str] = ("labels",),
                      score_dtype: str = "float32") -> list[SegmentationResult]:
        """Segment several frames (e.g. one per camera; sizes may differ), batched where the method can;
        results in input order. `presents`: per frame, forced classes (names or indices: the classes to
        segment instead of the method's own choice, e.g. ground truth) or None. A bad frame raises for the
        whole batch (ImageError), as segment() would for it alone. `score_dtype`: see SCORE_DTYPES.

        With the model on an accelerator each frame goes up as uint8 and is resized and normalised there (the
        tensor face's steps); on the CPU the method's reference resampling runs on the host."""
        want = check_outputs(outputs)
        check_score_dtype(score_dtype)
        forced = self._start(presents, len(images))
        if not images:
            return []
        watch = Stopwatch(self.device, self.profile)
        rgbs = [to_rgb_uint8(im, self._config.max_image_pixels) for im in images]
        inputs = [self._numpy_input(rgb) for rgb in rgbs]
        watch.lap("preprocess")
        outs = self._run_frames(inputs, forced, want, watch)
        # the download of what was asked for, each field cast to its result dtype first
        return self._timed([self._numpy_result(o, score_dtype) for o in outs], watch)

    def segment(self, image, present: Optional[Sequence[Union[str, int]]] = None,
                outputs: Collection[str] = ("labels",), score_dtype: str = "float32") -> SegmentationResult:
        """Segment one RGB image (numpy H x W [x 3|4] or PIL). `present` forces the classes to segment.
        `outputs`: what to return besides labels (see OUTPUTS); `score_dtype`: see SCORE_DTYPES."""
        return self.segment_batch([image], [present], outputs, score_dtype)[0]

    @torch.no_grad()
    def segment_torch_batch(self, frames: Sequence[torch.Tensor], presents: Optional[Sequence] = None,
                            outputs: Collection[str] = ("labels",),
                            score_dtype: str = "float32") -> list[TensorResult]:
        """The tensor face: H x W x 3 uint8 tensors (on any device) in, tensors on the model's device out.
        Resize and normalisation run on the device; nothing goes to the host but what the method's
        HOST_SYNCS lists."""
        want = check_outputs(outputs)
        check_score_dtype(score_dtype)
        forced = self._start(presents, len(frames))
        if not frames:
            return []
        watch = Stopwatch(self.device, self.profile)
        max_pixels = self._config.max_image_pixels
        inputs = [self._tensor_input(check_frame_tensor(f, max_pixels).to(self.device)) for f in frames]
        watch.lap("preprocess")
        outs = self._run_frames(inputs, forced, want, watch)
        return self._timed([self._tensor_result(o, score_dtype) for o in outs], watch)

    def segment_torch(self, frame: torch.Tensor, present: Optional[Sequence[Union[str, int]]] = None,
                      outputs: Collection[str] = ("labels",), score_dtype: str = "float32") -> TensorResult:
        """One frame through the tensor face (see segment_torch_batch)."""
        return self.segment_torch_batch([frame], [present], outputs, score_dtype)[0]

    def _device_preprocessing(self) -> bool:
        """The numpy face resizes and normalises on the model's device (the uint8 frame goes up once; no host
        resampling) unless that is the CPU, where the method's reference resampling stays exact. Tests force
        it to hold the device path to its tolerance."""
        return self.device.type != "cpu"

    def _numpy_input(self, rgb: np.ndarray):
        raise NotImplementedError

    def _tensor_input(self, frame: torch.Tensor):
        raise NotImplementedError

    def _run_frames(self, inputs: list, forced: list, want: frozenset, watch: Stopwatch) -> list[FrameOutput]:
        raise NotImplementedError

    # -- results --------------------------------------------------------------------------------------
    @staticmethod
    def _timed(results: list, watch: Stopwatch) -> list:
        timings = watch.finish()    # on a GPU without profiling: work queued, not necessarily done
        for r in results:
            r.timings = dict(timings)
        return results

    def _common_fields(self, o: FrameOutput) -> dict:
        n = len(self._names)
        present = np.zeros(n, dtype=bool)
        present[o.present] = True
        presence = o.presence if isinstance(o.presence, np.ndarray) else _host(o.presence.float())   # host sync
        return dict(class_names=self._names, class_ids=np.asarray([i + 1 for i in o.present], np.int64),
                    present=present, presence=np.asarray(presence, np.float32), presence_kind=self.presence_kind)

    def _numpy_result(self, o: FrameOutput, score_dtype: str = "float32") -> SegmentationResult:
        """Each field cast on the device, then copied once: labels 1 byte per pixel (2 above 254 classes),
        scores 4 or (uint8) 1, raw maps 4."""
        labels = _host(_device_labels(o.labels, len(self._names), numpy=True))
        if labels.dtype == np.int16:
            labels = labels.view(np.uint16)
        return SegmentationResult(labels=labels, **self._common_fields(o),
                                  confidence=_host(_scores(o.confidence, score_dtype)),
                                  class_maps=_host(_scores(o.class_maps, score_dtype)),
                                  raw_maps=_host(_scores(o.raw_maps, "float32")))

    def _tensor_result(self, o: FrameOutput, score_dtype: str = "float32") -> TensorResult:
        return TensorResult(labels=_device_labels(o.labels, len(self._names), numpy=False),
                            **self._common_fields(o), confidence=_scores(o.confidence, score_dtype),
                            class_maps=_scores(o.class_maps, score_dtype), raw_maps=o.raw_maps)
