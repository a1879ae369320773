"""One bag through segmentation, shared by ovss-bag-segment (frames segmented in process) and ovss-label-bags
(frames segmented by Ray workers), so both write exactly the same thing.

- `segment_frames`: camera messages (type name + CDR bytes) -> FrameResults: decode, segment, render.
- `bag_messages`: the renderer of the output bag: the node's messages, serialized, stamped like the frame.
- `run_bag`: reads a bag in order, hands its camera frames out in batches through `submit` (which may run
  them anywhere, several batches at once) and gives every message, then each frame's result, to a sink in
  the bag's own order. Results are waited for in submission order, so the sink sees the same sequence
  whatever ran the batches.
- `OutputBagSink`: the new bag: original topics plus segmentation/* per camera.
"""
from __future__ import annotations

import sys
import threading
from collections import deque
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from rclpy.serialization import deserialize_message, serialize_message

from ..bag_types import typestore
from . import outputs
from .bag_io import Reader, copy_connection, image_connections, message_class, open_writer, output_namespace
from .batching import segment_each
from .image_codec import BadFrame, compressed_to_rgb, image_to_rgb
from .knobs import config_threshold
from .output_size import resize_result

OUTPUTS = {"labels": "sensor_msgs/msg/Image", "confidence": "sensor_msgs/msg/Image",
           "overlay": "sensor_msgs/msg/Image", "masks": "ovss_ros/msg/SegmentationMasks",
           "class_map": "ovss_ros/msg/ClassMap"}


@dataclass
class FrameResult:
    """What one camera frame became. Plain data (bytes, arrays), so it crosses processes."""
    ok: bool
    reason: str = ""                                 # why a frame was skipped (ok False)
    messages: dict = field(default_factory=dict)     # output key -> CDR bytes (bag outputs)
    data: dict = field(default_factory=dict)         # anything else a renderer returns (datasets)


# the engine extras every written bag carries (confidence image, per-class score masks)
BAG_OUTPUTS = ("labels", "confidence", "class_maps")


@dataclass(frozen=True)
class BagOutputOptions:
    model: str = ""
    with_overlay: bool = True
    overlay_alpha: float = 0.5
    output_size: Optional[tuple] = None   # (width, height) of labels, confidence and masks; None = the frame's


def decode_frame(msgtype: str, raw: bytes, max_pixels: int):
    """(message, H x W x 3 uint8) of one Image/CompressedImage; BadFrame/ValueError when unusable."""
    msg = deserialize_message(bytes(raw), message_class(msgtype))
    decode = compressed_to_rgb if hasattr(msg, "format") else image_to_rgb
    return msg, decode(msg, max_pixels)


def bag_messages(seg, res, rgb, header, opts: BagOutputOptions) -> FrameResult:
    """The node's output messages for one result, serialized, in the order ovss-bag-segment writes them."""
    sized = resize_result(res, opts.output_size)   # as the node's output_size; the overlay keeps the frame's
    msgs = {"labels": outputs.labels_image(sized.labels, header),
            "confidence": outputs.confidence_image(sized.confidence, header),
            "masks": outputs.masks_message(sized, header, 1),
            "class_map": outputs.class_map_message(res.class_names, 1, header, config_threshold(seg.config),
                                                   opts.model)}
    if opts.with_overlay:
        msgs["overlay"] = outputs.overlay_image(rgb, res.labels, res.class_names, header, opts.overlay_alpha)
    return FrameResult(True, messages={k: serialize_message(m) for k, m in msgs.items()})


def segment_frames(seg, frames: Sequence[tuple], render: Callable) -> list[FrameResult]:
    """frames: [(msgtype, raw)]; render(seg, result, rgb, header) -> FrameResult. A frame that cannot be
    decoded or segmented (BadFrame, ValueError) is skipped with its reason, as ovss-bag-segment always did.
    Uses the engine's batched path when it has one (batching.segment_each)."""
    out: list[Optional[FrameResult]] = [None] * len(frames)
    decoded = []
    for i, (msgtype, raw) in enumerate(frames):
        try:
            decoded.append((i, *decode_frame(msgtype, raw, seg.config.max_image_pixels)))
        except (BadFrame, ValueError) as exc:
            out[i] = FrameResult(False, str(exc))
    # scores come back as the mono8 levels written, quantised on the engine's device
    results = segment_each(outputs.mono8_engine(seg), [rgb for _, _, rgb in decoded], BAG_OUTPUTS)
    for (i, msg, rgb), res in zip(decoded, results):
        out[i] = FrameResult(False, str(res)) if isinstance(res, Exception) else render(seg, res, rgb, msg.header)
    return out


def done(value) -> Future:
    """A Future already holding `value` (in-process segmentation)."""
    fut: Future = Future()
    fut.set_result(value)
    return fut


class Interrupted(Exception):
    """run_bag was asked to stop."""


@dataclass
class BagStats:
    frames: int = 0          # segmented and written
    skipped: int = 0         # bad frames
    cameras: int = 0


class OutputBagSink:
    """Writes the output bag: every original message unchanged, and per camera topic /ns/<image> the
    /ns/segmentation/* messages at the source frame's bag time."""

    def __init__(self, path, storage: str, version: int = 9, with_overlay: bool = True):
        self.path, self.storage, self.version, self.with_overlay = str(path), storage, version, with_overlay
        self.writer = None

    def open(self, reader, cameras) -> None:
        store = typestore()
        self.writer = open_writer(self.path, self.storage, self.version)
        self.writer.open()
        self.copied = {c.id: copy_connection(self.writer, c) for c in reader.connections}
        self.out = {}
        for conn in cameras:
            ns = output_namespace(conn.topic)
            self.out[conn.topic] = {k: self.writer.add_connection(f"{ns}/segmentation/{k}", t, typestore=store)
                                    for k, t in OUTPUTS.items() if k != "overlay" or self.with_overlay}

    def copy(self, conn, stamp: int, raw) -> None:
        self.writer.write(self.copied[conn.id], stamp, raw)

    def frame(self, conn, stamp: int, result: FrameResult) -> None:
        conns = self.out[conn.topic]
        for key, data in result.messages.items():
            self.writer.write(conns[key], stamp, data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _Batch:
    __slots__ = ("frames", "future")

    def __init__(self):
        self.frames, self.future = [], None


def _wait(future: Future, stop: Optional[threading.Event]):
    while True:
        if stop is not None and stop.is_set():
            raise Interrupted()
        try:
            return future.result(timeout=0.2)
        except FutureTimeout:
            continue


def run_bag(src, sink, topics: Optional[Sequence[str]], submit: Callable[[list], Future], batch_size: int = 1,
            lookahead: int = 0, stop: Optional[threading.Event] = None,
            on_frames: Optional[Callable[[int], None]] = None, log=None) -> BagStats:
    """Segment one bag into `sink`. Camera frames go to `submit` in batches of `batch_size` (consecutive
    frames: a time range of the bag); at most `lookahead` + 1 batches are out at once, the rest of the bag
    waits, so memory stays bounded (other topics' messages between are held until the frames before them
    are written). Messages reach the sink in the bag's order, each frame's outputs right after it; for a
    sink whose `copies` is False only the camera topics are read. `stop` (an Event) ends the run with Interrupted; `sink.close` runs either way."""
    log = log or (lambda text: print(text, file=sys.stderr))
    stats = BagStats()
    pending: deque = deque()      # [conn, stamp, raw, batch or None, index in batch], in bag order
    in_flight: deque = deque()    # submitted batches, oldest first

    def submit_batch(batch: _Batch) -> None:
        batch.future = submit([(c.msgtype, bytes(raw)) for c, raw in batch.frames])
        in_flight.append(batch)

    def write_until(limit: int) -> None:
        """Wait for the oldest batches until at most `limit` are out, writing what they unblock."""
        while len(in_flight) > limit:
            batch = in_flight.popleft()
            results = _wait(batch.future, stop)
            while pending and pending[0][3] in (None, batch):
                conn, stamp, raw, owner, k = pending.popleft()
                sink.copy(conn, stamp, raw)
                if owner is None:
                    continue
                res = results[k]
                if res.ok:
                    sink.frame(conn, stamp, res)
                    stats.frames += 1
                else:
                    stats.skipped += 1
                    log(f"skipping frame of {conn.topic} at {stamp}: {res.reason}")
            if on_frames:
                on_frames(len(results))
        while pending and pending[0][3] is None and not in_flight:
            conn, stamp, raw, _, _ = pending.popleft()
            sink.copy(conn, stamp, raw)

    try:
        with Reader(str(src)) as reader:
            cams = image_connections(reader, topics)
            stats.cameras = len(cams)
            names = {c.topic for c in cams}
            sink.open(reader, cams)
            batch = _Batch()
            # a sink that keeps no original messages (a dataset) reads the camera topics alone
            if getattr(sink, "copies", True):
                source = reader.messages()
            else:
                source = reader.messages(connections=cams) if cams else iter(())
            for conn, stamp, raw in source:
                if stop is not None and stop.is_set():
                    raise Interrupted()
                if conn.topic in names:
                    pending.append([conn, stamp, raw, batch, len(batch.frames)])
                    batch.frames.append((conn, raw))
                    if len(batch.frames) >= batch_size:
                        submit_batch(batch)
                        batch = _Batch()
                        write_until(lookahead)
                else:
                    pending.append([conn, stamp, raw, None, 0])
                    if not in_flight and not batch.frames:
                        write_until(0)
            if batch.frames:
                submit_batch(batch)
            write_until(0)
    finally:
        sink.close()
    return stats


def frame_count(src, topics: Optional[Sequence[str]]) -> int:
    """Camera frames a bag holds on the chosen topics, from its index (nothing decoded)."""
    with Reader(str(src)) as reader:
        return sum(c.msgcount for c in image_connections(reader, topics))

