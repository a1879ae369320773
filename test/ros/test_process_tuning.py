"""The node's process settings (process_tuning.py): OpenMP threads sleep when idle unless the environment says
otherwise, set before torch loads; glibc keeps large buffers unless its own variables are set."""
import os
import subprocess
import sys

import pytest

CODE = ("import os, sys\n"
        "import ovss_ros.ros.node\n"
        "from ovss_ros.ros.process_tuning import keep_large_buffers\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), keep_large_buffers())")


def run(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120,
                         env={**clean, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_node_process_defaults_and_operator_overrides():
    assert run() == ["PASSIVE", "True"]
    assert run(OMP_WAIT_POLICY="ACTIVE", MALLOC_TRIM_THRESHOLD_="131072") == ["ACTIVE", "False"]


def test_openmp_policy_is_set_before_torch_loads():
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: the node module must set it first."""
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def spy(name, *a, **k):\n"
            "    if name == 'torch' and 'torch' not in sys.modules:\n"
            "        import os; print('policy at torch import:', os.environ.get('OMP_WAIT_POLICY'))\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = spy\n"
            "import ovss_ros.ros.node\n")
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=clean)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "policy at torch import: PASSIVE" in out.stdout, out.stdout
