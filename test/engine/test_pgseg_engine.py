"""PGSeg behind the engine's one face: method detection, the same checks and messages as PnP-OVSS, results,
presets, the tensor face, the CLI. A random-weight tiny PGSeg (test/conftest.py) exercises the code paths."""
import numpy as np
import pytest
import torch
from PIL import Image

from ovss_ros.cli import main as segment_main
from ovss_ros.evaluation.cli import main as eval_main
from ovss_ros.engine.image_io import ImageError
from ovss_ros.engine.loading import ModelLoadError
from ovss_ros.pgseg import inference
from ovss_ros.pgseg.config import PGSEG_PRESETS, make_pgseg_config
from ovss_ros.pgseg.segmenter import PGSegSegmenter
from ovss_ros.engine.vocabulary import VocabularyError
from ovss_ros.engine.segmenter import Segmenter

VOCAB = ["red", "green", "blue", "dog"]


@pytest.fixture(scope="module")
def pg(tiny_pgseg_dir):
    torch.set_num_threads(2)
    seg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu", background_threshold=0.3)
    seg.set_vocabulary(VOCAB)
    return seg


@pytest.fixture(scope="module")
def pnp(tiny_blip_dir):
    seg = Segmenter.from_pretrained(str(tiny_blip_dir), preset="tiny", device="cpu")
    seg.set_vocabulary(VOCAB)
    return seg


def frame(h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    img[:, w // 2:] = (30, 170, 60)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


# -- one face, two methods ----------------------------------------------------------------------------
def test_the_method_is_read_from_the_checkpoint(pg, pnp):
    assert isinstance(pg, PGSegSegmenter) and pg.method == "pgseg" and pg.model.has_npr
    assert pnp.method == "pnp_ovss"


@pytest.mark.parametrize("method,fixture,found", [("pnp_ovss", "tiny_pgseg_dir", "groupvit"),
                                                  ("pgseg", "tiny_blip_dir", "blip")])
def test_a_checkpoint_of_the_other_kind_is_one_clear_error(method, fixture, found, request):
    path = request.getfixturevalue(fixture)
    with pytest.raises(ModelLoadError) as err:
        Segmenter.from_pretrained(str(path), method=method, device="cpu")
    msg = str(err.value)
    assert f"method {method!r} needs" in msg and f"{found!r} checkpoint" in msg


def test_an_unknown_method_is_refused(tiny_pgseg_dir):
    with pytest.raises(ValueError, match="method='segformer'"):
        Segmenter.from_pretrained(str(tiny_pgseg_dir), method="segformer")


def test_a_plain_groupvit_model_runs_without_npr(tiny_pgseg_dir):
    from transformers import AutoTokenizer, GroupViTConfig, GroupViTModel

    config = GroupViTConfig.from_pretrained(str(tiny_pgseg_dir))
    config.npr_prototypes = None
    plain = GroupViTModel(config)
    seg = Segmenter.from_pretrained(plain, processor=AutoTokenizer.from_pretrained(str(tiny_pgseg_dir)),
                                    preset="tiny", device="cpu")
    assert seg.method == "pgseg" and not seg.model.has_npr
    seg.set_vocabulary(VOCAB)
    assert seg.segment(frame()).labels.shape == (60, 80)


# -- the same checks and messages as PnP-OVSS -----------------------------------------------------------
@pytest.mark.parametrize("vocab", [[], ["red", " Red "], ["x" * 80], "red, green", ["ok", 3], ["a\x07b"]])
def test_bad_vocabularies_get_pnp_ovss_messages_and_keep_the_old_one(pg, pnp, vocab):
    errors = []
    for seg in (pg, pnp):
        with pytest.raises(VocabularyError) as err:
            seg.set_vocabulary(vocab)
        errors.append(str(err.value))
        assert seg.vocabulary == tuple(VOCAB)
    assert errors[0] == errors[1]


def test_the_77_token_context_is_checked_when_the_vocabulary_is_set(pg):
    pg.update_config(max_class_name_length=1000)
    try:
        with pytest.raises(VocabularyError, match=r"at most 77 .*context length"):
            pg.set_vocabulary(["red", " ".join(["blue"] * 80)])
        assert pg.vocabulary == tuple(VOCAB)
    finally:
        pg.update_config(max_class_name_length=64)


@pytest.mark.parametrize("image", [np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8),
                                   np.full((4, 4, 3), 2.0, np.float32), "not an image",
                                   np.zeros((4, 4, 3), np.int64)])
def test_bad_images_get_pnp_ovss_messages(pg, pnp, image):
    errors = []
    for seg in (pg, pnp):
        with pytest.raises(ImageError) as err:
            seg.segment(image)
        errors.append(str(err.value))
    assert errors[0] == errors[1]


def test_a_bad_frame_loses_nothing(pg):
    before = pg.segment(frame()).labels
    with pytest.raises(ImageError):
        pg.segment(np.zeros((3, 3, 5), np.uint8))
    assert np.array_equal(pg.segment(frame()).labels, before)


# -- results ----------------------------------------------------------------------------------------
def test_result_fields_are_consistent(pg):
    r = pg.segment(frame(), outputs=("labels", "confidence", "class_maps", "raw_maps"))
    assert r.labels.shape == (60, 80) and r.labels.dtype == np.uint8
    assert r.class_names == tuple(VOCAB) and r.presence.shape == (4,)
    assert np.isclose(r.presence.sum(), 1.0, atol=1e-5)             # image-level softmax over the vocabulary
    assert r.present.sum() == min(5, len(VOCAB)) and list(r.class_ids) == [i + 1 for i in np.flatnonzero(r.present)]
    assert set(np.unique(r.labels)) <= {0, *r.class_ids}
    assert r.class_maps.shape == (len(r.class_ids), 60, 80) and r.confidence.shape == (60, 80)
    assert r.raw_maps.shape[0] == len(r.class_ids) and r.raw_maps.shape[1:] == (96, 96)
    assert 0 <= r.class_maps.min() and r.class_maps.max() <= 1 + 1e-6
    assert {"preprocess", "vision", "scores", "upsample", "total"} <= set(r.timings)
    assert pg.segment(frame()).class_maps is None                     # extras only when asked for


def test_the_top_k_filter_limits_the_competing_classes(pg):
    pg.update_config(top_k=2)
    try:
        r = pg.segment(frame())
        assert r.present.sum() == 2
        assert list(np.flatnonzero(r.present)) == sorted(np.argsort(-r.presence)[:2])
    finally:
        pg.update_config(top_k=5)


def test_forced_classes_replace_the_filter(pg):
    r = pg.segment(frame(), present=["dog", "Blue"])
    assert list(np.flatnonzero(r.present)) == [2, 3]
    assert set(np.unique(r.labels)) <= {0, 3, 4}
    with pytest.raises(VocabularyError, match="not in the vocabulary"):
        pg.segment(frame(), present=["cat"])


def test_without_background_every_pixel_gets_a_class(pg):
    pg.update_config(background="never")
    try:
        assert 0 not in np.unique(pg.segment(frame()).labels)
    finally:
        pg.update_config(background="threshold")


def test_a_batch_is_the_frames_one_by_one(pg):
    frames = [frame(seed=1), frame(40, 90, seed=2)]
    batch = pg.segment_batch(frames)
    for f, b in zip(frames, batch):
        assert np.array_equal(pg.segment(f).labels, b.labels)


def test_the_tensor_face_agrees_with_the_numpy_face(pg):
    f = frame(71, 93, seed=3)
    t = pg.segment_torch(torch.from_numpy(f), outputs=("labels", "confidence"))
    assert t.labels.dtype == torch.uint8 and t.confidence.shape == (71, 93)
    assert (t.labels.numpy() == pg.segment(f).labels).mean() > 0.97


def test_sliding_windows_cover_the_frame_as_mmseg_does():
    assert inference.window_origins(448, 597, 448, 224) == [(0, 448, 0, 448), (0, 448, 149, 597)]
    wins = inference.window_origins(500, 700, 448, 224)
    assert len(wins) == 2 * 3 and wins[-1] == (52, 500, 252, 700)
    assert inference.window_origins(300, 200, 448, 224) == [(0, 300, 0, 200)]   # smaller than one window


def test_slide_and_whole_image_run_on_the_same_model(pg):
    before = pg.config
    pg.update_config(image_size=96, resize="short_side", crop_size=96, crop_stride=48)
    try:
        r = pg.segment(frame(60, 150))
        d = pg.decode_windows(pg.preprocess(frame(60, 150)))     # 60 x 150 -> 96 x 240: 4 windows at stride 48
        assert len(d["windows"]) == 4 and d["scores"].shape[0] == 4 and r.labels.shape == (60, 150)
    finally:
        pg.update_config(**before.to_dict())


# -- settings -----------------------------------------------------------------------------------------
def test_presets_and_their_alias():
    assert make_pgseg_config("paper") == make_pgseg_config("pgseg")
    authors = make_pgseg_config("pgseg")
    assert (authors.image_size, authors.crop_size, authors.crop_stride, authors.top_k) == (448, 448, 224, 5)
    assert authors.prompt_template == "a photo of a {}." and authors.background_threshold == 0.95
    rt = make_pgseg_config("realtime")
    assert rt.crop_size is None and rt.resize == "square"
    with pytest.raises(ValueError, match="unknown PGSeg preset 'fast'"):
        make_pgseg_config("fast")


@pytest.mark.parametrize("change,reason", [
    ({"top_k": 0}, "top_k=0"), ({"background_threshold": 1.5}, "background_threshold=1.5"),
    ({"resize": "crop"}, "resize='crop'"), ({"crop_size": 100, "crop_stride": 48}, "multiple of the patch size 8"),
    ({"crop_size": 96, "crop_stride": 192}, "larger than crop_size"), ({"dropout_rounds": 2}, "unknown PGSeg"),
    ({"prompt_template": "no slot"}, "prompt_template"),
])
def test_bad_settings_are_refused_and_change_nothing(pg, change, reason):
    before = pg.config
    with pytest.raises(ValueError, match=reason):
        pg.update_config(**change)
    assert pg.config == before


def test_a_new_template_re_embeds_the_vocabulary(pg):
    before = pg._text.clone()
    pg.update_config(prompt_template="a photo of a {}.")
    try:
        assert not torch.allclose(before, pg._text)
    finally:
        pg.update_config(prompt_template=PGSEG_PRESETS["tiny"]["prompt_template"])
    assert torch.allclose(before, pg._text)


# -- command lines ------------------------------------------------------------------------------------
def test_ovss_segment_runs_pgseg(tiny_pgseg_dir, tmp_path, capsys):
    image = tmp_path / "scene.png"
    Image.fromarray(frame()).save(image)
    rc = segment_main([str(image), "--classes", "red,green", "--model", str(tiny_pgseg_dir), "--method", "pgseg",
                       "--preset", "tiny", "--device", "cpu", "--out", str(tmp_path / "out"), "--set", "top_k=1"])
    assert rc == 0 and (tmp_path / "out" / "scene_labels.png").exists()
    import json

    summary = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert summary["method"] == "pgseg" and summary["config"]["top_k"] == 1
    capsys.readouterr()
    rc = segment_main([str(image), "--classes", "red", "--model", str(tiny_pgseg_dir), "--method", "pnp_ovss",
                       "--device", "cpu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "method 'pnp_ovss' needs" in err


def test_ovss_eval_runs_pgseg_on_the_toy_world(tiny_pgseg_dir, tmp_path):
    import json

    rc = eval_main(["--dataset", "toy", "--n", "2", "--method", "pgseg", "--model", str(tiny_pgseg_dir),
                    "--out", str(tmp_path), "--no-progress", "--presence", "gt"])
    res = json.loads((tmp_path / "toy_gt.json").read_text())
    assert rc == 0 and res["setup"]["method"] == "pgseg" and res["images"] == 2
    assert res["presence"]["recall"] == 1.0


# -- the expensive text part is paid once per vocabulary ------------------------------------------------
def test_text_is_embedded_once_per_vocabulary(tiny_pgseg_dir, monkeypatch):
    import ovss_ros.pgseg.segmenter as mod

    calls = []
    real = mod.text_embeddings
    monkeypatch.setattr(mod, "text_embeddings", lambda *a, **k: calls.append(1) or real(*a, **k))
    seg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu")
    seg.set_vocabulary(VOCAB)
    for i in range(3):
        seg.segment(frame(seed=i))
    seg.segment_batch([frame(), frame(seed=5)])
    seg.update_config(top_k=2, background_threshold=0.4)          # not a prompt change: no new text
    seg.segment(frame())
    assert len(calls) == 1
    seg.set_vocabulary(["dog", "red"])
    assert len(calls) == 2


def test_a_plain_groupvit_directory_loads_with_npr_off(tiny_pgseg_dir, tmp_path):
    from transformers import AutoTokenizer, GroupViTConfig, GroupViTModel

    config = GroupViTConfig.from_pretrained(str(tiny_pgseg_dir))
    del config.npr_prototypes
    GroupViTModel(config).save_pretrained(tmp_path)              # as transformers writes nvidia/groupvit-*
    AutoTokenizer.from_pretrained(str(tiny_pgseg_dir)).save_pretrained(tmp_path)
    seg = Segmenter.from_pretrained(str(tmp_path), device="cpu", preset="tiny")
    assert seg.method == "pgseg" and not seg.model.has_npr
    assert seg.loaded.image_mean == (0.485, 0.456, 0.406)         # no preprocessor file: the authors' ImageNet stats


def test_a_hub_id_missing_offline_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="nvidia/groupvit-gcc-yfcc.*not in the local Hugging Face cache"):
        Segmenter.from_pretrained("nvidia/groupvit-gcc-yfcc", method="pgseg")


def test_forcing_no_class_gives_background_as_pnp_ovss_does(pg, pnp):
    for seg in (pg, pnp):
        r = seg.segment(frame(), present=[], outputs=("labels", "class_maps", "confidence"))
        assert not r.labels.any() and not r.present.any() and len(r.class_ids) == 0
        assert r.class_maps.shape == (0, 60, 80) and r.confidence.max() == 0
