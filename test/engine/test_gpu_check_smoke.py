"""benchmarks/gpu_check.sh on a bare machine: a Python that has torch, transformers and OpenCV and what they
install with them, nothing else (no pillow, torchvision, scipy, pydensecrf, rclpy, rosbags, ray, ...). The
bare Python is a real virtual environment holding links to only those distributions, so that imports and
installed-package metadata (which transformers reads) both see what such a machine has. SMOKE=1 runs every
step on the CPU at the tiny shape; what needs more says so in one line and is skipped. Also: the goals
table's verdicts, and the numpy face's resize without pillow."""
import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from ovss_ros.engine import image_io

ROOT = Path(__file__).resolve().parents[2]
BARE_ROOTS = ("torch", "transformers", "opencv-python-headless", "opencv-python")   # whichever is installed
MISSING = ("PIL", "torchvision", "scipy", "pydensecrf", "rclpy", "rosbags", "ray", "ovss_ros.msg")
PRESENT = ("torch", "transformers", "cv2", "numpy", "tqdm", "yaml")
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def dependency_closure(roots) -> list:
    """The installed distributions `roots` need (their requirements without extras, transitively)."""
    found, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found:
            continue
        found[key] = dist
        for line in dist.requires or []:
            name, _, marker = line.partition(";")
            if "extra" not in marker:     # an extra's requirement is not installed with the package itself
                todo.append(re.match(r"[A-Za-z0-9._-]+", name.strip()).group(0))
    return list(found.values())


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    assert any(dist.metadata["Name"].lower().startswith("opencv") for dist in dependency_closure(BARE_ROOTS))
    for dist in dependency_closure(BARE_ROOTS):
        base = Path(dist.locate_file(""))
        # each top-level entry the distribution installed (package, module, .libs, .dist-info), not scripts
        for top in {Path(f).parts[0] for f in dist.files or [] if Path(f).parts[0] != ".."}:
            if top != "__pycache__" and not top.endswith(".pth") and not (site / top).exists():
                (site / top).symlink_to(base / top)
    return python


def test_the_bare_python_has_only_torch_transformers_and_opencv(bare_python):
    probe = ("import importlib.util, json, sys; sys.path.insert(0, '.'); "
             "print(json.dumps({m: importlib.util.find_spec(m.split('.')[0]) is not None "
             "and (m.count('.') == 0 or importlib.util.find_spec(m) is not None) for m in sys.argv[1:]}))")
    out = subprocess.run([str(bare_python), "-c", probe, *MISSING, *PRESENT], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    found = json.loads(out)
    assert {m: found[m] for m in MISSING} == dict.fromkeys(MISSING, False)
    assert {m: found[m] for m in PRESENT} == dict.fromkeys(PRESENT, True)


def test_gpu_check_smoke_runs_end_to_end_on_the_bare_python(bare_python, tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "SMOKE": "1", "PYTHON": str(bare_python), "RESULTS": str(results)}
    env.pop("PYTHONPATH", None)             # the ROS environment's paths would bring rclpy back
    t = time.monotonic()
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    took = time.monotonic() - t
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert ("gpu_check: paper preset skipped, node run without its CRF "
            "(ModuleNotFoundError: No module named 'pydensecrf')") in out
    assert "gpu_check: node end-to-end run skipped (ModuleNotFoundError: No module named 'rclpy')" in out
    assert "failed" not in run.stdout, out[-6000:]
    lines = run.stdout.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("SMOKE RUN")))
    assert "not a measurement" in lines[head]
    table = lines[head + 2: head + 6]
    for line, goal, verdict in zip(table, (">= 60 frames/s", "<= 6 GB", ">= 15 frames/s", ">= 200 frames/s"),
                                   ("smoke run", "not measured", "smoke run", "smoke run")):
        assert goal in line and line.endswith(verdict), line

    for name in ("hot_path_smoke_float32", "hot_path_smoke_bfloat16"):
        rows = json.loads((results / f"{name}.json").read_text())["rows"]
        assert {(r["arch"], r["preset"], r["classes"]) for r in rows} == {("tiny", "realtime", 1),
                                                                         ("tiny", "realtime", 20)}
        assert all(r["new_fps"] > 0 for r in rows) and "batch" in rows[-1]
    pgseg = json.loads((results / "pgseg_smoke.json").read_text())
    assert pgseg["device"] == "cpu" and pgseg["rows"][0]["pgseg_realtime"]["fps"] > 0
    report = json.loads((results / "gpu_check_smoke.json").read_text())
    assert report["smoke"] is True
    assert report["steps"] == {"paper": "skipped", "engine_float32": "ok", "engine_bfloat16": "ok",
                               "pgseg": "ok", "node": "skipped"}
    assert [g["goal"] for g in report["goals"]] == ["realtime", "memory", "cameras", "pgseg"]
    assert all(set(g) == {"goal", "what", "unit", "target", "measured", "verdict"} for g in report["goals"])
    print(f"gpu_check.sh SMOKE=1 on the bare Python: {took:.0f} s")


def test_goals_table_says_pass_fail_or_not_measured_per_goal(tmp_path, benchmark_script):
    def row(arch, classes, fps, peak=None, batched=None):
        r = {"arch": arch, "preset": "realtime", "classes": classes, "new_fps": fps}
        if peak is not None:
            r["peak_gpu_bytes"] = peak
        if batched is not None:
            r["batch"] = {"cameras": 4, "batched_fps": batched}
        return r

    (tmp_path / "hot_path_gpu_float32.json").write_text(json.dumps({"device": "H100", "rows": [
        row("base", 20, 300.0, 2e9, 200.0), row("large", 5, 90.0), row("large", 20, 45.0, 5.5e9, 100.0)]}))
    (tmp_path / "hot_path_gpu_bfloat16.json").write_text(json.dumps({"device": "H100", "rows": [
        row("large", 20, 70.0, 6.5e9, 56.0)]}))
    goals = benchmark_script("gpu_goals")
    assert goals.main([str(tmp_path), "gpu", "--step", "pgseg=failed"]) == 0
    report = json.loads((tmp_path / "gpu_check_gpu.json").read_text())
    by_goal = {g["goal"]: g for g in report["goals"]}
    assert by_goal["realtime"]["measured"] == {"float32": 45.0, "bfloat16": 70.0}     # BLIP-large, 20 classes
    assert by_goal["realtime"]["verdict"] == "pass (bfloat16)"
    assert by_goal["memory"]["measured"] == {"float32": 5.5, "bfloat16": 6.5}
    assert by_goal["memory"]["verdict"] == "pass (float32)"
    assert by_goal["cameras"]["measured"] == {"float32": 25.0, "bfloat16": 14.0}
    assert by_goal["cameras"]["verdict"] == "pass (float32)"
    assert by_goal["pgseg"]["verdict"] == "not measured" and report["steps"] == {"pgseg": "failed"}
    (tmp_path / "hot_path_gpu_bfloat16.json").write_text(json.dumps({"rows": [row("large", 20, 59.9)]}))
    (tmp_path / "pgseg_gpu.json").write_text(json.dumps({"rows": [{"classes": 20, "pgseg_realtime": {"fps": 199.0}}]}))
    report = goals.table(tmp_path, "gpu", False, {})
    assert [g["verdict"] for g in report["goals"]] == ["FAIL", "pass (float32)", "pass (float32)", "FAIL"]
    assert "FAIL" in goals.render(report) and report["device"] == "H100"


def test_numpy_face_resizes_without_pillow_within_one_level_of_pil(monkeypatch):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    resize, calls = image_io.preprocess_torch, []
    monkeypatch.setattr(image_io, "preprocess_torch", lambda *a: calls.append(a) or resize(*a))
    with_pil = image_io.preprocess(rgb, 96, MEAN, STD)
    assert calls == []                                   # pillow installed: PIL's resize, as before
    monkeypatch.setattr(image_io, "_pil_image", lambda: None)
    without = image_io.preprocess(rgb, 96, MEAN, STD)
    assert len(calls) == 1
    device_face = resize(torch.from_numpy(rgb), 96, torch.tensor(MEAN), torch.tensor(STD))
    assert without.dtype == np.float32 and without.shape == (3, 96, 96) and without.flags.c_contiguous
    np.testing.assert_array_equal(without, device_face.numpy())
    level = np.abs(without - with_pil) * np.asarray(STD, np.float32)[:, None, None] * 255
    assert level.max() <= 1.0 + 1e-3


def test_pil_images_still_convert():
    from PIL import Image

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(image_io.to_rgb_uint8(Image.fromarray(rgb), 10**6), rgb)
    gray = image_io.to_rgb_uint8(Image.fromarray(rgb[:, :, 0]).convert("P"), 10**6)
    assert gray.shape == (4, 5, 3)
