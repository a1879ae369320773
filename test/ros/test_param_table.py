"""The parameter tables in docs/ros_node.md and the README are the generated ones, and name every parameter the
node declares (`python -m ovss_ros.ros.param_table --write` regenerates them)."""
import re
import shutil
from types import SimpleNamespace

import pytest

from ovss_ros.ros import param_table, params
from ovss_ros.ros.knobs import PRESET_NAMES

DOCS_TABLE = param_table.REPO / "docs" / "ros_node.md"


class RecordingNode:
    """Stands in for the rclpy node in node_params.declare_all: records what is declared."""

    def __init__(self, preset):
        self.preset, self.declared = preset, {}

    def declare_parameter(self, name, value, descriptor):
        self.declared[name] = self.preset if name == "preset" else value
        return SimpleNamespace(value=self.declared[name])


def test_committed_blocks_equal_the_generated_ones():
    assert param_table.stale_blocks() == [], "run: python -m ovss_ros.ros.param_table --write"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_declared_parameter_has_a_row_in_the_docs_table(preset):
    from ovss_ros.ros.node_params import declare_all

    node = RecordingNode(preset)
    declare_all(node)
    block = param_table.committed_block(DOCS_TABLE.read_text(), "parameters")
    rows = {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", block, re.M)}
    assert len(node.declared) > 60 and set(node.declared) <= rows, sorted(set(node.declared) - rows)


def test_docs_list_every_parameter_with_its_default():
    text = DOCS_TABLE.read_text()
    for spec in params.all_specs("realtime"):
        row = re.search(rf"^\| `{re.escape(spec.name)}` \| ([^|]*) \|", text, re.M)
        assert row, f"{spec.name} missing from {DOCS_TABLE.name}"
    assert params.markdown_table("realtime") in text, "docs table out of date: regenerate with markdown_table()"


def test_front_page_rows_are_the_full_tables_rows_in_its_order():
    full = param_table.full_table().splitlines()
    short = param_table.front_page_table().splitlines()
    assert short[:2] == full[:2] and len(short) == 2 + len(param_table.FRONT_PAGE) == 12
    assert [re.match(r"^\| `([^`]+)`", r).group(1) for r in short[2:]] == list(param_table.FRONT_PAGE)
    assert set(short[2:]) <= set(full[2:])


def test_an_edited_block_is_found_and_write_restores_it(tmp_path):
    for rel in ("README.md", "docs/ros_node.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(param_table.REPO / rel, tmp_path / rel)
    doc = tmp_path / "docs" / "ros_node.md"
    doc.write_text(doc.read_text().replace("| `model` |", "| `modell` |", 1))
    assert param_table.stale_blocks(tmp_path) == ["docs/ros_node.md: parameters"]
    assert param_table.write_blocks(tmp_path) == ["docs/ros_node.md"]
    assert param_table.stale_blocks(tmp_path) == [] and doc.read_text() == DOCS_TABLE.read_text()


def test_a_missing_marker_is_an_error():
    with pytest.raises(ValueError, match="BEGIN generated: parameters"):
        param_table.committed_block("| `model` | x |", "parameters")
