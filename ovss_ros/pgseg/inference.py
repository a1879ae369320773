"""PGSeg's decode, step by step as the authors' test code does it (github.com/Ferenas/PGSeg,
segmentation/evaluation/pgseg_seg.py `encode_decode`, and mmseg 0.18's sliding window):

1. pixel -> group: chain the stages' soft assignments (A1 @ A2: patches -> 64 -> 8 groups), upsample the
   patch-grid map bilinearly to the window, and give each pixel its strongest group (one-hot);
2. group -> class: P = softmax_C(s * group . text); an image-level filter keeps the top-k classes of
   softmax_C(s * image . text); Q = softmax over the kept classes; score = Q * P;
3. pixel scores = the score row of the pixel's group; background = 1 where the best class scores below
   min(threshold, max(Q * P));
4. windows: scores summed where windows overlap and divided by the count, then resized to the frame.

No gradient and no post-processing: one encoder pass per window.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def window_origins(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg's slide windows (y1, y2, x1, x2): ceil((H - crop) / stride) + 1 per axis, the last one flush
    with the border, a window smaller than `crop` where the image is."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, height), min(c * stride + crop, width)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


def chain_assignments(assignments: Sequence[torch.Tensor]) -> torch.Tensor:
    """[B, N_patches, G_final]: each patch's soft assignment to the final groups through every grouping stage.
    `assignments`: per grouping stage [B, G_s, N_in] soft assignments (softmax over groups)."""
    chained = None
    for a in assignments:
        a = a.transpose(1, 2)                              # [B, N_in, G_s]
        chained = a if chained is None else chained @ a
    return chained


def pixel_groups(assignments: Sequence[torch.Tensor], size: tuple[int, int], patch: int) -> torch.Tensor:
    """[B, h, w] index of each pixel's final group. `assignments`: per grouping stage [B, G_s, N_in] soft
    assignments (softmax over groups); `size`: the window (h, w) the encoder saw."""
    chained = chain_assignments(assignments)
    h, w = size
    grid = (h // patch, w // patch)
    maps = chained.transpose(1, 2).reshape(chained.shape[0], chained.shape[2], *grid)
    maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
    return maps.max(dim=1).indices          # (argmax over a leading dim is 10-20x slower on CPU; same first-max rule)


def group_class_scores(groups: torch.Tensor, pooled: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                       top_k: Optional[int], keep: Optional[torch.Tensor] = None):
    """(Q * P [B, G, C], image-level class probabilities [B, C], kept classes [B, C] bool).

    groups [B, G, P], pooled [B, P], text [C, P]: unit vectors. `keep` ([C] bool, e.g. ground-truth classes)
    replaces the top-k image-level filter; `top_k` None keeps every class."""
    logits = scale * groups @ text.T                                  # [B, G, C]
    p = logits.softmax(dim=-1)
    image = (scale * pooled @ text.T).softmax(dim=-1)                 # [B, C]
    if keep is not None:
        mask = keep[None].expand_as(image)
    elif top_k is not None:
        mask = torch.zeros_like(image, dtype=torch.bool)
        mask.scatter_(-1, image.topk(min(top_k, text.shape[0]), dim=-1).indices, True)
    else:
        mask = torch.ones_like(image, dtype=torch.bool)
    q = logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
    return q * p, image, mask


def window_scores(group_index: torch.Tensor, scores: torch.Tensor, background: Optional[float]) -> torch.Tensor:
    """Per-pixel class scores [B, C(+1), h, w]: each pixel takes its group's row of `scores` [B, G, C]; with a
    `background` threshold a channel 0 is 1 where the best class is below min(threshold, max score)."""
    b, h, w = group_index.shape
    # gathered along the group axis of [B, C, G]: the result comes out channel-major, with no transposed copy
    rows = scores.transpose(1, 2)
    fg = torch.gather(rows, 2, group_index.reshape(b, 1, -1).expand(-1, rows.shape[1], -1)).reshape(b, -1, h, w)
    if background is None:
        return fg
    t = torch.minimum(scores.flatten(1).max(dim=1).values,
                      torch.full((), background, dtype=scores.dtype, device=scores.device))
    bg = (fg.max(dim=1).values < t[:, None, None]).to(fg.dtype)
    return torch.cat([bg[:, None], fg], dim=1)


def stitch(windows: Sequence[tuple[int, int, int, int]], logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """mmseg's slide average: window logits [n, K, h, w] added into place and divided by the overlap count."""
    if len(windows) == 1 and tuple(windows[0]) == (0, height, 0, width):
        return logits[0]                                   # one window over the frame: the average is itself
    out = logits.new_zeros(logits.shape[1], height, width)
    count = logits.new_zeros(1, height, width)
    for (y1, y2, x1, x2), lg in zip(windows, logits):
        out[:, y1:y2, x1:x2] += lg
        count[:, y1:y2, x1:x2] += 1
    return out / count
