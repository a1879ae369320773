"""PGSeg behind the engine's face: set a vocabulary once (class text embeddings cached), then segment frames
with one encoder pass per window and no gradient. Same calls and results as the PnP-OVSS `Segmenter`."""
from __future__ import annotations

import os
from typing import Collection, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..config import vision_autocast_dtype
from ..image_io import check_frame_tensor, to_rgb_uint8
from ..prompts import VocabularyError
from ..result import SegmentationResult, TensorResult
from ..segmenter_common import Stopwatch, check_outputs, resolve_present
from . import confidence, inference
from .config import PGSegConfig, make_pgseg_config
from .loading import LoadedGroupViT, PGSegCheck, load_groupvit, wrap_groupvit
from .model import image_embeddings, logit_scale, text_embeddings, vision_forward
from .preprocess import preprocess, preprocess_torch

# Where the host waits for the device per frame (after the frame's upload, before the caller's downloads),
# each marked `# host sync` below; test/engine/test_host_syncs.py counts them with ovss_ros.profiling.
HOST_SYNCS = {
    "kept_classes": "which classes compete (top-k or present) decides the channels scored and the result's "
                    "class list: the kept ids' nonzero and their download (counted 2, one wait in effect)",
    "presence": "the tensor face returns the image-level class probabilities as a numpy array: one download",
    "present": "present= given: its class indices go up to build the keep mask (the caller's host data)",
}


class PGSegSegmenter:
    """PGSeg (GroupViT + NPR) on a GroupViT checkpoint. Not thread-safe: one caller at a time."""

    method = "pgseg"

    def __init__(self, loaded: LoadedGroupViT, config: Optional[PGSegConfig] = None):
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.check = PGSegCheck.from_loaded(loaded)
        self.profile = False
        self._names: tuple = ()
        self._text: Optional[torch.Tensor] = None       # [C, P] class embeddings of the vocabulary
        self._mean = torch.tensor(loaded.image_mean, dtype=torch.float32, device=self.device) * 255
        self._std = torch.tensor(loaded.image_std, dtype=torch.float32, device=self.device) * 255
        self._config = self.check.check_config(config or make_pgseg_config("pgseg"))
        self._temperatures = self.check.confidence_temperatures

    @classmethod
    def from_pretrained(cls, model, preset: str = "pgseg", device=None, dtype=None,
                        local_files_only: Optional[bool] = None, tokenizer=None, **overrides) -> "PGSegSegmenter":
        """`model`: a Hugging Face id or local directory (GroupViT, or PGSeg converted by ovss-convert-pgseg),
        or an in-memory PGSegModel / GroupViTModel with `tokenizer=` its CLIP tokenizer."""
        config = make_pgseg_config(preset, **overrides)
        if isinstance(model, (str, os.PathLike)):
            loaded = load_groupvit(model, device=device or "auto", dtype=dtype or "float32",
                                   local_files_only=local_files_only)
        elif isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise TypeError("an in-memory model needs tokenizer= (its CLIP tokenizer)")
            loaded = wrap_groupvit(model, tokenizer, device, dtype)
        else:
            raise TypeError(f"model: expected a Hugging Face id, a local directory or a GroupViTModel, "
                            f"got {type(model).__name__}")
        return cls(loaded, config)

    # -- configuration -------------------------------------------------------------------------
    @property
    def config(self) -> PGSegConfig:
        return self._config

    def update_config(self, **changes) -> PGSegConfig:
        new = self.check.check_config(self._config.replace(**changes))
        old, self._config = self._config, new
        if self._names and (old.prompt_template != new.prompt_template
                            or old.max_classes != new.max_classes
                            or old.max_class_name_length != new.max_class_name_length):
            try:
                self.set_vocabulary(self._names)
            except VocabularyError:
                self._config = old
                raise
        return new

    @property
    def confidence_temperatures(self) -> tuple[float, float]:
        """(T_class, T_assign) of the confidence (pgseg/confidence.py): the checkpoint's config.json
        `confidence_temperature` / `confidence_assignment_temperature`, 1 where it has none. Labels never
        depend on them. Set them to try values (evaluation.calibration.fit_confidence_temperatures does)."""
        return self._temperatures

    @confidence_temperatures.setter
    def confidence_temperatures(self, value) -> None:
        t_class, t_assign = value
        self._temperatures = (confidence.check_temperature(t_class), confidence.check_temperature(t_assign))

    @property
    def input_size(self) -> int:
        return self._config.image_size or self.loaded.native_image_size

    # -- vocabulary -----------------------------------------------------------------------------
    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self._names

    @torch.no_grad()
    def set_vocabulary(self, classes: Sequence[str]) -> tuple[str, ...]:
        """Check the names (context length included) and embed their prompts once."""
        names, tokens = self.check.prompts(classes, self._config)
        self._text = text_embeddings(self.model, tokens.input_ids.to(self.device),
                                     tokens.attention_mask.to(self.device))
        self._names = names
        return names

    # -- frames ---------------------------------------------------------------------------------
    def _keep_mask(self, present) -> Optional[torch.Tensor]:
        if present is None:
            return None
        keep = torch.zeros(len(self._names), dtype=torch.bool, device=self.device)
        keep[present] = True                                    # host sync: present
        return keep

    def _start(self, presents, count: int) -> list:
        if self._text is None:
            raise VocabularyError("no vocabulary set: call set_vocabulary() first")
        presents = list(presents) if presents is not None else [None] * count
        if len(presents) != count:
            raise ValueError(f"{count} frames but {len(presents)} present lists")
        return [resolve_present(self._names, p) for p in presents]

    def _encode(self, crops: torch.Tensor):
        """(pixel->group index [n, h, w], group embeddings [n, G, P], pooled embeddings [n, P]) of windows."""
        cast = vision_autocast_dtype(self._config.vision_dtype, self.check.weights_dtype, self.device)
        with torch.autocast(self.device.type, dtype=getattr(torch, cast or "float32"), enabled=cast is not None):
            vision = vision_forward(self.model, crops, use_npr=self._config.npr)
        groups_index = inference.pixel_groups([a.float() for a in vision.assignments], tuple(crops.shape[-2:]),
                                              self.check.patch_size)
        groups, pooled = image_embeddings(self.model, vision)
        return groups_index, groups, pooled, vision.assignments

    def decode_windows(self, x: torch.Tensor, present=None) -> dict:
        """Steps 1-2 of the decode on one preprocessed frame [3, H', W']: the windows, each pixel's group
        [n, h, w], the group-class scores Q * P [n, G, C], the image-level probabilities [n, C] and the kept
        classes [n, C] (top-k, or `present`). Public so that tests and tools can look inside."""
        cfg = self._config
        h, w = x.shape[-2:]
        windows = (inference.window_origins(h, w, cfg.crop_size, cfg.crop_stride) if cfg.crop_size
                   else [(0, h, 0, w)])
        crops = torch.stack([x[:, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
        index, groups, pooled, assignments = self._encode(crops)
        scores, image, mask = inference.group_class_scores(groups, pooled, self._text, logit_scale(self.model),
                                                           cfg.top_k, self._keep_mask(present))
        return dict(windows=windows, group_index=index, scores=scores, image=image, kept=mask,
                    groups=groups, assignments=assignments)

    def _frame(self, x: torch.Tensor, out_hw: tuple[int, int], present, watch) -> dict:
        cfg = self._config
        h, w = x.shape[-2:]
        d = self.decode_windows(x, present)
        watch.lap("vision")
        windows, index, scores, image = d["windows"], d["group_index"], d["scores"], d["image"]
        channels = torch.nonzero(d["kept"].any(dim=0))[:, 0]            # host sync: kept_classes
        kept = channels.tolist()
        presence = image.mean(dim=0)
        if not kept:            # forced to nothing (present=[]): all background, as PnP-OVSS answers
            zeros = torch.zeros((0, *out_hw), device=self.device)
            watch.lap("scores")
            return dict(labels=torch.zeros(out_hw, dtype=torch.long, device=self.device), kept=[],
                        presence=presence, full=zeros, raw=torch.zeros((0, h, w), device=self.device), offset=0,
                        empty=True)
        bg = cfg.background_threshold if cfg.background == "threshold" else None
        # the others score 0 everywhere (Q is 0 outside the kept set): only the kept channels are resized
        logits = inference.window_scores(index, scores.index_select(-1, channels), bg)
        raw = inference.stitch(windows, logits, h, w)
        watch.lap("scores")
        full = F.interpolate(raw[None], size=out_hw, mode="bilinear", align_corners=False)[0]
        best = full.max(dim=0).indices           # not argmax(dim=0): 10-20x slower on CPU, same first-max rule
        ids = channels + 1                       # label ids, made on the device (no upload)
        if bg is not None:
            ids = torch.cat([ids.new_zeros(1), ids])
        labels = ids[best]
        watch.lap("upsample")
        offset = 1 if bg is not None else 0
        return dict(labels=labels, kept=kept, presence=presence, full=full, raw=raw, offset=offset,
                    best=best, decode=d, channels=channels, background=bg, size=(h, w))

    def _confidence(self, o: dict, out_hw: tuple[int, int], temperatures=None) -> torch.Tensor:
        """P(label right) per pixel: the group mixture of pgseg/confidence.py at the chosen label, stitched and
        resized as the scores are. Tempered by (T_class, T_assign); the labels' scores are not."""
        t_class, t_assign = temperatures or self._temperatures
        d = o["decode"]
        p = confidence.tempered_softmax(logit_scale(self.model) * d["groups"] @ self._text.T, t_class)
        p = p.index_select(-1, o["channels"])
        pi = confidence.group_label_probabilities(p, d["scores"].index_select(-1, o["channels"]), o["background"])
        maps = confidence.group_maps(d["assignments"], tuple(d["group_index"].shape[-2:]), self.check.patch_size,
                                     t_assign)
        probs = inference.stitch(d["windows"], confidence.pixel_label_probabilities(maps, pi), *o["size"])
        probs = F.interpolate(probs[None], size=out_hw, mode="bilinear", align_corners=False)[0]
        return probs.gather(0, o["best"][None])[0].clamp(0, 1)

    @torch.no_grad()
    def confidence_sweep(self, image, temperatures: Sequence[tuple[float, float]],
                         present=None) -> tuple[np.ndarray, list[np.ndarray]]:
        """(labels, [confidence per (T_class, T_assign)]) of one frame with one encoder pass: what fitting
        the temperatures needs (evaluation.calibration.fit_confidence_temperatures)."""
        forced = self._start([present], 1)[0]
        rgb = to_rgb_uint8(image, self._config.max_image_pixels)
        x = self.preprocess(rgb)
        o = self._frame(x, rgb.shape[:2], forced, Stopwatch(self.device, False))
        labels = o["labels"].cpu().numpy()
        if o.get("empty"):
            return labels, [np.zeros(rgb.shape[:2], np.float32) for _ in temperatures]
        return labels, [self._confidence(o, rgb.shape[:2], (confidence.check_temperature(a),
                                                             confidence.check_temperature(b))).float().cpu().numpy()
                        for a, b in temperatures]

    @torch.no_grad()
    def _run(self, inputs, forced, want, watch) -> list[dict]:
        outs = []
        for (x, out_hw), present in zip(inputs, forced):
            o = self._frame(x, out_hw, present, watch)
            if "confidence" not in want:
                o["confidence"] = None
            elif o.get("empty"):
                o["confidence"] = torch.zeros(out_hw, device=self.device)
            else:
                o["confidence"] = self._confidence(o, out_hw)
            o["class_maps"] = o["full"][o["offset"]:] if "class_maps" in want else None
            o["raw_maps"] = o["raw"][o["offset"]:] if "raw_maps" in want else None
            outs.append(o)
        return outs

    @torch.no_grad()
    def segment_batch(self, images: Sequence, presents: Optional[Sequence] = None,
                      outputs: Collection[str] = ("labels",)) -> list[SegmentationResult]:
        """Segment several frames; results in input order. `presents`: per frame, classes to segment instead
        of the image-level top-k filter (e.g. ground truth), or None."""
        want = check_outputs(outputs)
        forced = self._start(presents, len(images))
        if not images:
            return []
        watch = Stopwatch(self.device, self.profile)
        cfg = self._config
        rgbs = [to_rgb_uint8(im, cfg.max_image_pixels) for im in images]
        inputs = [(torch.from_numpy(preprocess(rgb, self.input_size, cfg.resize, self.loaded.image_mean,
                                               self.loaded.image_std)).to(self.device), rgb.shape[:2])
                  for rgb in rgbs]
        watch.lap("preprocess")
        outs = self._run(inputs, forced, want, watch)
        results = [self._to_numpy(o) for o in outs]
        timings = watch.finish()
        for r in results:
            r.timings = dict(timings)
        return results

    def preprocess(self, image) -> torch.Tensor:
        """One image as the model sees it: [3, H', W'] on the device (numpy face)."""
        cfg = self._config
        rgb = to_rgb_uint8(image, cfg.max_image_pixels)
        return torch.from_numpy(preprocess(rgb, self.input_size, cfg.resize, self.loaded.image_mean,
                                           self.loaded.image_std)).to(self.device)

    def segment(self, image, present: Optional[Sequence[Union[str, int]]] = None,
                outputs: Collection[str] = ("labels",)) -> SegmentationResult:
        """Segment one RGB image (numpy H x W [x 3|4] or PIL); see segment_batch."""
        return self.segment_batch([image], [present], outputs)[0]

    @torch.no_grad()
    def segment_torch_batch(self, frames: Sequence[torch.Tensor], presents: Optional[Sequence] = None,
                            outputs: Collection[str] = ("labels",)) -> list[TensorResult]:
        """The tensor face: H x W x 3 uint8 tensors in, device tensors out (resize on the device)."""
        want = check_outputs(outputs)
        forced = self._start(presents, len(frames))
        if not frames:
            return []
        watch = Stopwatch(self.device, self.profile)
        cfg = self._config
        inputs = []
        for frame in frames:
            frame = check_frame_tensor(frame, cfg.max_image_pixels).to(self.device)
            inputs.append((preprocess_torch(frame, self.input_size, cfg.resize, self._mean, self._std),
                           tuple(frame.shape[:2])))
        watch.lap("preprocess")
        outs = self._run(inputs, forced, want, watch)
        label_dtype = torch.uint8 if len(self._names) <= 254 else torch.int32
        results = [TensorResult(o["labels"].to(label_dtype), self._names,
                                o["presence"].float().cpu().numpy(),                # host sync: presence
                                o["kept"], o["confidence"], o["class_maps"], o["raw_maps"]) for o in outs]
        timings = watch.finish()
        for r in results:
            r.timings = dict(timings)
        return results

    def segment_torch(self, frame: torch.Tensor, present=None, outputs: Collection[str] = ("labels",)) -> TensorResult:
        return self.segment_torch_batch([frame], [present], outputs)[0]

    def _to_numpy(self, o: dict) -> SegmentationResult:
        n = len(self._names)
        present = np.zeros(n, dtype=bool)
        present[o["kept"]] = True
        label_dtype = np.uint8 if n <= 254 else np.uint16

        def host(t):
            return None if t is None else t.float().cpu().numpy()

        return SegmentationResult(o["labels"].cpu().numpy().astype(label_dtype), self._names,
                                  o["presence"].float().cpu().numpy(), present,
                                  np.asarray([k + 1 for k in o["kept"]], np.int64),
                                  host(o["class_maps"]), host(o["confidence"]), {}, host(o["raw_maps"]))
