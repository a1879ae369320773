"""The engine's contract, one suite run against both methods: the same calls on a PnP-OVSS (BLIP) and a PGSeg
(GroupViT) Segmenter give the same result types, fields, errors and bookkeeping. The models are the
embedded toy checkpoints (ovss_ros/data), loaded once per method; each test gets its own Segmenter on them."""
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

import ovss_ros
from ovss_ros import ImageError, ModelLoadError, Segmenter, SegmentationResult, TensorResult, VocabularyError
from ovss_ros.pgseg.segmenter import PGSegSegmenter
from ovss_ros.pnp_ovss.segmenter import PnpOvssSegmenter

DATA = Path(ovss_ros.__file__).parent / "data"
CHECKPOINTS = {"pnp_ovss": DATA / "toy_blip", "pgseg": DATA / "toy_pgseg"}
SUBCLASSES = {"pnp_ovss": PnpOvssSegmenter, "pgseg": PGSegSegmenter}
PRESENCE_KINDS = {"pnp_ovss": "itm_probability", "pgseg": "vocabulary_softmax"}
# result.py: one field list, in this order, for both faces and both methods
FIELDS = ("labels", "class_names", "class_ids", "present", "presence", "presence_kind", "confidence",
          "class_maps", "raw_maps", "timings")
EXTRAS = ("confidence", "class_maps", "raw_maps")
VOCAB = ("plain red", "plain green", "plain blue")
H, W = 48, 64
# the tensor face's inputs differ from PIL's by at most one 8-bit level (test_tensor_face.py): labels agree on
# more than this fraction of pixels, presence within PRESENCE_ATOL (the tolerances of test_tensor_face.py and
# test_pgseg_engine.py)
LABEL_AGREEMENT = 0.97
PRESENCE_ATOL = 0.02


def frame(h=H, w=W, seed=0) -> np.ndarray:
    """Red left, green right, a blue band at the bottom, with noise: the toy models' colours."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (210, 40, 40)
    img[:, w // 2:] = (40, 190, 60)
    img[3 * h // 4:] = (40, 60, 200)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def method(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def base(method):
    # one thread: on 2 shared cores, 2 threads make these tiny models 10-100x slower when other jobs run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Segmenter.from_pretrained(CHECKPOINTS[method], preset="tiny", device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def seg(base) -> Segmenter:
    """A fresh Segmenter on the module's loaded model, vocabulary set: tests may change its state."""
    s = Segmenter(base.loaded, base.config)
    s.set_vocabulary(VOCAB)
    return s


@pytest.fixture(scope="module")
def reference(base):
    """Labels of frame() under the toy preset and VOCAB, computed once per method."""
    s = Segmenter(base.loaded, base.config)
    s.set_vocabulary(VOCAB)
    return s.segment(frame()).labels


# -- one face: the checkpoint picks the method -----------------------------------------------------------
def test_the_checkpoint_picks_the_method(method, base):
    assert isinstance(base, Segmenter) and type(base) is SUBCLASSES[method]
    assert base.method == method and base.presence_kind == PRESENCE_KINDS[method]
    rebuilt = Segmenter(base.loaded, base.config)
    assert type(rebuilt) is SUBCLASSES[method] and rebuilt.config == base.config
    assert rebuilt.vocabulary == () and rebuilt.vocabulary_version == 0
    assert type(SUBCLASSES[method].from_pretrained(CHECKPOINTS[method], preset="tiny", device="cpu")) \
        is SUBCLASSES[method]
    other = next(m for m in CHECKPOINTS if m != method)
    with pytest.raises(ModelLoadError, match=f"method {other!r} needs"):
        SUBCLASSES[other].from_pretrained(CHECKPOINTS[method], preset="tiny", device="cpu")


def raw_size(seg) -> tuple:
    """raw_maps' (h, w): PnP-OVSS's g x g patch grid, PGSeg's model input (square in the `tiny` preset)."""
    if seg.method == "pnp_ovss":
        return (seg.input_size // seg.check.patch_size,) * 2
    return (seg.input_size,) * 2


# -- results ------------------------------------------------------------------------------------------
def _check_result(r, method, seg, size, tensor_face):
    h, w = size
    assert type(r) is (TensorResult if tensor_face else SegmentationResult)
    assert tuple(f.name for f in fields(r)) == FIELDS
    c = len(VOCAB)
    labels = r.labels.cpu().numpy() if tensor_face else r.labels
    if tensor_face:
        assert isinstance(r.labels, torch.Tensor) and r.labels.dtype == torch.uint8
    assert labels.dtype == np.uint8 and labels.shape == (h, w)
    assert r.class_names == VOCAB == seg.vocabulary
    assert isinstance(r.class_ids, np.ndarray) and r.class_ids.dtype == np.int64
    assert r.present.dtype == bool and r.present.shape == (c,)
    assert r.class_ids.tolist() == (np.flatnonzero(r.present) + 1).tolist()
    assert np.all(np.diff(r.class_ids) > 0)
    assert set(np.unique(labels).tolist()) <= {0, *r.class_ids.tolist()}
    assert isinstance(r.presence, np.ndarray) and r.presence.dtype == np.float32 and r.presence.shape == (c,)
    assert r.presence_kind == PRESENCE_KINDS[method]
    if method == "pgseg":
        assert np.isclose(r.presence.sum(), 1.0, atol=1e-5)
    known = r.presence[~np.isnan(r.presence)]
    assert ((0 <= known) & (known <= 1)).all()
    k = len(r.class_ids)
    extras = {n: getattr(r, n) for n in EXTRAS}
    for name, value in extras.items():
        assert isinstance(value, torch.Tensor if tensor_face else np.ndarray), name
        assert value.dtype == (torch.float32 if tensor_face else np.float32), name
    conf, cmaps, raw = (np.asarray(extras[n].cpu() if tensor_face else extras[n]) for n in EXTRAS)
    assert conf.shape == (h, w) and 0 <= conf.min() and conf.max() <= 1
    assert cmaps.shape == (k, h, w) and 0 <= cmaps.min() and cmaps.max() <= 1 + 1e-6
    assert raw.ndim == 3 and raw.shape == (k, *raw_size(seg))
    assert {"preprocess", "total"} <= set(r.timings) and r.timings["total"] > 0


@pytest.mark.parametrize("tensor_face", [False, True], ids=["numpy", "tensor"])
def test_results_have_the_documented_fields(method, seg, tensor_face):
    img = frame(50, 70, seed=1)
    call = (lambda **kw: seg.segment_torch(torch.from_numpy(img), **kw)) if tensor_face else \
        (lambda **kw: seg.segment(img, **kw))
    r = call(outputs=EXTRAS)
    assert len(r.class_ids) >= 1                 # something segmented: the shape checks below bite
    _check_result(r, method, seg, (50, 70), tensor_face)
    forced = call(present=["plain blue"], outputs=EXTRAS)
    _check_result(forced, method, seg, (50, 70), tensor_face)
    if method == "pnp_ovss":      # ITM not computed for forced classes: NaN, as result.py says
        assert np.isnan(forced.presence).all()


def test_labels_widen_above_254_classes(method, seg):
    words = ["plain", "striped", "checked", "red", "green", "blue", "yellow", "circle", "square", "triangle"]
    vocab = [f"{a} {b} {c}" for a in words for b in words for c in words if len({a, b, c}) == 3][:255]
    seg.set_vocabulary(vocab)
    r = seg.segment(frame(), present=["plain red green"])
    t = seg.segment_torch(torch.from_numpy(frame()), present=["plain red green"])
    assert r.labels.dtype == np.uint16 and t.labels.dtype == torch.int32
    assert r.present.shape == (255,) and r.class_ids.tolist() == [vocab.index("plain red green") + 1]


# -- errors: the same refusals, and nothing lost ------------------------------------------------------------
@pytest.mark.parametrize("vocab,reason", [
    ([], "vocabulary is empty"),
    ("plain red, plain green", "not one string"),
    (["plain red", " Plain  RED "], "duplicate class name"),
    (["plain red", "plain\u200b green", "plain green"], "duplicate class name"),
    (["plain red", 3], "is not a string"),
    ([" ".join(["red"] * 20)], "max_class_name_length=64"),
    (["plain\x07red"], "control characters"),
    (["plain red", ""], "empty class name"),
])
def test_a_refused_vocabulary_keeps_the_old_one(seg, reference, vocab, reason):
    version = seg.vocabulary_version
    with pytest.raises(VocabularyError, match=reason):
        seg.set_vocabulary(vocab)
    assert seg.vocabulary == VOCAB and seg.vocabulary_version == version
    assert np.array_equal(seg.segment(frame()).labels, reference)


def test_frames_before_a_vocabulary_are_refused(base):
    fresh = Segmenter(base.loaded, base.config)
    for call in (lambda: fresh.segment(frame()), lambda: fresh.segment_batch([frame()]),
                 lambda: fresh.segment_torch(torch.from_numpy(frame()))):
        with pytest.raises(VocabularyError, match="no vocabulary set"):
            call()


BAD_IMAGES = {
    "4-d": np.zeros((1, H, W, 3), np.uint8), "1-d": np.zeros(H, np.uint8),
    "2 channels": np.zeros((H, W, 2), np.uint8), "5 channels": np.zeros((H, W, 5), np.uint8),
    "zero size": np.zeros((0, W, 3), np.uint8), "nan": np.full((H, W, 3), np.nan, np.float32),
    "float above 1": np.full((H, W, 3), 2.0, np.float32), "negative float": np.full((H, W, 3), -0.1, np.float64),
    "int64": np.zeros((H, W, 3), np.int64), "not an array": [[0, 0, 0]],
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_a_refused_image_loses_nothing(seg, reference, name):
    with pytest.raises(ImageError):
        seg.segment(BAD_IMAGES[name])
    with pytest.raises(ImageError):                 # one bad frame refuses its batch
        seg.segment_batch([frame(), BAD_IMAGES[name]])
    assert np.array_equal(seg.segment(frame()).labels, reference)


@pytest.mark.parametrize("bad", [torch.zeros((H, W, 3)), torch.zeros((3, H, W), dtype=torch.uint8),
                                 torch.zeros((0, W, 3), dtype=torch.uint8), np.zeros((H, W, 3), np.uint8)],
                         ids=["float", "chw", "zero size", "numpy"])
def test_a_refused_tensor_loses_nothing(seg, reference, bad):
    with pytest.raises(ImageError):
        seg.segment_torch(bad)
    agree = (seg.segment_torch(torch.from_numpy(frame())).labels.numpy() == reference).mean()
    assert agree > LABEL_AGREEMENT


def test_frames_above_max_image_pixels_are_refused_on_both_faces(seg, reference):
    seg.update_config(max_image_pixels=H * W - 1)
    with pytest.raises(ImageError, match="max_image_pixels"):
        seg.segment(frame())
    with pytest.raises(ImageError, match="max_image_pixels"):
        seg.segment_torch(torch.from_numpy(frame()))
    assert seg.segment(frame(H - 1, W)).labels.shape == (H - 1, W)
    seg.update_config(max_image_pixels=H * W)
    assert np.array_equal(seg.segment(frame()).labels, reference)


def test_the_documented_conversions_give_the_rgb_frames_labels(seg):
    gray = frame()[:, :, 0]
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    ref = seg.segment(rgb).labels
    assert np.array_equal(seg.segment(gray).labels, ref)
    assert np.array_equal(seg.segment(gray[:, :, None]).labels, ref)
    assert np.array_equal(seg.segment(np.dstack([rgb, np.zeros_like(gray)])).labels, ref)   # alpha ignored
    assert np.array_equal(seg.segment(rgb.astype(np.uint16) * 257).labels, ref)
    assert np.array_equal(seg.segment(rgb / 255.0).labels, ref)


@pytest.mark.parametrize("change,reason", [
    ({"no_such_knob": 1}, "unknown .*parameter"),
    ({"max_image_pixels": 0}, r"max_image_pixels=0: expected a value >= 1"),
    ({"max_classes": 70000}, r"max_classes=70000: expected a value in \[1, 65535\]"),
    ({"max_classes": "many"}, "max_classes='many': expected an integer"),
    ({"max_class_name_length": 2.5}, "expected an integer"),
    ({"image_size": 8}, r"image_size=8: expected a value in \[16, 1024\]"),
    ({"vision_dtype": "float64"}, "vision_dtype='float64': expected one of"),
    ({"prompt_template": "no slot"}, "prompt_template"),
])
def test_refused_settings_change_nothing(seg, reference, change, reason):
    before, version = seg.config, seg.vocabulary_version
    with pytest.raises(ValueError, match=reason):
        seg.update_config(**change)
    assert seg.config == before and seg.vocabulary_version == version
    assert np.array_equal(seg.segment(frame()).labels, reference)


# -- outputs only when asked -----------------------------------------------------------------------------
def test_extras_only_when_asked(seg):
    img, t = frame(), torch.from_numpy(frame())
    for r in (seg.segment(img), seg.segment_torch(t), *seg.segment_batch([img]), *seg.segment_torch_batch([t])):
        assert all(getattr(r, n) is None for n in EXTRAS)
    for name in EXTRAS:
        for r in (seg.segment(img, outputs=[name]), seg.segment_torch(t, outputs=(name,)),
                  seg.segment(img, outputs=name)):
            assert [n for n in EXTRAS if getattr(r, n) is not None] == [name]
    for call in (lambda: seg.segment(img, outputs=["labels", "logits"]),
                 lambda: seg.segment_torch(t, outputs=["heatmap"]),
                 lambda: seg.segment_batch([img], outputs=["confidence", "mask"])):
        with pytest.raises(ValueError, match="unknown outputs"):
            call()


# -- batches and faces ------------------------------------------------------------------------------------
SIZES = [(H, W), (40, 56), (64, 48)]


def _same(a, b, exact_labels=True):
    assert a.class_ids.tolist() == b.class_ids.tolist()
    np.testing.assert_allclose(a.presence, b.presence, rtol=1e-4, atol=1e-5)
    if exact_labels:
        assert np.array_equal(np.asarray(a.labels.cpu() if torch.is_tensor(a.labels) else a.labels),
                              np.asarray(b.labels.cpu() if torch.is_tensor(b.labels) else b.labels))
    for n in EXTRAS:
        x, y = (getattr(r, n) for r in (a, b))
        assert (x is None) == (y is None), n
        if x is not None:
            x, y = (np.asarray(v.cpu() if torch.is_tensor(v) else v) for v in (x, y))
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4, err_msg=n)


def test_a_batch_is_its_frames_one_by_one(seg):
    frames = [frame(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    batch = seg.segment_batch(frames, outputs=EXTRAS)
    assert [b.labels.shape for b in batch] == SIZES
    for f, b in zip(frames, batch):
        _same(seg.segment(f, outputs=EXTRAS), b)
    tensors = [torch.from_numpy(f) for f in frames]
    for t, b in zip(tensors, seg.segment_torch_batch(tensors, outputs=EXTRAS)):
        _same(seg.segment_torch(t, outputs=EXTRAS), b)
    assert seg.segment_batch([]) == [] and seg.segment_torch_batch([]) == []


def test_a_batch_takes_one_present_list_per_frame(seg):
    frames = [frame(), frame(40, 56, seed=1)]
    batch = seg.segment_batch(frames, presents=[["plain green"], None])
    assert batch[0].class_ids.tolist() == [2]
    _same(seg.segment(frames[1]), batch[1])
    with pytest.raises(ValueError, match="2 frames but 1 present lists"):
        seg.segment_batch(frames, presents=[None])


@pytest.mark.parametrize("size", SIZES[:2])
def test_the_tensor_face_agrees_with_the_numpy_face(seg, size):
    img = frame(*size, seed=3)
    n = seg.segment(img, outputs=EXTRAS)
    t = seg.segment_torch(torch.from_numpy(img), outputs=EXTRAS)
    assert t.class_ids.tolist() == n.class_ids.tolist() and np.array_equal(t.present, n.present)
    np.testing.assert_allclose(t.presence, n.presence, atol=PRESENCE_ATOL)
    agree = (t.labels.numpy() == n.labels).mean()
    assert agree > LABEL_AGREEMENT, agree
    assert all(tuple(getattr(t, x).shape) == getattr(n, x).shape for x in EXTRAS)


# -- vocabulary versions --------------------------------------------------------------------------------
def test_vocabulary_version_counts_prepared_text(method, seg):
    v = seg.vocabulary_version
    assert v >= 1
    assert seg.set_vocabulary(["plain  blue", "plain red"]) == ("plain blue", "plain red")
    assert seg.vocabulary_version == v + 1
    seg.set_vocabulary(["plain blue", "plain red"])                  # the same names are prepared again
    assert seg.vocabulary_version == v + 2
    with pytest.raises(VocabularyError):
        seg.set_vocabulary(["plain blue", "plain blue"])
    assert seg.vocabulary_version == v + 2
    seg.update_config(max_image_pixels=10_000)                        # not a prompt field: same text
    seg.update_config(prompt_template=seg.config.prompt_template)    # unchanged prompt field: same text
    assert seg.vocabulary_version == v + 2
    seg.update_config(prompt_template="the picture of {}")             # a prompt field: the text again
    assert seg.vocabulary_version == v + 3 and seg.vocabulary == ("plain blue", "plain red")
    seg.update_config(max_class_name_length=40)                      # a prompt field shared by both methods
    assert seg.vocabulary_version == v + 4


def test_settings_that_refuse_the_vocabulary_change_nothing(seg, reference):
    before, version = seg.config, seg.vocabulary_version
    with pytest.raises(VocabularyError, match="max_classes=2"):
        seg.update_config(max_classes=2)
    assert seg.config == before and seg.vocabulary == VOCAB
    assert np.array_equal(seg.segment(frame()).labels, reference)
    assert seg.vocabulary_version == version       # the old text, not another vocabulary


# -- forced classes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("present,ids", [(["plain blue"], [3]), ([0, " Plain  GREEN "], [1, 2]),
                                         ([np.int64(2), "plain red"], [1, 3]), (VOCAB, [1, 2, 3]), ([], [])])
def test_forced_classes_are_the_classes_segmented(seg, present, ids):
    for r in (seg.segment(frame(), present=present, outputs=EXTRAS),
              seg.segment_torch(torch.from_numpy(frame()), present=present, outputs=EXTRAS)):
        labels = np.asarray(r.labels.cpu() if torch.is_tensor(r.labels) else r.labels)
        assert r.class_ids.tolist() == ids and np.flatnonzero(r.present).tolist() == [i - 1 for i in ids]
        assert set(np.unique(labels).tolist()) <= {0, *ids}
        assert r.class_maps.shape == (len(ids), H, W) and r.raw_maps.shape == (len(ids), *raw_size(seg))
        if not ids:       # forced to nothing: all background, no estimate
            assert not labels.any() and float(r.confidence.max()) == 0


@pytest.mark.parametrize("present", [["striped red"], ["plain"], [3], [-1], [None], [True]])
def test_a_forced_class_outside_the_vocabulary_is_refused(seg, reference, present):
    with pytest.raises(VocabularyError, match="not in the vocabulary"):
        seg.segment(frame(), present=present)
    with pytest.raises(VocabularyError, match="not in the vocabulary"):
        seg.segment_torch(torch.from_numpy(frame()), present=present)
    assert np.array_equal(seg.segment(frame()).labels, reference)
