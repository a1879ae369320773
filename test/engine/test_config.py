"""Config validation: every value that would break the engine later is refused up front, naming the
parameter; ENGINE_LIMITS / ENGINE_CHOICES are the tables validate() itself checks against."""
import dataclasses

import pytest

from ovss_ros.pnp_ovss.config import (ENGINE_CHOICES, ENGINE_LIMITS, INDEX_KEYWORDS, PRESETS, SegmenterConfig, make_config)
from ovss_ros.engine.config import parse_overrides


@pytest.mark.parametrize("template", ["a {} {}", "a {} {x}", "a {}}", "a {0}", "a {!r}", "a {:>5}", "no slot",
                                      "a {{x}} {}", "{"])
def test_prompt_template_needs_exactly_one_bare_slot(template):
    with pytest.raises(ValueError, match="prompt_template"):
        make_config("paper", prompt_template=template)


@pytest.mark.parametrize("name,value", [
    ("image_size", 0), ("image_size", -16), ("image_size", 2048),
    ("dropout_rounds", 0), ("drop_patches", -1), ("drop_fraction", 0.9), ("drop_fraction", -0.1),
    ("presence_top_k", 0), ("background_min_classes", 0), ("blur_sigma", -0.1),
    ("postprocess_max_side", 8), ("postprocess_max_side", 5000),
    ("crf_iterations", -1), ("crf_iterations", 1000),
    ("crf_gaussian_sxy", 0.0), ("crf_bilateral_sxy", 0.0), ("crf_bilateral_srgb", -1.0),
    ("crf_gaussian_compat", -1.0), ("max_classes", 0), ("max_class_name_length", 0), ("max_image_pixels", 0),
    ("presence_threshold", 1.5), ("presence_threshold", -0.1), ("threshold", 1.2),
    ("gradcam_layer", -1), ("gradcam_head", -2), ("gradcam_layer", "first"), ("gradcam_head", "max"),
])
def test_out_of_range_values_are_refused_by_name(name, value):
    with pytest.raises(ValueError, match=f"^{name}="):
        make_config("paper", **{name: value})


@pytest.mark.parametrize("name,value,expected", [
    ("threshold", "abc", "a number"), ("dropout_rounds", "abc", "an integer"), ("dropout_rounds", 2.5, "an integer"),
    ("image_size", "big", "an integer or None"), ("double_count_first_pass", "yes", "true or false"),
    ("double_count_first_pass", 1, "true or false"), ("dropout_rounds", True, "an integer"),
    ("postprocess", 3, "a string"), ("threshold", float("nan"), "finite"), ("presence_top_k", 1.0, "an integer"),
])
def test_wrong_types_name_the_parameter_and_the_type(name, value, expected):
    with pytest.raises(ValueError, match=f"^{name}=.*{expected}"):
        make_config("paper", **{name: value})


def test_command_line_text_gets_the_same_checks():
    with pytest.raises(ValueError, match="threshold='abc': expected a number"):
        make_config("paper", **parse_overrides(["threshold=abc"]))
    with pytest.raises(ValueError, match="unknown engine parameter"):
        make_config("paper", **parse_overrides(["thresold=0.2"]))
    cfg = make_config("paper", **parse_overrides(["threshold=1", "gradcam_head=mean"]))
    assert cfg.threshold == 1.0 and isinstance(cfg.threshold, float) and cfg.gradcam_head == "mean"


def test_limits_table_is_what_validate_enforces():
    fields = {f.name: f for f in dataclasses.fields(SegmenterConfig)}
    for name, (lo, hi) in ENGINE_LIMITS.items():
        assert name in fields and (lo is None or hi is None or lo <= hi)
        step = 1 if isinstance(lo if lo is not None else hi, int) else 1e-3
        for edge, outside in ((lo, -step), (hi, step)):
            if edge is None:
                continue
            assert getattr(make_config("paper", **{name: edge}), name) == edge
            with pytest.raises(ValueError, match=f"^{name}="):
                make_config("paper", **{name: edge + outside})


def test_choices_table_is_what_validate_enforces():
    for name, allowed in ENGINE_CHOICES.items():
        for value in allowed:
            over = {"prompt_mode": "per_class"} if name == "gradcam_rows" else {}
            assert getattr(make_config("paper", **over, **{name: value}), name) == value
        with pytest.raises(ValueError, match=f"^{name}='bogus': expected one of"):
            make_config("paper", **{name: "bogus"})
    assert set(INDEX_KEYWORDS) == {"gradcam_layer", "gradcam_head"}
    assert not set(INDEX_KEYWORDS) & (set(ENGINE_LIMITS) | set(ENGINE_CHOICES))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_inside_the_tables(preset):
    cfg = make_config(preset)
    for name, (lo, hi) in ENGINE_LIMITS.items():
        v = getattr(cfg, name)
        assert v is None or ((lo is None or v >= lo) and (hi is None or v <= hi)), name
    for name, allowed in ENGINE_CHOICES.items():
        assert getattr(cfg, name) in allowed
