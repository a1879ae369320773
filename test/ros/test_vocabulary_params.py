"""Vocabulary text parsing, the single vocabulary path's versioning, and the parameter table."""
import re
from pathlib import Path

import pytest

from ovss_ros.config import SegmenterConfig, make_config
from ovss_ros.prompts import VocabularyError
from ovss_ros.ros import params
from ovss_ros.ros.engine_state import EngineState
from ovss_ros.ros.vocabulary import VocabularyTextError, parse_vocabulary_text, vocabulary_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "ros_node.md", ROOT / "README.md"]


@pytest.mark.parametrize("text,names", [
    ("red car, dog", ["red car", "dog"]), ("a;b\nc", ["a", "b", "c"]), ('["x, y", "z"]', ["x, y", "z"]),
    (" , ,", []), ("", []),
])
def test_parse_vocabulary_text(text, names):
    assert parse_vocabulary_text(text) == names


@pytest.mark.parametrize("text", ['["a", 1]', '[unclosed', '[{"a": 1}]'])
def test_bad_json_vocabulary_is_refused_with_reason(text):
    with pytest.raises(VocabularyTextError):
        parse_vocabulary_text(text)


def test_vocabulary_parameter_accepts_array_or_string():
    assert vocabulary_names([""]) == [] and vocabulary_names(["a", " ", "b c"]) == ["a", "b c"]
    assert vocabulary_names("a, b c") == ["a", "b c"]
    with pytest.raises(TypeError):
        vocabulary_names([1, 2])


class FakeSegmenter:
    """Counts text preparations; refuses like the engine does."""
    device = None

    def __init__(self):
        self.prepared = 0

    def set_vocabulary(self, names):
        names = tuple(n.strip() for n in names)
        if not names or not all(names):
            raise VocabularyError("vocabulary is empty")
        self.prepared += 1
        return names


def test_one_version_per_change_and_refusals_keep_the_old_vocabulary():
    state, seg = EngineState(), FakeSegmenter()
    assert state.set_vocabulary(["a"]) == (False, state.set_vocabulary(["a"])[1])  # stored while no model
    assert state.attach(seg) is None and state.version == 1 and state.names == ("a",)
    assert state.set_vocabulary(["a"])[0] is False and seg.prepared == 1          # unchanged: no text work
    assert state.set_vocabulary(["a", "b"])[0] is True and state.version == 2
    with pytest.raises(VocabularyError):
        state.set_vocabulary([])
    assert state.names == ("a", "b") and state.version == 2
    state.release()
    assert state.segmenter is None
    state.attach(FakeSegmenter())                                             # reload keeps the version
    assert state.version == 2 and state.names == ("a", "b")


def test_ros_values_round_trip_every_engine_field_of_every_preset():
    for preset in ("paper", "realtime", "tiny"):
        cfg = make_config(preset)
        ros = params.engine_defaults(preset)
        assert set(ros) == {f for f in SegmenterConfig.__dataclass_fields__}
        back = {k: params.ros_to_engine(k, v) for k, v in ros.items()}
        assert make_config(preset, **back) == cfg
        assert all(type(v) in (bool, int, float, str) for v in ros.values())   # all ROS-typed


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_list_every_parameter_with_its_default(doc):
    text = doc.read_text()
    for spec in params.all_specs("realtime"):
        row = re.search(rf"^\| `{re.escape(spec.name)}` \| ([^|]*) \|", text, re.M)
        assert row, f"{spec.name} missing from {doc.name}"
    assert params.markdown_table("realtime") in text, "docs table out of date: regenerate with markdown_table()"
