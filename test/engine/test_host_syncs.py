"""The host waits for the device only where frame_batch.HOST_SYNCS says it must. Counted on the CPU with
ovss_ros.profiling (Python-level reads of tensor values and data-dependent ops), so a new `.item()`,
`float(t)`, `nonzero` or download in the hot path fails here before it costs a GPU anything."""
import numpy as np
import pytest
import torch

from ovss_ros.config import make_config
from ovss_ros.profiling import count_host_syncs
from ovss_ros.segmenter import Segmenter

SMALL = dict(image_size=None, gradcam_layer=1, gradcam_head=2)
# (preset, overrides) -> host syncs of one tensor-face frame: class presence 1 (presence=itm), DenseCRF 2
# (its input maps, and the frame at its size); the numpy face adds one download per requested output
BUDGET = {
    "realtime": (dict(SMALL, presence_threshold=0.0), 1),
    "realtime, presence all": (dict(SMALL, presence="all"), 0),
    "realtime, pixel dropout": (dict(SMALL, presence_threshold=0.0, dropout_mode="pixel", dropout_rounds=3), 1),
    "paper": (dict(SMALL, presence_threshold=0.0), 3),
    "tiny": (dict(presence_threshold=0.0), 3),
}


def test_the_counter_sees_what_makes_a_host_wait():
    t = torch.arange(6.0)
    with count_host_syncs() as c:
        t.sum().item()
        float(t[0])
        t[t > 2]                    # boolean mask: data-dependent size
        t.nonzero()
        t.cpu()
        if t[1] > 0:
            pass
        t + 1                       # none of these
        t.argsort()
        t[torch.tensor([1, 2])]
    assert c["item"] == 1 and c["__float__"] == 1 and c["cpu"] == 1 and c["__bool__"] == 1
    assert c["aten.nonzero"] == 1 and c["aten.index(bool mask)"] == 1 and sum(c.values()) == 6


@pytest.mark.parametrize("name", sorted(BUDGET))
def test_host_syncs_per_frame_stay_within_the_documented_budget(tiny_loaded, rgb, name):
    overrides, budget = BUDGET[name]
    preset = name.split(",")[0]
    seg = Segmenter(tiny_loaded, make_config(preset, **overrides))
    seg.set_vocabulary(["dog", "car", "tree"])
    frame = torch.from_numpy(rgb)
    seg.segment_torch(frame)                     # first frame: plans are made (uploads, not syncs)
    with count_host_syncs() as tensor_face:
        res = seg.segment_torch(frame, outputs=["confidence", "class_maps", "raw_maps"])
    assert res.present, "the budget is for frames with classes to segment"
    assert sum(tensor_face.values()) == budget, dict(tensor_face)
    with count_host_syncs() as numpy_face:
        seg.segment(rgb)
    assert sum(numpy_face.values()) == budget + 1 - ("crf" in seg.config.postprocess and 1), dict(numpy_face)


def test_profiling_waits_per_stage_only_when_asked(tiny_loaded, rgb, monkeypatch):
    seg = Segmenter(tiny_loaded, make_config("realtime", **SMALL))
    seg.set_vocabulary(["dog"])
    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: waits.append(1))
    monkeypatch.setattr(seg, "device", torch.device("cuda"))       # only the stopwatch reads it here
    from ovss_ros import segmenter as mod
    watch = mod.Stopwatch(seg.device, profile=False)
    watch.lap("vision")
    assert waits == []
    watch = mod.Stopwatch(seg.device, profile=True)
    watch.lap("vision")
    assert waits == [1] and np.isfinite(watch.finish()["total"])
