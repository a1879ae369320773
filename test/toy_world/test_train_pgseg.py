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


def test_each_present_class_gets_its_own_most_similar_group():
    """Group 2 is the best match of both present classes; the one-to-one matching gives it to class 0 (the
    better pair) and class 3 its next best, group 0; the groups matched to no class are the spare ones."""
    logits = torch.tensor([[[0.1, 0.0, 0.0, 0.8],
                            [0.0, 0.0, 0.0, 0.1],
                            [0.9, 0.0, 0.0, 0.85],
                            [0.0, 0.0, 0.0, 0.0]]])
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    rows, groups, classes, spare = tp.match_classes(logits, y)
    assert sorted(zip(groups, classes)) == [(0, 3), (2, 0)] and rows == [0, 0]
    assert spare.tolist() == [[False, True, False, True]]


def test_matched_group_loss_rewards_one_class_per_group_and_flat_spares():
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    sure = torch.full((1, 3, 4), 0.0)
    sure[0, 0, 0] = sure[0, 1, 3] = 20.0                     # group 0 is class 0, group 1 is class 3, group 2 flat
    mixed = sure.clone()
    mixed[0, 0, 3] = mixed[0, 1, 0] = 20.0                   # groups 0 and 1 each as sure of both classes
    spare_sure = sure.clone()
    spare_sure[0, 2, 1] = 20.0                               # the spare group claims a class
    match = tp.match_classes(sure, y)
    good = tp.matched_group_loss(sure, match)
    assert good < 0.01 + np.log(4)                           # flat spare: cross-entropy to uniform is log K
    assert tp.matched_group_loss(mixed, match) > good + 0.5
    assert tp.matched_group_loss(spare_sure, match) > good + 1.0


class _Vision:
    def __init__(self, assignments, grouped):
        self.assignments, self.grouped = assignments, grouped


def test_a_groups_pooled_description_follows_the_patches_it_owns():
    """Two stages (4 patches -> 2 -> 2 groups, the second a swap): final group 0 owns patches 2 and 3. Its
    pooled description is that of their mean token, whatever the other patches hold."""
    torch.manual_seed(0)
    model = tp.PGSegModel(tp.groupvit_config(50, 0, 1, False, **SMALL)).eval()
    patches = torch.randn(1, 4, SMALL["hidden"])
    first = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]])    # [B, G1, N]
    swap = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])                          # [B, G2, G1]
    vision = _Vision([first, swap], [patches])
    pooled = tp.pooled_groups(model, vision)
    with torch.no_grad():
        expect = tp.project(model, model.visual_projection, model.vision_model.layernorm(patches[:, 2:].mean(1)))
    assert torch.allclose(pooled[0, 0], torch.nn.functional.normalize(expect, dim=-1)[0], atol=1e-5)
    assert tp.chain_assignments(vision.assignments)[0].argmax(-1).tolist() == [1, 1, 0, 0]


def test_projector_batchnorms_keep_their_statistics_in_training():
    """Group, pooled and image embeddings pass the same projector; with batch statistics each would be
    normalised by the others' at test time. The running statistics stay as initialised."""
    r = tp.train(None, npr=False, steps=2, batch=4, warmup=1, seed=1, model_args=SMALL, quiet=True,
                 matched_group_weight=1.0)
    norms = [m for m in r["model"].modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in norms)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)


def test_matched_group_weight_ramps_up_over_its_warmup(tmp_path):
    assert [tp.warmup_ramp(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert tp.warmup_ramp(0, 0) == 1.0
    tp.train(tmp_path / "m", steps=2, batch=4, warmup=1, seed=1, model_args=SMALL, quiet=True,
             matched_group_weight=2.0, matched_group_warmup=400, log=tmp_path / "log.jsonl")
    setup = json.loads((tmp_path / "m" / "training.json").read_text())
    assert setup["matched_group_weight"] == 2.0 and setup["matched_group_warmup"] == 400
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[1])
    assert np.isfinite(first["matched_group"])
