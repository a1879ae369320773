"""Everything about the vocabulary's text that does not depend on the image, computed once and kept on the
model's device: tokens, the text prefix (text_pass.text_prefix), and per set of present classes the index
tensors that pool token maps into class maps, rank patches and turn channels into label ids.

Present-class sets repeat from frame to frame, so their plans are kept (least recently used first out):
after the first frame nothing here crosses between host and device.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .prompts import PromptBatch
from .text_pass import TextPrefix, text_prefix

MAX_PLANS = 64


@dataclass
class CaptionPlan:
    """The GradCAM captions for one set of present classes, and how their token rows make class maps."""

    classes: tuple[int, ...]        # vocabulary indices of the present classes, ascending
    classes_t: torch.Tensor         # [S] the same, on the device
    prefix: TextPrefix              # the captions: one per class (per_class) or one naming them all
    row_caption: torch.Tensor       # [R] caption of each class-token row ...
    row_token: torch.Tensor         # [R] ... its position ...
    row_class: torch.Tensor         # [R] ... and the present class (0..S-1) it belongs to
    rows_per_class: torch.Tensor    # [S] float: rows are averaged per class
    rank_caption: torch.Tensor      # distinct (caption, token) rows whose sum ranks patches for dropout
    rank_token: torch.Tensor
    presence_row_caption: torch.Tensor   # per_class: row_caption in the all-class presence captions
    presence_rank_caption: torch.Tensor
    lut: torch.Tensor               # [1+S] label id of each channel: background (0), then the classes
    lut_no_background: torch.Tensor  # [S]


def _rows(prompts: PromptBatch) -> tuple[list[int], list[int], list[int], list[tuple[int, int]]]:
    cap, tok, cls = [], [], []
    for c in range(len(prompts.class_caption)):
        for r in prompts.rows_of(c):
            cap.append(prompts.class_caption[c])
            tok.append(r)
            cls.append(c)
    # the same set (and so the same summation order) the engine has always ranked with
    rank = list({(prompts.class_caption[c], r) for c in range(len(prompts.class_caption))
                 for r in prompts.rows_of(c)})
    return cap, tok, cls, rank


class TextCache:
    """Per-vocabulary text state. `single_caption(names)` tokenizes the one caption of prompt_mode single."""

    def __init__(self, model, presence: PromptBatch, per_class: bool,
                 single_caption: Callable[[Sequence[str]], PromptBatch], names: Sequence[str], device) -> None:
        self.model, self.per_class, self.device = model, per_class, device
        self.names = tuple(names)
        self._single_caption = single_caption
        self.presence_prompts = presence.to(device)
        self.presence = text_prefix(model, self.presence_prompts.input_ids, self.presence_prompts.attention_mask)
        self.lengths = presence.attention_mask.sum(dim=1).tolist()     # host copy: trimming needs no sync
        self._plans: "OrderedDict[tuple, CaptionPlan]" = OrderedDict()

    def _tensor(self, values, dtype=torch.long) -> torch.Tensor:
        t = torch.tensor(values, dtype=dtype)
        if self.device.type == "cuda":      # asynchronous upload: no wait for the device
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def index(self, values: Sequence[int]) -> torch.Tensor:
        """A small index tensor on the device (uploaded without waiting for the device)."""
        return self._tensor(list(values))

    def plan(self, classes: tuple[int, ...]) -> CaptionPlan:
        if classes in self._plans:
            self._plans.move_to_end(classes)
            return self._plans[classes]
        p = self._plans[classes] = self._build(classes)
        if len(self._plans) > MAX_PLANS:
            self._plans.popitem(last=False)
        return p

    def _build(self, classes: tuple[int, ...]) -> CaptionPlan:
        sel = list(classes)
        classes_t = self._tensor(sel)
        if self.per_class:
            pp = self.presence_prompts
            prompts = PromptBatch(pp.input_ids, pp.attention_mask, list(range(len(sel))),
                                  [pp.class_rows[i] for i in sel], pp.first_rows)
            prefix = self.presence.select(classes_t, int(max(self.lengths[i] for i in sel)))
        else:
            prompts = self._single_caption([self.names[i] for i in sel]).to(self.device)
            prefix = text_prefix(self.model, prompts.input_ids, prompts.attention_mask)
        cap, tok, cls, rank = _rows(prompts)
        counts = [0.0] * len(sel)
        for c in cls:
            counts[c] += 1.0
        to_presence = sel if self.per_class else [0] * len(sel)
        ids = [i + 1 for i in sel]
        return CaptionPlan(
            classes=classes, classes_t=classes_t, prefix=prefix,
            row_caption=self._tensor(cap), row_token=self._tensor(tok), row_class=self._tensor(cls),
            rows_per_class=self._tensor(counts, torch.float32),
            rank_caption=self._tensor([c for c, _ in rank]), rank_token=self._tensor([r for _, r in rank]),
            presence_row_caption=self._tensor([to_presence[c] for c in cap]),
            presence_rank_caption=self._tensor([to_presence[c] for c, _ in rank]),
            lut=self._tensor([0] + ids), lut_no_background=self._tensor(ids))
