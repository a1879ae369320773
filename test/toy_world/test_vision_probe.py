"""benchmarks/vision_probe.py: its ranking score tells a tower that separates the second attribute from one that
sees colour only, and a short run trains and logs."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch


class _Oracle(torch.nn.Module):
    """A tower whose [CLS] feature is the scene's multi-hot classes (scaled by `sign`): the identity head then
    scores present classes above absent ones (sign 1) or below them (sign -1)."""

    def __init__(self, scenes, n_classes: int, sign: float):
        super().__init__()
        self.rows = iter([scenes[i:i + 64] for i in range(0, len(scenes), 64)])
        self.n, self.sign = n_classes, sign

    def forward(self, pixel_values):
        chunk = next(self.rows)
        y = torch.zeros(len(chunk), 1, self.n)
        for i, s in enumerate(chunk):
            y[i, 0, s.present] = 1.0
        return SimpleNamespace(last_hidden_state=self.sign * (2 * y - 1))


@pytest.mark.parametrize("world", ["pattern", "shape"])
def test_ranking_score_separates_right_from_reversed(world, benchmark_script):
    vp = benchmark_script("vision_probe")
    from ovss_ros.toy_world.world_v2 import class_names, heldout_scenes

    names = class_names(world)
    scenes = list(heldout_scenes(12, world))
    head = torch.nn.Identity()
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    right = vp.score(_Oracle(scenes, len(names), 1.0), head, scenes, names, world, mean, std, 32)
    wrong = vp.score(_Oracle(scenes, len(names), -1.0), head, scenes, names, world, mean, std, 32)
    assert right["ranking_pairs"] == wrong["ranking_pairs"] > 0
    assert right["ranking_vs_same_colour"] == 1.0 and wrong["ranking_vs_same_colour"] == 0.0
    assert right["ranking_vs_other_colours"] == 1.0 and wrong["ranking_vs_other_colours"] == 0.0
    assert right["acc_positive"] == right["acc_same_colour"] == 1.0
    assert wrong["acc_positive"] == 0.0


def test_colour_is_read_from_the_right_word(benchmark_script):
    vp = benchmark_script("vision_probe")
    assert vp.colour_of("striped red", "pattern") == "red"
    assert vp.colour_of("red circle", "shape") == "red"


def test_short_run_trains_and_logs(tmp_path, benchmark_script):
    vp = benchmark_script("vision_probe")
    torch.set_num_threads(1)
    log = tmp_path / "probe.jsonl"
    final = vp.probe("shape", steps=3, init=None, lr=5e-4, pool=40, heldout=8, seed=0, eval_every=2, log=log)
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events == ["start", "heldout", "heldout", "done"]
    assert final["steps"] == 3 and final["world"] == "shape"
    assert 0.0 <= final["ranking_vs_same_colour"] <= 1.0 and np.isfinite(final["train_seconds"])


def test_plain_fills_leave_only_plain_objects(monkeypatch, benchmark_script):
    vp = benchmark_script("vision_probe")
    from ovss_ros.toy_world import world_v2

    monkeypatch.setattr(world_v2, "PATTERNS", world_v2.PATTERNS)      # restored after the test
    monkeypatch.setattr(world_v2, "DISTRACTOR_PATTERNS", world_v2.DISTRACTOR_PATTERNS)
    before = {o.pattern for s in world_v2.heldout_scenes(20, "shape") for o in s.objects}
    vp.use_plain_fills()
    after = {o.pattern for s in world_v2.heldout_scenes(20, "shape") for o in s.objects}
    assert len(before) > 1 and after == {"plain"}


def test_plain_fills_are_refused_in_the_pattern_world(benchmark_script):
    vp = benchmark_script("vision_probe")
    with pytest.raises(ValueError, match="shape world"):
        vp.probe("pattern", steps=1, init=None, lr=5e-4, pool=40, heldout=4, seed=0, eval_every=1, log=None,
                 plain_fills=True)


def test_conv_control_tower_fits_the_score_and_trains(tmp_path, benchmark_script):
    vp = benchmark_script("vision_probe")
    tower = vp.ConvTower(128)
    out = tower(torch.zeros(2, 3, 128, 128)).last_hidden_state
    assert out.shape == (2, 1, 128)
    final = vp.probe("shape", steps=2, init=None, lr=5e-4, pool=40, heldout=8, seed=0, eval_every=1, log=None,
                     tower_kind="cnn")
    assert final["tower"] == "cnn" and final["patch_size"] is None
    with pytest.raises(ValueError, match="vit or cnn"):
        vp.probe("shape", steps=1, init=None, lr=5e-4, pool=40, heldout=4, seed=0, eval_every=1, log=None,
                 tower_kind="mlp")
