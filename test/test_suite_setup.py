"""The test suite's own set-up: the one tiny BLIP every suite shares (test/conftest.py), pytest.ini's
warning filters, and the scripts that build the environments and run the suite on each ROS 2 distribution."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_shared_tiny_blip_is_the_tiny_architecture_and_knows_every_suite_word(tiny_blip_dir, tiny_blip_words):
    from transformers import BertTokenizerFast

    from ovss_ros.pnp_ovss.tiny_model import ARCHITECTURES, blip_config

    cfg = json.loads((tiny_blip_dir / "config.json").read_text())
    want = blip_config(1, **ARCHITECTURES["tiny"])
    assert cfg["vision_config"]["image_size"] == want.vision_config.image_size == 96
    assert cfg["vision_config"]["num_hidden_layers"] == want.vision_config.num_hidden_layers
    assert cfg["text_config"]["num_hidden_layers"] == want.text_config.num_hidden_layers
    assert (tiny_blip_dir / "model.safetensors").is_file()
    tok = BertTokenizerFast.from_pretrained(str(tiny_blip_dir))
    for needed in ("striped", "checked", "hexagon", "traffic", "aeroplane", "tvmonitor"):
        assert needed in tiny_blip_words
    ids = tok(" ".join(tiny_blip_words), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(tiny_blip_words) and tok.unk_token_id not in ids


def test_deprecations_are_shown_in_the_summary_not_ignored_nor_raised(tmp_path):
    """What transformers (or torch) deprecates in the BLIP internals the engine uses must reach the warnings
    summary, under the repository's pytest.ini, without failing the run."""
    (tmp_path / "test_warns.py").write_text(
        "import warnings\n"
        "def test_warns():\n"
        "    warnings.warn_explicit('blip attr going away', DeprecationWarning, 'modeling_blip.py', 1,\n"
        "                           module='transformers.models.blip.modeling_blip')\n"
        "    warnings.warn_explicit('default changes in v6', FutureWarning, 'modeling_utils.py', 1,\n"
        "                           module='transformers.modeling_utils')\n"
        "    warnings.warn_explicit('torch api deprecated', DeprecationWarning, 'module.py', 1,\n"
        "                           module='torch.nn.modules.module')\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pytest.ini"), "--rootdir", str(tmp_path),
                          "-p", "no:cacheprovider", "-q", str(tmp_path / "test_warns.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "warnings summary" in out.stdout
    for text in ("blip attr going away", "default changes in v6", "torch api deprecated"):
        assert text in out.stdout, out.stdout[-3000:]


def _script(*args, env=None, timeout=600):
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_setup_builds_kilted_or_jazzy_and_refuses_anything_else():
    out = _script("scripts/setup.sh", "--distro", "humble")
    assert out.returncode == 2 and "builds kilted or jazzy" in out.stdout, out.stdout
    out = _script("scripts/setup.sh", env={"OVSS_ROS_DISTRO": "rolling"})
    assert out.returncode == 2 and "'rolling'" in out.stdout, out.stdout
    out = _script("scripts/setup.sh", "--distr", "jazzy")
    assert out.returncode == 2 and "unknown argument --distr" in out.stdout, out.stdout
    ignored = subprocess.run(["git", "check-ignore", ".venv-jazzy/bin/python", ".venv/bin/python"], cwd=REPO,
                             capture_output=True, text=True).stdout.split()
    assert ignored == [".venv-jazzy/bin/python", ".venv/bin/python"]


def test_test_script_runs_each_distribution_on_its_paths_and_fails_if_either_fails(tmp_path):
    """scripts/test.sh (the README's and CI's test command): Kilted runs every path given, Jazzy those under
    test/ros and test/fleet; both runs' output is shown and a failure in either is the script's exit code."""
    if not (REPO / ".venv-jazzy" / ".ovss-ros-distro").is_file():
        pytest.skip("no .venv-jazzy here: bash scripts/setup.sh --distro jazzy builds it")
    failing = tmp_path / "test_failing_here.py"
    failing.write_text("def test_fails():\n    assert 1 == 2\n")
    ros_test = "test/ros/test_vocabulary_params.py::test_vocabulary_parameter_accepts_array_or_string"
    out = _script("scripts/test.sh", "-q", "-p", "no:cacheprovider", str(failing), ros_test,
                  env={"OVSS_TEST_DISTROS": "kilted jazzy"})
    assert out.returncode == 1, out.stdout[-3000:]
    assert "1 failed, 1 passed" in out.stdout and "\n1 passed" in out.stdout, out.stdout[-3000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert "ROS 2 kilted: exit 1" in summary and "ROS 2 jazzy: exit 0" in summary, summary
    out = _script("scripts/test.sh", "-q", "-p", "no:cacheprovider", str(failing), env={"OVSS_TEST_DISTROS": "jazzy"})
    assert out.returncode == 5 and "none of the given paths" in out.stdout, out.stdout[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[test] no test run"
