"""The host waits for the device only where frame_batch.HOST_SYNCS says it must. Counted on the CPU with
ovss_ros.engine.profiling (Python-level reads of tensor values and data-dependent ops), so a new `.item()`,
`float(t)`, `nonzero` or download in the hot path fails here before it costs a GPU anything."""
import numpy as np
import pytest
import torch

from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.engine.profiling import count_host_syncs
from ovss_ros.engine.segmenter import Segmenter

SMALL = dict(image_size=None, gradcam_layer=1, gradcam_head=2)
OUTPUTS = ["confidence", "class_maps", "raw_maps"]
# (preset, overrides) -> host syncs of one tensor-face frame (frame_batch.HOST_SYNCS): class presence 1
# (presence=itm); DenseCRF 4 (its input maps and the frame at its size go down, the winners and, for the
# confidence, its marginal come up)
BUDGET = {
    "realtime": (dict(SMALL, presence_threshold=0.0), 1),
    "realtime, presence all": (dict(SMALL, presence="all"), 0),
    "realtime, pixel dropout": (dict(SMALL, presence_threshold=0.0, dropout_mode="pixel", dropout_rounds=3), 1),
    "paper": (dict(SMALL, presence_threshold=0.0), 5),
    "tiny": (dict(presence_threshold=0.0), 5),
}


def test_the_counter_sees_what_makes_a_host_wait():
    t = torch.arange(6.0)
    with count_host_syncs("cpu") as c:
        t.sum().item()
        float(t[0])
        t[t > 2]                    # boolean mask: data-dependent size
        t.nonzero()
        t.cpu()
        if t[1] > 0:
            pass
        t + 1                       # none of these
        t.argsort()
        t[torch.arange(1, 3, device="cpu")]     # made on the device
    assert c["item"] == 1 and c["__float__"] == 1 and c["cpu"] == 1 and c["__bool__"] == 1
    assert c["aten.nonzero"] == 1 and c["aten.index(bool mask)"] == 1 and sum(c.values()) == 6


def test_uploads_count_as_they_would_with_the_model_on_an_accelerator():
    """The CPU stands in for the accelerator: host data copied to it counts, reads of host data do not."""
    t = torch.arange(6.0)                          # made before the count: on the device
    a = np.ones(6, np.float32)
    with count_host_syncs("cpu") as c:
        torch.tensor([1.0, 2.0], device="cpu")
        torch.as_tensor(a, device="cpu")
        torch.from_numpy(a).to(t.device)
        host = torch.zeros(6) * 2                   # no device named: on the host, and so is what it makes
        t.copy_(host)
        t[[1, 2]]                                   # a list index is uploaded
        t[torch.tensor([0, 1])]
        t.tolist()
        t.numpy()
        t.cpu().numpy()                             # one download, then host data
    assert c["upload (torch.tensor)"] == 1 and c["upload (torch.as_tensor)"] == 1 and c["upload (to)"] == 1
    assert c["upload (copy_)"] == 1 and c["upload (__getitem__ index)"] == 2
    assert c["tolist"] == 1 and c["numpy"] == 1 and c["cpu"] == 1 and sum(c.values()) == 9
    with count_host_syncs("cpu") as free:
        host = torch.from_numpy(a)
        host.sum().item(), host.tolist(), host.numpy(), host[host > 0], float(host[0])
        torch.zeros(3, device="cpu") + 1
        t.to(torch.float64)
    assert sum(free.values()) == 0, dict(free)


@pytest.mark.parametrize("name", sorted(BUDGET))
def test_host_syncs_per_frame_stay_within_the_documented_budget(tiny_loaded, rgb, name):
    overrides, budget = BUDGET[name]
    preset = name.split(",")[0]
    seg = Segmenter(tiny_loaded, make_config(preset, **overrides))
    seg.set_vocabulary(["dog", "car", "tree"])
    frame = torch.from_numpy(rgb)
    seg.segment_torch(frame)                     # first frame: plans are made (uploads, not syncs)
    with count_host_syncs(seg.device) as tensor_face:
        res = seg.segment_torch(frame, outputs=OUTPUTS)
    assert res.present.any(), "the budget is for frames with classes to segment"
    assert sum(tensor_face.values()) == budget, dict(tensor_face)
    # the numpy face adds the frame's upload and one download per output; DenseCRF has the frame on the host
    with count_host_syncs(seg.device) as numpy_face:
        seg.segment(rgb, outputs=OUTPUTS)
    crf = "crf" in seg.config.postprocess
    assert sum(numpy_face.values()) == budget + 1 + 1 + len(OUTPUTS) - crf, dict(numpy_face)
    assert numpy_face["upload (to)"] == tensor_face["upload (to)"] + 1


def test_profiling_waits_per_stage_only_when_asked(tiny_loaded, rgb, monkeypatch):
    seg = Segmenter(tiny_loaded, make_config("realtime", **SMALL))
    seg.set_vocabulary(["dog"])
    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: waits.append(1))
    monkeypatch.setattr(seg, "device", torch.device("cuda"))       # only the stopwatch reads it here
    from ovss_ros.engine import profiling as mod
    watch = mod.Stopwatch(seg.device, profile=False)
    watch.lap("vision")
    assert waits == []
    watch = mod.Stopwatch(seg.device, profile=True)
    watch.lap("vision")
    assert waits == [1] and np.isfinite(watch.finish()["total"])


# present -> host syncs of one PGSeg tensor-face frame (pgseg.segmenter.HOST_SYNCS): the kept classes 1
# (one download per batch), the presence download 1; a given present list goes up once per batch
PGSEG_BUDGET = {None: 2, ("red", "dog"): 3}


@pytest.mark.parametrize("present", list(PGSEG_BUDGET))
def test_pgseg_host_syncs_per_frame_stay_within_the_documented_budget(tiny_pgseg_dir, rgb, present):
    seg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu", background_threshold=0.3)
    seg.set_vocabulary(["red", "green", "blue", "dog"])
    frame = torch.from_numpy(rgb)
    budget = PGSEG_BUDGET[present]
    with count_host_syncs(seg.device) as tensor_face:
        res = seg.segment_torch(frame, present, outputs=OUTPUTS)
    assert res.present.any(), "the budget is for frames with classes to segment"
    assert sum(tensor_face.values()) == budget, dict(tensor_face)
    # the numpy face adds the frame's upload and one download per output (the labels and the extras)
    with count_host_syncs(seg.device) as numpy_face:
        seg.segment(rgb, present, outputs=OUTPUTS)
    assert sum(numpy_face.values()) == budget + 1 + 1 + len(OUTPUTS), dict(numpy_face)
