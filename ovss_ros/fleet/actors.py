"""The Ray worker: loads the model once, keeps it, and segments batches of frames handed to it.

A plain class, made a Ray actor by the runtime (ray.remote(SegmentWorker)), so it imports no Ray itself and
its work is the same function ovss-bag-segment runs (ovss_ros.ros.bag_pipeline.segment_frames)."""
from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass
from typing import Optional

from ..ros.bag_pipeline import BagOutputOptions, bag_messages, segment_frames
from .dataset import label_record

KINDS = ("bag", "dataset")


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to build its Segmenter and render results; sent to every worker."""
    model: str
    vocabulary: tuple
    method: Optional[str] = None      # pnp_ovss / pgseg; None = what the checkpoint is
    preset: str = "realtime"
    device: str = "auto"
    dtype: str = "float32"
    overrides: tuple = ()
    kind: str = "bag"                 # bag: output-bag messages; dataset: label PNG + pixel counts
    with_overlay: bool = True
    overlay_alpha: float = 0.5
    torch_threads: int = 0            # 0 = torch's default
    debug_extra_latency: float = 0.0  # test aid: seconds added per frame (a slow model)


class SegmentWorker:
    def __init__(self, spec: JobSpec, index: int):
        self.spec, self.index, self.error = spec, index, ""
        self.frames = self.batches = 0
        self.busy_s = 0.0
        self.seg = None
        try:
            import torch

            if spec.torch_threads:
                torch.set_num_threads(spec.torch_threads)   # workers sharing a machine must not each take all cores
            from ovss_ros.engine.config import parse_overrides
            from ovss_ros.engine.segmenter import Segmenter

            seg = Segmenter.from_pretrained(spec.model, method=spec.method, preset=spec.preset, device=spec.device,
                                            dtype=spec.dtype, **parse_overrides(list(spec.overrides)))
            seg.set_vocabulary(list(spec.vocabulary))
            self.seg = seg
        except Exception as exc:   # noqa: BLE001 - reported by info(), the driver stops with the reason
            self.error = f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__) else str(exc)
            return
        if spec.kind == "bag":
            opts = BagOutputOptions(spec.model, spec.with_overlay, spec.overlay_alpha)
            self.render = functools.partial(bag_messages, opts=opts)
        else:
            self.render = label_record

    def info(self) -> dict:
        return {"index": self.index, "host": socket.gethostname(), "pid": os.getpid(), "error": self.error,
                "device": str(getattr(self.seg, "device", "")) if self.seg is not None else ""}

    def segment(self, frames: list) -> list:
        """frames: [(msgtype, CDR bytes)] -> [FrameResult], in order."""
        t0 = time.perf_counter()
        out = segment_frames(self.seg, frames, self.render)
        if self.spec.debug_extra_latency:
            time.sleep(self.spec.debug_extra_latency * len(frames))
        self.busy_s += time.perf_counter() - t0
        self.frames += len(frames)
        self.batches += 1
        return out

    def stats(self) -> dict:
        return {**self.info(), "frames": self.frames, "batches": self.batches, "busy_s": round(self.busy_s, 3),
                "fps": round(self.frames / self.busy_s, 2) if self.busy_s else 0.0}
