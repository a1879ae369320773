"""How well a toy PGSeg model's groups follow the objects, apart from how it names them.

For each held-out scene (world v1, pattern; seeds heldout 0..n-1) the model's test-time group map (each pixel's
strongest final group, as the decode draws it) is compared with the ground truth:
- groups used: distinct groups in the map;
- purity: the share of a group's pixels that carry its most common ground-truth label;
- oracle-named mIoU: the map with every group given its most common ground-truth label. No naming of the groups
  can do better, so a low figure here means the grouping fails, a high one with a low end-to-end mIoU means the
  naming fails;
- named right: the share of object groups (majority label not background) whose embedding is closest to the
  prompt of that class.

    .venv/bin/python benchmarks/pgseg_groups.py out/toy_pgseg_npr out/toy_pgseg_no_npr --n 100
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovss_ros.evaluation.metrics import ConfusionMatrix  # noqa: E402
from ovss_ros.pgseg.inference import pixel_groups  # noqa: E402
from ovss_ros.pgseg.model import PGSegModel, image_embeddings, text_embeddings, vision_forward  # noqa: E402
from ovss_ros.pgseg.preprocess import preprocess  # noqa: E402
from ovss_ros.toy_world.world import SIZE, class_names, make_scene, scene_seed  # noqa: E402


@torch.no_grad()
def diagnose(directory: Path, n: int, world: str = "pattern") -> dict:
    from transformers import AutoTokenizer

    model = PGSegModel.from_pretrained(str(directory)).float().eval()
    tok = AutoTokenizer.from_pretrained(str(directory))
    stats = json.loads((Path(directory) / "preprocessor_config.json").read_text())
    names = class_names(world)
    prompts = tok([f"a picture of {c}" for c in names], padding="longest", return_tensors="pt")
    text = torch.nn.functional.normalize(text_embeddings(model, prompts.input_ids, prompts.attention_mask), dim=-1)
    oracle_scores = ConfusionMatrix(len(names) + 1)
    used, purity, named = [], [], []
    for i in range(n):
        scene = make_scene(scene_seed("heldout", i), world)
        x = torch.from_numpy(preprocess(scene.rgb, SIZE, "square", stats["image_mean"], stats["image_std"]))[None]
        vision = vision_forward(model, x)
        groups, _ = image_embeddings(model, vision)
        named_as = (groups[0] @ text.T).argmax(-1).numpy() + 1          # label ids: 0 is background
        index = pixel_groups(vision.assignments, (SIZE, SIZE), model.config.vision_config.patch_size)[0].numpy()
        oracle = np.zeros_like(scene.labels)
        for g in np.unique(index):
            mask = index == g
            labels, counts = np.unique(scene.labels[mask], return_counts=True)
            majority = labels[counts.argmax()]
            oracle[mask] = majority
            purity.append(counts.max() / counts.sum())
            if majority > 0:
                named.append(named_as[g] == majority)
        used.append(len(np.unique(index)))
        oracle_scores.update(scene.labels, oracle)
    return {"model": str(directory), "scenes": f"heldout 0..{n - 1}", "world": world,
            "groups_used": round(float(np.mean(used)), 3), "purity": round(float(np.mean(purity)), 4),
            "oracle_named_mIoU": round(oracle_scores.metrics()["mIoU"], 4),
            "object_groups_named_right": round(float(np.mean(named)), 4) if named else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for m in a.models:
        rows.append(diagnose(m, a.n))
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"what": "toy PGSeg group maps against ground truth", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
