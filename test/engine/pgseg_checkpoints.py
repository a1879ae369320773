"""Synthetic PGSeg / GroupViT checkpoints laid out exactly like the authors' files, for the loading and
equivalence tests.

The model is the literal reference (pgseg_reference_literal.MultiLabelContrastive, the authors' module names), so
its state dict has the released checkpoint's ``['model']`` keys. The authors save with utils/checkpoint.py
save_checkpoint (github.com/Ferenas/PGSeg, github.com/NVlabs/GroupViT): a dict whose 'config' entry is a pickled
OmegaConf object, which ``torch.load(weights_only=True)`` refuses; ``save_authors_checkpoint`` reproduces that with
a small stand-in class, ``save_plain_state_dict`` writes a tensors-only file that weights_only=True reads.
"""
import torch
import torch.nn as nn

from pgseg_reference_literal import AssignAttention, MultiLabelContrastive, NPR, TextNPR

# the released configuration (configs/pgseg_specific.yml; NVlabs configs/group_vit_gcc_yfcc_30e.yml)
FULL = dict(img_size=224, patch_size=16, embed_dim=384, depths=(6, 3, 3), num_heads=6,
            num_group_tokens=(64, 8, 0), num_output_groups=(64, 8), npr_inner_dim=4096,
            context_length=77, text_width=256, text_layers=12, text_heads=4, vocab_size=49408,
            proj_inner_dim=4096, output_dim=256)

# quick on CPU; same structure
SMALL = dict(img_size=64, patch_size=16, embed_dim=48, depths=(2, 1, 1), num_heads=2,
             num_group_tokens=(16, 4, 0), num_output_groups=(16, 4), npr_inner_dim=64,
             context_length=77, text_width=32, text_layers=2, text_heads=2, vocab_size=600,
             proj_inner_dim=64, output_dim=32)

SIZES = {"small": SMALL, "full": FULL}


class AuthorsConfig:
    """Stands in for the pickled OmegaConf DictConfig the authors store under 'config' (any non-allowlisted
    class makes ``torch.load(weights_only=True)`` refuse the file, as it refuses the real ones)."""

    def __init__(self, **entries):
        self.__dict__.update(entries)

    def __repr__(self):
        return f"AuthorsConfig({self.__dict__!r})"


@torch.no_grad()
def _randomise(model, seed):
    """Non-trivial values for what the initialisation leaves at zeros / ones / constants."""
    g = torch.Generator().manual_seed(seed + 1)

    def randn(t, std, mean=0.0):
        return (torch.randn(t.shape, generator=g) * std + mean).to(t.dtype)

    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.copy_(randn(module.running_mean, 0.1))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)    # in [0.5, 1.5)
            module.weight.copy_(randn(module.weight, 0.1, 1.0))
            module.bias.copy_(randn(module.bias, 0.1))
            module.num_batches_tracked.fill_(1000)
        elif isinstance(module, nn.LayerNorm):
            module.weight.copy_(randn(module.weight, 0.1, 1.0))
            module.bias.copy_(randn(module.bias, 0.05))
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if module.bias is not None:
                module.bias.copy_(randn(module.bias, 0.02))
        elif isinstance(module, nn.MultiheadAttention):
            module.in_proj_bias.copy_(randn(module.in_proj_bias, 0.02))
            module.out_proj.bias.copy_(randn(module.out_proj.bias, 0.02))
        if isinstance(module, AssignAttention):
            # sharper group assignments than the tiny init gives (as a trained model has), so that the
            # pixel-to-group maps use several groups: q.k / sqrt(d) then has a standard deviation of about 4
            std = 2.0 / module.q_proj.in_features ** 0.5
            module.q_proj.weight.copy_(randn(module.q_proj.weight, std))
            module.k_proj.weight.copy_(randn(module.k_proj.weight, std))
        if isinstance(module, NPR):
            mu = torch.randn(module.mu.shape, generator=g)
            module.mu.copy_(mu / (1e-6 + mu.norm(dim=2, keepdim=True)))
            # the NPR reconstruction re_x is ~5% of the tokens with the default init; make it ~half their size
            # so that a missing or wrong NPR shows in the outputs
            module.mapping_x.linear_out.weight.mul_(10.0)
        elif isinstance(module, TextNPR):
            mu = torch.randn(module.mu.shape, generator=g)
            module.mu.copy_(mu / (1e-6 + mu.norm(dim=1, keepdim=True)))

    enc = model.img_encoder
    for layer in enc.layers:
        if layer.group_token is not None:
            layer.group_token.copy_(randn(layer.group_token, 0.2))
    enc.pos_embed.copy_(randn(enc.pos_embed, 0.2))
    model.logit_scale.fill_(float(torch.empty(()).uniform_(2.5, 4.0, generator=g)))
    if hasattr(enc, "logit_scale"):
        enc.logit_scale.fill_(float(torch.empty(()).uniform_(1.5, 3.0, generator=g)))


def build_reference(npr=True, size="small", seed=0, device=None):
    """The literal reference model (eval mode) with seeded random weights; ``npr=False`` is NVlabs GroupViT.

    ``device="meta"`` builds the structure only (no randomisation)."""
    cfg = dict(SIZES[size])
    if device is not None and torch.device(device).type == "meta":
        return MultiLabelContrastive(npr=npr, device="meta", **cfg).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MultiLabelContrastive(npr=npr, **cfg)
    _randomise(model, seed)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _config_for(model, kind):
    enc = model.img_encoder
    txt = model.text_encoder
    img_encoder = dict(type="PGSeg" if kind == "pgseg" else "GroupViT", embed_dim=enc.embed_dim,
                       embed_factors=[1] * len(enc.layers), num_heads=[l.blocks[0].attn.num_heads for l in enc.layers],
                       depths=[len(l.blocks) for l in enc.layers], num_group_tokens=list(enc.num_group_tokens),
                       num_output_groups=list(enc.num_output_groups), drop_rate=0.0, drop_path_rate=0.1)
    if kind == "pgseg":
        img_encoder["return_attn_o"] = True
    return AuthorsConfig(
        model=AuthorsConfig(type="MultiLabelContrastive", img_encoder=img_encoder,
                            text_encoder=dict(type="TextTransformer", context_length=txt.context_length,
                                              width=txt.width, layers=len(txt.transformer.resblocks),
                                              vocab_size=txt.token_embedding.num_embeddings),
                            contrast_temperature=0.07, proj_num_layers=2,
                            output_dim=model.img_projector.linear_out.out_channels, multi_label=0),
        train=AuthorsConfig(amp_opt_level="O1", epochs=30, base_lr=1e-4),
        output="PGSeg" if kind == "pgseg" else "output/group_vit_gcc_yfcc_30e")


def save_authors_checkpoint(path, model, kind="pgseg", with_metrics=False):
    """torch.save a dict shaped like utils/checkpoint.py save_checkpoint's: 'model' (the state dict),
    'optimizer', 'lr_scheduler', 'max_accuracy', 'max_miou', 'epoch', 'config' (an AuthorsConfig, so
    weights_only=True refuses the file), 'amp'. ``with_metrics`` adds the 'metrics' dict the current code also
    writes."""
    assert kind in ("pgseg", "groupvit"), kind
    metrics = {"max_accuracy": 42.7, "max_miou": 53.8}
    state = {
        "model": model.state_dict(),
        "optimizer": {},
        "lr_scheduler": {},
    }
    if with_metrics:
        state["metrics"] = dict(metrics)
    state.update({"epoch": 29, "config": _config_for(model, kind)})
    for k, v in metrics.items():
        state[k] = v
    state["amp"] = {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}}
    # key order as the brief lists: model, optimizer, lr_scheduler, max_accuracy, max_miou, epoch, config, amp
    order = ["model", "optimizer", "lr_scheduler"] + (["metrics"] if with_metrics else []) + \
        ["max_accuracy", "max_miou", "epoch", "config", "amp"]
    torch.save({k: state[k] for k in order}, path)


def save_plain_state_dict(path, model):
    """torch.save of the state dict only (tensors; readable with weights_only=True)."""
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)


def released_key_shapes(npr=True):
    """{name: shape tuple} of the released checkpoint's ['model'] dict (full size, built on the meta device)."""
    model = build_reference(npr=npr, size="full", device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def small_bpe(path, vocab_size: int, words):
    """A CLIP-format BPE file (gzip) whose vocabulary has exactly `vocab_size` entries: the 512 byte symbols, the
    merges that spell `words`, made-up filler words' merges up to the size, and the two special tokens."""
    import gzip

    from ovss_ros.pgseg.tokenizer import CLIP_MERGES, word_merges

    wanted = vocab_size - 514
    merges = word_merges(words)
    filler = (f"{a}{b}{c}" for a in "qwxz" for b in "aeiou" for c in "jkvy")
    for word in filler:
        if len(merges) >= wanted:
            break
        merges += [m for m in word_merges([word]) if m not in merges]
    merges = merges[:wanted]
    if len(merges) != wanted or len(merges) >= CLIP_MERGES:
        raise ValueError(f"cannot make a BPE of {vocab_size} entries from {len(merges)} merges")
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return path
