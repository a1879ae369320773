"""The Segmenter's contract: result shapes and dtypes, vocabulary and image checks, presence, config."""
import numpy as np
import pytest

from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.engine.image_io import ImageError, to_rgb_uint8
from ovss_ros.engine.vocabulary import VocabularyError
from ovss_ros.engine.segmenter import OUTPUTS as ALL, Segmenter


@pytest.fixture
def seg(tiny_loaded):
    s = Segmenter(tiny_loaded, make_config("tiny", presence="all"))
    s.set_vocabulary(["red circle", "dog", "tree"])
    return s


def test_result_contract(seg, rgb):
    res = seg.segment(rgb, outputs=ALL)
    assert res.labels.shape == rgb.shape[:2] and res.labels.dtype == np.uint8
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    assert res.class_names == ("red circle", "dog", "tree")
    assert res.class_ids.tolist() == [1, 2, 3] and res.present.all()
    assert res.class_maps.shape == (3, *rgb.shape[:2]) and res.class_maps.dtype == np.float32
    assert 0 <= res.class_maps.min() and res.class_maps.max() <= 1
    assert res.confidence.shape == rgb.shape[:2]
    assert {"preprocess", "vision", "class_presence", "gradcam", "postprocess", "total"} <= set(res.timings)
    assert np.isnan(res.presence).all()                                  # presence="all" computes none
    summary = res.summary()
    assert abs(sum(c["pixel_fraction"] for c in summary["classes"]) + summary["background_fraction"] - 1) < 1e-3


def test_itm_presence_is_reported_and_filters(seg, rgb):
    seg.update_config(presence="itm", presence_threshold=0.0)
    res = seg.segment(rgb)
    assert ((res.presence > 0) & (res.presence < 1)).all() and res.present.all()
    seg.update_config(presence_threshold=1.0)            # the random model is never certain
    res = seg.segment(rgb, outputs=ALL)
    assert not res.present.any() and (res.labels == 0).all() and res.class_maps.shape[0] == 0
    seg.update_config(presence_threshold=0.0, presence_top_k=1)
    res = seg.segment(rgb)
    assert res.present.sum() == 1 and res.class_ids.tolist() == [int(np.argmax(res.presence)) + 1]
    assert set(np.unique(res.labels)) <= {0, res.class_ids[0]}


def test_forced_presence_by_name_or_index(seg, rgb):
    res = seg.segment(rgb, present=["Dog", 2])
    assert res.class_ids.tolist() == [2, 3] and set(np.unique(res.labels)) <= {0, 2, 3}
    with pytest.raises(VocabularyError, match="not in the vocabulary"):
        seg.segment(rgb, present=["cat"])


def test_more_than_254_classes_gives_uint16(tiny_loaded, rgb):
    words = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "dog", "cat", "person", "car",
             "tree", "sky", "road", "traffic", "light", "striped", "plain"]     # words the tiny model knows
    s = Segmenter(tiny_loaded, make_config("tiny", presence="all", max_classes=400))
    s.set_vocabulary([f"{a} {b}" for a in words for b in words if a != b][:300])   # 300 names of known words
    res = s.segment(rgb, present=[0, 299])
    assert res.labels.dtype == np.uint16 and set(np.unique(res.labels)) <= {0, 1, 300}


@pytest.mark.parametrize("vocab,match", [
    ([], "empty"), (["dog", "Dog"], "duplicate"), (["dog", "  "], "empty class name"),
    (["x" * 65], "max_class_name_length"), ("dog", "not one string"), (["dog", 3], "not a string"),
    ([f"c{i}" for i in range(257)], "max_classes"), (["dog\x00"], "control"),
])
def test_bad_vocabulary_is_refused_and_old_one_kept(seg, rgb, vocab, match):
    with pytest.raises(VocabularyError, match=match):
        seg.set_vocabulary(vocab)
    assert seg.vocabulary == ("red circle", "dog", "tree")
    assert seg.segment(rgb).labels.shape == rgb.shape[:2]


def test_whitespace_is_normalised(seg):
    assert seg.set_vocabulary(["  red   circle ", "dog"]) == ("red circle", "dog")


def test_segment_before_vocabulary(tiny_loaded, rgb):
    with pytest.raises(VocabularyError, match="set_vocabulary"):
        Segmenter(tiny_loaded, make_config("tiny")).segment(rgb)


# -- images -------------------------------------------------------------------------------------------
def test_image_conversions_are_documented_ones():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (to_rgb_uint8(gray, 100) == gray[..., None]).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 7
    rgba[..., 0] = 9
    out = to_rgb_uint8(rgba, 100)
    assert out.shape == (3, 4, 3) and (out[..., 0] == 9).all()
    deep = np.full((2, 2, 3), 65535, np.uint16)
    deep[0, 0] = 257 * 10
    out = to_rgb_uint8(deep, 100)
    assert out.dtype == np.uint8 and out[1, 1, 0] == 255 and out[0, 0, 0] == 10
    assert to_rgb_uint8(np.full((2, 2, 3), 0.5), 100)[0, 0, 0] == 128


@pytest.mark.parametrize("image,match", [
    (np.zeros((0, 10, 3), np.uint8), "zero size"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((10, 10, 3), np.int32), "unsupported pixel type"),
    (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
    (np.zeros((5000, 5000), np.uint8), "max_image_pixels"),
    ("not an image", "numpy array"),
])
def test_bad_images_are_refused(seg, image, match):
    with pytest.raises(ImageError, match=match):
        seg.segment(image)


def test_gray_rgba_and_16bit_frames_segment(seg, rgb):
    ref = seg.segment(rgb).labels
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(seg.segment(rgba).labels, ref)
    assert np.array_equal(seg.segment(rgb.astype(np.uint16) * 257).labels, ref)
    assert seg.segment(rgb[..., 0]).labels.shape == rgb.shape[:2]


# -- configuration ---------------------------------------------------------------------------------
def test_config_checks_against_the_model(tiny_loaded):
    with pytest.raises(ValueError, match="text encoder has 3 layers"):
        Segmenter(tiny_loaded, make_config("paper"))               # layer 7 does not exist in the tiny model
    s = Segmenter(tiny_loaded, make_config("tiny"))
    with pytest.raises(ValueError, match="4 heads"):
        s.update_config(gradcam_head=9)
    with pytest.raises(ValueError, match="unknown engine parameter"):
        s.update_config(dropout_round=2)
    with pytest.raises(ValueError, match="first_token"):
        s.update_config(prompt_mode="single")
    assert s.config.prompt_mode == "per_class"                         # failed updates change nothing


def test_prompt_change_rebuilds_text_cache(seg, rgb):
    before = seg.segment(rgb, outputs=ALL).class_maps
    seg.update_config(prompt_template="a photo of {}")
    assert not np.allclose(seg.segment(rgb, outputs=ALL).class_maps, before)
    assert seg.vocabulary == ("red circle", "dog", "tree")


@pytest.mark.parametrize("preset", ["paper", "realtime", "tiny"])
def test_presets_run_end_to_end_on_tiny_model(tiny_loaded, rgb, preset):
    over = {} if preset == "tiny" else dict(image_size=None, gradcam_layer=1, gradcam_head=0, drop_fraction=0.05)
    s = Segmenter(tiny_loaded, make_config(preset, presence="all", **over))
    s.set_vocabulary(["dog", "tree"])
    res = s.segment(rgb)
    assert res.labels.shape == rgb.shape[:2] and res.timings["total"] > 0


def test_reduced_postprocess_resolution_returns_full_size(seg):
    big = np.random.default_rng(1).integers(0, 255, (400, 500, 3), dtype=np.uint8)
    seg.update_config(postprocess_max_side=100)
    res = seg.segment(big, outputs=ALL)
    assert res.labels.shape == (400, 500) and res.class_maps.shape == (3, 400, 500)


def test_paper_preset_on_salesforce_shaped_model(tmp_path, rgb):
    """Layer 7 / head 9 and the 384 -> 336 position interpolation on a model shaped like the real checkpoints'
    text side (12 layers x 12 heads) and patching (16 px, trained at 384), kept thin so it runs fast."""
    from ovss_ros.pnp_ovss.model_loading import load_blip
    from ovss_ros.pnp_ovss.tiny_model import build_blip, save_model

    model, processor = build_blip(["dog", "tree", "sky"], image_size=384, patch_size=16, vision_hidden=32,
                                  vision_layers=1, vision_heads=2, text_hidden=96, text_layers=12,
                                  text_heads=12)
    loaded = load_blip(str(save_model(model, processor, tmp_path)), device="cpu")
    seg = Segmenter(loaded, make_config("paper", presence="all"))
    assert seg.config.image_size == 336 and loaded.native_image_size == 384
    seg.set_vocabulary(["dog", "tree", "sky"])
    res = seg.segment(rgb)
    assert res.labels.shape == rgb.shape[:2] and res.class_ids.tolist() == [1, 2, 3]
    assert res.timings["vision"] > 0 and res.timings["gradcam"] > 0
