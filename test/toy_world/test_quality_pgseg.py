"""Quality floors of the embedded toy PGSeg (ovss_ros/data/toy_pgseg) on held-out scenes: a regression in the
PGSeg model, decode or presets drops these well below the floors.

Floors sit a little below what the shipped model reaches on these exact scenes (docs/pgseg.md) and clearly above
the trivial baselines (all background ~0.06, uniform random ~0.02 mIoU).
"""
import os

import pytest

from ovss_ros.evaluation.datasets import ToyWorld
from ovss_ros.evaluation.runner import baselines, evaluate
from ovss_ros.toy_world import PGSEG_MODEL_DIR

N_SCENES = 40
# The floors guard the bar for a PGSeg whose groups follow objects (>= 0.60 end to end): the groups
# collapsing onto one or two of eight, as in the earlier toy models (0.18), or a decode / preset regression
# (threshold 0.2, top-8 image filter) falls far below them.
FLOOR_GT = 0.65       # mIoU, ground-truth presence; measured 0.747 on these 40 scenes (0.698 on 200)
FLOOR_ITM = 0.62      # mIoU, end to end; measured 0.711 on these 40 scenes (0.666 on 200)


@pytest.fixture(scope="module")
def segmenter():
    from ovss_ros.engine.segmenter import Segmenter

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Segmenter.from_pretrained(str(PGSEG_MODEL_DIR), preset="tiny", device="cpu")


@pytest.fixture(scope="module")
def scenes():
    return ToyWorld(N_SCENES)


def test_shipped_model_is_small_complete_and_pgseg():
    files = {p.name for p in PGSEG_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "README.md",
            "training.json", "training_log.jsonl"} <= files
    assert sum(p.stat().st_size for p in PGSEG_MODEL_DIR.iterdir()) <= 10 * 2**20


def test_localization_alone_beats_floor_and_baselines(segmenter, scenes):
    res = evaluate(segmenter, scenes, presence="gt", progress=False)
    base = baselines(scenes)
    m = res["standard"]["mIoU"]
    assert m >= FLOOR_GT, m
    assert m > 2 * base["all_background"]["standard"]["mIoU"] and m > 5 * base["uniform_random"]["standard"]["mIoU"]


def test_end_to_end_beats_floor(segmenter, scenes):
    res = evaluate(segmenter, scenes, presence="itm", progress=False)
    assert res["standard"]["mIoU"] >= FLOOR_ITM, res["standard"]["mIoU"]
