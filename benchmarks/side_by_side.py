"""What the A/B benchmarks share: a side in its own process (JSON commands on stdin, one JSON line back per
command) and a git worktree of the commit to compare against."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """One side of a comparison: `argv` after the Python executable starts it; it prints one JSON line when
    ready (`ready`) and one per command."""

    def __init__(self, argv: list[str]):
        self.p = subprocess.Popen([sys.executable, *map(str, argv)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.p.wait()}")
        return json.loads(line)

    def __call__(self, **cmd) -> dict:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return {} if cmd["cmd"] == "quit" else self._read()

    def close(self) -> None:
        try:
            self(cmd="quit")
        except (RuntimeError, BrokenPipeError, json.JSONDecodeError):
            pass
        self.p.wait(timeout=60)


def old_checkout(ref: str, prefix: str = "ovss_ros") -> Path:
    """A worktree of `ref` in the temp folder (made once, reused)."""
    path = Path(tempfile.gettempdir()) / f"{prefix}_{ref}"
    if not (path / "ovss_ros").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", str(path), ref], check=True,
                       stdout=subprocess.DEVNULL)
    return path
