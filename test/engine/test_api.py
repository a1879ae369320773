"""The engine API as a new user meets it: in-memory models, vocabulary refusals, raw maps, large frames."""
import numpy as np
import pytest
import torch

from ovss_ros.pnp_ovss import postprocess
from ovss_ros.pnp_ovss.config import POSTPROCESS_MAX_SIDE_CAP, make_config
from ovss_ros.pnp_ovss.model_loading import load_blip
from ovss_ros.engine.vocabulary import VocabularyError
from ovss_ros.engine.segmenter import OUTPUTS as ALL, Segmenter
from ovss_ros.pnp_ovss.tiny_model import blip_config, build_blip, word_tokenizer

WORDS = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "dog", "cat", "tree", "sky", "striped",
         "plain"]


# -- in-memory models -----------------------------------------------------------------------------------
def test_in_memory_model_segments_like_its_saved_copy(tiny_loaded, tiny_blip_words, rgb):
    model, processor = build_blip(tiny_blip_words, seed=0)      # the same weights as the saved tiny_dir
    ours = Segmenter.from_pretrained(model, processor=processor, preset="tiny", presence="all")
    assert ours.device == torch.device("cpu") and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    saved = Segmenter(tiny_loaded, make_config("tiny", presence="all"))
    for s in (ours, saved):
        s.set_vocabulary(["dog", "red circle"])
    a, b = ours.segment(rgb, outputs=ALL), saved.segment(rgb, outputs=ALL)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.raw_maps, b.raw_maps, rtol=1e-5, atol=1e-7)


def test_from_model_with_a_bare_tokenizer(rgb):
    model, processor = build_blip(WORDS, seed=0)
    seg = Segmenter.from_model(model, processor.tokenizer, preset="tiny", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert seg.loaded.image_mean == pytest.approx(processor.image_processor.image_mean)
    seg.set_vocabulary(["dog"])
    assert seg.segment(rgb).labels.shape == rgb.shape[:2]


def test_wrong_model_arguments_are_type_errors():
    model, processor = build_blip(WORDS, seed=0)
    with pytest.raises(TypeError, match="processor="):
        Segmenter.from_pretrained(model, preset="tiny")
    with pytest.raises(TypeError, match="got int"):
        Segmenter.from_pretrained(42)
    with pytest.raises(TypeError, match="BlipForImageTextRetrieval, got Linear"):
        Segmenter.from_model(torch.nn.Linear(2, 2), processor)
    with pytest.raises(TypeError, match="BlipProcessor or its tokenizer"):
        Segmenter.from_model(model, "not a processor", preset="tiny")
    with pytest.raises(TypeError, match="wrap_blip"):
        load_blip(model)                                    # was: OSError: File name too long


def test_preset_that_does_not_fit_names_one_that_does():
    model, processor = build_blip(WORDS, seed=0)          # 3 text layers: layer 7 does not exist
    with pytest.raises(ValueError, match=r"3 layers.*; the `tiny` preset fits this model"):
        Segmenter.from_model(model, processor, preset="paper")
    with pytest.raises(ValueError, match="3 layers") as info:          # an override no preset can undo
        Segmenter.from_model(model, processor, preset="paper", gradcam_layer=5)
    assert "fits" not in str(info.value)


# -- vocabulary ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_text_model():
    """A model whose text encoder takes at most 8 positions: [ENC] a picture of <2 words> [SEP] + 1."""
    from transformers import BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    tok = word_tokenizer(WORDS)
    cfg = blip_config(len(tok))
    cfg.text_config.max_position_embeddings = 8
    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(cfg).eval()
    return model, BlipProcessor(image_processor=BlipImageProcessor(size={"height": 96, "width": 96}), tokenizer=tok)


def test_too_long_per_class_caption_is_refused_by_class(short_text_model, rgb):
    seg = Segmenter.from_model(*short_text_model, preset="tiny", presence="itm", presence_threshold=0.0)
    seg.set_vocabulary(["red striped circle", "dog"])        # 8 tokens: exactly the limit, and it runs
    assert seg.segment(rgb).present.all()
    with pytest.raises(VocabularyError, match=r"class 'red striped plain circle' has 9 tokens.* at most 8"):
        seg.set_vocabulary(["dog", "red striped plain circle"])
    assert seg.vocabulary == ("red striped circle", "dog")


def test_too_long_single_caption_is_refused(short_text_model, rgb):
    seg = Segmenter.from_model(*short_text_model, preset="tiny", prompt_mode="single",
                               gradcam_rows="class_tokens", presence="all")
    seg.set_vocabulary(["dog", "cat", "tree"])              # "a picture of dog cat tree": 8 tokens
    assert seg.segment(rgb).labels.shape == rgb.shape[:2]
    with pytest.raises(VocabularyError, match=r"one caption naming all 4 classes .*9 tokens.*per_class"):
        seg.set_vocabulary(["dog", "cat", "tree", "sky"])   # each per-class caption alone would fit
    with pytest.raises(VocabularyError, match="9 tokens"):   # a template change is checked too
        seg.update_config(prompt_template="a picture of the {}")
    assert seg.config.prompt_template == "a picture of {}" and seg.vocabulary == ("dog", "cat", "tree")


def test_unknown_words_are_refused_by_name(tiny_loaded, rgb):
    seg = Segmenter(tiny_loaded, make_config("tiny"))
    seg.set_vocabulary(["dog"])
    with pytest.raises(VocabularyError, match=r"'plain zebra'.*does not know 'zebra'"):
        seg.set_vocabulary(["red circle", "plain zebra"])
    with pytest.raises(VocabularyError, match=r"'Gnu', 'okapi'"):
        seg.set_vocabulary(["Gnu okapi dog"])
    assert seg.vocabulary == ("dog",)


# -- raw maps ------------------------------------------------------------------------------------------
def test_raw_maps_are_the_maps_before_threshold_and_postprocessing(tiny_loaded, rgb):
    seg = Segmenter(tiny_loaded, make_config("tiny", presence="all", postprocess="none", background="never"))
    seg.set_vocabulary(["dog", "tree", "sky"])
    res = seg.segment(rgb, present=["tree", "sky"], outputs=ALL)
    grid = tiny_loaded.native_image_size // tiny_loaded.model.config.vision_config.patch_size
    assert res.raw_maps.shape == (2, grid, grid) and res.raw_maps.dtype == np.float32
    assert res.class_ids.tolist() == [2, 3] and res.raw_maps.max() > 0
    kept = postprocess.threshold_maps(torch.from_numpy(res.raw_maps), seg.config.threshold)
    expected = postprocess.minmax(postprocess.upsample(kept, rgb.shape[:2])).numpy()
    np.testing.assert_allclose(res.class_maps, expected, atol=1e-6)
    seg.update_config(presence="itm", presence_threshold=1.0)
    assert seg.segment(rgb, outputs=ALL).raw_maps.shape == (0, grid, grid)


# -- bounded post-processing ---------------------------------------------------------------------------
def test_work_size_is_bounded_in_every_case():
    assert postprocess.work_size(3000, 4000, None) == (768, 1024) and POSTPROCESS_MAX_SIDE_CAP == 1024
    assert postprocess.work_size(3000, 4000, 320) == (240, 320)
    assert postprocess.work_size(4000, 3000, 5000) == (1024, 768)      # the cap wins over any setting
    assert postprocess.work_size(375, 500, None) == (375, 500)         # VOC-sized frames stay full size


def test_large_frame_is_post_processed_at_the_bounded_size(tiny_loaded, monkeypatch):
    seen = []
    refine = postprocess.refine
    monkeypatch.setattr(postprocess, "refine", lambda ch, img, cfg: seen.append((ch.shape, img().shape)) or
                        refine(ch, img, cfg))       # img: the frame at the CRF's size, made when needed
    seg = Segmenter(tiny_loaded, make_config("tiny", presence="all"))     # blur+crf, postprocess_max_side None
    seg.set_vocabulary(["dog", "tree"])
    frame = np.zeros((3000, 4000, 3), np.uint8)
    frame[500:2000, 1000:3000] = (200, 40, 40)
    res = seg.segment(frame, outputs=ALL)
    assert seen == [(torch.Size([3, 768, 1024]), (768, 1024, 3))]
    assert res.labels.shape == (3000, 4000) and res.class_maps.shape == (2, 3000, 4000)
