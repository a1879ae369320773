"""The demo's --method plumbing: `toy_demo --method pgseg` runs the real node with method:=pgseg on the given
PGSeg checkpoint (here the session's random tiny one: the embedded toy PGSeg may not exist yet) and writes the
same summary; without --model it uses the method's embedded model, or says it is missing."""
import json
import subprocess
import sys


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


def test_demo_without_a_model_uses_the_methods_embedded_one_or_says_it_is_missing(tmp_path, monkeypatch, capsys):
    """The default is MODEL_DIRS[method]; where that folder is missing the demo stops at once and says so."""
    from ovss_ros.demo import toy_demo

    assert (MODEL_DIRS["pgseg"] / "config.json").is_file()        # the embedded toy PGSeg ships
    monkeypatch.setattr(toy_demo, "MODEL_DIRS", {**MODEL_DIRS, "pgseg": tmp_path / "toy_pgseg"})
    assert toy_demo.main(["--method", "pgseg", "--out", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert "toy_pgseg" in err and "--model" in err
