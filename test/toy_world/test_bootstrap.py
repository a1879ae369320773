"""Bootstrap intervals of mIoU over scenes (ovss_ros/evaluation/bootstrap.py) and the engine-choice table built
on them (benchmarks/toy_variants.py)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovss_ros.evaluation.bootstrap import (bootstrap_miou, paired_difference, resample_weights,
                                           resampled_miou)
from ovss_ros.evaluation.metrics import ConfusionMatrix

ROOT = Path(__file__).resolve().parents[2]
K = 5


def _scenes(n: int, accuracy: float, seed: int) -> np.ndarray:
    """Per-scene confusion matrices [n, K, K + 1] of noisy label maps whose pixels are right with
    probability about `accuracy` (varying per scene), filled through ConfusionMatrix."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gt = rng.integers(0, K, (16, 16))
        p = np.clip(accuracy + rng.normal(0, 0.1), 0, 1)
        pred = np.where(rng.random(gt.shape) < p, gt, rng.integers(0, K, gt.shape))
        cm = ConfusionMatrix(K, ignore_index=None)
        cm.update(gt, pred)
        out.append(cm.hist)
    return np.stack(out)


def test_estimate_is_metrics_miou_on_the_pooled_matrix_and_inside_the_interval():
    cms = _scenes(60, 0.7, 0)
    pooled = ConfusionMatrix(K, ignore_index=None)
    pooled.hist = cms.sum(axis=0)
    ci = bootstrap_miou(cms, resamples=500, seed=1)
    assert ci.estimate == pytest.approx(pooled.metrics()["mIoU"], abs=1e-12)
    assert ci.low < ci.estimate < ci.high
    assert ci.resamples == 500 and ci.level == 0.95


def test_square_matrices_and_classes_without_ground_truth():
    cms = _scenes(30, 0.8, 2)[:, :, :K]          # [S, K, K]: no out-of-range column
    cms[:, 3, :] = 0                               # class 3 never in the ground truth: not in the mean
    pooled = ConfusionMatrix(K, ignore_index=None)
    pooled.hist = np.concatenate([cms.sum(axis=0), np.zeros((K, 1), np.int64)], axis=1)
    assert bootstrap_miou(cms).estimate == pytest.approx(pooled.metrics()["mIoU"], abs=1e-12)


def test_interval_narrows_with_more_scenes():
    few = bootstrap_miou(_scenes(20, 0.7, 3), seed=0)
    many = bootstrap_miou(_scenes(320, 0.7, 3), seed=0)
    assert (many.high - many.low) < 0.5 * (few.high - few.low)


def test_identical_variants_differ_by_exactly_zero():
    cms = _scenes(40, 0.7, 4)
    d = paired_difference(cms, cms.copy())
    assert (d.estimate, d.low, d.high) == (0.0, 0.0, 0.0)
    assert not d.excludes_zero


def test_a_better_variant_on_every_scene_is_told_apart():
    a = _scenes(40, 0.6, 5)
    b = a.copy()
    # move 3 % of each class's pixels from a wrong cell to the diagonal: b is better on every scene
    for s in range(len(b)):
        for k in range(K):
            wrong = [c for c in range(K + 1) if c != k and b[s, k, c] > 0]
            moved = min(b[s, k, wrong[0]], max(1, int(0.03 * b[s, k].sum())))
            b[s, k, wrong[0]] -= moved
            b[s, k, k] += moved
    d = paired_difference(a, b)
    assert d.estimate > 0 and d.low > 0 and d.excludes_zero
    assert paired_difference(b, a).high < 0


def test_same_seed_same_interval_other_seed_other_draws():
    cms = _scenes(50, 0.7, 6)
    assert bootstrap_miou(cms, seed=7) == bootstrap_miou(cms, seed=7)
    assert not np.array_equal(resample_weights(50, 100, 7), resample_weights(50, 100, 8))


def test_weights_are_draws_with_replacement():
    w = resample_weights(30, 200, 0)
    assert w.shape == (200, 30) and (w.sum(axis=1) == 30).all() and (w >= 0).all()
    assert (w.max(axis=1) >= 2).all()              # 30 draws from 30 scenes repeat one (p = 1 - 30!/30^30)


def test_vectorised_resamples_equal_pooling_the_drawn_scenes_one_by_one():
    cms = _scenes(25, 0.7, 9)
    w = resample_weights(25, 20, 3)
    fast = resampled_miou(cms, w)
    for r in range(20):
        cm = ConfusionMatrix(K, ignore_index=None)
        cm.hist = np.tensordot(w[r], cms, axes=1)
        assert fast[r] == pytest.approx(cm.metrics()["mIoU"], abs=1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="per-scene"):
        bootstrap_miou(np.zeros((4, 3, 7)))
    with pytest.raises(ValueError, match="differ in shape"):
        paired_difference(np.ones((4, 3, 4)), np.ones((5, 3, 4)))


def test_world_version_is_passed_on(benchmark_script):
    tv = benchmark_script("toy_variants")
    v1, v2 = tv.toy_scenes(2, "pattern", 1), tv.toy_scenes(2, "pattern", 2)
    assert len(v1) == len(v2) == 2
    assert v1.load(v1.items[0]).rgb.shape == (96, 96, 3) and v2.load(v2.items[0]).rgb.shape == (120, 160, 3)


def test_variant_table_smoke(tmp_path):
    """The script on 4 scenes with one variant besides the baseline: rows, intervals and calibration."""
    out = tmp_path / "v.json"
    run = subprocess.run([sys.executable, "benchmarks/toy_variants.py", "--n", "4", "--resamples", "200",
                          "--variants", "postprocess=none", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    d = json.loads(out.read_text())
    assert [r["name"] for r in d["rows"]] == ["baseline", "postprocess=none"]
    base, none = d["rows"]
    assert none["overrides"] == {"postprocess": "none"}
    for r in d["rows"]:
        m = r["mIoU"]
        assert 0 <= m["low"] <= m["estimate"] <= m["high"] <= 1 and m["resamples"] == 200
        assert set(r["vs_baseline"]) >= {"estimate", "low", "high", "excludes_zero"}
        assert "background" in r["per_class_iou"] and r["seconds_per_image"] > 0
    assert base["vs_baseline"]["estimate"] == 0 and not base["vs_baseline"]["excludes_zero"]
    assert none["vs_baseline"]["estimate"] == pytest.approx(none["mIoU"]["estimate"] - base["mIoU"]["estimate"],
                                                            abs=1e-5)
    cal = d["calibration"]
    assert cal["pixels"] == 4 * 96 * 96 and len(cal["bins"]) == 10 and 0 <= cal["ece"] <= 1
    assert d["toy_version"] == 1 and d["scenes"] == "heldout 0..3"
