"""Train a tiny GroupViT / PGSeg on the toy world: `ovss-train-toy --method pgseg [--no-npr]`.

Losses, from image-level text only (no masks):
- image-text InfoNCE between each scene and its caption ("a picture of striped red and plain blue", classes in
  random order), both directions, learnable temperature clamped at 100 (GroupViT / PGSeg's main loss);
- GroupViT's multi-label contrastive loss: the image against one prompt per class it contains ("a picture of
  striped red"), every present class a positive (weight `--multi-label-weight`);
- with NPR (the default), PGSeg's I-NPR term for the two grouping stages, weight 0.1 each: the stage's group
  centres (projected group tokens) are matched one-to-one with the EM prototypes of the tokens entering the stage
  and pulled together by a symmetric contrastive loss over the matched pairs. Two spots of the authors' loss are
  fixed here (docs/pgseg.md): the matching maximises similarity (theirs minimises it: linear_sum_assignment on a
  similarity matrix), and the reliability filter reads each matched pair's own similarity (theirs reads column 0).
  The text-side T-NPR term (weight 0.01 in the authors' code) is left out: its 1-d prototypes normalise to +-1.

Same seed, scenes, steps and budget with and without NPR, so the two runs are an ablation.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..pnp_ovss.model_loading import _CLIP_MEAN as CLIP_MEAN, _CLIP_STD as CLIP_STD
from ..pgseg.inference import chain_assignments
from ..pgseg.loading import IMAGENET_MEAN, IMAGENET_STD
from ..pgseg.model import PGSegModel, project, text_embeddings, vision_forward
from ..pgseg.preprocess import preprocess
from ..pgseg.tiny_model import ARCHITECTURES, groupvit_config
from ..pgseg.tokenizer import word_merges, write_tokenizer
from .training_common import json_lines, lr_at
from .world import SIZE, class_names, make_scene, scene_seed, vocabulary_words

TEMPLATE = "a picture of {}"
# Architecture of the shipped model: 12 x 12 patches -> 24 groups -> 8 groups.
MODEL_ARGS = ARCHITECTURES["tiny"]
NPR_WEIGHT = 0.1


def init_vision_from_blip(model: PGSegModel, blip_dir: Path) -> list[str]:
    """Start the image encoder from a trained BLIP ViT of the same width (the shipped toy BLIP: hidden 128,
    patch 8, 96 px, 4 layers): patch and position embeddings, then its layers in order over the stages' layers
    (fused qkv split in three). GroupViT's parts that BLIP lacks (group tokens, grouping blocks, the LayerNorm
    after the patch embedding) keep their fresh init. PGSeg itself starts from a trained GroupViT."""
    from safetensors.torch import load_file

    src = load_file(str(Path(blip_dir) / "model.safetensors"))
    dst = model.state_dict()
    new = {"vision_model.embeddings.patch_embeddings.projection.weight": src["vision_model.embeddings.patch_embedding.weight"],
           "vision_model.embeddings.patch_embeddings.projection.bias": src["vision_model.embeddings.patch_embedding.bias"],
           "vision_model.embeddings.position_embeddings": src["vision_model.embeddings.position_embedding"][:, 1:],
           "vision_model.layernorm.weight": src["vision_model.post_layernorm.weight"],
           "vision_model.layernorm.bias": src["vision_model.post_layernorm.bias"]}
    targets = [f"vision_model.encoder.stages.{s}.layers.{i}" for s, stage in enumerate(model.vision_model.encoder.stages)
               for i in range(len(stage.layers))]
    for j, t in enumerate(targets):
        b = f"vision_model.encoder.layers.{j}"
        if f"{b}.self_attn.qkv.weight" not in src:
            break
        for part in ("weight", "bias"):
            for name, chunk in zip("qkv", src[f"{b}.self_attn.qkv.{part}"].chunk(3)):
                new[f"{t}.self_attn.{name}_proj.{part}"] = chunk
            new[f"{t}.self_attn.out_proj.{part}"] = src[f"{b}.self_attn.projection.{part}"]
            for ln in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
                new[f"{t}.{ln}.{part}"] = src[f"{b}.{ln}.{part}"]
    wrong = [k for k, v in new.items() if k not in dst or dst[k].shape != v.shape]
    if wrong:
        raise ValueError(f"--init-vision {blip_dir}: shapes do not fit this GroupViT: {wrong[:3]}")
    model.load_state_dict(new, strict=False)
    return sorted(new)


def scene_caption(scene, rng: np.random.Generator) -> str:
    names = list(scene.present_names)
    rng.shuffle(names)
    return TEMPLATE.format(" and ".join(names))


def multi_label_loss(image: torch.Tensor, classes: torch.Tensor, y: torch.Tensor, scale: torch.Tensor,
                     sim: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Image vs class prompts, every present class a positive (both directions, as GroupViT's multi-label loss).
    `sim` [B, K]: precomputed similarities (the group-level variant)."""
    sim = scale * image @ classes.T if sim is None else sim            # [B, K]
    i2t = -(F.log_softmax(sim, dim=1) * (y / y.sum(1, keepdim=True).clamp(min=1))).sum(1).mean()
    has = y.sum(0) > 0
    yt = y.T[has]
    t2i = -(F.log_softmax(sim.T[has], dim=1) * (yt / yt.sum(1, keepdim=True))).sum(1).mean()
    return (i2t + t2i) / 2


def match_classes(group_logits: torch.Tensor, y: torch.Tensor) -> tuple[list, list, list, torch.Tensor]:
    """One group per present class, one-to-one, most similar first (Hungarian per image): (image rows, groups,
    classes, spare [B, G] bool for the groups matched to no class). group_logits [B, G, K], y [B, K] 0/1."""
    sims = group_logits.detach().float().cpu().numpy()
    rows, groups, classes = [], [], []
    spare = torch.ones(group_logits.shape[:2], dtype=torch.bool)
    for b, (sim, ks) in enumerate(zip(sims, y.cpu().numpy())):
        ks = np.flatnonzero(ks)
        g, j = linear_sum_assignment(sim[:, ks], maximize=True)
        rows += [b] * len(g)
        groups += g.tolist()
        classes += ks[j].tolist()
        spare[b, g] = False
    return rows, groups, classes, spare.to(group_logits.device)


def matched_group_loss(group_logits: torch.Tensor, match, background_weight: float = 1.0) -> torch.Tensor:
    """Toy-world addition, from image-level labels only: each matched group (`match_classes`) is classified as
    its class over the whole vocabulary (cross-entropy); groups matched to no class are pushed toward a flat class
    distribution (cross-entropy to uniform), which PGSeg's decode reads as background."""
    rows, groups, classes, spare = match
    logp = F.log_softmax(group_logits, dim=-1)
    loss = F.nll_loss(logp[rows, groups], torch.tensor(classes, device=group_logits.device))
    if background_weight > 0 and spare.any():
        loss = loss + background_weight * -logp[spare].mean()
    return loss


def warmup_ramp(step: int, warmup: int) -> float:
    """Factor of a loss weight raised linearly from 1/warmup at step 0 to 1 at step warmup - 1 (0 = no ramp)."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def pooled_groups(model: PGSegModel, vision) -> torch.Tensor:
    """[B, G, P] unit vectors: each final group described by the patches it owns alone, the patch tokens of the
    first grouping stage averaged with the chained soft assignment (patch -> final group) as weights, then the
    final LayerNorm and the projector. The group tokens themselves also see every patch through attention, so a
    loss on them alone leaves the assignment free; a loss on these makes each group's patches carry its class."""
    chained = chain_assignments(vision.assignments).transpose(1, 2)          # [B, G, N_patches]
    weights = chained / (chained.sum(dim=-1, keepdim=True) + 1e-6)
    pooled = weights @ vision.grouped[0]
    return F.normalize(project(model, model.visual_projection, model.vision_model.layernorm(pooled)), dim=-1)


def reliable_pairs(logits: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """[B, G] bool: pairs (on the diagonal of `logits` [B, G, G]) whose similarity, min-max normalised over its
    row, is above `threshold` (the authors' HRS filter, reading the matched entry rather than column 0)."""
    lo, hi = logits.min(dim=-1).values, logits.max(dim=-1).values
    return (logits.diagonal(dim1=1, dim2=2) - lo) / (hi - lo + 1e-6) > threshold


def npr_pair_loss(centres: torch.Tensor, prototypes: torch.Tensor, scale: torch.Tensor,
                  threshold: float = 0.1) -> torch.Tensor:
    """I-NPR for one stage: centres [B, G, D] (with gradient), prototypes [B, G, D] (none)."""
    c = F.normalize(centres, dim=-1)
    p = F.normalize(prototypes.detach(), dim=-1)
    with torch.no_grad():   # maximum-similarity one-to-one matching per image
        sim = (c @ p.transpose(1, 2)).cpu().numpy()
        order = torch.tensor(np.stack([linear_sum_assignment(s, maximize=True)[1] for s in sim]), device=c.device)
    p = torch.gather(p, 1, order[..., None].expand_as(p))              # matched prototype of group i at row i
    logits = c @ p.transpose(1, 2)                                     # [B, G, G], pairs on the diagonal
    labels = torch.arange(c.shape[1], device=c.device).expand(c.shape[0], -1)
    loss = 0.0
    for lg in (logits, logits.transpose(1, 2)):
        with torch.no_grad():
            keep = reliable_pairs(lg, threshold)
        loss = loss + (F.cross_entropy(scale * lg[keep], labels[keep]) if keep.any() else lg.sum() * 0)
    return loss


def train(out: Optional[Path], npr: bool = True, world: str = "pattern", steps: int = 3000, batch: int = 32,
          lr: float = 1e-3, warmup: int = 100, weight_decay: float = 0.05, multi_label_weight: float = 1.0,
          seed: int = 0, threads: Optional[int] = None, device: str = "cpu", log: Optional[Path] = None,
          model_args: Optional[dict] = None, quiet: bool = False, time_limit: Optional[float] = None,
          init_vision: Optional[Path] = None, group_label_weight: float = 0.0, matched_group_weight: float = 0.0,
          group_tokens: Optional[tuple] = None, matched_group_warmup: int = 0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    names = class_names(world)
    arch = {**MODEL_ARGS, **(model_args or {})}
    if group_tokens is not None:
        arch["group_tokens"] = tuple(group_tokens)
    work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="pgseg_tokenizer_"))
    tok = write_tokenizer(word_merges([TEMPLATE.format(""), "and", *vocabulary_words(world)]), work)
    torch.manual_seed(seed)
    model = PGSegModel(groupvit_config(len(tok), tok.bos_token_id, tok.eos_token_id, npr, **arch))
    for stage in model.vision_model.encoder.stages:     # the authors' init: random group tokens where there is
        if stage.group_token is not None and stage.group_projector is None:   # no projector (transformers: zeros)
            torch.nn.init.trunc_normal_(stage.group_token, std=0.02)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if init_vision is not None:
        init_vision_from_blip(model, init_vision)
        mean, std = CLIP_MEAN, CLIP_STD       # the statistics the BLIP ViT was trained with
    model.to(dev).train()
    for module in model.modules():   # projector BatchNorms keep fixed statistics: group, pooled and image
        if isinstance(module, torch.nn.BatchNorm1d):   # embeddings differ in distribution, and batch statistics
            module.eval()                               # of one of them would misnormalise the others at test time
    npr_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.1)), device=dev))   # the authors' own scale
    params = list(model.parameters()) + [npr_scale]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n and "group_token" not in n]
    ids = {id(p) for p in decay}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": [p for p in params if id(p) not in ids], "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    prompts = tok([TEMPLATE.format(n) for n in names], padding="longest", return_tensors="pt").to(dev)
    rng = np.random.default_rng(seed)
    logf = open(log, "a") if log else None
    setup = dict(method="pgseg", npr=npr, world=world, steps=steps, batch=batch, lr=lr, warmup=warmup,
                 weight_decay=weight_decay, multi_label_weight=multi_label_weight, npr_weight=NPR_WEIGHT if npr else 0,
                 group_label_weight=group_label_weight, matched_group_weight=matched_group_weight,
                 matched_group_warmup=matched_group_warmup,
                 seed=seed, threads=torch.get_num_threads(), architecture=arch,
                 init_vision=str(init_vision) if init_vision else None,
                 n_parameters=sum(p.numel() for p in model.parameters()))

    emit = json_lines(logf, quiet)

    emit({"event": "start", **setup})
    t0 = time.time()
    done = 0
    for step in range(steps):
        if time_limit is not None and time.time() - t0 > time_limit:
            break
        scenes = [make_scene(scene_seed("train", (seed * 100_000 + step) * batch + j), world) for j in range(batch)]
        x = torch.from_numpy(np.stack([preprocess(s.rgb, SIZE, "square", mean, std)
                                       for s in scenes])).to(dev)
        y = torch.zeros(batch, len(names), device=dev)
        for i, s in enumerate(scenes):
            y[i, s.present] = 1.0
        caps = tok([scene_caption(s, rng) for s in scenes], padding="longest", return_tensors="pt").to(dev)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        vision = vision_forward(model, x)
        image = F.normalize(project(model, model.visual_projection, vision.tokens.mean(dim=1)), dim=-1)
        text = text_embeddings(model, caps.input_ids, caps.attention_mask)
        classes = text_embeddings(model, prompts.input_ids, prompts.attention_mask)
        scale = model.logit_scale.exp().clamp(max=100)
        sim = scale * image @ text.T
        target = torch.arange(batch, device=dev)
        res = {"itc": (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2}
        res["multi_label"] = multi_label_loss(image, classes, y, scale)
        res["loss"] = res["itc"] + multi_label_weight * res["multi_label"]
        if group_label_weight > 0:   # toy-world addition: each class prompt against its best-matching group
            groups = F.normalize(project(model, model.visual_projection, vision.tokens), dim=-1)   # [B, G, P]
            best = (scale * groups @ classes.T).max(dim=1).values                                  # [B, K]
            res["group_label"] = multi_label_loss(None, classes, y, scale, sim=best)
            res["loss"] = res["loss"] + group_label_weight * res["group_label"]
        if matched_group_weight > 0:   # matched on the patches each group owns, applied to both descriptions
            owned = scale * pooled_groups(model, vision) @ classes.T
            tokens = scale * F.normalize(project(model, model.visual_projection, vision.tokens), dim=-1) @ classes.T
            match = match_classes(owned, y)
            res["matched_group"] = matched_group_loss(owned, match) + matched_group_loss(tokens, match)
            weight = warmup_ramp(step, matched_group_warmup) * matched_group_weight
            res["loss"] = res["loss"] + weight * res["matched_group"]
        if npr:
            s = npr_scale.exp().clamp(max=100)
            res["npr"] = sum(npr_pair_loss(c, p, s) for c, p in zip(vision.centres, vision.prototypes))
            res["loss"] = res["loss"] + NPR_WEIGHT * res["npr"]
        opt.zero_grad(set_to_none=True)
        res["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        done = step + 1
        if step % 25 == 0 or step == steps - 1:
            emit({"event": "step", "step": step, "elapsed_s": round(time.time() - t0, 1),
                  "lr": round(opt.param_groups[0]["lr"], 7), "scale": round(float(scale.detach()), 2),
                  **{k: round(float(v.detach()), 4) for k, v in res.items()}})
    model.eval().requires_grad_(False).cpu()
    summary = {"event": "done", "train_seconds": round(time.time() - t0, 1), "steps_done": done, **setup}
    if out is not None:
        out = Path(out)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        (out / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": list(mean), "image_std": list(std), "size": SIZE}, indent=1) + "\n")
        (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    emit(summary)
    if logf:
        logf.close()
    return {"model": model, "tokenizer": tok, **summary}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ovss-train-toy --method pgseg",
                                 description="Train a tiny GroupViT / PGSeg on the toy world (InfoNCE + multi-label, "
                                             "plus PGSeg's NPR unless --no-npr).")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-npr", action="store_true", help="GroupViT alone: no NPR modules, no NPR loss")
    ap.add_argument("--world", default="pattern", choices=["pattern", "shape"])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--multi-label-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds (same for both runs)")
    ap.add_argument("--group-label-weight", type=float, default=0.0,
                    help="toy-world addition: multi-label loss on each class's best-matching group (0 = off)")
    ap.add_argument("--init-vision", type=Path, default=None,
                    help="start the image encoder from this BLIP checkpoint's ViT (e.g. ovss_ros/data/toy_blip)")
    ap.add_argument("--matched-group-weight", type=float, default=0.0,
                    help="toy-world addition: each present class matched to its own group, that group classified "
                         "as the class, unmatched groups flat over classes (0 = off)")
    ap.add_argument("--group-tokens", type=int, nargs=2, default=None, metavar=("STAGE1", "STAGE2"),
                    help="group tokens of the two grouping stages (default: the tiny architecture's 24 8)")
    ap.add_argument("--matched-group-warmup", type=int, default=0,
                    help="raise the matched-group weight linearly from 0 over this many steps: at weight 3 from the "
                         "first step the image-text loss never left chance level")
    a = ap.parse_args(argv)
    r = train(a.out, not a.no_npr, a.world, a.steps, a.batch, a.lr, a.warmup,
              multi_label_weight=a.multi_label_weight, seed=a.seed, threads=a.threads, device=a.device, log=a.log,
              time_limit=a.time_limit, init_vision=a.init_vision, group_label_weight=a.group_label_weight,
              matched_group_weight=a.matched_group_weight, group_tokens=a.group_tokens,
              matched_group_warmup=a.matched_group_warmup)
    print(json.dumps({"train_seconds": r["train_seconds"], "steps_done": r["steps_done"], "out": str(a.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
