"""Declaring the node's parameters from the table in params.py, and the hook that applies accepted changes.

Validation and application are separate, as ROS 2 intends: the on-set callback only checks, the post-set
callback applies. rclpy has add_post_set_parameters_callback from Iron on; on Humble the same callback runs
from a guard condition right after the set returns, in the order the sets were accepted."""
from __future__ import annotations

import sys
import threading
from typing import Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException

from ovss_ros.config import PRESETS

from .params import START, ParamSpec, all_specs

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
    if preset not in PRESETS:
        raise StartupError(f"preset={preset!r}: expected one of {sorted(PRESETS)}")
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
    """node.add_post_set_parameters_callback where rclpy has it (Iron+), else an equivalent (Humble).
    Call it before adding the validating on-set callback: rclpy runs on-set callbacks newest first and stops
    at the first refusal, so the Humble stand-in, added first, only sees sets every check accepted."""
    if hasattr(node, "add_post_set_parameters_callback"):
        node.add_post_set_parameters_callback(callback)
        return
    pending: list = []
    lock = threading.Lock()

    def run() -> None:   # pragma: no cover - Humble only
        with lock:
            batches, pending[:] = list(pending), []
        for params in batches:
            callback(params)

    guard = node.create_guard_condition(run)

    def on_set(params):
        from rcl_interfaces.msg import SetParametersResult

        with lock:
            pending.append(list(params))
        guard.trigger()
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
