"""Vocabulary text parsing, the single vocabulary path's versioning, and the ROS form of every engine field
(the docs' parameter table: test_param_table.py)."""
import pytest

from ovss_ros.pnp_ovss.config import SegmenterConfig, make_config
from ovss_ros.engine.vocabulary import VocabularyError
from ovss_ros.ros import params
from ovss_ros.ros.engine_state import EngineState
from ovss_ros.ros.vocabulary import VocabularyTextError, parse_vocabulary_text, vocabulary_names


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


class CountingSegmenter:
    """Stands in for the loaded model: counts text preparations, keeps the settings it was given."""
    device = None

    def __init__(self, config):
        self.config, self.vocabulary, self.prepared = config, (), 0

    def update_config(self, **values):
        self.config = self.config.replace(**values)

    def set_vocabulary(self, names):
        self.vocabulary, self.prepared = tuple(names), self.prepared + 1
        return self.vocabulary


@pytest.fixture(scope="module")
def checker(tiny_blip_dir):
    from ovss_ros.pnp_ovss.model_check import ModelCheck

    return ModelCheck.from_pretrained(str(tiny_blip_dir), local_files_only=True)


def test_engine_state_checks_without_side_effects_and_versions_each_change(checker):
    state = EngineState(checker, make_config("tiny"))
    with pytest.raises(VocabularyError, match="zebra"):          # unknown words: refused by name
        state.check_vocabulary(["plain zebra"])
    assert state.check_vocabulary(["red circle", "dog"]) == ("red circle", "dog") and state.version == 0
    assert state.apply_vocabulary(["red circle", "dog"]) and state.version == 1   # no model yet: stored
    seg = CountingSegmenter(state.config)
    state.attach(seg)
    assert seg.vocabulary == ("red circle", "dog") and state.preparations == 1 and state.version == 1
    assert not state.apply_vocabulary([" red  circle", "dog"]) and seg.prepared == 1   # same names: no work
    with pytest.raises(VocabularyError, match="duplicate"):
        state.apply_vocabulary(["dog", "Dog"])
    assert state.names == ("red circle", "dog") and state.version == 1
    with pytest.raises(ValueError, match="prompt_template"):
        state.check_config({"prompt_template": "a {} {}"})
    assert state.config.prompt_template == make_config("tiny").prompt_template      # checking changed nothing
    state.accept_config(state.check_config({"prompt_template": "a photo of {}"}))
    assert seg.config.prompt_template != "a photo of {}"                               # until the worker applies
    state.apply_config()
    assert seg.config.prompt_template == "a photo of {}" and state.preparations == 2
    state.release()
    assert state.segmenter is None
    state.attach(CountingSegmenter(make_config("tiny")))                   # reload keeps version and settings
    assert state.version == 1 and state.segmenter.config.prompt_template == "a photo of {}"


def test_ros_values_round_trip_every_engine_field_of_every_preset():
    for preset in ("paper", "realtime", "tiny"):
        cfg = make_config(preset)
        ros = params.engine_defaults(preset)
        assert set(ros) == {f for f in SegmenterConfig.__dataclass_fields__}
        back = {k: params.ros_to_engine(k, v) for k, v in ros.items()}
        assert make_config(preset, **back) == cfg
        assert all(type(v) in (bool, int, float, str) for v in ros.values())   # all ROS-typed
