"""The engine's face: set a vocabulary once (text prepared and cached), then segment many frames."""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Collection, Optional, Sequence, Union

import numpy as np
import torch

from . import class_presence, gradcam, postprocess, salience_dropout
from .config import PRESETS, SegmenterConfig, make_config
from .image_io import preprocess, to_rgb_uint8
from .model_loading import DEFAULT_MODEL, LoadedModel, load_blip, wrap_blip
from .model_check import ModelCheck
from .prompts import PromptBatch, VocabularyError
from .result import SegmentationResult

# What segment() can return: labels always; the others only when asked for.
OUTPUTS = ("labels", "confidence", "class_maps", "raw_maps")


def check_outputs(outputs: Collection[str]) -> frozenset:
    if isinstance(outputs, str):
        outputs = (outputs,)
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"unknown outputs {unknown}: expected some of {list(OUTPUTS)}")
    return frozenset(outputs) | {"labels"}


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


class _Stopwatch:
    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"
        self.times: dict[str, float] = {}
        self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times[stage] = self.times.get(stage, 0.0) + now - self.t
        self.t = now


class Segmenter:
    """PnP-OVSS on a BLIP ITM model. Not thread-safe: one caller at a time."""

    def __init__(self, loaded: LoadedModel, config: Optional[SegmenterConfig] = None):
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        gradcam.share_image_projections(self.model)
        self.check = ModelCheck.from_loaded(loaded)   # every check of settings and vocabularies
        self._vocab: tuple[str, ...] = ()
        self._presence_prompts: Optional[PromptBatch] = None
        self._single_cache: "OrderedDict[tuple, PromptBatch]" = OrderedDict()
        self._config = self._checked(config or make_config("paper"))

    @classmethod
    def from_pretrained(cls, model=DEFAULT_MODEL, preset: str = "paper", device=None, dtype=None,
                        local_files_only: Optional[bool] = None, processor=None, **overrides) -> "Segmenter":
        """`model`: a Hugging Face id or local directory (device None = "auto", dtype None = float32), or an
        in-memory `BlipForImageTextRetrieval` with `processor=` its BlipProcessor or tokenizer (then this is
        `from_model`: device/dtype None keep the model as it is). `overrides` are engine parameters."""
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
        if self._vocab and any(getattr(old, k) != getattr(new, k) for k in _PROMPT_FIELDS):
            try:
                self.set_vocabulary(self._vocab)
            except VocabularyError:
                self._config = old
                self.set_vocabulary(self._vocab)
                raise
        return new

    # -- vocabulary (the expensive text part, paid once per change) ------------------------------
    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self._vocab

    def set_vocabulary(self, classes: Sequence[str]) -> tuple[str, ...]:
        names, presence = self.check.prompts(classes, self._config)   # VocabularyError names the problem
        self._presence_prompts = presence.to(self.device)
        self._single_cache.clear()
        self._vocab = names
        return names

    def _gradcam_prompts(self, selected: list[int]) -> PromptBatch:
        cfg = self._config
        if cfg.prompt_mode == "per_class":
            p = self._presence_prompts
            sel = torch.tensor(selected, device=self.device)
            mask = p.attention_mask[sel]
            t = int(mask.sum(dim=1).max())
            return PromptBatch(p.input_ids[sel, :t], mask[:, :t], list(range(len(selected))),
                               [p.class_rows[i] for i in selected], p.first_rows)
        key = tuple(selected)
        if key not in self._single_cache:
            names = [self._vocab[i] for i in selected]
            self._single_cache[key] = self.check.single_caption(names, cfg).to(self.device)
            if len(self._single_cache) > 64:
                self._single_cache.popitem(last=False)
        self._single_cache.move_to_end(key)
        return self._single_cache[key]

    # -- one frame -----------------------------------------------------------------------------
    def _vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self._config.vision_dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        param_dtype = next(self.model.parameters()).dtype
        with torch.no_grad(), torch.autocast(self.device.type, dtype=getattr(torch, dtype),
                                             enabled=dtype != "float32"):
            out = self.model.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return out.last_hidden_state.to(param_dtype)

    def _resolve_present(self, present: Sequence[Union[str, int]]) -> list[int]:
        index = {n.lower(): i for i, n in enumerate(self._vocab)}
        out = set()
        for p in present:
            if isinstance(p, (int, np.integer)) and 0 <= int(p) < len(self._vocab):
                out.add(int(p))
            elif isinstance(p, str) and " ".join(p.split()).lower() in index:
                out.add(index[" ".join(p.split()).lower()])
            else:
                raise VocabularyError(f"present class {p!r} is not in the vocabulary")
        return sorted(out)

    def segment_batch(self, images: Sequence, presents: Optional[Sequence] = None,
                      outputs: Collection[str] = ("labels",)) -> list[SegmentationResult]:
        """Segment several frames (e.g. one per camera) together; results in input order."""
        presents = list(presents) if presents is not None else [None] * len(images)
        return [self.segment(im, p, outputs=outputs) for im, p in zip(images, presents)]

    @torch.no_grad()
    def segment(self, image, present: Optional[Sequence[Union[str, int]]] = None,
                outputs: Collection[str] = ("labels",)) -> SegmentationResult:
        """Segment one RGB image. `present` forces the classes to segment (e.g. ground truth),
        bypassing class presence. `outputs`: what to return besides labels (see OUTPUTS)."""
        res = self._segment(image, present)
        wanted = check_outputs(outputs)
        for name in OUTPUTS[1:]:
            if name not in wanted:
                setattr(res, name, None)
        return res

    def _segment(self, image, present):
        if not self._vocab:
            raise VocabularyError("no vocabulary set: call set_vocabulary() first")
        cfg, model = self._config, self.model
        watch = _Stopwatch(self.device)
        rgb = to_rgb_uint8(image, cfg.max_image_pixels)
        h, w = rgb.shape[:2]
        size = cfg.image_size or self.loaded.native_image_size
        ps = model.config.vision_config.patch_size
        grid = size // ps
        x = torch.from_numpy(preprocess(rgb, size, self.loaded.image_mean, self.loaded.image_std))
        x = x[None].to(self.device, next(model.parameters()).dtype)
        watch.lap("preprocess")
        embeds0 = self._vision(x)
        watch.lap("vision")

        n_cls = len(self._vocab)
        prob = np.full(n_cls, np.nan, dtype=np.float32)
        if present is not None:
            selected = self._resolve_present(present)
        elif cfg.presence == "itm":
            p = class_presence.itm_probabilities(model, self._presence_prompts, embeds0)
            prob = p.float().cpu().numpy()
            selected = sorted(class_presence.select_classes(p, cfg.presence_threshold, cfg.presence_top_k))
        else:
            selected = list(range(n_cls))
        watch.lap("class_presence")

        label_dtype = np.uint8 if n_cls <= 254 else np.uint16
        present_mask = np.zeros(n_cls, dtype=bool)
        present_mask[selected] = True
        if not selected:
            watch.lap("total")
            return SegmentationResult(np.zeros((h, w), label_dtype), self._vocab, prob, present_mask,
                                      np.zeros(0, np.int64), np.zeros((0, h, w), np.float32),
                                      np.zeros((h, w), np.float32), self._finish(watch),
                                      np.zeros((0, grid, grid), np.float32))

        maps = self._salience_maps(embeds0, x, self._gradcam_prompts(selected), grid, ps, watch)
        maps = maps.view(-1, grid, grid)
        labels, class_maps, confidence = self._to_labels(maps, rgb, selected, watch)
        return SegmentationResult(labels.astype(label_dtype), self._vocab, prob, present_mask,
                                  np.asarray([i + 1 for i in selected], np.int64), class_maps, confidence,
                                  self._finish(watch), maps.float().cpu().numpy())

    @staticmethod
    def _finish(watch: _Stopwatch) -> dict:
        watch.times["total"] = sum(v for k, v in watch.times.items() if k != "total")
        return watch.times

    def _salience_maps(self, embeds0, x, prompts: PromptBatch, grid: int, ps: int, watch) -> torch.Tensor:
        """GradCAM over `dropout_rounds` Salience Dropout passes, accumulated -> [C, N]."""
        cfg, model = self._config, self.model
        layers = self.check.layers(cfg.gradcam_layer)
        n = grid * grid
        k = salience_dropout.patches_per_round(grid, cfg.drop_patches, cfg.drop_fraction)
        dropped = torch.zeros(0, dtype=torch.long, device=self.device)
        total = None
        for d in range(cfg.dropout_rounds):
            kept = None
            if d == 0 or dropped.numel() == 0:
                embeds = embeds0
            elif cfg.dropout_mode == "pixel":
                embeds = self._vision(salience_dropout.drop_pixels(x, dropped, grid, ps))
                watch.lap("vision")
            else:
                kept = salience_dropout.kept_tokens(dropped, n)
                embeds = salience_dropout.drop_tokens(embeds0, kept)
            tok = gradcam.token_gradcam(model, prompts, embeds, layers, cfg.gradcam_head, kept, n)
            maps = salience_dropout.zero_dropped(gradcam.class_maps(tok, prompts), dropped)
            weight = 2.0 if (d == 0 and cfg.double_count_first_pass) else 1.0
            total = maps * weight if total is None else total + maps
            if d + 1 < cfg.dropout_rounds:
                dropped = salience_dropout.select_patches(gradcam.ranking_map(tok, prompts), dropped, k)
            watch.lap("gradcam")
        return total

    def _to_labels(self, maps: torch.Tensor, rgb: np.ndarray, selected: list[int], watch):
        cfg = self._config
        h, w = rgb.shape[:2]
        wh, ww = postprocess.work_size(h, w, cfg.postprocess_max_side)
        kept = postprocess.upsample(postprocess.threshold_maps(maps.float(), cfg.threshold), (wh, ww))
        lut = [i + 1 for i in selected]
        channels = kept
        if postprocess.wants_background(cfg.background, len(selected), cfg.background_min_classes):
            channels = torch.cat([postprocess.background_channel(kept), kept])
            lut = [0] + lut
        winner, soft = postprocess.refine(channels, postprocess.resize_rgb(rgb, (wh, ww)), cfg)
        confidence = soft.gather(0, winner[None])[0]
        cls_soft = soft[len(lut) - len(selected):]
        if (wh, ww) != (h, w):
            winner = postprocess.upsample_labels(winner, (h, w))
            both = postprocess.upsample(torch.cat([confidence[None], cls_soft]), (h, w))
            confidence, cls_soft = both[0], both[1:]
        labels = torch.tensor(lut, device=winner.device)[winner]
        watch.lap("postprocess")
        return (labels.cpu().numpy(), cls_soft.clamp(0, 1).float().cpu().numpy(),
                confidence.clamp(0, 1).float().cpu().numpy())
