"""One engine run over a batch of frames, on the model's device.

The ViT runs once for the batch; class presence and every GradCAM round are one text pass each over all
frames' captions (text_pass.itm_pass), reusing the frames' cross-attention keys/values; post-processing runs
per frame. Between the upload of the frames and the download of what the caller asked for, the host waits
for the device only where a decision or a CPU library needs the numbers — each such place is listed in
HOST_SYNCS and marked `# host sync` below; a test counts them with engine.profiling.count_host_syncs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..engine.result import FrameOutput
from . import class_presence, gradcam, postprocess, salience_dropout
from .config import CONFIDENCE_CRF_WEIGHT
from .text_pass import ImageKV, image_kv, stack

HOST_SYNCS = {
    "class_presence": "presence=itm: the [frames, classes] probabilities come down once per batch to decide "
                      "which classes are present (the set of captions GradCAM runs depends on it)",
    "crf": "postprocess crf / blur+crf: DenseCRF (pydensecrf) runs on the CPU, so per frame its input maps "
           "come down and the winning labels go up, and with the confidence asked for its marginal at the "
           "winners goes up too (the tensor face also brings the frame down once, at the CRF's size)",
}
# Not a sync: the confidence's per-class prior is gathered on the device from the presence pass's output.


@dataclass
class FrameInput:
    pixels: torch.Tensor                  # [3, S, S] model input, on the device
    size: tuple[int, int]                 # (H, W) of the frame
    present: Optional[list[int]]          # forced classes (vocabulary indices), None = class presence
    rgb_host: Optional[np.ndarray] = None     # H x W x 3 uint8, the numpy face's frame (for DenseCRF)
    rgb_device: Optional[torch.Tensor] = None  # H x W x 3 uint8 on the device, the tensor face's frame


def _reuse_presence(device: torch.device, selected: int, total: int) -> bool:
    """GradCAM pass 0 from the presence pass's graph (prompt_mode per_class): saves a whole text forward,
    but differentiates all classes' captions. On a GPU that is always cheaper (the pass is launch-bound); on
    a CPU only when most classes are present (backward ~2 forwards: 2*all <= 3*selected)."""
    return selected > 0 and (device.type != "cpu" or 2 * total <= 3 * selected)


class FrameBatch:
    """The per-call state of one batched run: Segmenter.segment_* build one and call run()."""

    def __init__(self, seg, frames: list[FrameInput], outputs: frozenset, watch) -> None:
        self.seg, self.frames, self.outputs, self.watch = seg, frames, outputs, watch
        self.cfg, self.model, self.text = seg.config, seg.model, seg.text
        self.layers = seg.check.layers(self.cfg.gradcam_layer)
        self.grid = (self.cfg.image_size or seg.loaded.native_image_size) // seg.check.patch_size
        self.presence_t: Optional[torch.Tensor] = None     # [frames, classes] on the device (presence=itm)

    def run(self) -> list[FrameOutput]:
        pixels = torch.stack([f.pixels for f in self.frames])
        embeds0 = self.seg.vision(pixels)
        kv0 = image_kv(self.model, embeds0)
        self.watch.lap("vision")
        selected, presence, reuse = self._class_presence(kv0)
        self.watch.lap("class_presence")
        maps = self._salience_maps(pixels, kv0, selected, reuse)
        return [self._postprocess(i, maps.get(i), selected[i], presence[i]) for i in range(len(self.frames))]

    # -- class presence ----------------------------------------------------------------------------
    def _class_presence(self, kv0: ImageKV):
        n, f = len(self.text.names), len(self.frames)
        presence = np.full((f, n), np.nan, dtype=np.float32)
        forced = [fr.present for fr in self.frames]
        if self.cfg.presence != "itm" or all(p is not None for p in forced):
            return [p if p is not None else list(range(n)) for p in forced], presence, None
        record = self.cfg.prompt_mode == "per_class" and all(p is None for p in forced)
        prefix, _ = stack([self.text.presence] * f)
        logits, probs = self.seg.itm(prefix, kv0, capture=self.layers if record else ())
        self.presence_t = class_presence.probabilities(logits).view(f, n)   # kept for the confidence
        prob = self.presence_t.cpu().numpy()                                    # host sync: class_presence
        selected = []
        for i, p in enumerate(forced):
            if p is None:
                presence[i] = prob[i]
                p = sorted(class_presence.select_classes(prob[i], self.cfg.presence_threshold,
                                                         self.cfg.presence_top_k))
            selected.append(p)
        total = sum(len(s) for s in selected)
        if record and _reuse_presence(self.seg.device, total, f * n):
            return selected, presence, (logits, probs, prefix)
        return selected, presence, None

    # -- GradCAM with Salience Dropout ------------------------------------------------------------------
    def _salience_maps(self, pixels, kv0: ImageKV, selected, reuse) -> dict[int, torch.Tensor]:
        """Accumulated GradCAM over `dropout_rounds` passes -> {frame: [S, N]} for frames with classes."""
        cfg, text = self.cfg, self.text
        active = [i for i, s in enumerate(selected) if s]
        if not active:
            return {}
        plans = [text.plan(tuple(selected[i])) for i in active]
        k = salience_dropout.patches_per_round(self.grid, cfg.drop_patches, cfg.drop_fraction)
        kv = kv0 if len(active) == len(self.frames) else _frames(kv0, text.index(active))
        dropped = [torch.zeros(0, dtype=torch.long, device=pixels.device) for _ in active]
        total: list[Optional[torch.Tensor]] = [None] * len(active)
        for d in range(cfg.dropout_rounds):
            if d == 0 and reuse is not None:
                per_frame, tok = self._from_presence(reuse, active, plans)
            else:
                per_frame, tok = self._gradcam_pass(pixels, kv, plans, active, dropped, d > 0 and k > 0)
            layout = d == 0 and reuse is not None
            for a, plan in enumerate(plans):
                t = tok[a * per_frame:(a + 1) * per_frame]
                maps = salience_dropout.zero_dropped(gradcam.class_maps(t, plan, layout), dropped[a])
                weight = 2.0 if (d == 0 and cfg.double_count_first_pass) else 1.0
                total[a] = maps * weight if total[a] is None else total[a] + maps
                if d + 1 < cfg.dropout_rounds:
                    dropped[a] = salience_dropout.select_patches(gradcam.ranking_map(t, plan, layout),
                                                                 dropped[a], k)
            self.watch.lap("gradcam")
        return {i: total[a] for a, i in enumerate(active)}

    def _from_presence(self, reuse, active, plans):
        logits, probs, prefix = reuse
        n = len(self.text.names)
        rows = torch.cat([plan.classes_t + i * n for i, plan in zip(active, plans)])
        grads = gradcam.gradients(logits, probs, self.layers, rows)
        tok = gradcam.token_gradcam(probs, grads, self.layers, self.cfg.gradcam_head, prefix.mask)
        # frames without classes have no plan: keep only the active frames' captions
        if len(active) != len(self.frames):
            tok = tok.view(len(self.frames), n, *tok.shape[1:])[self.text.index(active)].flatten(0, 1)
        return n, tok

    def _gradcam_pass(self, pixels, kv: ImageKV, plans, active, dropped, dropping: bool):
        cfg, bias = self.cfg, None
        if dropping and cfg.dropout_mode == "pixel":
            ps = self.seg.check.patch_size
            redo = torch.stack([salience_dropout.drop_pixels(pixels[i], dropped[a], self.grid, ps)
                                for a, i in enumerate(active)])
            kv = image_kv(self.model, self.seg.vision(redo))
            self.watch.lap("vision")
        elif dropping:
            bias = salience_dropout.attention_bias(dropped, self.grid * self.grid, kv.keys[0].dtype,
                                                   pixels.device)
        prefix, per_frame = stack([p.prefix for p in plans])
        logits, probs = self.seg.itm(prefix, kv, bias, capture=self.layers)
        grads = gradcam.gradients(logits, probs, self.layers)
        return per_frame, gradcam.token_gradcam(probs, grads, self.layers, cfg.gradcam_head, prefix.mask)

    # -- maps to labels ------------------------------------------------------------------------------
    def _postprocess(self, i: int, maps: Optional[torch.Tensor], selected: list[int],
                     presence: np.ndarray) -> FrameOutput:
        fr, cfg, want = self.frames[i], self.cfg, self.outputs
        h, w = fr.size
        g = self.grid
        if maps is None:
            dev = fr.pixels.device
            out = FrameOutput(torch.zeros((h, w), dtype=torch.long, device=dev), presence, [])
            if "confidence" in want:
                # all background: right unless a class is there; ITM's likeliest class bounds that. Forced to
                # no classes (no estimate): 0, as PGSeg answers
                known = presence.size > 0 and not np.isnan(presence).any()
                p_bg = 1.0 - float(presence.max()) if known else 0.0
                out.confidence = torch.full((h, w), p_bg, device=dev)
            if "class_maps" in want:
                out.class_maps = torch.zeros((0, h, w), device=dev)
            if "raw_maps" in want:
                out.raw_maps = torch.zeros((0, g, g), device=dev)
            self.watch.lap("postprocess")
            return out
        plan = self.text.plan(tuple(selected))
        maps = maps.view(-1, g, g)
        wh, ww = postprocess.work_size(h, w, cfg.postprocess_max_side)
        kept = postprocess.upsample(postprocess.threshold_maps(maps.float(), cfg.threshold), (wh, ww))
        lut, channels = plan.lut_no_background, kept
        if postprocess.wants_background(cfg.background, len(selected), cfg.background_min_classes):
            channels, lut = torch.cat([postprocess.background_channel(kept), kept]), plan.lut
        winner, soft, marginal = postprocess.refine(channels, lambda: self._rgb_at(fr, (wh, ww)), cfg)
        out = FrameOutput(lut[postprocess.upsample_labels(winner, (h, w))], presence, selected)
        extras = []
        if "confidence" in want:
            extras.append(self._confidence(soft, winner, marginal, self._prior(i, soft.shape[0], plan))[None])
        if "class_maps" in want:
            extras.append(soft[len(lut) - len(selected):])
        if extras:
            both = torch.cat(extras)
            both = (postprocess.upsample(both, (h, w)) if (wh, ww) != (h, w) else both).clamp(0, 1).float()
            if "confidence" in want:
                out.confidence, both = both[0], both[1:]
            if "class_maps" in want:
                out.class_maps = both
        if "raw_maps" in want:
            out.raw_maps = maps.float()
        self.watch.lap("postprocess")
        return out

    def _prior(self, i: int, channels: int, plan) -> torch.Tensor:
        """Each channel's weight in the confidence: the class presence probability of its class where ITM
        computed it for this frame (rows are all computed or all NaN), 1 for background and forced classes.
        Gathered on the device from the presence pass's output, so no upload."""
        prior = torch.ones(channels, dtype=torch.float32, device=plan.classes_t.device)
        if self.presence_t is not None and self.frames[i].present is None:
            prior[channels - len(plan.classes):] = self.presence_t[i].index_select(0, plan.classes_t).nan_to_num(1.0)
        return prior

    @staticmethod
    def _confidence(soft, winner, marginal, prior: torch.Tensor) -> torch.Tensor:
        """P(label right) per pixel (postprocess.label_confidence): each class channel weighted by `prior`."""
        if marginal is not None:
            marginal = torch.from_numpy(marginal).to(soft.device)           # host sync: crf
        return postprocess.label_confidence(soft, winner, marginal, prior, CONFIDENCE_CRF_WEIGHT)

    @staticmethod
    def _rgb_at(fr: FrameInput, size: tuple[int, int]) -> np.ndarray:
        """The frame on the host at the CRF's size (only DenseCRF needs it)."""
        if fr.rgb_host is not None:
            return postprocess.resize_rgb(fr.rgb_host, size)
        return postprocess.resize_rgb(fr.rgb_device.cpu().numpy(), size)    # host sync: crf


def _frames(kv: ImageKV, idx: torch.Tensor) -> ImageKV:
    return ImageKV([k[idx] for k in kv.keys], [v[idx] for v in kv.values])
