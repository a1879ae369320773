"""Declaring the node's parameters from the table in params.py, and the hook that applies accepted changes.

Validation and application are separate, as ROS 2 intends: the on-set callback only checks, the post-set
callback applies. rclpy has add_post_set_parameters_callback from Iron on; on Humble add_post_set_callback
gives the same: once per accepted set, in order, on the setting thread, with the new values in place."""
from __future__ import annotations

import sys
from typing import Callable, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException
from rclpy.parameter import Parameter

from .knobs import KNOBS, PRESET_NAMES, class_map_threshold, knob_of
from .params import ACTIVATE, CONFIGURE, NODE_PARAMS, RUNTIME, START, ParamSpec, all_specs, check_node_value
from .vocabulary import VocabularyTextError, vocabulary_names
from .worker import Change

_INT_MAX = 2 ** 63 - 1


class StartupError(RuntimeError):
    """The node cannot start with the parameters it was given; the message says which and why."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=spec.when == START,
                            dynamic_typing=spec.name == "vocabulary")
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.limits is not None and not isinstance(spec.default, bool):
        lo, hi = spec.limits
        if isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(-_INT_MAX if lo is None else lo),
                                            to_value=int(_INT_MAX if hi is None else hi), step=0)]
        elif isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(
                from_value=float(-sys.float_info.max if lo is None else lo),
                to_value=float(sys.float_info.max if hi is None else hi), step=0.0)]
    return d


def declare_all(node) -> dict:
    """Declare every parameter; {name: ParamSpec}. A bad preset or a value outside its range (given with
    --ros-args or a params file) is a StartupError with one line, not a traceback."""
    preset = node.declare_parameter("preset", "realtime", descriptor(
        next(s for s in all_specs("paper") if s.name == "preset"))).value
    if preset not in PRESET_NAMES:
        raise StartupError(f"preset={preset!r}: expected one of {list(PRESET_NAMES)}")
    specs = {}
    for spec in all_specs(preset):
        specs[spec.name] = spec
        if spec.name == "preset":
            continue
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except InvalidParameterValueException as exc:
            raise StartupError(f"parameter {spec.name}: {exc}") from None
        except Exception as exc:   # noqa: BLE001 - e.g. a wrong type from the command line
            raise StartupError(f"parameter {spec.name}: {type(exc).__name__}: {exc}") from None
    return specs


def add_post_set_callback(node, callback: Callable[[list], None]) -> None:
    """node.add_post_set_parameters_callback where rclpy has it (Iron+), else an equivalent (Humble): the
    callback runs from the last on-set callback, on the thread that sets the parameters, after putting the
    accepted values in place itself (rclpy stores the very same objects right after). So on both paths it
    runs once per accepted set, in order, on the setting thread (its thread-local state, e.g. the vocabulary
    mirror's flag, is the setter's), and reads the new values. Call it before adding the validating on-set
    callbacks: rclpy runs on-set callbacks newest first and stops at the first refusal, so this one, added
    first, runs last, for sets every check accepted."""
    if hasattr(node, "add_post_set_parameters_callback"):
        node.add_post_set_parameters_callback(callback)
        return
    stored = getattr(node, "_parameters", None)   # rclpy's own table of values (Humble to Kilted)
    if not isinstance(stored, dict):
        raise RuntimeError("this rclpy has neither add_post_set_parameters_callback nor a parameter table "
                           "ovss_ros knows; parameter changes could not be applied")
    node.get_logger().info("this rclpy has no post-set parameter callbacks: accepted parameter sets are "
                           "applied from the last on-set callback")

    def on_set(params) -> SetParametersResult:
        for prm in params:   # only values that replace a value: new and undeclared ones stay rclpy's to record
            old = stored.get(prm.name)
            if old is not None and old.type_ != Parameter.Type.NOT_SET != prm.type_:
                stored[prm.name] = prm
        callback(list(params))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


def device_problem(device: str) -> Optional[str]:
    """Why `device` names no device of this machine, or None (cheap: no CUDA context is made)."""
    import torch

    if not device.startswith("cuda"):
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        return (f"device={device!r} but this machine has {count} CUDA device(s)"
                + ("; use device cpu or auto" if count == 0 else f" (cuda:0..cuda:{count - 1})"))
    return None


class ParameterHandling:
    """The node's parameter callbacks, mixed into OvssNode: `_check_parameters` (on-set: checks only, no side
    effects) and `_after_set_parameters` (post-set: applies). Knobs of the method not in use (`pgseg.*` while
    `method` is pnp_ovss, `engine.*` while pgseg) are checked against that method's settings and kept for the
    next configure with it."""

    def knob_overrides(self, method: str, changes: Optional[dict] = None) -> dict:
        """The method's engine settings as its parameters give them (engine values), plus `changes`."""
        table = KNOBS[method]
        out = {n: table.from_ros(n, self.p(table.prefix + n)) for n in table.fields()}
        return {**out, **(changes or {})}

    def unconfigured_config(self, changes: Optional[dict] = None, method: Optional[str] = None):
        """The method's settings from its parameters and the preset, checked without a model."""
        method = method or self.p("method")
        return KNOBS[method].config(self.p("preset"), **self.knob_overrides(method, changes))

    def configure_problem(self) -> Optional[str]:
        """Why the node parameters cannot be used, or None: every check that needs no model, at configure, so a
        value given at start (--ros-args, params file, launch; the on-set callback does not see those) is
        refused before the model's files are read, in one line, not when activate meets it."""
        for spec in NODE_PARAMS:
            if spec.name != "vocabulary":   # the vocabulary path checks its own, against the tokenizer
                reason = check_node_value(spec, self.p(spec.name))
                if reason:
                    return reason
        return device_problem(self.p("device"))

    def _read_settings(self) -> dict:
        """Snapshot of the runtime values the worker reads per frame (one dict swap, no locking needed)."""
        s = {n: self.p(n) for n, spec in self._specs.items() if spec.when == RUNTIME and knob_of(n) is None}
        table = KNOBS[self.p("method")]
        s["max_image_pixels"] = self.p(table.prefix + "max_image_pixels")
        s["presence_threshold"] = class_map_threshold(table.method, lambda n: self.p(table.prefix + n))
        s["model"] = self.p("model")
        return s

    # -- parameters: check (no side effects), then apply ----------------------------------------------
    def _check_parameters(self, params) -> SetParametersResult:
        if self._vocabulary.mirroring:
            return SetParametersResult(successful=True)
        state = self.lifecycle_state()
        knob_changes, vocabulary = {}, None
        method = next((p.value for p in params if p.name == "method"), self.p("method"))
        for prm in params:
            spec = self._specs.get(prm.name)
            if spec is None:
                continue
            if spec.when == START:
                return SetParametersResult(successful=False, reason=f"{prm.name} is read at start only")
            if spec.when == CONFIGURE and state != "unconfigured":
                return SetParametersResult(successful=False, reason=f"{prm.name} is used at configure: "
                                           "deactivate and clean up the node first, or restart it")
            if spec.when == ACTIVATE and state == "active":
                return SetParametersResult(successful=False, reason=f"{prm.name} is used at activate: "
                                           "deactivate the node first, or restart it")
            knob = knob_of(prm.name)
            if knob is not None:
                table, name = knob
                knob_changes.setdefault(table.method, {})[name] = table.from_ros(name, prm.value)
            elif prm.name == "vocabulary":
                try:
                    vocabulary = vocabulary_names(prm.value)
                except (VocabularyTextError, TypeError) as exc:
                    return SetParametersResult(successful=False, reason=f"vocabulary: {exc}")
            else:
                reason = check_node_value(spec, prm.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        config = None
        for which, changes in knob_changes.items():
            in_use = self.engine is not None and which == method   # else: that method's settings, no model
            try:
                checked = (self.engine.check_config(changes) if in_use
                           else self.unconfigured_config(changes, which))
            except ValueError as exc:
                label = "engine" if which == "pnp_ovss" else "pgseg"
                return SetParametersResult(successful=False, reason=f"{label} parameter refused: {exc}")
            config = checked if which == method else config
        if vocabulary is not None:
            try:   # unconfigured, the limits of the settings from the parameters apply (no model yet)
                self._vocabulary.check(vocabulary, "parameter",
                                       config or (self.unconfigured_config() if self.engine is None else None))
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=f"vocabulary: {exc}")
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params) -> None:
        if self._vocabulary.mirroring:   # the worker writing back the vocabulary in use (its thread only)
            return
        names = {p.name for p in params if p.name in self._specs}
        if not names:
            return
        self.settings.values = self._read_settings()
        if self.frames is None:
            return   # unconfigured: the values are read at configure
        prefix = KNOBS[self.p("method")].prefix   # the other method's knobs wait for a configure with it
        if any(n.startswith(prefix) for n in names):
            try:
                self.engine.accept_config(self.engine.check_config(self.knob_overrides(self.p("method"))))
            except ValueError as exc:   # only if two accepted sets conflict; keep the settings in use
                self.warn_once(("engine", str(exc)), f"engine parameters not applied: {exc}")
            else:
                self.frames.put_change(Change("engine", self._vocabulary.apply_engine_settings))
        if "vocabulary" in names:
            value = next(p.value for p in params if p.name == "vocabulary")
            self._vocabulary.submit(tuple(vocabulary_names(value)), "parameter")
