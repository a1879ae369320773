"""The engine stays ROS-free: it imports with rclpy made unimportable, and no engine module imports the
ROS layer."""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "ovss_ros"
# the engine: the package root's modules, the shared face and both methods
ENGINE = [*PKG.glob("*.py"), *(p for d in ("engine", "pnp_ovss", "pgseg") for p in (PKG / d).rglob("*.py"))]


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_engine_modules_do_not_import_ros():
    assert len(ENGINE) > 30      # the walk found the method folders
    for path in ENGINE:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("rclpy", "ovss_ros.ros", "sensor_msgs", "std_msgs")), (path.name, name)
                assert not (isinstance(node, ast.ImportFrom) and node.level and (node.module or "").startswith("ros")), \
                    (path.name, name)


def test_engine_imports_without_rclpy():
    mods = [_module(p) for p in ENGINE if p.stem not in ("cli", "__main__")]
    code = ("import sys; sys.modules['rclpy'] = None\n"
            f"import importlib\nfor m in {mods!r}: importlib.import_module(m)\n"
            "assert not any(k.startswith('rclpy.') for k in sys.modules)\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
