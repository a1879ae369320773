"""The GPU-shaped hot path against the plain one: the split text pass equals transformers' text encoder,
cached text and shared image keys/values change no number, batches equal frames one by one, and the work
that should happen once per vocabulary or per frame happens exactly that often."""
import numpy as np
import pytest
import torch

from ovss_ros.pnp_ovss import frame_batch, gradcam, salience_dropout, text_cache, text_pass
from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.pnp_ovss.prompts import build_prompts, enc_token_id
from ovss_ros.engine.segmenter import Segmenter

CLASSES = ["dog", "car", "tree", "red circle"]


def hf_token_gradcam(model, prompts, image_embeds, layers, head):
    """The uncached path: transformers' text encoder on the whole caption batch, GradCAM from its
    cross-attentions (image tokens expanded per caption, keys/values projected per caption)."""
    emb = image_embeds.detach().expand(prompts.input_ids.shape[0], -1, -1).requires_grad_(True)
    with torch.enable_grad():
        out = model.text_encoder(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask,
                                 encoder_hidden_states=emb,
                                 encoder_attention_mask=torch.ones(emb.shape[:2], dtype=torch.long),
                                 output_attentions=True, return_dict=True)
        logits = model.itm_head(out.last_hidden_state[:, 0])
        attns = [out.cross_attentions[i] for i in layers]
        grads = torch.autograd.grad(logits[:, 1].sum(), attns)
    gc = 0
    for a, g in zip(attns, grads):
        cam = a.detach()[..., 1:] * g[..., 1:].clamp(min=0)
        gc = gc + (cam.mean(dim=1) if head == "mean" else cam[:, head])
    return logits.detach(), gc * prompts.attention_mask[:, :, None]


@pytest.fixture
def model_and_prompts(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    enc = enc_token_id(tok, model.config.text_config.vocab_size)
    return model, {mode: build_prompts(tok, CLASSES, "a picture of {}", mode == "per_class", False, enc)
                   for mode in ("per_class", "single")}


@pytest.mark.parametrize("mode", ["per_class", "single"])
@pytest.mark.parametrize("head", [2, "mean"])
def test_split_text_pass_equals_the_transformers_text_encoder(model_and_prompts, mode, head):
    model, prompts = model_and_prompts
    p = prompts[mode]
    torch.manual_seed(0)
    embeds = torch.randn(2, 145, model.config.vision_config.hidden_size)     # two frames
    layers = [0, 2]
    prefix = text_pass.text_prefix(model, p.input_ids, p.attention_mask)
    stacked, per_frame = text_pass.stack([prefix, prefix])
    logits, probs = text_pass.itm_pass(model, stacked, text_pass.image_kv(model, embeds), capture=layers)
    tok = gradcam.token_gradcam(probs, gradcam.gradients(logits, probs, layers), layers, head, stacked.mask)
    assert per_frame == p.input_ids.shape[0]
    for f in range(2):
        ref_logits, ref_tok = hf_token_gradcam(model, p, embeds[f:f + 1], layers, head)
        rows = slice(f * per_frame, (f + 1) * per_frame)
        torch.testing.assert_close(logits[rows].detach(), ref_logits, atol=1e-6, rtol=1e-5)
        assert ref_tok.abs().max() > 0
        torch.testing.assert_close(tok[rows], ref_tok, atol=1e-7, rtol=1e-5)


def test_gradcam_over_several_layers_keeps_every_gradient_path(tiny_loaded):
    """dL/dA of an early layer flows through the later layers' attention too: the split pass must not cut it.
    Checked on the embedded trained model, whose attention is far from uniform (on random weights that path
    is too small to show)."""
    from pathlib import Path

    import ovss_ros
    from ovss_ros.pnp_ovss.model_loading import load_blip

    trained = load_blip(str(Path(ovss_ros.__file__).parent / "data" / "toy_blip"), device="cpu",
                        local_files_only=True)
    model, tok = trained.model, trained.tokenizer
    p = build_prompts(tok, ["plain red", "striped blue", "checked green"], "a picture of {}", True, True,
                      enc_token_id(tok, model.config.text_config.vocab_size))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 3, 96, 96), dtype=np.float32))
    with torch.no_grad():
        embeds = model.vision_model(pixel_values=x).last_hidden_state
    layers = [0, 1, 2]
    prefix = text_pass.text_prefix(model, p.input_ids, p.attention_mask)
    logits, probs = text_pass.itm_pass(model, prefix, text_pass.image_kv(model, embeds), capture=layers)
    tok_maps = gradcam.token_gradcam(probs, gradcam.gradients(logits, probs, layers), layers, "mean", prefix.mask)
    _, ref = hf_token_gradcam(model, p, embeds, layers, "mean")
    torch.testing.assert_close(tok_maps, ref, atol=1e-7, rtol=1e-4)


def test_attention_bias_equals_removing_the_dropped_image_tokens(model_and_prompts):
    model, prompts = model_and_prompts
    p = prompts["per_class"]
    torch.manual_seed(1)
    n = 144
    embeds = torch.randn(1, n + 1, model.config.vision_config.hidden_size)
    dropped = torch.tensor([3, 50, 51, 140, 3])
    keep = torch.ones(n, dtype=torch.bool)
    keep[dropped] = False
    kept = keep.nonzero().flatten()
    _, removed = hf_token_gradcam(model, p, embeds[:, torch.cat([torch.tensor([0]), kept + 1])], [0, 1, 2], "mean")
    expected = torch.zeros(*removed.shape[:2], n)
    expected[..., kept] = removed

    prefix = text_pass.text_prefix(model, p.input_ids, p.attention_mask)
    bias = salience_dropout.attention_bias([dropped], n, torch.float32, "cpu")
    logits, probs = text_pass.itm_pass(model, prefix, text_pass.image_kv(model, embeds), bias, [0, 1, 2])
    masked = gradcam.token_gradcam(probs, gradcam.gradients(logits, probs, [0, 1, 2]), [0, 1, 2], "mean",
                                   prefix.mask)
    assert masked[..., dropped].abs().max() == 0
    torch.testing.assert_close(masked, expected, atol=1e-7, rtol=1e-4)


def _seg(tiny_loaded, preset, **kw):
    seg = Segmenter(tiny_loaded, make_config(preset, **kw))
    seg.set_vocabulary(CLASSES)
    return seg


def _frames():
    rng = np.random.default_rng(3)
    frames = []
    for h, w in [(72, 100), (96, 96), (50, 130)]:
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img[10:40, 20:60] = (220, 30, 30)
        frames.append(img)
    return frames


BATCH_CONFIGS = {
    "tiny": ("tiny", dict(presence_threshold=0.0, presence_top_k=2)),
    "single_attention": ("realtime", dict(image_size=None, gradcam_layer=1, gradcam_head=2, dropout_rounds=3,
                                          presence_threshold=0.0, presence_top_k=2, vision_dtype="float32")),
    "pixel_crf": ("paper", dict(image_size=None, gradcam_layer="all", gradcam_head="mean", dropout_rounds=2,
                                presence_threshold=0.0, presence_top_k=2, prompt_mode="per_class")),
}


@pytest.mark.parametrize("name", sorted(BATCH_CONFIGS))
def test_a_batch_equals_its_frames_one_by_one(tiny_loaded, name):
    preset, kw = BATCH_CONFIGS[name]
    seg = _seg(tiny_loaded, preset, **kw)
    frames = _frames()
    presents = [None, ["tree", "dog"], ["car"]]      # class presence on one, forced classes on the others
    batch = seg.segment_batch(frames, presents, outputs=["raw_maps", "confidence"])
    singles = [seg.segment(f, p, outputs=["raw_maps", "confidence"]) for f, p in zip(frames, presents)]
    assert len({tuple(r.class_ids) for r in singles}) > 1, "frames should differ in their classes"
    for b, s, f in zip(batch, singles, frames):
        assert b.labels.shape == f.shape[:2]
        np.testing.assert_array_equal(b.class_ids, s.class_ids)
        np.testing.assert_allclose(b.presence, s.presence, atol=1e-6)
        np.testing.assert_allclose(b.raw_maps, s.raw_maps, rtol=1e-4, atol=1e-6 * max(1e-12, s.raw_maps.max(initial=0)))
        np.testing.assert_array_equal(b.labels, s.labels)


def test_a_forced_frame_and_an_empty_frame_in_one_batch(tiny_loaded):
    seg = _seg(tiny_loaded, "tiny", presence_threshold=1.0)       # nothing is ever present ...
    a, b = _frames()[:2]
    ra, rb = seg.segment_batch([a, b], presents=[None, ["tree"]], outputs=["class_maps"])
    assert not ra.present.any() and (ra.labels == 0).all() and ra.class_maps.shape == (0, *a.shape[:2])
    assert rb.class_ids.tolist() == [3] and rb.class_maps.shape == (1, *b.shape[:2])   # ... unless forced
    np.testing.assert_array_equal(rb.labels, seg.segment(b, present=["tree"]).labels)


def test_pass_zero_from_the_presence_graph_equals_its_own_pass(tiny_loaded, monkeypatch):
    seg = _seg(tiny_loaded, "tiny", presence_threshold=0.3, dropout_rounds=2)
    frames = _frames()
    passes = []
    real_itm = seg.itm
    monkeypatch.setattr(seg, "itm", lambda *a, **k: passes.append(1) or real_itm(*a, **k))
    results = {}
    for reuse in (True, False):
        monkeypatch.setattr(frame_batch, "_reuse_presence", lambda *a, _r=reuse: _r)
        passes.clear()
        results[reuse] = seg.segment_batch(frames, outputs=["raw_maps"])
        assert len(passes) == (2 if reuse else 3)      # presence + rounds, pass 0 shared or not
    for a, b in zip(results[True], results[False]):
        assert a.raw_maps.size and a.raw_maps.max() > 0
        np.testing.assert_allclose(a.raw_maps, b.raw_maps, rtol=1e-4, atol=1e-7 * b.raw_maps.max())
        np.testing.assert_array_equal(a.labels, b.labels)


def test_text_is_prepared_once_per_vocabulary_and_image_keys_once_per_frame(tiny_loaded, monkeypatch):
    calls = []
    real_prefix = text_cache.text_prefix
    monkeypatch.setattr(text_cache, "text_prefix", lambda *a: calls.append(1) or real_prefix(*a))
    key_calls = []
    hooks = [layer.crossattention.self.key.register_forward_hook(lambda m, a, o: key_calls.append(a[0].shape[0]))
             for layer in tiny_loaded.model.text_encoder.encoder.layer]
    try:
        for mode, per_vocab in (("per_class", 1), ("single", 1)):
            calls.clear()
            seg = _seg(tiny_loaded, "realtime", image_size=None, gradcam_layer=1, gradcam_head=2,
                       presence="all", dropout_rounds=3, prompt_mode=mode, vision_dtype="float32")
            assert len(calls) == per_vocab                    # the presence captions, at set_vocabulary
            key_calls.clear()
            for frame in _frames():
                seg.segment(frame)
            # one projection per layer per call, shared by every round (attention-mode dropout)
            assert key_calls == [1] * 3 * len(_frames())
            key_calls.clear()
            seg.segment_batch(_frames())
            assert key_calls == [3] * 3                        # one projection per layer for the whole batch
            # per_class selects rows of the cached prefix; single prepares the all-class caption once
            assert len(calls) == per_vocab + (mode == "single")
            seg.update_config(threshold=0.3)                   # not a prompt setting: nothing rebuilt
            seg.segment(_frames()[0])
            assert len(calls) == per_vocab + (mode == "single")
            seg.update_config(prompt_template="a photo of {}")
            assert len(calls) == 2 * per_vocab + (mode == "single")
    finally:
        for h in hooks:
            h.remove()


def test_pixel_dropout_projects_again_after_each_vit_rerun(tiny_loaded):
    seg = _seg(tiny_loaded, "paper", image_size=None, gradcam_layer=1, gradcam_head=2, presence="all",
               dropout_rounds=3, postprocess="blur")
    key_calls = []
    layer0 = tiny_loaded.model.text_encoder.encoder.layer[0].crossattention.self.key
    h = layer0.register_forward_hook(lambda m, a, o: key_calls.append(a[0].shape[0]))
    try:
        seg.segment_batch(_frames()[:2])
    finally:
        h.remove()
    assert key_calls == [2, 2, 2]          # the frames' pass 0, then after each of the two ViT re-runs


def test_outputs_are_checked(tiny_loaded):
    seg = _seg(tiny_loaded, "tiny")
    with pytest.raises(ValueError, match="unknown outputs"):
        seg.segment(_frames()[0], outputs=["labels", "masks"])
    res = seg.segment(_frames()[0])
    assert res.class_maps is None and res.confidence is None and res.raw_maps is None
    assert seg.segment_batch([]) == [] and seg.segment_torch_batch([]) == []
