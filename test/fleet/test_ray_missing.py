"""ovss-label-bags where Ray is absent (a robot built with colcon, no fleet extra): one line naming the extra."""
import sys

from ovss_ros.fleet import cli


def test_label_bags_without_ray_says_which_extra_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    bags = tmp_path / "bags"
    bags.mkdir()
    out = tmp_path / "out"
    rc = cli.main([str(bags), "--out", str(out), "--vocabulary", "person, chair", "--model", "M"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("ovss-label-bags: Ray is not installed") and "[fleet]" in err and "pip install" in err
    assert not out.exists()                          # refused before anything was written
