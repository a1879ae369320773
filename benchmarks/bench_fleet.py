"""ovss-label-bags against single-process ovss-bag-segment on the same toy-world bags (embedded toy model,
preset tiny): frames per second with 1 and 2 Ray workers, and the fixed start-up cost of the Ray runtime and
the workers. Prints a table; writes JSON.

    .venv/bin/python benchmarks/bench_fleet.py --out benchmarks/results/fleet_cpu.json

frames/s is over the labelling time (start-up excluded, reported apart); wall is the whole command. The toy
model is small (96 px frames), so per-frame overheads weigh more here than with a real checkpoint.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ovss_ros.toy_world.bag import IMAGE_TOPIC, write_toy_bag
from ovss_ros.toy_world.world import class_names

REPO = Path(__file__).resolve().parents[1]
MODEL = str(REPO / "ovss_ros" / "data" / "toy_blip")
COMMON = ["--vocabulary", ", ".join(class_names("pattern")), "--model", MODEL, "--preset", "tiny",
          "--device", "cpu", "--topics", IMAGE_TOPIC]
FLEET = {"fleet, 1 worker x 1 CPU": ["--workers", "1", "--cpus-per-worker", "1"],
         "fleet, 1 worker x 2 CPUs": ["--workers", "1", "--cpus-per-worker", "2"],
         "fleet, 2 workers x 1 CPU": ["--workers", "2", "--cpus-per-worker", "1"]}


def run(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    if out.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - t, out.stdout


def single_process(bags: list[Path], tmp: Path) -> dict:
    """ovss-bag-segment over each bag in turn, as a shell loop would run it (model loaded per bag)."""
    wall = seg_s = 0.0
    frames = 0
    for bag in bags:
        dt, out = run([sys.executable, "-m", "ovss_ros.ros.bag_segment", str(bag), str(tmp / "single" / bag.name),
                       *COMMON])
        m = re.search(r"(\d+) frames segmented .* in ([\d.]+) s", out)
        frames, seg_s, wall = frames + int(m.group(1)), seg_s + float(m.group(2)), wall + dt
    return {"frames": frames, "seconds": round(seg_s, 3), "fps": round(frames / seg_s, 3),
            "wall_seconds": round(wall, 3), "startup_seconds": round(wall - seg_s, 3)}


def fleet(bags: list[Path], out: Path, extra: list[str], batch: int) -> dict:
    dt, _ = run([sys.executable, "-m", "ovss_ros.fleet.cli", *map(str, bags), "--out", str(out), *COMMON,
                 "--num-cpus", "2", "--frames-per-batch", str(batch), "--no-progress", *extra])
    rep = json.loads((out / "fleet_report.json").read_text())
    return {"frames": rep["frames"], "seconds": rep["seconds"], "fps": rep["fps"], "wall_seconds": round(dt, 3),
            "startup_seconds": rep["startup_seconds"], "runtime_start_seconds": rep["runtime_start_seconds"],
            "workers": [{k: w[k] for k in ("index", "frames", "busy_s", "fps")} for w in rep["workers"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bags", type=int, default=6)
    ap.add_argument("--frames", type=int, default=30, help="camera frames per bag")
    ap.add_argument("--frames-per-batch", type=int, default=4)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fleet_cpu.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bags = [Path(write_toy_bag(tmp / "in" / f"bag{i}", seed=i, n_frames=a.frames)["path"]) for i in range(a.bags)]
        rows = {"ovss-bag-segment, one process per bag": single_process(bags, tmp)}
        for i, (name, extra) in enumerate(FLEET.items()):
            rows[name] = fleet(bags, tmp / f"fleet{i}", extra, a.frames_per_batch)
    print(f"{a.bags} toy bags x {a.frames} frames, {os.cpu_count()} cores")
    print(f"{'':42s} {'frames/s':>9s} {'labelling s':>12s} {'start-up s':>11s} {'wall s':>8s}")
    for name, r in rows.items():
        print(f"{name:42s} {r['fps']:9.2f} {r['seconds']:12.1f} {r['startup_seconds']:11.1f} {r['wall_seconds']:8.1f}")
    ray_s = [r["runtime_start_seconds"] for r in rows.values() if "runtime_start_seconds" in r]
    print(f"Ray runtime start (ray.init, local): {min(ray_s):.1f}-{max(ray_s):.1f} s; workers ready after "
          "(model loaded): see start-up")
    result = {"date": datetime.date.today().isoformat(), "machine": {"cores": os.cpu_count(),
              "python": platform.python_version(), "platform": platform.platform()},
              "bags": a.bags, "frames_per_bag": a.frames, "frames_per_batch": a.frames_per_batch,
              "model": "ovss_ros/data/toy_blip (preset tiny, 96 px frames)", "runs": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
