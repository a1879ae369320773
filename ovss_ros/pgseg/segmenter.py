"""PGSeg (Zhang et al., NeurIPS 2023: GroupViT with prototype regularization) behind the engine's face: the
vocabulary's text embeddings are cached, then a batch of frames takes one encoder pass (all frames' windows
stacked, one pass per window shape) and no gradient."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.config import vision_autocast_dtype
from ..engine.image_io import to_rgb_uint8
from ..engine.profiling import Stopwatch
from ..engine.result import FrameOutput
from ..engine.segmenter import Segmenter
from . import confidence, inference
from .config import PGSegConfig, make_pgseg_config
from .loading import LoadedGroupViT, PGSegCheck, load_groupvit, wrap_groupvit
from .model import image_embeddings, logit_scale, text_embeddings, vision_forward
from .preprocess import preprocess, preprocess_torch

# Where the host waits for the device (after the frames' upload, before the caller's downloads), each marked
# `# host sync` below; test/engine/test_host_syncs.py counts them with ovss_ros.profiling.
HOST_SYNCS = {
    "kept_classes": "which classes compete (top-k or present) decides the channels scored and the result's "
                    "class list: the batch's kept-class masks [frames, C] come down in one download per batch",
    "presence": "the tensor face returns the image-level class probabilities as a numpy array: one download "
                "per frame",
    "present": "present= given for a frame of the batch: the batch's forced classes go up as one mask, one "
               "upload per batch (the caller's host data)",
}


class PGSegSegmenter(Segmenter):
    """PGSeg (GroupViT + NPR) on a GroupViT checkpoint. Not thread-safe: one caller at a time."""

    method = "pgseg"
    presence_kind = "vocabulary_softmax"
    config_class = PGSegConfig

    def __init__(self, loaded: LoadedGroupViT, config: Optional[PGSegConfig] = None):
        self.check = PGSegCheck.from_loaded(loaded)
        self._text: Optional[torch.Tensor] = None       # [C, P] class embeddings of the vocabulary
        self._mean = torch.tensor(loaded.image_mean, dtype=torch.float32, device=loaded.device) * 255
        self._std = torch.tensor(loaded.image_std, dtype=torch.float32, device=loaded.device) * 255
        self._temperatures = self.check.confidence_temperatures
        super().__init__(loaded, config)

    @classmethod
    def _load(cls, model, preset, device, dtype, local_files_only, processor, overrides) -> "PGSegSegmenter":
        """`model`: a Hugging Face id or local directory (GroupViT, or PGSeg converted by ovss-convert-pgseg),
        or an in-memory PGSegModel / GroupViTModel with `processor=` its CLIP tokenizer."""
        config = make_pgseg_config(preset, **overrides)
        if isinstance(model, (str, os.PathLike)):
            loaded = load_groupvit(model, device=device or "auto", dtype=dtype or "float32",
                                   local_files_only=local_files_only)
        elif isinstance(model, torch.nn.Module):
            if processor is None:
                raise TypeError("an in-memory GroupViT model needs processor= (its CLIP tokenizer)")
            loaded = wrap_groupvit(model, processor, device, dtype)
        else:
            raise TypeError(f"model: expected a Hugging Face id, a local directory or a GroupViTModel, "
                            f"got {type(model).__name__}")
        return cls(loaded, config)

    def _check_config(self, cfg: PGSegConfig) -> PGSegConfig:
        return self.check.check_config(cfg)

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

    @torch.no_grad()
    def _prepare_text(self, classes: Sequence[str]) -> tuple[str, ...]:
        """Check the names (context length included) and embed their prompts once."""
        names, tokens = self.check.prompts(classes, self._config)
        self._text = text_embeddings(self.model, tokens.input_ids.to(self.device),
                                     tokens.attention_mask.to(self.device))
        return names

    # -- frames ---------------------------------------------------------------------------------
    def _numpy_input(self, rgb: np.ndarray):
        """(model input [3, H', W'] on the device, frame size) of a checked H x W x 3 uint8 frame."""
        if self._device_preprocessing():        # the uint8 frame goes up once; the tensor face's steps there
            return self._tensor_input(torch.from_numpy(rgb).to(self.device))
        cfg = self._config
        x = preprocess(rgb, self.input_size, cfg.resize, self.loaded.image_mean, self.loaded.image_std)
        return torch.from_numpy(x).to(self.device), rgb.shape[:2]

    def _tensor_input(self, frame: torch.Tensor):
        cfg = self._config
        return preprocess_torch(frame, self.input_size, cfg.resize, self._mean, self._std), tuple(frame.shape[:2])

    def preprocess(self, image) -> torch.Tensor:
        """One image as the model sees it: [3, H', W'] on the device (numpy face)."""
        return self._numpy_input(to_rgb_uint8(image, self._config.max_image_pixels))[0]

    def _keep_masks(self, presents: Sequence) -> list:
        """Per frame, its forced classes as a [C] bool mask on the device (None: the top-k filter decides):
        the batch's lists go up in one upload."""
        forced = [i for i, p in enumerate(presents) if p is not None]
        if not forced:
            return [None] * len(presents)
        host = np.zeros((len(forced), len(self._names)), dtype=bool)
        for row, i in enumerate(forced):
            host[row, list(presents[i])] = True
        masks = torch.from_numpy(host).to(self.device)                     # host sync: present
        out = [None] * len(presents)
        for row, i in enumerate(forced):
            out[i] = masks[row]
        return out

    def _encode(self, crops: torch.Tensor):
        """(pixel->group index [n, h, w], group embeddings [n, G, P], pooled embeddings [n, P]) of windows."""
        cast = vision_autocast_dtype(self._config.vision_dtype, self.check.weights_dtype, self.device)
        with torch.autocast(self.device.type, dtype=getattr(torch, cast or "float32"), enabled=cast is not None):
            vision = vision_forward(self.model, crops, use_npr=self._config.npr)
        groups_index = inference.pixel_groups([a.float() for a in vision.assignments], tuple(crops.shape[-2:]),
                                              self.check.patch_size)
        groups, pooled = image_embeddings(self.model, vision)
        return groups_index, groups, pooled, vision.assignments

    def _windows(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        cfg = self._config
        return inference.window_origins(h, w, cfg.crop_size, cfg.crop_stride) if cfg.crop_size else [(0, h, 0, w)]

    def _decode_batch(self, xs: Sequence[torch.Tensor], presents: Sequence) -> list[dict]:
        """decode_windows of several frames with one encoder pass per window shape: all of a frame's windows
        share one shape (crop_size squares, or the frame where it is smaller), so frames of one shape stack."""
        cfg = self._config
        windows = [self._windows(*x.shape[-2:]) for x in xs]
        by_shape: dict[tuple[int, int], list[int]] = {}
        for f, wins in enumerate(windows):
            y1, y2, x1, x2 = wins[0]
            by_shape.setdefault((y2 - y1, x2 - x1), []).append(f)
        encoded: list = [None] * len(xs)
        for frames in by_shape.values():
            crops = torch.stack([xs[f][:, y1:y2, x1:x2] for f in frames for y1, y2, x1, x2 in windows[f]])
            index, groups, pooled, assignments = self._encode(crops)
            start = 0
            for f in frames:            # each frame's windows: a contiguous slice of the pass
                s = slice(start, start + len(windows[f]))
                encoded[f] = (index[s], groups[s], pooled[s], [a[s] for a in assignments])
                start = s.stop
        keeps = self._keep_masks(presents)
        out = []
        for f, (index, groups, pooled, assignments) in enumerate(encoded):
            scores, image, mask = inference.group_class_scores(groups, pooled, self._text, logit_scale(self.model),
                                                               cfg.top_k, keeps[f])
            out.append(dict(windows=windows[f], group_index=index, scores=scores, image=image, kept=mask,
                            groups=groups, assignments=assignments))
        return out

    def decode_windows(self, x: torch.Tensor, present=None) -> dict:
        """Steps 1-2 of the decode on one preprocessed frame [3, H', W']: the windows, each pixel's group
        [n, h, w], the group-class scores Q * P [n, G, C], the image-level probabilities [n, C] and the kept
        classes [n, C] (top-k, or `present`). Public so that tests and tools can look inside."""
        return self._decode_batch([x], [present])[0]

    def _frames(self, xs: Sequence[torch.Tensor], out_hws: Sequence[tuple[int, int]], presents: Sequence,
                watch) -> list[dict]:
        """Labels and maps of a batch of preprocessed frames."""
        decoded = self._decode_batch(xs, presents)
        watch.lap("vision")
        kept_rows = torch.stack([d["kept"].any(dim=0) for d in decoded])      # [F, C]
        kept_host = kept_rows.cpu().numpy()                                   # host sync: kept_classes
        return [self._frame_labels(x, d, kept_rows[f], np.flatnonzero(kept_host[f]).tolist(), out_hws[f], watch)
                for f, (x, d) in enumerate(zip(xs, decoded))]

    def _frame_labels(self, x: torch.Tensor, d: dict, kept_row: torch.Tensor, kept: list, out_hw: tuple[int, int],
                      watch) -> dict:
        cfg = self._config
        h, w = x.shape[-2:]
        windows, index, scores, image = d["windows"], d["group_index"], d["scores"], d["image"]
        presence = image.mean(dim=0)
        if not kept:            # forced to nothing (present=[]): all background, as PnP-OVSS answers
            zeros = torch.zeros((0, *out_hw), device=self.device)
            watch.lap("scores")
            return dict(labels=torch.zeros(out_hw, dtype=torch.long, device=self.device), kept=[],
                        presence=presence, full=zeros, raw=torch.zeros((0, h, w), device=self.device), offset=0,
                        empty=True)
        # the kept ids on the device without an upload: a stable sort puts them first, in ascending order
        channels = torch.sort((~kept_row).to(torch.uint8), stable=True).indices[:len(kept)]
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
        x, _ = self._numpy_input(rgb)
        o = self._frames([x], [rgb.shape[:2]], [forced], Stopwatch(self.device, False))[0]
        labels = o["labels"].cpu().numpy()
        if o.get("empty"):
            return labels, [np.zeros(rgb.shape[:2], np.float32) for _ in temperatures]
        return labels, [self._confidence(o, rgb.shape[:2], (confidence.check_temperature(a),
                                                             confidence.check_temperature(b))).float().cpu().numpy()
                        for a, b in temperatures]

    @torch.no_grad()
    def _run_frames(self, inputs, forced, want, watch) -> list[FrameOutput]:
        """The batch's windows go through the encoder together (one pass per window shape)."""
        frames = self._frames([x for x, _ in inputs], [hw for _, hw in inputs], forced, watch)
        outs = []
        for o, (_, out_hw) in zip(frames, inputs):
            if "confidence" not in want:
                o["confidence"] = None
            elif o.get("empty"):
                o["confidence"] = torch.zeros(out_hw, device=self.device)
            else:
                o["confidence"] = self._confidence(o, out_hw)
            outs.append(FrameOutput(
                labels=o["labels"], presence=o["presence"], present=o["kept"], confidence=o["confidence"],
                class_maps=o["full"][o["offset"]:] if "class_maps" in want else None,
                raw_maps=o["raw"][o["offset"]:] if "raw_maps" in want else None))
        return outs
