"""The package as a whole: one version (package.xml's), and declared dependencies that match the imports."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "ovss_ros"


def _package_xml() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO)


# ---- version -------------------------------------------------------------------------------------------

def test_version_is_written_once_in_package_xml():
    xml_version = _package_xml().findtext("version").strip()
    out = subprocess.run([sys.executable, "setup.py", "--version"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == xml_version
    import ovss_ros
    assert ovss_ros.__version__ == xml_version
    for path in (REPO / "setup.py", PKG / "__init__.py"):   # nobody writes the number a second time
        assert xml_version not in path.read_text(), path


def test_version_falls_back_to_metadata_then_ament_share(tmp_path, monkeypatch):
    """Without a package.xml beside the package (a wheel or colcon install) the version still comes from it."""
    import ovss_ros
    from importlib import metadata

    monkeypatch.setattr(ovss_ros, "__file__", str(tmp_path / "site" / "ovss_ros" / "__init__.py"))
    monkeypatch.setattr(metadata, "version", lambda name: "7.8.9")
    assert ovss_ros._version() == "7.8.9"

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    share = tmp_path / "install" / "share" / "ovss_ros"
    share.mkdir(parents=True)
    (share / "package.xml").write_text("<package><name>ovss_ros</name><version>1.2.3</version></package>")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'elsewhere'}:{tmp_path / 'install'}")
    assert ovss_ros._version() == "1.2.3"
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    assert ovss_ros._version() == "0+unknown"


# ---- package.xml lists what the code uses ---------------------------------------------------------------

# top-level Python module -> the rosdep key that provides it
MODULE_KEYS = {
    "numpy": "python3-numpy", "scipy": "python3-scipy", "cv2": "python3-opencv", "PIL": "python3-pil",
    "tqdm": "python3-tqdm", "yaml": "python3-yaml", "pytest": "python3-pytest",
    "torch": "ovss-torch-pip", "transformers": "ovss-transformers-pip", "rosbags": "ovss-rosbags-pip",
    "pydensecrf": "ovss-pydensecrf2-pip", "ray": "ovss-ray-pip",
    "tokenizers": "ovss-transformers-pip", "safetensors": "ovss-transformers-pip",   # transformers' own deps
}
# keys no Python import shows, and why they are declared
NOT_IMPORTED = {
    "rosidl_default_runtime": "the generated ovss_ros messages",
    "rviz2": "started by the launch file (rviz:=true)",
    "cv_bridge": "optional image conversion on robots",
    "launch_testing_ament_cmake": "CMakeLists.txt add_launch_test",
}
# imported, and deliberately not package.xml keys (README, "On a robot")
NOT_DECLARED = {
    "ovss-torch-pip": "installed by hand in the build that fits the robot's GPU; rosdep must not replace it",
    "ovss-ray-pip": "ovss-label-bags only: the optional `fleet` extra; colcon build and the node run without it",
}
RUNTIME_SOURCES = [*PKG.rglob("*.py"), *(REPO / "scripts" / "ros").iterdir(), *(REPO / "launch").glob("*.py")]


def _imported(paths) -> set[str]:
    tops = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops.add(node.module.split(".")[0])
    tops -= set(sys.stdlib_module_names) | {"ovss_ros", "__future__"}
    return {MODULE_KEYS.get(t, t) for t in tops}


def _declared(*tags) -> set[str]:
    return {e.text.strip() for tag in tags for e in _package_xml().iter(tag)}


def test_package_xml_declares_every_import_and_nothing_unused():
    runtime = _imported(RUNTIME_SOURCES)
    local = {p.stem for p in (REPO / "test").rglob("*.py")}      # test helpers importing each other
    tests = _imported((REPO / "test").rglob("*.py")) - local
    run_keys, test_keys = _declared("depend", "exec_depend"), _declared("test_depend")
    assert set(NOT_DECLARED) <= runtime and not set(NOT_DECLARED) & (run_keys | test_keys)
    runtime -= set(NOT_DECLARED)
    tests -= set(NOT_DECLARED)
    assert runtime <= run_keys, f"imported but not declared (exec): {sorted(runtime - run_keys)}"
    assert tests <= run_keys | test_keys, f"imported by tests but not declared: {sorted(tests - run_keys - test_keys)}"
    unused_run, unused_test = run_keys - runtime - set(NOT_IMPORTED), test_keys - tests - set(NOT_IMPORTED)
    assert not unused_run, f"exec keys no runtime code imports: {sorted(unused_run)}"
    assert not unused_test, f"test keys no test imports: {sorted(unused_test)}"
    assert _package_xml().get("format") == "3"


def _rosdep_yaml() -> dict:
    import yaml

    return yaml.safe_load((REPO / "rosdep.yaml").read_text())


def test_pip_only_keys_resolve_through_rosdep_yaml_and_nothing_else_is_there():
    rules = _rosdep_yaml()
    pip_keys = {k for k in _declared("depend", "exec_depend", "test_depend") if k.endswith("-pip")}
    assert pip_keys and pip_keys == set(rules), (sorted(pip_keys - set(rules)), sorted(set(rules) - pip_keys))
    pip_packages = {p for rule in rules.values() for os_rule in rule.values() for p in os_rule["pip"]["packages"]}
    assert not pip_packages & {"torch", "ray"}, "rosdep would install torch or Ray"


def _setup_keywords() -> dict:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}


def test_ray_is_the_fleet_extra_and_torch_a_pip_requirement():
    """`pip install .` brings torch (no ROS, no rosdep); Ray only with `.[fleet]`."""
    kw = _setup_keywords()
    names = lambda reqs: {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}   # noqa: E731
    assert "ray" in names(kw["extras_require"]["fleet"]) and "ray" not in names(kw["install_requires"])
    assert "torch" in names(kw["install_requires"])


