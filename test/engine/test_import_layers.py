"""Imports flow one way: engine <- toy_world <- evaluation <- ros <- demo <- fleet (each may use those before it
only); Ray, the fleet's optional dependency, is imported by the fleet alone.
Checked on the source (every import statement, top-level or inside a function), so a lazy import cannot
hide a cycle. No two modules of the package depend on each other, directly or through others."""
import ast
from pathlib import Path

import ovss_ros

PKG = Path(ovss_ros.__file__).parent
LAYERS = ["engine", "toy_world", "evaluation", "ros", "demo", "fleet"]       # low to high
# the engine's shared face and the two methods: no rclpy, no higher layer
ENGINE_SUBPACKAGES = {"engine", "pnp_ovss", "pgseg"}
METHOD_PACKAGES = ("ovss_ros.pnp_ovss", "ovss_ros.pgseg")


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


def test_every_source_folder_is_a_package():
    """setup.py's find_packages installs only folders with an __init__.py; a folder of modules without one
    would work from the checkout and be missing from an install."""
    folders = {p.parent for p in PKG.rglob("*.py")}
    assert not sorted(f for f in folders if not (f / "__init__.py").exists())


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


def test_ros_layer_uses_the_engine_face_only():
    """The node, the bag tools, the fleet and the demo reach the engine through `ovss_ros` and
    `ovss_ros.engine` (methods by name through engine.methods), never into a method's folder."""
    wrong = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        if rel.parts[1] not in ("ros", "fleet", "demo"):
            continue
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for target in _imports(path, module):
            if target.startswith(METHOD_PACKAGES):
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


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _modules() -> dict:
    """Module name -> path; a package is its __init__."""
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _dependencies(path: Path, module: str, known) -> set:
    """The package's modules this file imports. `from pkg import name` is a dependency on the submodule
    pkg.name when there is one, else on pkg (a package: its __init__); `from mod import name` on mod."""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                base = f"{up}.{node.module}" if node.module else up
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    # names outside the source tree (numpy, the rosidl-generated ovss_ros.msg) are no edge; a package's
    # own __init__ naming itself (`from . import NAME` for a name it defines) neither
    return {n for n in found if n in known and (n != module or path.name != "__init__.py")}


def _lazy_exports(path: Path, module: str) -> set:
    """Modules a package's __init__ loads on attribute access (its `_LAZY` name -> submodule table): a
    module importing the package for such a name depends on the submodule that defines it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_LAZY" for t in node.targets):
            return {f"{module}.{v}" for v in ast.literal_eval(node.value).values()}
    return set()


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module, and modules importing themselves
    (Tarjan, iterative)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph.get(v, ()):
                    out.append(sorted(comp))
    return out


def _graph() -> dict:
    modules = _modules()
    graph = {}
    for m, p in modules.items():
        lazy = _lazy_exports(p, m) if p.name == "__init__.py" else set()
        assert lazy <= set(modules), f"{m}._LAZY names missing modules {sorted(lazy - set(modules))}"
        graph[m] = _dependencies(p, m, modules) | lazy
    return graph


def test_cycle_finder_sees_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert _cycles(graph) == [["a", "b", "c"], ["e"]]


def test_imports_resolve_to_the_modules_they_load(tmp_path):
    known = {"ovss_ros", "ovss_ros.pgseg", "ovss_ros.pgseg.model", "ovss_ros.engine", "ovss_ros.engine.segmenter",
             "ovss_ros.engine.result"}
    src = tmp_path / "segmenter.py"
    src.write_text("def f():\n    from ..pgseg import model, __version__\n    from . import segmenter\n"
                   "from .result import Result\nimport ovss_ros.pgseg\nimport numpy.linalg\nfrom ovss_ros.msg import X\n")
    assert _dependencies(src, "ovss_ros.engine.segmenter", known) == \
        {"ovss_ros.pgseg", "ovss_ros.pgseg.model", "ovss_ros.engine.segmenter", "ovss_ros.engine.result"}


def test_root_lazy_exports_count_as_imports():
    lazy = _lazy_exports(PKG / "__init__.py", "ovss_ros")
    assert {"ovss_ros.pnp_ovss.segmenter", "ovss_ros.pgseg.segmenter"} <= lazy


def test_no_import_cycles():
    """Function-level imports count: a lazy import only moves a cycle to run time. So do the root's lazy
    re-exports: inside the package, import a name from the module that defines it, not from `ovss_ros`."""
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
