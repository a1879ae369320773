"""The node's two knob sets (engine.* for PnP-OVSS, pgseg.* for PGSeg) without a node: ROS values round-trip,
one preset name serves both methods, the engine state works with PGSeg's checker and config, and a checkpoint
of the wrong kind is refused by the method's checker with one message naming both."""
import pytest

from ovss_ros.engine.loading import ModelLoadError
from ovss_ros.pgseg.config import PGSEG_PRESETS, PGSegConfig, make_pgseg_config
from ovss_ros.ros import params
from ovss_ros.ros.engine_state import EngineState
from ovss_ros.ros.knobs import ENGINE, KNOBS, PGSEG, PRESET_NAMES, class_map_threshold, config_threshold, knob_of


def test_pgseg_values_round_trip_every_field_of_every_preset():
    for preset in PGSEG_PRESETS:
        cfg = make_pgseg_config(preset)
        ros = PGSEG.defaults(preset)
        assert set(ros) == set(PGSegConfig.__dataclass_fields__)
        assert all(type(v) in (bool, int, float, str) for v in ros.values())   # ROS-typed, None as a sentinel
        assert PGSEG.config(preset, **{k: PGSEG.from_ros(k, v) for k, v in ros.items()}) == cfg
    assert PGSEG.defaults("tiny")["image_size"] == 0 and PGSEG.defaults("tiny")["crop_size"] == 0
    assert PGSEG.from_ros("top_k", 0) is None and PGSEG.from_ros("top_k", 3) == 3


def test_one_preset_parameter_serves_both_methods():
    assert set(PRESET_NAMES) == {"paper", "pgseg", "realtime", "tiny"}
    # paper and pgseg both name "the published protocol" of whichever method runs
    assert ENGINE.preset("pgseg") == ENGINE.preset("paper") == "paper"
    assert PGSEG.preset("paper") == PGSEG.preset("pgseg") == "pgseg"
    assert ENGINE.preset("tiny") == "tiny" and PGSEG.preset("realtime") == "realtime"
    for preset in PRESET_NAMES:                      # every spec can be declared for every preset name
        specs = {s.name: s for s in params.all_specs(preset)}
        assert {"method", "engine.threshold", "pgseg.top_k"} <= set(specs)
        for s in specs.values():
            if s.limits is not None and not isinstance(s.default, (bool, list, str)):
                lo, hi = s.limits
                assert (lo is None or lo <= s.default) and (hi is None or s.default <= hi), s
    assert {s.name: s.default for s in params.all_specs("pgseg")}["engine.dropout_rounds"] == 4   # paper's
    method = next(s for s in params.NODE_PARAMS if s.name == "method")
    assert method.default == "pnp_ovss" and method.choices == ("pnp_ovss", "pgseg") and method.when == "configure"


def test_parameter_names_map_to_their_method():
    assert knob_of("pgseg.top_k") == (PGSEG, "top_k") and knob_of("engine.threshold") == (ENGINE, "threshold")
    assert knob_of("model") is None and set(KNOBS) == {"pnp_ovss", "pgseg"}


def test_class_map_threshold_per_method():
    assert config_threshold(make_pgseg_config("tiny")) == make_pgseg_config("tiny").background_threshold
    assert config_threshold(make_pgseg_config("tiny", background="never")) == 0.0
    from ovss_ros.pnp_ovss.config import make_config

    assert config_threshold(make_config("tiny")) == make_config("tiny").presence_threshold
    assert class_map_threshold("pnp_ovss", {"presence_threshold": 0.3}.get) == 0.3


class CountingSegmenter:
    device = None

    def __init__(self, config):
        self.config, self.vocabulary, self.prepared = config, (), 0

    def update_config(self, **values):
        self.config = self.config.replace(**values)

    def set_vocabulary(self, names):
        self.vocabulary, self.prepared = tuple(names), self.prepared + 1
        return self.vocabulary


def test_engine_state_with_pgseg_checker_and_config(tiny_pgseg_dir):
    from ovss_ros.pgseg.loading import PGSegCheck

    state = EngineState(PGSegCheck.from_pretrained(str(tiny_pgseg_dir), local_files_only=True),
                        make_pgseg_config("tiny"))
    assert state.apply_vocabulary(["red circle", "dog"]) and state.version == 1
    seg = CountingSegmenter(state.config)
    state.attach(seg)
    assert seg.vocabulary == ("red circle", "dog") and state.preparations == 1
    with pytest.raises(ValueError, match="crop_size"):      # not a multiple of the tiny model's patch (8)
        state.check_config({"crop_size": 20})
    with pytest.raises(ValueError, match="tokens"):         # a caption past CLIP's 77-token context
        state.check_config({"prompt_template": "a " * 80 + "{}"})
    state.accept_config(state.check_config({"top_k": None}))        # not a prompt field: no new text
    state.apply_config()
    assert seg.config.top_k is None and state.preparations == 1
    state.accept_config(state.check_config({"prompt_template": "a photo of {}"}))
    state.apply_config()
    assert seg.config.prompt_template == "a photo of {}" and state.preparations == 2


def test_wrong_kind_checkpoint_is_refused_naming_both(tiny_pgseg_dir, tiny_blip_dir):
    with pytest.raises(ModelLoadError, match=r"method 'pnp_ovss' needs a BLIP.*'groupvit' checkpoint.*'pgseg'"):
        ENGINE.checker(str(tiny_pgseg_dir), True)
    with pytest.raises(ModelLoadError, match=r"method 'pgseg' needs a GroupViT.*'blip' checkpoint.*'pnp_ovss'"):
        PGSEG.checker(str(tiny_blip_dir), True)


@pytest.mark.parametrize("method", ["pnp_ovss", "pgseg"])
def test_the_weights_dtype_limits_vision_dtype_from_configure_on(method, tiny_blip_dir, tiny_pgseg_dir):
    """What the node builds at configure (the checker told the `dtype` parameter, no weights loaded) refuses an
    encoder pass in the other half type, at configure and as a later parameter change."""
    folder, knobs = str({"pnp_ovss": tiny_blip_dir, "pgseg": tiny_pgseg_dir}[method]), KNOBS[method]
    checker = knobs.checker(folder, True, "bfloat16")
    reason = "vision_dtype='float16' cannot run over bfloat16 weights"
    with pytest.raises(ValueError, match=reason):
        EngineState(checker, knobs.config("tiny", vision_dtype="float16"))
    state = EngineState(checker, knobs.config("tiny", vision_dtype="auto"))
    with pytest.raises(ValueError, match=reason):
        state.check_config({"vision_dtype": "float16"})
    assert state.check_config({"vision_dtype": "bfloat16"}).vision_dtype == "bfloat16"
    EngineState(knobs.checker(folder, True, "float32"), knobs.config("tiny", vision_dtype="float16"))
