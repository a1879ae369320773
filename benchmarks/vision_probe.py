"""Can the tiny ViT learn a world's class attributes at all? A probe with direct image-level supervision.

The toy BLIP learns colour and fill pattern on world v2 but never shape: in the shape world its ITM stays at
chance on negatives of the right colour and the wrong shape. This probe asks whether that is the ITM
objective's fault or the vision tower's. It trains the BLIP vision tower of `tiny_model` (or a saved model's)
with one linear layer on its [CLS] token, multi-label binary cross-entropy on the world's 12 class names:
the most direct image-level signal there is. No masks, as in the real training.

Held out (the world's held-out seeds), per image and per present class k, it counts how often k's logit beats
the logit of each absent class that shares k's colour (same colour, other pattern or shape). That ranking
accuracy is 0.5 for a tower that sees colour and nothing else, 1.0 for one that tells the second attribute
apart; it needs no threshold. The same ranking against absent classes of colours not in the image shows
whether colour itself was learned. Run the pattern world as the control: there the same probe must learn.

    .venv/bin/python benchmarks/vision_probe.py --world pattern --steps 400
    .venv/bin/python benchmarks/vision_probe.py --world shape --steps 400 --init <saved BLIP>
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovss_ros.pnp_ovss.tiny_model import build_blip  # noqa: E402
from ovss_ros.toy_world.scene_source import SceneSource  # noqa: E402
from ovss_ros.toy_world.train import MODEL_ARGS, scenes_to_batch  # noqa: E402
from ovss_ros.toy_world.training_common import json_lines, lr_at  # noqa: E402
from ovss_ros.toy_world.world import vocabulary_words  # noqa: E402


def colour_of(name: str, world: str) -> str:
    return name.split()[0] if world == "shape" else name.split()[1]


@torch.no_grad()
def score(tower, head, scenes, names, world: str, mean, std, size: int) -> dict:
    """Ranking accuracy against same-colour negatives, and thresholded accuracy by kind of pair."""
    tower.eval()
    wins, colour_wins, kinds = [], [], {"positive": [], "same_colour": [], "other": []}
    for i in range(0, len(scenes), 64):
        chunk = scenes[i:i + 64]
        x, y = scenes_to_batch(chunk, mean, std, len(names), size)
        logits = head(tower(pixel_values=x).last_hidden_state[:, 0])
        for yy, z in zip(y.numpy() > 0, logits.numpy()):
            colours = {colour_of(names[k], world) for k in np.flatnonzero(yy)}
            for k, name in enumerate(names):
                kind = "positive" if yy[k] else "same_colour" if colour_of(name, world) in colours else "other"
                kinds[kind].append(bool((z[k] > 0) == yy[k]))
                if yy[k]:
                    wins += [float(z[k] > z[j]) for j, n in enumerate(names)
                             if not yy[j] and colour_of(n, world) == colour_of(name, world)]
                    colour_wins += [float(z[k] > z[j]) for j, n in enumerate(names)
                                    if not yy[j] and colour_of(n, world) not in colours]
    tower.train()
    out = {f"acc_{k}": round(float(np.mean(v)), 4) for k, v in kinds.items() if v}
    out["ranking_vs_same_colour"] = round(float(np.mean(wins)), 4) if wins else float("nan")
    out["ranking_pairs"] = len(wins)
    # the same against absent classes of a colour no present class has: what colour alone decides
    out["ranking_vs_other_colours"] = round(float(np.mean(colour_wins)), 4) if colour_wins else float("nan")
    return out


class ConvTower(torch.nn.Module):
    """The control architecture: four stride-2 3 x 3 convolutions and a global max-pool, shaped like the ViT's
    output ([B, 1, 128], the pooled feature in the [CLS] place) so the same head and score apply."""

    def __init__(self, width: int = 128):
        super().__init__()
        chans = [3, 32, 64, width, width]
        layers = []
        for a, b in zip(chans, chans[1:]):
            layers += [torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.GroupNorm(8, b), torch.nn.GELU()]
        self.body = torch.nn.Sequential(*layers)

    def forward(self, pixel_values):
        from types import SimpleNamespace
        return SimpleNamespace(last_hidden_state=self.body(pixel_values).amax((2, 3))[:, None])


def use_plain_fills() -> None:
    """Every object of world v2 gets a plain fill (the shape world's free fill patterns and dotted distractors
    go): does a striped or checked fill hide the silhouette? It patches world_v2 in this process, so the scene
    pool's workers must be forked from it."""
    import multiprocessing

    from ovss_ros.toy_world import world_v2
    if multiprocessing.get_start_method() != "fork":
        raise RuntimeError("--plain-fills needs the 'fork' start method for the scene pool's workers")
    world_v2.PATTERNS, world_v2.DISTRACTOR_PATTERNS = ("plain",), ()


def probe(world: str, steps: int, init: Path | None, lr: float, pool: int, heldout: int, seed: int,
          eval_every: int, log: Path | None, plain_fills: bool = False, patch_size: int = MODEL_ARGS["patch_size"],
          tower_kind: str = "vit") -> dict:
    if tower_kind not in ("vit", "cnn"):
        raise ValueError(f"tower must be vit or cnn, got {tower_kind!r}")
    torch.manual_seed(seed)
    if plain_fills:
        if world != "shape":
            raise ValueError("--plain-fills is for the shape world: in the pattern world the fill is the class")
        use_plain_fills()
    if init is not None:
        from transformers import BlipForImageTextRetrieval, BlipProcessor
        model = BlipForImageTextRetrieval.from_pretrained(str(init), use_safetensors=True)
        processor = BlipProcessor.from_pretrained(str(init))
    else:
        model, processor = build_blip(vocabulary_words(world), seed=seed,
                                      **{**MODEL_ARGS, "image_size": 128, "patch_size": patch_size})
    tower = (model.vision_model if tower_kind == "vit" else ConvTower(model.config.vision_config.hidden_size)).train()
    size = model.config.vision_config.image_size
    source = SceneSource(world, 2, 32, seed, pool)
    names = source.names
    head = torch.nn.Linear(model.config.vision_config.hidden_size, len(names))
    ip = processor.image_processor
    mean, std = tuple(ip.image_mean), tuple(ip.image_std)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    held = source.heldout(heldout)
    logf = open(log, "a") if log else None
    emit = json_lines(logf, quiet=False)
    setup = dict(world=world, toy_version=2, steps=steps, lr=lr, scene_pool=pool, heldout=heldout, seed=seed,
                 init=str(init) if init else None, plain_fills=plain_fills, image_size=size,
                 tower=tower_kind, patch_size=model.config.vision_config.patch_size if tower_kind == "vit" else None,
                 threads=torch.get_num_threads())
    emit({"event": "start", **setup, **score(tower, head, held, names, world, mean, std, size)})
    t0 = time.time()
    for step in range(steps):
        x, y = scenes_to_batch(source.step(step), mean, std, len(names), size)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, 50)
        loss = F.binary_cross_entropy_with_logits(head(tower(pixel_values=x).last_hidden_state[:, 0]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % eval_every == 0 or step == steps - 1:
            emit({"event": "heldout", "step": step + 1, "elapsed_s": round(time.time() - t0, 1),
                  "train_loss": round(loss.item(), 4), **score(tower, head, held, names, world, mean, std, size)})
    final = {"event": "done", **setup, "train_seconds": round(time.time() - t0, 1),
             **score(tower, head, held, names, world, mean, std, size)}
    emit(final)
    if logf:
        logf.close()
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="shape", choices=["pattern", "shape"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--init", type=Path, default=None, help="a saved toy BLIP (default: a fresh one, 128 px)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--scene-pool", type=int, default=4000)
    ap.add_argument("--heldout", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--patch-size", type=int, default=MODEL_ARGS["patch_size"],
                    help="ViT patch of a fresh tower (128 px input): 8 gives a 16 x 16 grid, 16 an 8 x 8 one")
    ap.add_argument("--tower", default="vit", choices=["vit", "cnn"],
                    help="the BLIP ViT, or a small convolutional net as a control of the data (not a BLIP)")
    ap.add_argument("--plain-fills", action="store_true", help="world v2 objects with plain fills only (a control)")
    ap.add_argument("--log", type=Path, default=None, help="append JSON lines here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    probe(a.world, a.steps, a.init, a.lr, a.scene_pool, a.heldout, a.seed, a.eval_every, a.log, a.plain_fills,
          a.patch_size, a.tower)
    return 0


if __name__ == "__main__":
    sys.exit(main())
