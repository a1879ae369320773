"""A few steps of the PGSeg toy training (with and without NPR), and its NPR loss's two decisions: the
one-to-one matching maximises similarity, and the reliability filter reads each matched pair's own similarity."""
import json

import numpy as np
import pytest
import torch

from ovss_ros.toy_world import train as tr
from ovss_ros.toy_world import train_pgseg as tp

SMALL = dict(image_size=96, patch_size=8, hidden=32, heads=2, depths=(1, 1, 1), group_tokens=(8, 4),
             text_hidden=32, text_layers=1, text_heads=2, projection=16, projection_inner=32, npr_inner=32)


@pytest.mark.parametrize("npr", [True, False], ids=["npr", "no_npr"])
def test_few_steps_train_save_and_segment(tmp_path, monkeypatch, npr):
    from ovss_ros.engine.segmenter import Segmenter
    from ovss_ros.toy_world.world import class_names, make_scene, scene_seed

    r = tp.train(tmp_path / "m", npr=npr, steps=3, batch=4, warmup=1, seed=1, model_args=SMALL, quiet=True,
                 log=tmp_path / "log.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["event"] == "step"]
    assert [x["step"] for x in steps] == [0, 2] and all(np.isfinite(x["loss"]) for x in steps)
    assert ("npr" in steps[0]) == npr and lines[-1]["event"] == "done" and r["steps_done"] == 3
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seg = Segmenter.from_pretrained(str(tmp_path / "m"), preset="tiny", device="cpu")
    assert seg.method == "pgseg" and seg.model.has_npr == npr
    seg.set_vocabulary(class_names())
    assert seg.segment(make_scene(scene_seed("heldout", 0)).rgb).labels.shape == (96, 96)


def test_the_cli_dispatches_on_method(tmp_path, capsys):
    assert tr.main(["--method", "pgseg", "--no-npr", "--steps", "1", "--batch", "2", "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "training.json").read_text())["npr"] is False
    assert tr.main(["--method", "segformer"]) == 2
    assert "expected pnp_ovss or pgseg" in capsys.readouterr().err


def test_matching_pairs_each_group_with_its_most_similar_prototype():
    """Prototypes are the groups shuffled: the maximum-similarity matching recovers the shuffle, so every pair
    sits on the diagonal and the loss is low; the minimum-similarity matching (the authors' call) would not."""
    torch.manual_seed(0)
    groups = torch.nn.functional.normalize(torch.randn(2, 6, 16), dim=-1)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    protos = groups[:, perm]
    scale = torch.tensor(20.0)
    matched = tp.npr_pair_loss(groups, protos, scale)
    unrelated = tp.npr_pair_loss(groups, torch.randn(2, 6, 16), scale)
    assert matched < 0.05 < unrelated


def test_reliability_filter_reads_the_matched_pair():
    """Row 1's matched pair is the lowest of its row and is dropped; row 2's is the highest and is kept. Reading
    column 0 (the authors' gather) would keep row 1 (0.9 is its maximum) and drop row 2 (0.0 its minimum)."""
    logits = torch.tensor([[[0.9, 0.1, 0.2],
                            [0.9, 0.0, 0.5],
                            [0.0, 0.3, 0.8]]])
    assert tp.reliable_pairs(logits).tolist() == [[True, False, True]]
