"""The table that benchmarks/gpu_check.sh ends with: the JSON its steps wrote, read against the project's GPU
goals, one row per goal with pass / FAIL / not measured, also written as gpu_check_<suffix>.json.

    python benchmarks/gpu_goals.py RESULTS_DIR SUFFIX [--smoke] [--step NAME=STATUS ...]

Standard library only: it runs on the bare machine gpu_check.sh is meant for.
"""
from __future__ import annotations

import argparse
import json
import operator
from pathlib import Path

DTYPES = ("float32", "bfloat16")
# key, what, unit, comparison, target
GOALS = (
    ("realtime", "PnP-OVSS realtime, {arch}, 20 classes, one camera", "frames/s", ">=", 60.0),
    ("memory", "peak GPU memory of that run", "GB", "<=", 6.0),
    ("cameras", "PnP-OVSS realtime, {arch}, 20 classes, 4 cameras batched, each", "frames/s", ">=", 15.0),
    ("pgseg", "PGSeg realtime, released shapes, 20 classes", "frames/s", ">=", 200.0),
)
COMPARE = {">=": operator.ge, "<=": operator.le}


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _most_classes(rows: list, classes) -> list:
    """The rows at `classes`; None: at the largest class count there is (a smoke run measures fewer)."""
    if classes is None and rows:
        classes = max(r.get("classes", 0) for r in rows)
    return [r for r in rows if r.get("classes") == classes]


def measured(results: Path, suffix: str, arch: str, classes=20) -> dict:
    """goal -> {dtype: figure or None} from the steps' JSON (a step that did not run leaves None)."""
    out = {key: dict.fromkeys(DTYPES) for key, *_ in GOALS}
    for dtype in DTYPES:
        run = _read(results / f"hot_path_{suffix}_{dtype}.json") or {"rows": []}
        rows = [r for r in run["rows"] if r.get("arch") == arch and r.get("preset") == "realtime"]
        for r in _most_classes(rows, classes):
            out["realtime"][dtype] = r["new_fps"]
            if r.get("peak_gpu_bytes"):
                out["memory"][dtype] = r["peak_gpu_bytes"] / 1e9
            if "batch" in r:
                out["cameras"][dtype] = r["batch"]["batched_fps"] / r["batch"]["cameras"]
    pgseg = _read(results / f"pgseg_{suffix}.json") or {"rows": []}
    for r in _most_classes(pgseg["rows"], classes):
        out["pgseg"]["float32"] = r["pgseg_realtime"]["fps"]     # bench_pgseg runs the default dtype
    return out


def verdict(figures: dict, comparison: str, target: float, smoke: bool) -> str:
    got = {d: v for d, v in figures.items() if v is not None}
    if not got:
        return "not measured"
    if smoke:
        return "smoke run"
    met = [d for d, v in got.items() if COMPARE[comparison](v, target)]
    return f"pass ({', '.join(met)})" if met else "FAIL"


def table(results: Path, suffix: str, smoke: bool, steps: dict) -> dict:
    arch = "tiny" if smoke else "large"
    figures = measured(results, suffix, arch, None if smoke else 20)
    device = next((run["device"] for d in DTYPES
                   if (run := _read(results / f"hot_path_{suffix}_{d}.json")) and "device" in run), None)
    rows = [{"goal": key, "what": what.format(arch=f"BLIP-{arch}"), "unit": unit,
             "target": f"{comparison} {target:g}", "measured": figures[key],
             "verdict": verdict(figures[key], comparison, target, smoke)}
            for key, what, unit, comparison, target in GOALS]
    return {"smoke": smoke, "device": device, "results": str(results), "steps": steps, "goals": rows}


def render(report: dict) -> str:
    head = ("SMOKE RUN on the CPU at the tiny shape: a check of gpu_check.sh, not a measurement"
            if report["smoke"] else f"GPU goals on {report['device'] or 'an unknown device'}")
    lines = [head, f"{'goal':<66} {'target':>12} {'float32':>9} {'bfloat16':>9}  verdict"]
    for r in report["goals"]:
        cell = lambda v: "–" if v is None else f"{v:.2f}"    # noqa: E731
        lines.append(f"{r['what']:<66} {r['target'] + ' ' + r['unit']:>12} {cell(r['measured']['float32']):>9} "
                     f"{cell(r['measured']['bfloat16']):>9}  {r['verdict']}")
    lines.append("steps: " + ", ".join(f"{k} {v}" for k, v in report["steps"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("suffix")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--step", action="append", default=[], help="NAME=STATUS of a gpu_check step")
    a = ap.parse_args(argv)
    report = table(a.results, a.suffix, a.smoke, dict(s.split("=", 1) for s in a.step))
    print(render(report))
    out = a.results / f"gpu_check_{a.suffix}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
