"""The calibration measurement (reliability table, ECE) and the confidence formulas on inputs whose answer is
known by construction."""
import json

import numpy as np
import pytest
import torch

from ovss_ros.pnp_ovss import postprocess
from ovss_ros.evaluation.calibration import ReliabilityTable
from ovss_ros.pgseg import confidence as pg_conf


def test_a_calibrated_bin_adds_nothing_and_a_miscalibrated_one_its_weighted_gap():
    t = ReliabilityTable(10)
    t.add(np.full(20, 0.35), np.arange(20) < 7)             # 7 of 20 right at 0.35: calibrated
    t.add(np.full(10, 0.95), np.ones(10, bool))              # 10 of 10 right at 0.95: gap 0.05
    d = t.to_dict()
    assert d["pixels"] == 30 and d["bins"][3]["pixels"] == 20 and d["bins"][9]["pixels"] == 10
    assert d["bins"][3]["accuracy"] == pytest.approx(0.35) and d["bins"][3]["mean_confidence"] == pytest.approx(0.35)
    assert t.ece() == pytest.approx(10 / 30 * 0.05)


def test_overconfident_pixels_give_the_gap_as_ece():
    t = ReliabilityTable(10)
    t.add(np.ones(100), np.arange(100) < 60)                 # said 1.0, right 60 %
    assert t.ece() == pytest.approx(0.4)
    assert t.count[9] == 100 and np.isnan(t.accuracy()[0])  # 1.0 falls in the last bin, others empty


def test_ece_weighs_bins_by_pixels_and_bin_edges_are_left_closed():
    t = ReliabilityTable(10)
    t.add(np.array([0.1, 0.1, 0.1, 0.2]), np.array([False, False, False, True]))
    # bin [0.1, 0.2): 3 pixels at 0.1, none right -> gap 0.1; bin [0.2, 0.3): 1 pixel at 0.2, right -> gap 0.8
    assert t.count[1] == 3 and t.count[2] == 1
    assert t.ece() == pytest.approx(3 / 4 * 0.1 + 1 / 4 * 0.8)


def test_frames_compare_labels_with_ground_truth_and_skip_void():
    t = ReliabilityTable(10)
    labels = np.array([[1, 2], [0, 3]], np.uint8)
    gt = np.array([[1, 1], [255, 3]], np.uint8)
    t.add_frame(np.full((2, 2), 0.5, np.float32), labels, gt)
    assert t.total == 3 and t.right.sum() == 2
    with pytest.raises(ValueError, match="shapes differ"):
        t.add_frame(np.zeros((2, 3)), labels, gt)


def test_merge_adds_tables_and_rises_sees_a_drop():
    a, b = ReliabilityTable(10), ReliabilityTable(10)
    a.add(np.full(50, 0.25), np.arange(50) < 40)             # 0.8 right at low confidence
    b.add(np.full(50, 0.85), np.arange(50) < 20)             # 0.4 right at high confidence
    assert a.rises() and not a.merge(b).rises() and a.total == 100
    assert a.rises(slack=0.5)


def test_bad_confidence_is_refused():
    t = ReliabilityTable(10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        t.add(np.array([1.2]), np.array([True]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        t.add(np.array([np.nan]), np.array([True]))
    assert np.isnan(t.ece())


def test_label_confidence_is_the_evidence_share_times_presence():
    soft = torch.tensor([[[1.0, 0.0]], [[1.0, 0.5]], [[0.0, 0.5]]])     # [L=3, 1, 2]
    winner = torch.tensor([[1, 2]])
    prior = torch.tensor([1.0, 0.8, 0.5])
    c = postprocess.label_confidence(soft, winner, None, prior, 0.5)
    torch.testing.assert_close(c, torch.tensor([[0.5 * 0.8, 0.5 * 0.5]]))
    marg = torch.tensor([[1.0, 0.9]])
    c = postprocess.label_confidence(soft, winner, marg, prior, 0.5)   # pooled with the CRF marginal
    torch.testing.assert_close(c, torch.tensor([[0.75 * 0.8, 0.7 * 0.5]]))
    flat = postprocess.label_confidence(torch.zeros(4, 1, 1), torch.zeros(1, 1, dtype=torch.long), None,
                                        torch.ones(4), 0.5)
    assert flat.item() == pytest.approx(0.25)                             # no evidence: uniform over labels


def test_pgseg_label_probabilities_mix_groups_by_assignment():
    # two groups: group 0 is background by the rule (its best kept score is below the threshold)
    p = torch.tensor([[[0.1, 0.2], [0.9, 0.05]]])                         # [B, G, K]
    scores = torch.tensor([[[0.05, 0.1], [0.8, 0.02]]])
    pi = pg_conf.group_label_probabilities(p, scores, background=0.5)
    torch.testing.assert_close(pi, torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.9, 0.05]]]))
    maps = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)                     # pixel: 1/4 group 0, 3/4 group 1
    probs = pg_conf.pixel_label_probabilities(maps, pi)[0, :, 0, 0]
    torch.testing.assert_close(probs, torch.tensor([0.25, 0.675, 0.0375]))
    assert pg_conf.group_label_probabilities(p, scores, None) is p         # no background channel


def test_pgseg_group_maps_are_distributions_over_groups():
    a1 = torch.rand(1, 4, 16).softmax(dim=1)      # [B, G1, N]: softmax over the 4 groups for each of 16 patches
    a2 = torch.rand(1, 2, 4).softmax(dim=1)
    maps = pg_conf.group_maps([a1, a2], (8, 8), 2)
    assert maps.shape == (1, 2, 8, 8)
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(1, 8, 8))


def test_a_frame_without_classes_is_as_sure_as_the_likeliest_class_is_absent(tiny_loaded, rgb):
    from ovss_ros.pnp_ovss.config import make_config
    from ovss_ros.engine.segmenter import Segmenter

    seg = Segmenter(tiny_loaded, make_config("tiny", presence_threshold=1.0))   # ITM runs, nothing passes
    seg.set_vocabulary(["dog", "car", "tree"])
    res = seg.segment(rgb, outputs=["confidence"])
    assert not res.present.any() and (res.labels == 0).all()
    np.testing.assert_allclose(res.confidence, 1.0 - res.presence.max(), atol=1e-6)
    forced = seg.segment(rgb, present=[], outputs=["confidence"])           # no estimate: 0, as PGSeg
    assert forced.confidence.max() == 0


def test_tempering_at_one_is_the_plain_softmax_and_assignment_tempering_is_the_softmax_of_logits_over_t():
    logits = torch.randn(2, 5, 7)
    assert torch.equal(pg_conf.tempered_softmax(logits, 1.0), logits.softmax(dim=-1))
    torch.testing.assert_close(pg_conf.tempered_softmax(logits, 2.5), (logits / 2.5).softmax(dim=-1))
    a_logits = torch.randn(1, 4, 16)
    a = a_logits.softmax(dim=1)
    maps = pg_conf.group_maps([a], (8, 8), 2, temperature=3.0)
    torch.testing.assert_close(maps, pg_conf.group_maps([(a_logits / 3.0).softmax(dim=1)], (8, 8), 2))
    assert torch.equal(pg_conf.group_maps([a], (8, 8), 2, 1.0), pg_conf.group_maps([a], (8, 8), 2))
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(1, 8, 8))
    for bad in (0, -1.0, float("inf"), float("nan"), True, "2"):
        with pytest.raises(ValueError, match="positive"):
            pg_conf.check_temperature(bad)


def _pgseg(path):
    from ovss_ros.engine.segmenter import Segmenter

    return Segmenter.from_pretrained(str(path), preset="tiny", device="cpu", background_threshold=0.3)


def test_pgseg_temperatures_come_from_the_checkpoint_and_change_no_label(tiny_pgseg_dir, tmp_path):
    import shutil

    from ovss_ros.evaluation.calibration import write_confidence_temperatures
    from ovss_ros.engine.loading import ModelLoadError
    from ovss_ros.pgseg.model import logit_scale

    rgb = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)   # the model's size: no resize
    rgb[20:60, 10:50] = (30, 200, 40)
    plain = _pgseg(tiny_pgseg_dir)                       # a checkpoint without the fields: (1, 1)
    assert plain.confidence_temperatures == (1.0, 1.0)
    classes = ["dog", "car", "tree"]
    plain.set_vocabulary(classes)
    base = plain.segment(rgb, present=classes, outputs=["confidence"])
    # ... and the untempered mixture, built here from the decode's own quantities (one window at the frame's size)
    x = plain.preprocess(rgb)
    d = plain.decode_windows(x, [0, 1, 2])
    p = (logit_scale(plain.model) * d["groups"] @ plain._text.T).softmax(dim=-1)
    pi = pg_conf.group_label_probabilities(p, d["scores"], plain.config.background_threshold)
    maps = pg_conf.group_maps(d["assignments"], tuple(d["group_index"].shape[-2:]), plain.check.patch_size)
    mix = pg_conf.pixel_label_probabilities(maps, pi)[0]                  # [1 + 3, 96, 96], background first
    expected = mix.gather(0, torch.from_numpy(base.labels.astype(np.int64))[None])[0].clamp(0, 1).numpy()
    np.testing.assert_allclose(base.confidence, expected, atol=1e-5)

    folder = tmp_path / "tempered"
    shutil.copytree(tiny_pgseg_dir, folder)
    write_confidence_temperatures(folder, (2.0, 5.0))
    tempered = _pgseg(folder)
    assert tempered.confidence_temperatures == (2.0, 5.0)
    tempered.set_vocabulary(classes)
    res = tempered.segment(rgb, present=classes, outputs=["confidence"])
    np.testing.assert_array_equal(res.labels, base.labels)
    assert np.abs(res.confidence - base.confidence).max() > 1e-3      # the temperatures are used
    labels, (c_shipped, c_plain) = tempered.confidence_sweep(rgb, [(2.0, 5.0), (1.0, 1.0)], present=classes)
    np.testing.assert_array_equal(labels, base.labels)                 # the fit sees what segment() gives
    np.testing.assert_allclose(c_shipped, res.confidence, atol=1e-6)
    np.testing.assert_allclose(c_plain, base.confidence, atol=1e-6)
    for t in ((1.0, 1.0), (0.5, 1.0), (10.0, 30.0)):
        tempered.confidence_temperatures = t
        np.testing.assert_array_equal(tempered.segment(rgb, present=classes, outputs=["confidence"]).labels,
                                      base.labels)
    tempered.confidence_temperatures = (1.0, 1.0)
    np.testing.assert_allclose(tempered.segment(rgb, present=classes, outputs=["confidence"]).confidence,
                               base.confidence, atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        tempered.confidence_temperatures = (0.0, 1.0)

    cfg = json.loads((folder / "config.json").read_text())
    cfg["confidence_temperature"] = -1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="confidence_temperature"):
        _pgseg(folder)


class _Sweeper:
    """Stands in for a segmenter: every pixel labelled 1, confidence = the first temperature / 10."""

    def confidence_sweep(self, image, temperatures):
        return np.ones(image.shape[:2], np.uint8), [np.full(image.shape[:2], a / 10, np.float32)
                                                    for a, _ in temperatures]


def test_the_fit_picks_the_temperatures_whose_confidence_matches_the_accuracy():
    from ovss_ros.evaluation.calibration import fit_confidence_temperatures

    gt = np.ones((10, 10), np.uint8)
    gt[:3] = 2                                                # 70 % of the pixels labelled right
    fit = fit_confidence_temperatures(_Sweeper(), [(np.zeros((10, 10, 3), np.uint8), gt)] * 3,
                                      class_temperatures=(5.0, 7.0, 9.0), assignment_temperatures=(1.0,))
    assert fit["temperatures"] == (7.0, 1.0) and fit["ece"] == pytest.approx(0.0, abs=1e-6)
    assert fit["grid"]["9,1"] == pytest.approx(0.2, abs=1e-6) and fit["frames"] == 3
    with pytest.raises(ValueError, match="no labelled frames"):
        fit_confidence_temperatures(_Sweeper(), [])
