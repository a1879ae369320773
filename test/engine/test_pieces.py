"""Unit behaviour of the engine's pieces: Salience Dropout, thresholds, background, blur, presence, prompts."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from ovss_ros.pnp_ovss import class_presence, postprocess, salience_dropout
from ovss_ros.pnp_ovss.prompts import build_prompts, enc_token_id


# -- Salience Dropout ------------------------------------------------------------------------------
def test_select_patches_takes_top_k_of_the_not_yet_dropped():
    ranking = torch.tensor([0.1, 0.9, 0.5, 0.8, 0.0, 0.7])
    first = salience_dropout.select_patches(ranking, torch.zeros(0, dtype=torch.long), 2)
    assert sorted(first.tolist()) == [1, 3]
    second = salience_dropout.select_patches(ranking, first, 2)
    assert second[:2].tolist() == first.tolist() and sorted(second[2:].tolist()) == [2, 5]


def _reference_pick(ranking: np.ndarray, dropped: list, k: int) -> list:
    """The reference's step, `s[dropped] = 0; dropped += argsort(s)[-k:]`, with a defined tie order."""
    s = ranking.copy()
    s[dropped] = 0
    return dropped + [int(i) for i in np.argsort(s, kind="stable")[-k:]]


def test_select_patches_with_fewer_positive_scores_than_k_matches_the_reference():
    # two positive scores left for k = 3: the third pick is a zero, here the already dropped patch 5
    ranking = np.array([0.0, 0.3, 0.0, 0.2, 0.0, 0.9], np.float32)
    ours = salience_dropout.select_patches(torch.from_numpy(ranking), torch.tensor([5]), 3).tolist()
    assert ours == _reference_pick(ranking, [5], 3) == [5, 5, 3, 1]
    rng = np.random.default_rng(0)
    for _ in range(20):                       # sparse rankings with many ties at zero
        r = (rng.random(30) * (rng.random(30) < 0.2)).astype(np.float32)
        dropped = [int(i) for i in rng.choice(30, 4, replace=False)]
        got = salience_dropout.select_patches(torch.from_numpy(r), torch.tensor(dropped), 10).tolist()
        assert got == _reference_pick(r, dropped, 10)


def test_repeated_dropped_patches_are_harmless():
    dropped = torch.tensor([5, 5, 3])
    bias = salience_dropout.attention_bias([dropped], 6, torch.float32, "cpu")
    assert (bias[0] < 0).tolist() == [False, False, False, False, True, False, True]   # CLS + patches 3, 5
    assert salience_dropout.zero_dropped(torch.ones(2, 6), dropped)[:, [3, 5]].abs().sum() == 0


def test_patches_per_round_count_or_fraction():
    assert salience_dropout.patches_per_round(21, 10, None) == 10
    assert salience_dropout.patches_per_round(12, 10, 0.05) == 7          # 5 % of 144
    assert salience_dropout.patches_per_round(2, 10, None) == 4           # never more than the grid


def test_drop_pixels_zeroes_exactly_the_patch_blocks():
    x = torch.ones(1, 3, 12, 12)
    out = salience_dropout.drop_pixels(x, torch.tensor([0, 5]), grid=3, ps=4)    # (0,0) and (1,2)
    zero = out[0, 0] == 0
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[0:4, 0:4] = True
    expected[4:8, 8:12] = True
    assert torch.equal(zero, expected) and (out[:, 1:] == 0).sum() == 2 * 2 * 16


def test_attention_bias_is_per_frame_and_never_hides_the_image_cls():
    bias = salience_dropout.attention_bias([torch.tensor([1, 3]), torch.zeros(0, dtype=torch.long)], 5,
                                           torch.float32, "cpu")
    assert bias.shape == (2, 6) and bias[1].abs().sum() == 0 and bias[0, 0] == 0
    assert (bias[0] == torch.finfo(torch.float32).min).nonzero().flatten().tolist() == [2, 4]


# -- maps to labels ----------------------------------------------------------------------------------
def test_threshold_keeps_raw_values_and_guards_constant_maps():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 10.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out = postprocess.threshold_maps(maps, 0.15)
    assert out[0].tolist() == [[0.0, 0.0], [2.0, 10.0]]      # 1/10 < 0.15 dropped, raw 2 and 10 kept
    assert out[1].abs().sum() == 0 and not torch.isnan(out).any()


@pytest.mark.parametrize("mode,n,expected", [("always", 5, True), ("never", 1, False),
                                             ("if_few_classes", 2, True), ("if_few_classes", 3, False)])
def test_background_rule(mode, n, expected):
    assert postprocess.wants_background(mode, n, 3) is expected


def test_background_channel_marks_uncovered_pixels():
    maps = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]])
    assert postprocess.background_channel(maps).tolist() == [[[1.0, 0.0]]]


@pytest.mark.parametrize("shape,sigma", [((40, 60), 3.0), ((30, 20), 25.0), ((7, 5), 1.0)])
def test_gaussian_blur_matches_scipy(shape, sigma):
    rng = np.random.default_rng(0)
    x = rng.random((2, *shape)).astype(np.float32)
    ours = postprocess.gaussian_blur(torch.from_numpy(x), sigma).numpy()
    ref = np.stack([gaussian_filter(c, sigma) for c in x])       # mode='reflect', truncate=4
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_maps_with_a_tiny_span_are_normalised_as_the_reference_does():
    """The reference keeps any map with max > min, however small the span: no epsilon."""
    maps = torch.tensor([[0.0, 1e-13, 3e-13, 4e-13]])
    kept = postprocess.threshold_maps(maps, 0.5)[0]
    assert kept.tolist() == [0, 0, maps[0, 2].item(), maps[0, 3].item()]       # raw values above 0.5 kept
    np.testing.assert_allclose(postprocess.minmax(maps)[0].numpy(), [0, 0.25, 0.75, 1], rtol=1e-6)


def test_minmax_guards_constant_channel():
    out = postprocess.minmax(torch.stack([torch.full((3, 3), 2.0), torch.arange(9.0).view(3, 3)]))
    assert out[0].abs().sum() == 0 and out[1].max() == 1 and out[1].min() == 0


def test_work_size_keeps_aspect():
    assert postprocess.work_size(480, 640, 320) == (240, 320)
    assert postprocess.work_size(100, 80, 320) == (100, 80)


# -- class presence -----------------------------------------------------------------------------------
def test_select_classes_threshold_and_top_k():
    p = np.array([0.2, 0.9, 0.6, 0.95], np.float32)
    assert class_presence.select_classes(p, 0.5, None) == [3, 1, 2]
    assert class_presence.select_classes(p, 0.5, 2) == [3, 1]
    assert class_presence.select_classes(p, 0.99, None) == []


# -- prompts -------------------------------------------------------------------------------------------
def test_single_caption_rows_follow_character_offsets(tiny_loaded):
    tok = tiny_loaded.tokenizer
    enc = enc_token_id(tok, tiny_loaded.model.config.text_config.vocab_size)
    p = build_prompts(tok, ["traffic light", "dog"], "a picture of {}", per_class=False, first_rows=False,
                      enc_id=enc)
    words = tok.convert_ids_to_tokens(p.input_ids[0].tolist())
    assert p.input_ids[0, 0] == enc == tok.convert_tokens_to_ids("[ENC]")
    assert [words[r] for r in p.class_rows[0]] == ["traffic", "light"]
    assert [words[r] for r in p.class_rows[1]] == ["dog"]
    assert p.class_caption == [0, 0]


def test_per_class_captions_and_first_rows(tiny_loaded):
    tok = tiny_loaded.tokenizer
    p = build_prompts(tok, ["traffic light", "dog"], "a picture of {}", True, True, 6)
    assert p.input_ids.shape[0] == 2 and p.class_caption == [0, 1]
    assert p.rows_of(0) == [0] and p.attention_mask[1].sum() == 6     # [ENC] a picture of dog [SEP]


def test_enc_token_falls_back_to_blip_convention(tiny_loaded):
    class NoEnc:
        unk_token_id = 1

        def convert_tokens_to_ids(self, _):
            return 1
    assert enc_token_id(NoEnc(), 30524) == 30523


def test_parse_overrides_types_follow_the_parameters():
    from ovss_ros.engine.config import parse_overrides

    got = parse_overrides(["dropout_rounds=2", "drop_fraction=0.05", "postprocess=none", "presence_top_k=none",
                           "double_count_first_pass=false", "gradcam_layer=all", "gradcam_head = 3"])
    assert got == {"dropout_rounds": 2, "drop_fraction": 0.05, "postprocess": "none", "presence_top_k": None,
                   "double_count_first_pass": False, "gradcam_layer": "all", "gradcam_head": 3}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["dropout_rounds"])


def test_dense_crf_accepts_read_only_frames():
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, 5:] = 200
    rgb.setflags(write=False)                          # like np.frombuffer over a ROS message
    soft = np.zeros((2, 8, 10), np.float32)
    soft[0, :, :5] = soft[1, :, 5:] = 1
    q = postprocess.dense_crf(soft, rgb, 5, 3, 7, 50, 5, 10)
    assert q.argmax(0)[:, :5].max() == 0 and q.argmax(0)[:, 5:].min() == 1
