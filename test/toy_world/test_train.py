"""A few steps of the real training code, so the training path cannot rot."""
import json

import numpy as np
import pytest
import torch

from ovss_ros.toy_world import train as tr
from ovss_ros.toy_world.world import class_names, make_scene

SMALL = dict(image_size=96, patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2,
             text_hidden=32, text_layers=2, text_heads=2)


def _run(tmp_path, name, **kw):
    args = dict(world="pattern", steps=3, batch=4, warmup=1, heldout=4, eval_every=3, seed=1, threads=None,
                model_args=SMALL, quiet=True)
    args.update(kw)
    return tr.train(tmp_path / name, log=tmp_path / f"{name}.jsonl", **args)


def test_few_steps_train_log_save_and_load_offline(tmp_path, monkeypatch):
    from ovss_ros.model_loading import load_blip
    from ovss_ros.segmenter import Segmenter
    from ovss_ros.config import make_config
    from ovss_ros.tiny_model import build_blip

    init, _ = build_blip([], seed=1, **SMALL)
    r = _run(tmp_path, "a")
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["event"] == "step"]
    assert [x["step"] for x in steps] == [0, 2] and all(np.isfinite(x["loss"]) for x in steps)
    assert any(x["event"] == "heldout" for x in lines) and lines[-1]["event"] == "done"
    assert 0.0 <= r["heldout"]["itm_accuracy"] <= 1.0 and r["heldout"]["pairs"] == 4 * 12
    # the weights moved
    moved = [not torch.equal(p, q) for (n, p), (_, q) in zip(r["model"].named_parameters(),
                                                               init.named_parameters()) if p.shape == q.shape]
    assert any(moved)
    # saved like a real checkpoint and loadable through the engine's normal path, offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "a"
    assert (d / "model.safetensors").is_file() and (d / "training.json").is_file()
    loaded = load_blip(str(d), device="cpu")
    seg = Segmenter(loaded, make_config("tiny"))
    seg.set_vocabulary(class_names("pattern"))
    res = seg.segment(make_scene(0).rgb)
    assert res.labels.shape == (96, 96)


def test_training_is_seeded(tmp_path):
    a = _run(tmp_path, "x", steps=2, heldout=0)
    b = _run(tmp_path, "y", steps=2, heldout=0)
    for (n, p), (_, q) in zip(a["model"].named_parameters(), b["model"].named_parameters()):
        assert torch.equal(p, q), n


def test_hard_negatives_come_before_absent_classes():
    names = class_names("pattern")
    y = torch.zeros(1, 12)
    y[0, names.index("striped red")] = 1
    pairs = tr.choose_pairs(y, names, 4, np.random.default_rng(0))[0].tolist()
    assert pairs[0] == names.index("striped red")
    hard = {k for k, n in enumerate(names) if n != "striped red" and ({"striped", "red"} & set(n.split()))}
    assert set(pairs[1:]) <= hard


def test_lr_schedule_warms_up_then_decays():
    lrs = [tr.lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
