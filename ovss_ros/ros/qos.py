"""QoS profiles of the node (REP 2003: subscribe sensor-data style, publish reliable)."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def _reliability(name: str) -> ReliabilityPolicy:
    try:
        return _RELIABILITY[name.strip().lower()]
    except KeyError:
        raise ValueError(f"reliability {name!r}: expected one of {sorted(_RELIABILITY)}") from None


def inputs(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Camera readers: depth 1 = DDS keeps only the newest frame."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)),
                      reliability=_reliability(reliability), durability=DurabilityPolicy.VOLATILE)


def outputs(reliability: str = "reliable", depth: int = 1) -> QoSProfile:
    """Per-frame outputs; users override them with qos_overrides.<topic>.publisher.* parameters."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)),
                      reliability=_reliability(reliability), durability=DurabilityPolicy.VOLATILE)


def reliable(depth: int = 1) -> QoSProfile:
    return outputs("reliable", depth)


def latched() -> QoSProfile:
    """Class map, LabelInfo and vocabulary: the last value reaches late joiners."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
