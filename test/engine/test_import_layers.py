"""Imports flow one way: engine <- toy_world <- evaluation <- ros <- demo <- fleet (each may use those before it
only); Ray, the fleet's optional dependency, is imported by the fleet alone.
Checked on the source (every import statement, top-level or inside a function), so a lazy import cannot
hide a cycle."""
import ast
from pathlib import Path

import ovss_ros

PKG = Path(ovss_ros.__file__).parent
LAYERS = ["engine", "toy_world", "evaluation", "ros", "demo", "fleet"]       # low to high
ENGINE_SUBPACKAGES = {"pgseg"}        # the second method is part of the engine: no rclpy, no higher layer


def _layer(module: str) -> str:
    part = module.split(".")[1] if module.startswith("ovss_ros.") else ""
    return part if part in LAYERS and part not in ENGINE_SUBPACKAGES else "engine"


def _imports(path: Path, module: str):
    pkg = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("ovss_ros"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                target = f"{base}.{node.module}" if node.module else base
                yield from ([target] if node.module else [f"{base}.{a.name}" for a in node.names])
            elif node.module and node.module.startswith("ovss_ros"):
                yield node.module


def test_every_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    known = set(LAYERS) | ENGINE_SUBPACKAGES
    assert subpackages <= known, f"add {sorted(subpackages - known)} to LAYERS"


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if rel.name == "__init__":
            module += ".__init__"
        mine = LAYERS.index(_layer(module))
        for target in _imports(path, module):
            if target.startswith("ovss_ros.msg") or target.startswith("ovss_ros.srv"):
                continue                                    # generated ROS interfaces
            if LAYERS.index(_layer(target)) > mine:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_only_the_fleet_imports_ray():
    """The engine and the node never need Ray (an optional extra); lazy imports count too."""
    wrong = []
    for path in PKG.rglob("*.py"):
        if path.relative_to(PKG).parts[0] == "fleet":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            wrong += [f"{path.relative_to(PKG)} imports {n}" for n in names if n.split(".")[0] == "ray"]
    assert not wrong, wrong
