"""The node's parameter tables in the docs, rendered from the one definition in params.py.

params.py holds every name, default, meaning, range and when a change takes effect; this module only picks
and places. docs/ros_node.md carries the full table and the README the ten parameters most often changed,
each between marker comments that `--write` rewrites:

    python -m ovss_ros.ros.param_table            # print the full table
    python -m ovss_ros.ros.param_table --write    # rewrite the generated blocks in README.md and docs/
    python -m ovss_ros.ros.param_table --check    # exit 1 if a committed block differs from the generated one
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import params

PRESET = "realtime"          # the defaults the docs show; engine.* and pgseg.* follow the node's preset
REPO = Path(__file__).resolve().parents[2]

# The README's short table: what a user of the node sets first (which model, where it runs, what to look
# for, where the images come from, how eagerly classes are kept, speed against quality).
FRONT_PAGE = ("model", "method", "preset", "device", "dtype", "vocabulary", "cameras", "input_transport",
              "engine.presence_threshold", "engine.postprocess")


def full_table(preset: str = PRESET) -> str:
    """Every declared parameter: NODE_PARAMS, then engine.* and pgseg.*."""
    return params.markdown_table(preset)


def front_page_table(preset: str = PRESET) -> str:
    """The FRONT_PAGE rows of the full table, in FRONT_PAGE's order, rendered exactly as there."""
    lines = full_table(preset).splitlines()
    rows = {re.match(r"^\| `([^`]+)` \|", line).group(1): line for line in lines[2:]}
    missing = [name for name in FRONT_PAGE if name not in rows]
    if missing:
        raise KeyError(f"FRONT_PAGE names no parameter: {missing}")
    return "\n".join(lines[:2] + [rows[name] for name in FRONT_PAGE])


# block name -> (file relative to the repository, renderer)
BLOCKS = {
    "parameters": ("docs/ros_node.md", full_table),
    "front-page parameters": ("README.md", front_page_table),
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"


def committed_block(text: str, name: str) -> str:
    """The text between a block's markers (without the newlines next to them)."""
    begin, end = markers(name)
    found = re.search(re.escape(begin) + r"\n(.*?)\n?" + re.escape(end), text, re.S)
    if found is None:
        raise ValueError(f"no '{begin}' ... '{end}' block")
    return found.group(1)


def with_block(text: str, name: str, body: str) -> str:
    """`text` with the block's content replaced by `body`; the markers stay."""
    begin, end = markers(name)
    committed_block(text, name)   # raises when the markers are missing
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text, count=1)


def stale_blocks(root: Path = REPO) -> list[str]:
    """'file: block' for every committed block that differs from what the renderer gives."""
    stale = []
    for name, (rel, render) in BLOCKS.items():
        if committed_block((root / rel).read_text(), name) != render():
            stale.append(f"{rel}: {name}")
    return stale


def write_blocks(root: Path = REPO) -> list[str]:
    """Rewrite every block; the files changed."""
    changed = []
    for name, (rel, render) in BLOCKS.items():
        path = root / rel
        text = path.read_text()
        new = with_block(text, name, render())
        if new != text:
            path.write_text(new)
            changed.append(rel)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ovss_ros.ros.param_table", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help="rewrite the generated blocks in README.md and docs/")
    what.add_argument("--check", action="store_true", help="exit 1 if a committed block is out of date")
    args = parser.parse_args(argv)
    if args.write:
        changed = write_blocks()
        print("rewrote " + ", ".join(changed) if changed else "every block is up to date")
        return 0
    if args.check:
        stale = stale_blocks()
        for entry in stale:
            print(f"out of date: {entry} (python -m ovss_ros.ros.param_table --write)")
        return 1 if stale else 0
    print(full_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
