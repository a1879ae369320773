"""Train the tiny toy-world BLIP: ITM with hard negatives plus a multi-positive ITC loss.

ITM sees 8 captions per image: every present class, then hard negatives (same colour other pattern/shape,
same pattern/shape other colour), then absent classes (`--captions-per-image 0`: all classes).

    ovss-train-toy --out ovss_ros/data/toy_blip --log train.jsonl      # the shipped model: ~27 min, 2 cores

Seeded (model init and the scene stream), logged as JSON lines, CPU by default (a GPU if --device cuda).
Only image-level supervision is used: no masks, no attention targets, so the localization PnP-OVSS finds
is the model's own, as with a real BLIP.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.image_io import preprocess
from ..pnp_ovss.prompts import enc_token_id
from ..pnp_ovss.tiny_model import build_blip, resize_image_grid, save_model
from .scene_source import SceneSource
from .training_common import json_lines, lr_at
from .world import vocabulary_words

TEMPLATE = "a picture of {}"
# Architecture of the shipped model (tiny_model.blip_config arguments).
MODEL_ARGS = dict(image_size=96, patch_size=8, vision_hidden=128, vision_layers=4, vision_heads=4,
                  text_hidden=128, text_layers=3, text_heads=4)


@dataclass
class Prompts:
    itm_ids: torch.Tensor     # [K, T], [ENC] first: exactly what the engine feeds the ITM head
    cls_ids: torch.Tensor     # [K, T], [CLS] first: the unimodal text encoder for ITC
    mask: torch.Tensor        # [K, T]


def class_prompts(tokenizer, names, enc_id: int) -> Prompts:
    enc = tokenizer([TEMPLATE.format(n) for n in names], padding="longest", return_tensors="pt")
    itm = enc["input_ids"].clone()
    itm[:, 0] = enc_id
    return Prompts(itm, enc["input_ids"], enc["attention_mask"])


def scenes_to_batch(scenes, mean, std, n_classes: int, size: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs (each frame warped to size x size, as the engine does; None: the frame's height) and
    multi-hot present classes."""
    size = size or scenes[0].rgb.shape[0]
    x = torch.from_numpy(np.stack([preprocess(s.rgb, size, mean, std) for s in scenes]))
    y = torch.zeros(len(scenes), n_classes)
    for i, s in enumerate(scenes):
        y[i, s.present] = 1.0
    return x, y


def image_projections(model):
    """The key and value projections of every text layer's cross-attention: the only modules that see
    the image tokens."""
    for layer in model.text_encoder.encoder.layer:
        yield layer.crossattention.self.key
        yield layer.crossattention.self.value


@contextmanager
def grouped_image_projections(model, group: int):
    """Inside: cross-attention keys/values of each image are projected once and shared by its `group`
    consecutive captions (the training-time counterpart of the engine's text_pass.image_kv). Same numbers and
    gradients (expand sums them back); a step took 0.50 s instead of 0.58 on 2 cores."""
    def before(module, args):
        x = args[0]
        return (x.view(-1, group, *x.shape[1:])[:, 0],) + tuple(args[1:])

    def after(module, _args, out):
        return out[:, None].expand(-1, group, *out.shape[1:]).reshape(-1, *out.shape[1:])

    handles = []
    for proj in image_projections(model):
        handles += [proj.register_forward_pre_hook(before), proj.register_forward_hook(after)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def itm_logits(model, image_embeds: torch.Tensor, prompts: Prompts, pairs: Optional[torch.Tensor] = None):
    """ITM logits for (image, class) pairs: [B, K, 2] for every pair, or [B, M, 2] for the class indices
    `pairs` [B, M] chosen per image."""
    b, k = image_embeds.shape[0], prompts.itm_ids.shape[0]
    n, d = image_embeds.shape[1:]
    cls = torch.arange(k).repeat(b, 1) if pairs is None else pairs
    m = cls.shape[1]
    emb = image_embeds[:, None].expand(b, m, n, d).reshape(b * m, n, d)
    ids = prompts.itm_ids[cls.reshape(-1)]
    mask = prompts.mask[cls.reshape(-1)]
    with grouped_image_projections(model, m):
        out = model.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=emb,
                                 encoder_attention_mask=torch.ones(emb.shape[:2], dtype=torch.long,
                                                                   device=emb.device),
                                 return_dict=True)
    return model.itm_head(out.last_hidden_state[:, 0]).view(b, m, 2)


def choose_pairs(y: torch.Tensor, names, m: int, rng: np.random.Generator) -> torch.Tensor:
    """Per image, m classes: every positive, then hard negatives (sharing a word with a present class:
    same colour other pattern/shape, same pattern/shape other colour), then absent ones, shuffled."""
    words = [set(n.split()) for n in names]
    rows = []
    for yy in y.numpy():
        pos = [int(k) for k in np.flatnonzero(yy)]
        seen = set().union(*(words[k] for k in pos)) if pos else set()
        neg = [int(k) for k in np.flatnonzero(yy == 0)]
        hard = [k for k in neg if words[k] & seen]
        easy = [k for k in neg if not words[k] & seen]
        rng.shuffle(hard)
        rng.shuffle(easy)
        rows.append((pos + hard + easy)[:m])
    return torch.tensor(rows, dtype=torch.long)


def itc_logits(model, image_embeds: torch.Tensor, prompts: Prompts, temperature: float) -> torch.Tensor:
    """[B, K] cosine similarity / T between image [CLS] and class-caption [CLS] projections."""
    txt = model.text_encoder(input_ids=prompts.cls_ids, attention_mask=prompts.mask, return_dict=True)
    t = F.normalize(model.text_proj(txt.last_hidden_state[:, 0]), dim=-1)
    v = F.normalize(model.vision_proj(image_embeds[:, 0]), dim=-1)
    return v @ t.t() / temperature


def losses(model, x: torch.Tensor, y: torch.Tensor, prompts: Prompts, pos_weight: float,
           itc_weight: float, temperature: float, pairs: Optional[torch.Tensor] = None) -> dict:
    emb = model.vision_model(pixel_values=x).last_hidden_state
    logits = itm_logits(model, emb, prompts, pairs)
    y_all, y = y, (y if pairs is None else torch.gather(y, 1, pairs.to(y.device)))
    w = torch.where(y > 0, pos_weight, 1.0)
    itm = (F.cross_entropy(logits.reshape(-1, 2), y.long().reshape(-1), reduction="none") * w.reshape(-1)).sum() / w.sum()
    out = {"itm": itm, "itm_acc": ((logits.argmax(-1) == y.long()).float().mean())}
    if itc_weight > 0:
        sim = itc_logits(model, emb, prompts, temperature)
        y = y_all
        i2t = -(F.log_softmax(sim, dim=1) * (y / y.sum(1, keepdim=True).clamp(min=1))).sum(1).mean()
        has = y.sum(0) > 0     # text -> image over the batch, for classes present in some image
        yt = y.t()[has]
        t2i = -(F.log_softmax(sim.t()[has], dim=1) * (yt / yt.sum(1, keepdim=True))).sum(1).mean()
        out["itc"] = (i2t + t2i) / 2
        out["loss"] = itm + itc_weight * out["itc"]
    else:
        out["loss"] = itm
    return out


@torch.no_grad()
def evaluate_itm(model, scenes, prompts: Prompts, mean, std, batch: int = 32, size: Optional[int] = None) -> dict:
    """Held-out ITM accuracy over every (scene, class) pair, split by kind of negative."""
    names = scenes[0].classes
    correct = {"positive": [], "shares_attribute": [], "absent": []}
    for i in range(0, len(scenes), batch):
        chunk = scenes[i:i + batch]
        x, y = scenes_to_batch(chunk, mean, std, len(names), size)
        pred = itm_logits(model, model.vision_model(pixel_values=x).last_hidden_state, prompts).argmax(-1)
        for s, yy, pp in zip(chunk, y, pred):
            words = {w for n in s.present_names for w in n.split()}
            for k, name in enumerate(names):
                kind = ("positive" if yy[k] else
                        "shares_attribute" if set(name.split()) & words else "absent")
                correct[kind].append(bool(pp[k] == yy[k]))
    allc = [c for v in correct.values() for c in v]
    out = {"itm_accuracy": float(np.mean(allc)), "pairs": len(allc)}
    out.update({f"acc_{k}": float(np.mean(v)) if v else float("nan") for k, v in correct.items()})
    out["balanced_accuracy"] = float(np.mean([out["acc_positive"],
                                              np.mean(correct["shares_attribute"] + correct["absent"])]))
    return out


def train(out: Optional[Path], world: str = "pattern", steps: int = 3000, batch: int = 32, lr: float = 5e-4,
          warmup: int = 50, weight_decay: float = 0.05, itc_weight: float = 1.0, pos_weight: float = 2.0,
          temperature: float = 0.1, captions_per_image: Optional[int] = 8, seed: int = 0, heldout: int = 256, eval_every: int = 250,
          threads: Optional[int] = None, device: str = "cpu", log: Optional[Path] = None,
          model_args: Optional[dict] = None, quiet: bool = False, init: Optional[Path] = None,
          toy_version: int = 1, scene_pool: int = 0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    source = SceneSource(world, toy_version, batch, seed, scene_pool)
    names = source.names
    if init is not None:        # continue from a saved model (a second, lower-lr phase)
        from transformers import BlipForImageTextRetrieval, BlipProcessor
        model = BlipForImageTextRetrieval.from_pretrained(str(init), use_safetensors=True)
        processor = BlipProcessor.from_pretrained(str(init))
        model_args = {**MODEL_ARGS, **(model_args or {}), "init": str(init)}
        if model_args["image_size"] != model.config.vision_config.image_size:    # e.g. a v1 model onto v2's frames
            resize_image_grid(model, processor, model_args["image_size"])
    else:
        model, processor = build_blip(vocabulary_words(world), seed=seed, **(model_args or MODEL_ARGS))
    model.train().to(dev)
    ip = processor.image_processor
    mean, std = tuple(ip.image_mean), tuple(ip.image_std)
    enc_id = enc_token_id(processor.tokenizer, model.config.text_config.vocab_size)
    prompts = class_prompts(processor.tokenizer, names, enc_id)
    prompts = Prompts(*(t.to(dev) for t in (prompts.itm_ids, prompts.cls_ids, prompts.mask)))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    held = source.heldout(heldout)
    size = model.config.vision_config.image_size
    logf = open(log, "a") if log else None
    params = dict(world=world, toy_version=toy_version, scene_pool=scene_pool, steps=steps, batch=batch, lr=lr, warmup=warmup, weight_decay=weight_decay,
                  itc_weight=itc_weight, pos_weight=pos_weight, temperature=temperature, seed=seed,
                  captions_per_image=captions_per_image, threads=torch.get_num_threads(),
                  architecture=model_args or MODEL_ARGS, n_parameters=sum(p.numel() for p in model.parameters()))

    emit = json_lines(logf, quiet)

    pair_rng = np.random.default_rng(seed)
    emit({"event": "start", **params})
    t0, metrics = time.time(), {}
    for step in range(steps):
        x, y = scenes_to_batch(source.step(step), mean, std, len(names), size)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        pairs = None if not captions_per_image else choose_pairs(y, names, captions_per_image, pair_rng)
        res = losses(model, x.to(dev), y.to(dev), prompts, pos_weight, itc_weight, temperature,
                     None if pairs is None else pairs.to(dev))
        opt.zero_grad(set_to_none=True)
        res["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            emit({"event": "step", "step": step, "elapsed_s": round(time.time() - t0, 1),
                  "lr": round(opt.param_groups[0]["lr"], 7),
                  **{k: round(float(v.detach()), 4) for k, v in res.items()}})
        if heldout and ((step + 1) % eval_every == 0 or step == steps - 1):
            model.eval()
            metrics = evaluate_itm(model, held, prompts, mean, std, size=size)
            model.train()
            emit({"event": "heldout", "step": step + 1, "elapsed_s": round(time.time() - t0, 1), **metrics})
            if out is not None and step < steps - 1:      # a usable checkpoint while training goes on
                save_model(model, processor, Path(out) / "checkpoint")
    model.eval().requires_grad_(False).cpu()
    summary = {"event": "done", "train_seconds": round(time.time() - t0, 1), **params, "heldout": metrics,
               "heldout_scenes": heldout}
    if out is not None:
        save_model(model, processor, Path(out))
        (Path(out) / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    emit(summary)
    if logf:
        logf.close()
    return {"model": model, "processor": processor, **summary}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--method" in argv:      # --method pnp_ovss (this file, the default) or pgseg (train_pgseg.py)
        i = argv.index("--method")
        method = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i:i + 2]
        if method == "pgseg":
            from .train_pgseg import main as pgseg_main

            return pgseg_main(argv)
        if method != "pnp_ovss":
            print(f"ovss-train-toy: error: --method {method!r}: expected pnp_ovss or pgseg", file=sys.stderr)
            return 2
    ap = argparse.ArgumentParser(description="Train the tiny toy-world BLIP (ITM with hard negatives + ITC); "
                                             "--method pgseg trains a tiny GroupViT / PGSeg instead.")
    ap.add_argument("--out", type=Path, default=None, help="directory for save_pretrained (default: none)")
    ap.add_argument("--world", default="pattern", choices=["pattern", "shape"])
    ap.add_argument("--toy-version", type=int, default=1, choices=[1, 2],
                    help="toy world v1 (96 x 96, world.py) or v2 (160 x 120 through a camera, world_v2.py)")
    ap.add_argument("--scene-pool", type=int, default=0,
                    help="render this many training scenes once and draw batches from them (0: fresh every step)")
    ap.add_argument("--image-size", type=int, default=MODEL_ARGS["image_size"],
                    help="model input side (frames are warped to it, as the engine does)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--itc-weight", type=float, default=1.0)
    ap.add_argument("--pos-weight", type=float, default=2.0)
    ap.add_argument("--captions-per-image", type=int, default=8,
                    help="ITM pairs per image: positives, then hard negatives, then absent (0 = all classes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=int, default=256, help="held-out scenes for ITM accuracy")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--log", type=Path, default=None, help="append JSON lines here")
    ap.add_argument("--init", type=Path, default=None, help="start from this saved model instead of random")
    ap.add_argument("--vision-hidden", type=int, default=MODEL_ARGS["vision_hidden"])
    ap.add_argument("--vision-layers", type=int, default=MODEL_ARGS["vision_layers"])
    ap.add_argument("--text-hidden", type=int, default=MODEL_ARGS["text_hidden"])
    ap.add_argument("--patch-size", type=int, default=MODEL_ARGS["patch_size"],
                    help="ViT patch in pixels: 8 gives a 12 x 12 grid at 96 px, 6 a 16 x 16 one")
    a = ap.parse_args(argv)
    model_args = {**MODEL_ARGS, "vision_hidden": a.vision_hidden, "vision_layers": a.vision_layers,
                  "text_hidden": a.text_hidden, "patch_size": a.patch_size, "image_size": a.image_size}
    r = train(a.out, a.world, a.steps, a.batch, a.lr, a.warmup, itc_weight=a.itc_weight, pos_weight=a.pos_weight,
              captions_per_image=a.captions_per_image, seed=a.seed, heldout=a.heldout, eval_every=a.eval_every, threads=a.threads, device=a.device,
              log=a.log, model_args=model_args, init=a.init, toy_version=a.toy_version, scene_pool=a.scene_pool)
    print(json.dumps({"heldout": r["heldout"], "train_seconds": r["train_seconds"], "out": str(a.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
