"""A few steps of the real training code, so the training path cannot rot."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
    from ovss_ros.pnp_ovss.model_loading import load_blip
    from ovss_ros.engine.segmenter import Segmenter
    from ovss_ros.pnp_ovss.config import make_config
    from ovss_ros.pnp_ovss.tiny_model import build_blip

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


def test_grouped_image_projections_change_no_number_and_no_gradient():
    from ovss_ros.pnp_ovss.prompts import enc_token_id
    from ovss_ros.pnp_ovss.tiny_model import build_blip
    from ovss_ros.toy_world.world import vocabulary_words

    model, proc = build_blip(vocabulary_words("pattern"), seed=2, **SMALL)
    names = class_names("pattern")
    prompts = tr.class_prompts(proc.tokenizer, names, enc_token_id(proc.tokenizer, model.config.text_config.vocab_size))
    emb = torch.randn(3, 145, SMALL["vision_hidden"], requires_grad=True)
    pairs = torch.randint(0, len(names), (3, 5), generator=torch.Generator().manual_seed(0))
    grouped = tr.itm_logits(model, emb, prompts, pairs)
    # the plain way: every caption gets its own copy of its image's tokens
    flat = emb[:, None].expand(3, 5, *emb.shape[1:]).reshape(15, *emb.shape[1:])
    out = model.text_encoder(input_ids=prompts.itm_ids[pairs.reshape(-1)], attention_mask=prompts.mask[pairs.reshape(-1)],
                             encoder_hidden_states=flat, encoder_attention_mask=torch.ones(flat.shape[:2], dtype=torch.long),
                             return_dict=True)
    plain = model.itm_head(out.last_hidden_state[:, 0]).view(3, 5, 2)
    torch.testing.assert_close(grouped, plain)
    params = [emb] + [p for n, p in model.named_parameters() if "crossattention.self.key" in n
                      or "crossattention.self.value" in n]
    g1 = torch.autograd.grad(grouped[..., 1].sum(), params, retain_graph=True)
    g2 = torch.autograd.grad(plain[..., 1].sum(), params)
    for a, b in zip(g1, g2):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)
    # hooks are gone afterwards: a plain call still works with batch sizes that are no multiple of the group
    model.text_encoder(input_ids=prompts.itm_ids[:7], attention_mask=prompts.mask[:7],
                       encoder_hidden_states=emb[:1].expand(7, -1, -1).contiguous(), return_dict=True)


def test_v2_training_warps_frames_to_the_model_input(tmp_path):
    """World v2 frames (160 x 120) train a square model, drawn from a pre-rendered pool."""
    r = _run(tmp_path, "v2", steps=2, heldout=2, eval_every=2, toy_version=2, scene_pool=8,
             model_args={**SMALL, "image_size": 64})
    assert r["toy_version"] == 2 and r["scene_pool"] == 8 and r["heldout"]["pairs"] == 2 * 12
    assert r["model"].config.vision_config.image_size == 64


def test_a_model_starts_training_at_another_input_size(tmp_path):
    """--init with another --image-size: the position table is resampled to the new grid (a v1 model onto v2's
    frames), the class token's row is kept, and the saved model and processor both use the new size."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    from ovss_ros.pnp_ovss.tiny_model import build_blip, save_model

    model, processor = build_blip(class_names("pattern"), seed=1, **SMALL)
    save_model(model, processor, tmp_path / "small")
    before = model.vision_model.embeddings.position_embedding.detach().clone()
    r = _run(tmp_path, "bigger", steps=1, lr=0.0, init=tmp_path / "small", model_args={**SMALL, "image_size": 128})
    table = r["model"].vision_model.embeddings.position_embedding
    assert table.shape == (1, 1 + 16 * 16, 32) and torch.equal(table[0, 0], before[0, 0])
    loaded = BlipForImageTextRetrieval.from_pretrained(str(tmp_path / "bigger"), use_safetensors=True)
    assert loaded.config.vision_config.image_size == 128
    assert BlipProcessor.from_pretrained(str(tmp_path / "bigger")).image_processor.size == {"height": 128,
                                                                                          "width": 128}
    # the new table is the old one resampled, not a fresh one: taken back to 12 x 12 it still follows the old
    old = before[0, 1:].reshape(1, 12, 12, -1).permute(0, 3, 1, 2)
    back = F.interpolate(table[0, 1:].detach().reshape(1, 16, 16, -1).permute(0, 3, 1, 2), size=(12, 12),
                         mode="bicubic", align_corners=False)
    assert F.cosine_similarity(back.flatten(), old.flatten(), dim=0) > 0.8
