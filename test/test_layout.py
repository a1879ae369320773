"""Layout: imports flow one way between the subpackages (toy_world < evaluation < ros < demo), one rosbags
typestore, the demo driver outside the node's modules."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ovss_ros"


# what each part may not import, anywhere in its files (also inside functions)
FORBIDDEN = {
    "toy_world": ("ovss_ros.evaluation", "ovss_ros.ros", "ovss_ros.demo", "rclpy"),
    "evaluation": ("ovss_ros.ros", "ovss_ros.demo", "rclpy"),
    "ros": ("ovss_ros.demo",),
}


def _absolute_imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)   # `from .. import evaluation`
    return found


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_file_imports_a_layer_above_it(part):
    bad = {(str(p.relative_to(REPO)), m) for p in (PKG / part).rglob("*.py") for m in _absolute_imports(p)
           if m.startswith(FORBIDDEN[part])}
    assert not bad, sorted(bad)


@pytest.mark.parametrize("module, forbidden", [
    ("ovss_ros.toy_world.bag", ("ovss_ros.evaluation", "ovss_ros.ros", "ovss_ros.demo", "rclpy")),
    ("ovss_ros.toy_world.train", ("ovss_ros.evaluation", "ovss_ros.ros", "ovss_ros.demo", "rclpy")),
    ("ovss_ros.toy_world.sequence", ("ovss_ros.evaluation", "ovss_ros.ros", "ovss_ros.demo", "rclpy")),
    ("ovss_ros.bag_types", ("ovss_ros.ros", "rclpy", "rosbags")),
    ("ovss_ros.evaluation.cli", ("ovss_ros.ros", "ovss_ros.demo", "rclpy")),
    ("ovss_ros.evaluation.bag_score", ("ovss_ros.ros", "ovss_ros.demo", "rclpy")),
])
def test_subpackage_imports_flow_one_way(module, forbidden):
    """Each module, imported alone in a fresh interpreter with rclpy made unimportable, pulls in none of the
    layers above it: toy_world < evaluation < ros < demo."""
    code = ("import sys; sys.modules['rclpy'] = None\n"
            f"import importlib; importlib.import_module({module!r})\n"
            f"bad = sorted(k for k in sys.modules if k.startswith({forbidden!r}) and sys.modules[k] is not None)\n"
            "print('imported:', bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imported: []" in out.stdout, out.stdout


def test_one_typestore_serves_every_bag():
    defs = [p.relative_to(REPO) for p in PKG.rglob("*.py") if re.search(r"^def typestore\(", p.read_text(), re.M)]
    assert defs == [Path("ovss_ros/bag_types.py")], defs


def test_demo_driver_lives_outside_the_node_modules():
    assert not (PKG / "ros" / "toy_demo.py").exists()
    assert "-m ovss_ros.demo.toy_demo " in (REPO / "scripts" / "demo.sh").read_text()
    pytest.importorskip("rclpy")
    out = subprocess.run([sys.executable, "-m", "ovss_ros.demo.toy_demo", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0 and "--frames" in out.stdout, out.stderr[-2000:]
