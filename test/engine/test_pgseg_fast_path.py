"""PGSeg's encoder rewritten for speed equals transformers' GroupViT layers and the plain NPR MLP: the
self-attention core in scaled_dot_product_attention with q/k/v in one product, and the NPR's first linear layer
applied to the prototypes before they are spread over the tokens."""
import pytest
import torch

from ovss_ros.pgseg import model as pg_model
from ovss_ros.pgseg.tiny_model import build_pgseg

TOL = 1e-5


@pytest.fixture(scope="module", params=["tiny", "real"])
def built(request, tmp_path_factory):
    model, _ = build_pgseg(["a photo of", "dog"], tmp_path_factory.mktemp("tok"), architecture=request.param)
    return request.param, model.eval()


def plain_npr(regularizer, x):
    z, mu = regularizer.prototypes(x)
    recon = z @ mu
    b, n, c = recon.shape
    return regularizer.mapping_x(recon.reshape(b * n, c)).reshape(b, n, -1), (z, mu)


@torch.no_grad()
def test_each_encoder_layer_equals_transformers(built):
    arch, model = built
    gen = torch.Generator().manual_seed(0)
    for stage in model.vision_model.encoder.stages:
        for layer in stage.layers:
            x = torch.randn(2, 37, model.config.vision_config.hidden_size, generator=gen)
            ours, theirs = pg_model.encoder_layer(layer, x), layer(x, attention_mask=None)
            assert (ours - theirs).abs().max() < TOL, arch


@torch.no_grad()
def test_the_npr_residual_equals_the_mlp_on_the_reconstruction(built):
    arch, model = built
    if model.npr is None:
        pytest.skip("no NPR")
    for regularizer in model.npr:
        regularizer.mapping_x[1].running_mean.normal_()          # BatchNorm statistics away from identity
        regularizer.mapping_x[1].running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 196 if arch == "real" else 50, regularizer.mu.shape[-1])
        expected, found = plain_npr(regularizer, x)
        assert (regularizer(x, found) - expected).abs().max() < TOL * expected.abs().max().clamp_min(1)
        assert (regularizer(x) - expected).abs().max() < TOL * expected.abs().max().clamp_min(1)


@torch.no_grad()
def test_the_whole_vision_pass_equals_the_transformers_layers(built, monkeypatch):
    arch, model = built
    size = model.config.vision_config.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    ours = pg_model.vision_forward(model, pixels)
    monkeypatch.setattr(pg_model, "encoder_layer", lambda layer, x: layer(x, attention_mask=None))
    monkeypatch.setattr(pg_model.PrototypeRegularizer, "forward", lambda self, x, found=None: plain_npr(self, x)[0])
    theirs = pg_model.vision_forward(model, pixels)
    assert (ours.tokens - theirs.tokens).abs().max() < 1e-4
    for a, b in zip(ours.assignments, theirs.assignments):
        assert (a - b).abs().max() < TOL


@torch.no_grad()
def test_the_fused_projection_follows_weight_changes(tmp_path):
    model, _ = build_pgseg(["a photo of", "dog"], tmp_path, architecture="tiny")
    layer = model.vision_model.encoder.stages[0].layers[0]
    x = torch.randn(1, 20, model.config.vision_config.hidden_size)
    pg_model.encoder_layer(layer, x)                          # cached now
    layer.self_attn.k_proj.weight.mul_(-2)                    # in place, as load_state_dict copies
    assert (pg_model.encoder_layer(layer, x) - layer(x, attention_mask=None)).abs().max() < TOL
    layer.self_attn.v_proj.bias = torch.nn.Parameter(torch.randn_like(layer.self_attn.v_proj.bias))   # replaced
    assert (pg_model.encoder_layer(layer, x) - layer(x, attention_mask=None)).abs().max() < TOL
    assert "_fused_qkv" not in model.state_dict()


def test_training_gets_gradients_through_the_fused_projection(tmp_path):
    model, _ = build_pgseg(["a photo of", "dog"], tmp_path, architecture="tiny")
    layer = model.vision_model.encoder.stages[0].layers[0]
    x = torch.randn(1, 20, model.config.vision_config.hidden_size)
    pg_model.encoder_layer(layer, x).square().sum().backward()
    ours = layer.self_attn.q_proj.weight.grad.clone()
    layer.zero_grad()
    layer(x, attention_mask=None).square().sum().backward()
    assert ours.abs().max() > 0 and torch.allclose(ours, layer.self_attn.q_proj.weight.grad, atol=1e-4, rtol=1e-4)
