"""The calibration measurement (reliability table, ECE) and the confidence formulas on inputs whose answer is
known by construction."""
import numpy as np
import pytest
import torch

from ovss_ros import postprocess
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
    from ovss_ros.config import make_config
    from ovss_ros.segmenter import Segmenter

    seg = Segmenter(tiny_loaded, make_config("tiny", presence_threshold=1.0))   # ITM runs, nothing passes
    seg.set_vocabulary(["dog", "car", "tree"])
    res = seg.segment(rgb, outputs=["confidence"])
    assert not res.present.any() and (res.labels == 0).all()
    np.testing.assert_allclose(res.confidence, 1.0 - res.presence.max(), atol=1e-6)
    forced = seg.segment(rgb, present=[], outputs=["confidence"])           # no estimate: 0, as PGSeg
    assert forced.confidence.max() == 0
