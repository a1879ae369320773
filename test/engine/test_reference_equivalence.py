"""The engine's paper preset against the project's independent step-by-step reference, and the realtime preset
against the paper preset when it is asked to do the same work."""
import numpy as np
import pytest

from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.pnp_ovss.prompts import enc_token_id
from ovss_ros.engine.segmenter import OUTPUTS as ALL, Segmenter

from reference_literal import segment as reference_segment

CLASSES = ["dog", "car", "tree"]


def paper(tiny_loaded, **kw):
    cfg = make_config("paper", image_size=None, gradcam_layer=1, gradcam_head=2, presence="all", **kw)
    seg = Segmenter(tiny_loaded, cfg)
    seg.set_vocabulary(CLASSES)
    return seg


@pytest.mark.parametrize("bg_mode", ["always", "if_few_classes"])
def test_paper_preset_equals_literal_reference(tiny_loaded, rgb, bg_mode):
    seg = paper(tiny_loaded, background=bg_mode)
    res = seg.segment(rgb, outputs=["raw_maps"])      # the accumulated maps before threshold

    ref_maps, ref_labels = reference_segment(
        tiny_loaded.model, tiny_loaded.tokenizer, rgb, CLASSES, size=tiny_loaded.native_image_size,
        layer=1, head=2, bg_mode=bg_mode,
        enc_id=enc_token_id(tiny_loaded.tokenizer, tiny_loaded.model.config.text_config.vocab_size))
    ours = res.raw_maps
    assert ours.shape == ref_maps.shape
    assert ref_maps.max() > 0
    np.testing.assert_allclose(ours, ref_maps, atol=1e-4 * ref_maps.max(), rtol=1e-4)
    np.testing.assert_array_equal(res.labels, ref_labels)
    if bg_mode == "if_few_classes":        # three classes: no background channel, every pixel gets a class
        assert (res.labels > 0).all()


def test_realtime_with_four_pixel_passes_in_fp32_equals_paper(tiny_loaded, rgb):
    ref = paper(tiny_loaded)
    rt = Segmenter(tiny_loaded, make_config("realtime", image_size=None, gradcam_layer=1, gradcam_head=2,
                                            presence="all", dropout_rounds=4, dropout_mode="pixel",
                                            vision_dtype="float32"))
    rt.set_vocabulary(CLASSES)
    a, b = ref.segment(rgb, outputs=ALL), rt.segment(rgb, outputs=ALL)
    # same maps; realtime's blur-only post-processing changes only the final CRF step
    np.testing.assert_allclose(a.class_maps, b.class_maps, atol=1e-5)
    rt.update_config(postprocess="blur+crf")
    np.testing.assert_array_equal(rt.segment(rgb).labels, a.labels)


