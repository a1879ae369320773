"""Evaluation outputs: a JSON file and a per-class IoU bar chart (drawn with PIL: no plotting dependency)."""
from __future__ import annotations

import json
import math
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _clean(x):
    """JSON without NaN (not valid JSON): NaN -> null, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else round(float(x), 6)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(data: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=1) + "\n")
    return path


def bar_chart(per_class_iou: dict, path: Path, title: str = "", max_classes: int = 200) -> Path:
    """Horizontal bars, one per class (classes without ground truth are listed as n/a)."""
    items = list(per_class_iou.items())[:max_classes]
    font = ImageFont.load_default()
    row, label_w, bar_w, pad = 14, 150, 360, 8
    h = pad * 2 + 20 + row * len(items) + 16
    img = Image.new("RGB", (label_w + bar_w + 60, h), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, pad), title[:90], fill="black", font=font)
    y0 = pad + 20
    for k, (name, v) in enumerate(items):
        y = y0 + k * row
        d.text((pad, y), str(name)[:24], fill="black", font=font)
        x0 = label_w
        d.rectangle([x0, y + 2, x0 + bar_w, y + row - 2], outline=(220, 220, 220))
        if v is None or (isinstance(v, float) and math.isnan(v)):
            d.text((x0 + 4, y), "n/a", fill=(150, 150, 150), font=font)
            continue
        d.rectangle([x0, y + 2, x0 + int(bar_w * max(0.0, min(1.0, v))), y + row - 2], fill=(60, 110, 200))
        d.text((x0 + bar_w + 4, y), f"{v:.2f}", fill="black", font=font)
    ya = y0 + row * len(items) + 2
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + int(bar_w * t)
        d.line([x, y0, x, ya], fill=(235, 235, 235))
        d.text((x - 8, ya + 2), f"{t:.2f}", fill=(90, 90, 90), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def summary_line(res: dict, protocol: str = "standard") -> str:
    m = res.get(protocol, {})
    p = res.get("presence", {})
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
    return (f"{protocol}: mIoU {fmt(m.get('mIoU'))}  pixel acc {fmt(m.get('pixel_accuracy'))}  "
            f"presence P {fmt(p.get('precision'))} R {fmt(p.get('recall'))}  images {res.get('images', 0)}")


def save(res: dict, out_dir: Path, stem: str = "eval") -> dict:
    out_dir = Path(out_dir)
    paths = {"json": str(write_json(res, out_dir / f"{stem}.json"))}
    for p in ("standard", "reference"):
        if p in res:
            paths[f"chart_{p}"] = str(bar_chart(res[p]["per_class_iou"], out_dir / f"{stem}_{p}_iou.png",
                                                f"{stem}: per-class IoU ({p}), mIoU {res[p]['mIoU']:.3f}"))
    return paths
