"""The demo's --method plumbing: `toy_demo --method pgseg` runs the real node with method:=pgseg on the given
PGSeg checkpoint (here the session's random tiny one: the embedded toy PGSeg may not exist yet) and writes the
same summary; without --model it uses the method's embedded model, or says it is missing."""
import json
import subprocess
import sys

import pytest

from ovss_ros.toy_world import MODEL_DIRS


def test_demo_runs_the_node_with_the_method_it_is_given(tmp_path, tiny_pgseg_dir):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "ovss_ros.demo.toy_demo", "--method", "pgseg", "--model",
                          str(tiny_pgseg_dir), "--frames", "3", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    node_log = (out / "node.log").read_text() if (out / "node.log").exists() else ""
    assert run.returncode == 0, run.stderr[-3000:] + node_log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "pgseg" and summary["model"] == str(tiny_pgseg_dir)
    assert summary["frames_segmented"] == 3 and 0.0 <= summary["mIoU"] <= 1.0
    assert "[demo] pgseg: frames 3/3" in run.stdout
    assert "(method pgseg, preset tiny)" in node_log


def test_demo_without_a_model_uses_the_methods_embedded_one_or_says_it_is_missing(tmp_path):
    if (MODEL_DIRS["pgseg"] / "config.json").is_file():
        pytest.skip("the embedded toy PGSeg exists: its default path is the demo itself (scripts/demo.sh)")
    run = subprocess.run([sys.executable, "-m", "ovss_ros.demo.toy_demo", "--method", "pgseg", "--out",
                          str(tmp_path / "demo")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "toy_pgseg" in run.stderr and "--model" in run.stderr
