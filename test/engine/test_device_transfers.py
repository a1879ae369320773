"""Device-side pre- and post-processing (issue 18): with the model on an accelerator the numpy face uploads the
uint8 frame and resizes and normalises it there, within one 8-bit level of the host reference; every result
field is cast on the device before its one copy, and each output set costs exactly its own bytes device ->
host. The CPU stands in for the accelerator (engine.profiling.count_device_to_host_bytes)."""
import numpy as np
import pytest
import torch

from ovss_ros.engine.profiling import count_device_to_host_bytes, count_host_syncs
from ovss_ros.engine.result import FrameOutput
from ovss_ros.engine.segmenter import Segmenter, score_levels
from ovss_ros.pnp_ovss.config import make_config

SMALL = dict(image_size=None, gradcam_layer=1, gradcam_head=2)
VOCAB = ["red", "green", "blue", "dog"]
# the output sets a caller builds up, each adding one field
SETS = [("labels",), ("labels", "confidence"), ("labels", "confidence", "class_maps"),
        ("labels", "confidence", "class_maps", "raw_maps")]


def pnp(tiny_loaded, **overrides):
    seg = Segmenter(tiny_loaded, make_config("realtime", **{**SMALL, **overrides}))
    seg.set_vocabulary(VOCAB)
    return seg


@pytest.fixture(scope="module")
def pgseg(tiny_pgseg_dir):
    seg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu", background_threshold=0.3)
    seg.set_vocabulary(VOCAB)
    return seg


def copied(seg, call):
    with count_device_to_host_bytes(seg.device) as c:
        res = call()
    return sum(c.values()), res


def test_the_byte_counter_sees_each_download_once():
    t = torch.zeros(10, 20)                       # made before the count: on the device
    host = np.ones(5, np.float32)
    with count_device_to_host_bytes("cpu") as c:
        t.cpu().numpy()                           # one copy of 800 bytes, then host data
        t.to(torch.uint8).cpu()                   # cast on the device: 200
        t[0, 0].item()                            # 4
        t[0].tolist()                             # 80
        torch.from_numpy(host).sum().item()       # host data: free
        t + 1
    assert c == {"cpu": 1000, "item": 4, "tolist": 80}, dict(c)


def test_a_download_with_to_counts_beside_a_real_accelerator():
    """On the CPU standing in for the accelerator `.to("cpu")` names the device itself; beside a real one it
    is a download (the meta device stands in here: it counts before the copy, which meta cannot make)."""
    t = torch.zeros(4, 4, device="meta")
    with count_device_to_host_bytes("meta") as c:
        t.to(torch.float16)                        # a cast on the device: nothing comes down
        with pytest.raises((NotImplementedError, RuntimeError)):
            t.to("cpu")
    assert c == {"to(cpu)": 64}, dict(c)


# -- pre-processing ------------------------------------------------------------------------------------
def _levels(seg, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """|a - b| of two model inputs in 8-bit levels (the normalisation's std undone)."""
    std = np.asarray(seg.loaded.image_std, np.float32)[:, None, None]
    return np.abs(a.numpy() - b.numpy()) * std * 255


@pytest.mark.parametrize("method", ["pnp_ovss", "pgseg"])
def test_device_preprocessing_is_within_one_level_of_the_host_reference(method, tiny_loaded, pgseg, rgb,
                                                                        monkeypatch):
    seg = pnp(tiny_loaded) if method == "pnp_ovss" else pgseg
    assert not seg._device_preprocessing()        # the CPU keeps the reference (PIL / OpenCV) exactly
    rng = np.random.default_rng(1)
    frames = [rgb, rng.integers(0, 255, (50, 40, 3), dtype=np.uint8), rgb[:, :96]]
    refs = [seg._numpy_input(f) for f in frames]
    monkeypatch.setattr(seg, "_device_preprocessing", lambda: True)
    for f, ref in zip(frames, refs):
        with count_host_syncs(seg.device) as syncs:
            ours = seg._numpy_input(f)
        assert dict(syncs) == {"upload (to)": 1}, dict(syncs)      # the uint8 frame, once
        if method == "pnp_ovss":
            assert ours.rgb_host is f and ours.rgb_device is None and ours.size == ref.size
            a, b = ours.pixels, ref.pixels
        else:
            assert ours[1] == ref[1]
            a, b = ours[0], ref[0]
        assert a.shape == b.shape
        level = _levels(seg, a, b)
        assert level.max() <= 1.0 + 1e-3 and level.mean() < 0.2, (level.max(), level.mean())
    forced = seg.segment(rgb)
    monkeypatch.undo()
    agree = (forced.labels == seg.segment(rgb).labels).mean()
    assert agree > 0.97, agree


def test_device_preprocessing_keeps_densecrfs_round_trip_as_it_was(tiny_loaded, rgb, monkeypatch):
    """The CRF reads the numpy face's own frame: the device path adds no download and no sync."""
    seg = Segmenter(tiny_loaded, make_config("paper", **SMALL, presence_threshold=0.0))
    seg.set_vocabulary(VOCAB)
    want = ["confidence", "class_maps"]
    seg.segment(rgb, outputs=want)               # first frame: plans are made (uploads, not syncs)
    with count_host_syncs(seg.device) as host_syncs:
        host_bytes, ref = copied(seg, lambda: seg.segment(rgb, outputs=want))
    monkeypatch.setattr(seg, "_device_preprocessing", lambda: True)
    with count_host_syncs(seg.device) as device_syncs:
        device_bytes, res = copied(seg, lambda: seg.segment(rgb, outputs=want))
    assert ref.class_ids.size and device_syncs == host_syncs, (dict(device_syncs), dict(host_syncs))
    assert device_bytes == host_bytes
    # the tensor face brings its frame down for the CRF (3 bytes a pixel); its labels stay on the device
    tensor_bytes, _ = copied(seg, lambda: seg.segment_torch(torch.from_numpy(rgb)))
    labels_bytes, _ = copied(seg, lambda: seg.segment(rgb))
    assert labels_bytes - tensor_bytes == rgb.shape[0] * rgb.shape[1] * (1 - 3)


# -- post-processing: the bytes of each output set ------------------------------------------------------
def check_decisions(seg, copied: int) -> None:
    """Bytes the method reads to decide (its HOST_SYNCS), whatever was asked: PnP-OVSS the [C] float32
    presence probabilities (presence=itm); PGSeg the kept classes and the image-level presence, at most a few
    bytes per class (never per pixel)."""
    c = len(seg.vocabulary)
    if seg.method == "pgseg":
        assert 0 < copied <= 12 * c, copied
    else:
        assert copied == (4 * c if seg.config.presence == "itm" else 0), copied


@pytest.mark.parametrize("score_dtype", ["float32", "uint8"])
@pytest.mark.parametrize("case", ["pnp_ovss, presence all", "pnp_ovss, presence itm", "pgseg"])
def test_each_output_set_copies_only_its_own_bytes(case, score_dtype, tiny_loaded, pgseg, rgb):
    if case == "pgseg":
        seg = pgseg
    else:
        seg = pnp(tiny_loaded, **(dict(presence="all") if "all" in case else dict(presence_threshold=0.0)))
    h, w = rgb.shape[:2]
    score = np.dtype(score_dtype).itemsize
    measured = []
    for outputs in SETS:
        # the tensor face copies nothing but the decisions, whatever it is asked for
        decisions, _ = copied(seg, lambda: seg.segment_torch(torch.from_numpy(rgb), outputs=outputs,
                                                             score_dtype=score_dtype))
        check_decisions(seg, decisions)
        total, res = copied(seg, lambda: seg.segment(rgb, outputs=outputs, score_dtype=score_dtype))
        k = len(res.class_ids)
        assert k > 0, "the sizes are for frames with classes to segment"
        expected = decisions + h * w                                     # labels: one byte a pixel
        if "confidence" in outputs:
            assert res.confidence.dtype == score_dtype
            expected += h * w * score
        if "class_maps" in outputs:
            assert res.class_maps.dtype == score_dtype
            expected += k * h * w * score
        if "raw_maps" in outputs:
            assert res.raw_maps.dtype == np.float32
            expected += res.raw_maps.size * 4
        assert res.labels.dtype == np.uint8
        measured.append((decisions, total))
        assert total == expected, (outputs, total, expected)
    print(case, score_dtype, h, w, measured)


@pytest.mark.parametrize("method", ["pnp_ovss", "pgseg"])
def test_uint8_scores_are_the_float_scores_levels(method, tiny_loaded, pgseg, rgb):
    seg = pnp(tiny_loaded, presence_threshold=0.0) if method == "pnp_ovss" else pgseg
    want = ["confidence", "class_maps", "raw_maps"]
    ref = seg.segment(rgb, outputs=want)
    res = seg.segment(rgb, outputs=want, score_dtype="uint8")
    for name in ("confidence", "class_maps"):
        expected = np.round(np.clip(getattr(ref, name), 0, 1) * 255).astype(np.uint8)   # as mono8 did it
        np.testing.assert_array_equal(getattr(res, name), expected)
    np.testing.assert_array_equal(res.raw_maps, ref.raw_maps)
    np.testing.assert_array_equal(res.labels, ref.labels)
    tensor = seg.segment_torch(torch.from_numpy(rgb), outputs=want, score_dtype="uint8")
    assert tensor.confidence.dtype == tensor.class_maps.dtype == torch.uint8
    with pytest.raises(ValueError, match="score_dtype"):
        seg.segment(rgb, score_dtype="float16")


@pytest.mark.parametrize("classes,top", [(300, 300), (65535, 65535)])
def test_labels_above_254_classes_copy_two_bytes_a_pixel(tiny_loaded, monkeypatch, classes, top):
    seg = pnp(tiny_loaded)
    monkeypatch.setattr(seg, "_names", tuple(f"c{i}" for i in range(classes)))
    labels = torch.tensor([[0, 1, 254], [255, top - 1, top]], dtype=torch.long)
    out = FrameOutput(labels=labels, presence=np.zeros(classes, np.float32), present=[0, top - 1])
    total, res = copied(seg, lambda: seg._numpy_result(out))
    assert res.labels.dtype == np.uint16 and total == labels.numel() * 2
    np.testing.assert_array_equal(res.labels, labels.numpy())
    assert seg._tensor_result(out).labels.dtype == torch.int32


def test_score_levels_round_half_to_even_and_clip():
    x = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 2.0, 254.5 / 255])
    ref = np.round(np.clip(x.numpy(), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(score_levels(x).numpy(), ref)
