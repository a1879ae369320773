"""BLIP's vision self-attention through SDPA (pnp_ovss/vision_attention.py): the same numbers as
transformers' eager attention, installed on one model only, and the segmenter's labels unchanged.

Shapes: BLIP-base (hidden 768, 12 heads, patch 16, 384 px) and BLIP-large (1024, 16 heads). The per-layer
checks build vision models of 2 layers (a full 12/24-layer model adds nothing per layer and costs minutes on
two shared cores); weights are redrawn at fan-in scale so that attention is far from uniform (transformers'
init, std 0.02, makes every softmax row nearly flat, which would hide a wrong scale or head split).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ovss_ros
from ovss_ros.pnp_ovss import text_pass, vision_attention

SHAPES = {
    "base": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
    "large": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16),
}
TOY_BLIP = Path(ovss_ros.__file__).parent / "data" / "toy_blip"


def fan_in_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * module.weight[0].numel() ** -0.5)
    return model


def vision_model(shape: str, layers: int = 2):
    from transformers import BlipVisionConfig, BlipVisionModel

    torch.manual_seed(0)
    cfg = BlipVisionConfig(**SHAPES[shape], num_hidden_layers=layers, image_size=384, patch_size=16)
    return fan_in_weights(BlipVisionModel(cfg).eval().requires_grad_(False))


def run(model, pixels, interpolate: bool, sdpa: bool) -> torch.Tensor:
    (vision_attention.use_sdpa if sdpa else vision_attention.use_eager)(model)
    with torch.no_grad():
        return model(pixel_values=pixels, interpolate_pos_encoding=interpolate).last_hidden_state


@pytest.fixture(scope="module", params=sorted(SHAPES))
def model(request):
    return vision_model(request.param)


# native 384 px, and non-native sizes through interpolate_pos_encoding (a square and a non-square one)
SIZES = [((384, 384), False), ((336, 336), True), ((256, 320), True)]


@pytest.mark.parametrize("size,interpolate", SIZES)
def test_sdpa_equals_eager_in_float32(model, size, interpolate):
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    eager = run(model, pixels, interpolate, sdpa=False)
    fused = run(model, pixels, interpolate, sdpa=True)
    assert eager.shape == (2, 1 + (size[0] // 16) * (size[1] // 16), model.config.hidden_size)
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)
    # the two frames of the batch are not mixed: each alone gives its own rows
    torch.testing.assert_close(run(model, pixels[1:], interpolate, sdpa=True), fused[1:], atol=1e-5, rtol=1e-5)


def test_each_attention_module_equals_eager(model):
    """Layer by layer on the layer-normed hidden states each attention sees (the per-layer check)."""
    x = torch.randn(3, 442, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    vision_attention.use_eager(model)
    for attn in vision_attention.attention_modules(model):
        with torch.no_grad():
            eager, probs = attn(x)
            fused, none = vision_attention.sdpa_forward(attn, x)
        assert probs is not None and none is None
        assert probs.max() > 0.05          # not a flat softmax: the check can see a wrong scale
        torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)


def test_sdpa_under_bfloat16_autocast_is_as_close_to_float32_as_eager(model):
    """bfloat16 rounds at ~4e-3, so the two bfloat16 runs differ at that level, not 1e-5; what must hold is
    that SDPA loses no more than eager does against the float32 result."""
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    reference = run(model, pixels, True, sdpa=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = run(model, pixels, True, sdpa=False)
        fused = run(model, pixels, True, sdpa=True)
    assert eager.dtype == fused.dtype
    err_eager = (eager.float() - reference).abs().mean()
    err_fused = (fused.float() - reference).abs().mean()
    assert err_eager > 0                      # autocast did lower the precision
    assert err_fused <= 1.25 * err_eager, (err_fused, err_eager)
    torch.testing.assert_close(fused.float(), eager.float(), atol=0.1 * reference.abs().max().item(), rtol=0.05)


def test_installed_on_one_model_only():
    from transformers.models.blip.modeling_blip import BlipAttention

    a, b = vision_model("base", layers=1), vision_model("base", layers=1)
    keys = list(a.state_dict())
    vision_attention.use_sdpa(a)
    vision_attention.use_sdpa(a)                  # idempotent
    assert all(vision_attention.is_sdpa(m) for m in vision_attention.attention_modules(a))
    assert all(isinstance(m, BlipAttention) for m in vision_attention.attention_modules(a))
    assert all(type(m) is BlipAttention for m in vision_attention.attention_modules(b))
    assert BlipAttention.forward is not vision_attention.sdpa_forward      # the class itself is untouched
    assert list(a.state_dict()) == keys                                     # checkpoints load as before
    vision_attention.use_eager(a)
    assert all(type(m) is BlipAttention for m in vision_attention.attention_modules(a))


# -- the segmenter --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_frames():
    from ovss_ros.toy_world.sequence import make_sequence

    return [s.rgb for s in make_sequence(3, n_frames=4)]


def _labels_both_ways(seg, frames):
    vm = seg.model.vision_model
    assert all(vision_attention.is_sdpa(m) for m in vision_attention.attention_modules(vm))
    fused = [r.labels for r in seg.segment_batch(frames)] + [seg.segment(frames[0]).labels]
    vision_attention.use_eager(vm)
    try:
        eager = [r.labels for r in seg.segment_batch(frames)] + [seg.segment(frames[0]).labels]
    finally:
        vision_attention.use_sdpa(vm)
    return fused, eager


@pytest.mark.parametrize("preset,overrides", [
    ("tiny", {}),
    # realtime on the toy model: its 3 text layers / 4 heads, and a non-native input size (interpolated)
    ("realtime", dict(gradcam_layer=1, gradcam_head=2, image_size=128, presence_threshold=0.0)),
])
def test_segmenter_labels_identical_to_eager(preset, overrides, toy_frames):
    from ovss_ros import Segmenter
    from ovss_ros.toy_world.world import class_names

    seg = Segmenter.from_pretrained(str(TOY_BLIP), preset=preset, device="cpu", **overrides)
    seg.set_vocabulary(list(class_names("pattern")))
    fused, eager = _labels_both_ways(seg, toy_frames)
    assert any(np.unique(lab).size > 1 for lab in fused)        # something was segmented
    for f, e in zip(fused, eager):
        np.testing.assert_array_equal(f, e)


def test_text_side_still_returns_attention_probabilities(toy_frames):
    """GradCAM differentiates the text side's cross-attention: with SDPA in the ViT it is still recorded,
    a softmax over the image tokens, with a gradient."""
    from ovss_ros import Segmenter
    from ovss_ros.pnp_ovss import gradcam

    seg = Segmenter.from_pretrained(str(TOY_BLIP), preset="tiny", device="cpu")
    seg.set_vocabulary(["plain red", "striped green"])
    text_layers = seg.model.text_encoder.encoder.layer
    assert not any(vision_attention.is_sdpa(m) for m in seg.model.text_encoder.modules())
    pixels = torch.from_numpy(np.stack([seg._numpy_input(f).pixels.numpy() for f in toy_frames[:2]]))
    kv = text_pass.image_kv(seg.model, seg.vision(pixels))
    prefix, _ = text_pass.stack([seg.text.presence] * 2)
    layers = list(range(len(text_layers)))
    logits, probs = seg.itm(prefix, kv, capture=layers)
    assert sorted(probs) == layers
    n = kv.keys[0].shape[2]
    for p in probs.values():
        assert p.shape[-1] == n and p.requires_grad
        torch.testing.assert_close(p.detach().sum(-1), torch.ones(p.shape[:-1]))
    grads = gradcam.gradients(logits, probs, layers)
    assert all(g.abs().max() > 0 for g in grads)
