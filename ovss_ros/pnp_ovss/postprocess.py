"""From per-class patch maps to a label map: threshold, upsample, background, blur, DenseCRF."""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .config import POSTPROCESS_MAX_SIDE_CAP


def _normalised(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel min-max of [C, ...] (flattened) and whether each channel varies at all.

    As the reference: any channel with max > min is normalised, however small its span (no epsilon);
    only a constant channel (the reference's 0/0) is flagged.
    """
    flat = maps.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    span = hi - lo
    varies = span > 0
    return (flat - lo[:, None]) / torch.where(varies, span, torch.ones_like(span))[:, None], varies


def threshold_maps(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep raw values where the per-class min-max normalised map is >= threshold ([C, ...]).

    A constant map (reference: 0/0 = NaN, which fails the test) keeps nothing.
    """
    norm, varies = _normalised(maps)
    keep = (norm >= threshold) & varies[:, None]
    return (maps.flatten(1) * keep).view_as(maps)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, g, g] -> [C, H, W], bilinear with align_corners=True (the 336 input was a warp, so is this)."""
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=True)[0]


def wants_background(mode: str, n_classes: int, min_classes: int) -> bool:
    return mode == "always" or (mode == "if_few_classes" and n_classes < min_classes)


def background_channel(maps: torch.Tensor) -> torch.Tensor:
    """1 where no class survived thresholding, 0 elsewhere -> [1, H, W]."""
    return (maps.max(dim=0, keepdim=True).values == 0).to(maps.dtype)


def _reflect_index(n: int, radius: int, device) -> torch.Tensor:
    # scipy.ndimage 'reflect' (d c b a | a b c d | d c b a), valid for any radius
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


@functools.lru_cache(maxsize=16)
def _host_gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@functools.lru_cache(maxsize=32)
def gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 1-D Gaussian, computed once on the host in float64 (slow or missing on some accelerators),
    cast there and moved once per device: a per-call upload would wait for the device's queue."""
    with torch.inference_mode(False):     # a cached tensor must stay usable outside inference mode
        return _host_gaussian_kernel(sigma, radius).to(dtype).to(device)


@functools.lru_cache(maxsize=32)
def blur_matrix(n: int, sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[n, n] matrix M with (M @ x) = the reflect-padded 1-D Gaussian of x along its length n: each output row
    holds the kernel taps, folded where the padding reflects them back into the signal. Built on the host in
    float64 once per (size, sigma), cast there and moved once per device."""
    k = _host_gaussian_kernel(sigma, radius)
    rows = torch.arange(n).repeat_interleave(2 * radius + 1)
    cols = _reflect_index(n, radius, "cpu").unfold(0, 2 * radius + 1, 1).reshape(-1)
    m = torch.zeros(n, n, dtype=torch.float64).index_put_((rows, cols), k.repeat(n), accumulate=True)
    with torch.inference_mode(False):     # a cached tensor must stay usable outside inference mode
        return m.to(dtype).to(device)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian on [C, H, W] on the maps' device; matches scipy.ndimage.gaussian_filter.

    A wide kernel (the presets' sigma is a fraction of the frame, so it spans much of it) runs as two matrix
    products with blur_matrix, a GEMM where a one-channel conv1d is a slow direct loop (~10x on a CPU); a
    narrow one as two conv1d passes over reflect-padded rows and columns."""
    if sigma <= 0:
        return maps
    radius = int(truncate * sigma + 0.5)
    c, h, w = maps.shape
    if 8 * (2 * radius + 1) >= min(h, w):
        rows = blur_matrix(h, float(sigma), radius, maps.dtype, maps.device)
        cols = blur_matrix(w, float(sigma), radius, maps.dtype, maps.device)
        return torch.matmul(torch.matmul(rows, maps), cols.T)
    k = gaussian_kernel(float(sigma), radius, maps.dtype, maps.device)
    out = maps[:, _reflect_index(h, radius, maps.device)]                    # pad rows
    out = F.conv1d(out.permute(0, 2, 1).reshape(c * w, 1, -1), k.view(1, 1, -1))
    out = out.view(c, w, h).permute(0, 2, 1)
    out = out[:, :, _reflect_index(w, radius, maps.device)]                 # pad columns
    out = F.conv1d(out.reshape(c * h, 1, -1), k.view(1, 1, -1)).view(c, h, w)
    return out


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-channel rescale to [0, 1]; a constant channel becomes 0 (reference: NaN)."""
    norm, varies = _normalised(maps)
    return (norm * varies[:, None]).view_as(maps)


def dense_crf(soft: np.ndarray, rgb: np.ndarray, iterations: int, gauss_sxy: float, gauss_compat: float,
              bi_sxy: float, bi_srgb: float, bi_compat: float) -> np.ndarray:
    """DenseCRF (pydensecrf2) over softmax(soft) as unaries, as the reference does -> [L, H, W] marginals."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    n, h, w = soft.shape
    probs = torch.softmax(torch.from_numpy(soft).float(), dim=0).numpy()
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    # pydensecrf's Cython signature needs a writable buffer; decoded frames are often read-only views
    rgbim = np.require(rgb, dtype=np.uint8, requirements=["C", "W"])
    crf.addPairwiseBilateral(sxy=bi_sxy, srgb=bi_srgb, rgbim=rgbim, compat=bi_compat)
    q = crf.inference(iterations)
    return np.asarray(q, dtype=np.float32).reshape(n, h, w)


def work_size(h: int, w: int, max_side: Optional[int]) -> tuple[int, int]:
    """Blur/CRF resolution for an h x w frame: long side at most `max_side`, and never above
    POSTPROCESS_MAX_SIDE_CAP (None = full resolution up to the cap), aspect kept."""
    max_side = min(max_side or POSTPROCESS_MAX_SIDE_CAP, POSTPROCESS_MAX_SIDE_CAP)
    if max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def refine(channels: torch.Tensor, rgb, cfg) -> tuple[torch.Tensor, torch.Tensor, Optional[np.ndarray]]:
    """Post-process channels [L, h, w] -> (winning channel [h, w], soft [L, h, w], the DenseCRF marginal of the
    winning channel [h, w] on the host, None where no CRF ran). `rgb`: the frame at h x w on the host, or a
    callable giving it (only DenseCRF needs it)."""
    h, w = channels.shape[1:]
    blurred = cfg.postprocess in ("blur", "blur+crf")
    soft = minmax(gaussian_blur(channels, cfg.blur_sigma * max(h, w))) if blurred else channels
    marginal = None
    if cfg.postprocess in ("crf", "blur+crf"):
        q = dense_crf(soft.float().cpu().numpy(), rgb() if callable(rgb) else rgb,   # host sync: crf
                      cfg.crf_iterations, cfg.crf_gaussian_sxy, cfg.crf_gaussian_compat, cfg.crf_bilateral_sxy,
                      cfg.crf_bilateral_srgb, cfg.crf_bilateral_compat)
        best = q.argmax(axis=0)
        winner = torch.from_numpy(best).to(channels.device)                     # host sync: crf
        marginal = np.take_along_axis(q, best[None], axis=0)[0]
    else:
        winner = soft.argmax(dim=0)
    return winner, (soft if blurred else minmax(soft)), marginal


def label_confidence(soft: torch.Tensor, winner: torch.Tensor, marginal: Optional[torch.Tensor],
                     prior: torch.Tensor, crf_weight: float) -> torch.Tensor:
    """P(the pixel's label is right) [h, w] (docs/confidence.md).

    soft [L, h, w]: the post-processed channels in [0, 1]; their share at the winning channel is the evidence's
    probability of that label (uniform where every channel is 0). `marginal` [h, w]: the DenseCRF marginal of
    the winning channel, pooled with the share at weight `crf_weight` where the CRF ran. `prior` [L]: the
    probability that each channel's class is in the frame (1 for background and where not estimated)."""
    total = soft.sum(dim=0)
    share = torch.where(total > 0, soft.gather(0, winner[None])[0] / total.clamp_min(1e-12),
                        torch.full_like(total, 1.0 / soft.shape[0]))
    p = share if marginal is None else crf_weight * marginal + (1.0 - crf_weight) * share
    return (p * prior[winner]).clamp(0, 1)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if rgb.shape[:2] == size:
        return rgb
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def upsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(labels.shape) == tuple(size):
        return labels
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()

