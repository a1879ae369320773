"""The code paths that exist for another ROS 2 distribution than the one running, exercised here through
stand-ins: a node that lacks rclpy's post-set parameter callbacks (Humble's rclpy), with the newest
vocabulary winning through bursts of parameter sets on a real node process; Humble's module of the
subscription event callbacks; a reader that cannot count its publishers. docs/platforms.md lists them."""
import importlib.util
import random
import sys
import threading
import types
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ovss_ros.msg import ClassMap
from ovss_ros.ros import camera_inputs, qos
from ovss_ros.ros.node_params import add_post_set_callback
from rostest_helpers import burst_settles, vocabularies, wait_until

HUMBLE_NODE = Path(__file__).with_name("humble_params_node.py")


class PreIronView:
    """A node as add_post_set_callback sees it on Humble: everything but add_post_set_parameters_callback."""

    def __init__(self, node) -> None:
        self._node = node

    def __getattr__(self, name):
        if name == "add_post_set_parameters_callback":
            raise AttributeError(name)
        return getattr(self._node, name)


@pytest.fixture
def spun_node(probe):
    """A node of its own, spun by two executor threads (as ovss_node's parameter services are)."""
    from rclpy.executors import MultiThreadedExecutor

    node = probe.rclpy.create_node(f"post_set_{uuid.uuid4().hex[:8]}")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown()
    node.destroy_node()


@pytest.mark.parametrize("path", ["rclpy post-set", "on-set stand-in"])
def test_post_set_callback_runs_once_per_accepted_set_in_order_on_the_setting_thread(spun_node, path):
    node = spun_node
    node.declare_parameter("n", 0)
    local = threading.local()
    applied: list = []   # (value, the node's value then, thread, the setting thread's flag)

    def callback(params) -> None:
        applied.append((params[0].value, node.get_parameter("n").value, threading.get_ident(),
                        getattr(local, "mirroring", False)))

    add_post_set_callback(node if path == "rclpy post-set" else PreIronView(node), callback)
    node.add_on_set_parameters_callback(   # a validator, added after as ovss_node adds its checks
        lambda params: SetParametersResult(successful=all(p.value >= 0 for p in params)))

    # a burst from one thread: each set reaches the callback once, in order, with its value in place
    burst = list(range(1, 201))
    for value in burst:
        assert node.set_parameters([Parameter("n", value=value)])[0].successful
    assert [(v, now) for v, now, _, _ in applied] == [(v, v) for v in burst]
    assert {a[2] for a in applied} == {threading.get_ident()}

    # two setting threads at once, one flagged as the vocabulary mirror flags its writes: each set arrives
    # once, in its thread's order, with that thread's flag; refused sets never arrive
    applied.clear()

    def mirror() -> None:
        local.mirroring = True
        for value in range(1001, 1201):
            assert node.set_parameters([Parameter("n", value=value)])[0].successful

    other = threading.Thread(target=mirror)
    other.start()
    refused = 0
    for value in range(201, 401):
        if value % 10 == 0:
            refused += not node.set_parameters([Parameter("n", value=-value)])[0].successful
        assert node.set_parameters([Parameter("n", value=value)])[0].successful
    other.join(20)
    assert refused == 20 and all(v >= 0 for v, *_ in applied)
    assert [v for v, _, _, flag in applied if flag] == list(range(1001, 1201))
    assert [v for v, _, _, flag in applied if not flag] == list(range(201, 401))
    assert all((v > 1000) == flag for v, _, _, flag in applied)


def test_without_post_set_callbacks_the_newest_vocabulary_wins_through_parameter_bursts(probe, start_node):
    """ovss_node without post-set callbacks (humble_params_node.py): bursts of parameter sets, each ending
    on a parameter set, a service call or topic messages, settle on the last one, and the parameter shows
    it. The worker's own writes of the vocabulary in use (mirroring) must not come back as requests, and a
    set must keep the place in the order it had when it was accepted."""
    ns = "/ovss_humble_params"
    full = f"{ns}/ovss_node"
    node = start_node(ns, program=(str(HUMBLE_NODE),), vocabulary=["dog"])
    class_map = probe.collect(ClassMap, f"{ns}/segmentation/class_map", qos.latched())
    assert class_map.wait_for(lambda m: m.vocabulary_version == 1, 120), node.log()
    assert "no post-set parameter callbacks" in node.log()   # the stand-in path, not rclpy's
    topic = probe.node.create_publisher(String, f"{ns}/vocabulary", qos.reliable(50))
    probe.wait_subscribers(topic)
    rng, vocab = random.Random(3), vocabularies(5)
    for burst in range(12):
        ending = ("parameter", "service", "topic")[burst % 3]
        steps = ["parameter"] * rng.randint(3, 8) + ([] if ending == "parameter" else [ending] * rng.randint(1, 3))
        burst_settles(probe, node, ns, full, topic, class_map, steps, vocab)
    assert node.alive()


def test_the_twin_check_ends_its_timer_safely_while_the_executor_has_it_queued(probe, monkeypatch):
    """Jazzy's executor raises, and the node dies, when it takes a timer that another thread cancelled after
    the executor had found it ready (Kilted skips it). ovss_node ends its twin-check timer, from the timer
    itself or from /diagnostics, by destroying it, which both skip. Here the executor's threads are held
    busy until the timer is overdue (its call queued), then /diagnostics' call ends the window."""
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.executors import MultiThreadedExecutor

    import ovss_ros.ros.node as node_module

    monkeypatch.setattr(node_module, "DUPLICATE_WINDOW", 3600.0)
    node = node_module.OvssNode(f"twin_window_{uuid.uuid4().hex[:8]}", parameter_overrides=[
        Parameter("autostart", value=False), Parameter("diagnostics_period", value=3600.0)])
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    errors: list = []

    def spin() -> None:
        try:
            executor.spin()
        except Exception as exc:   # noqa: BLE001 - what killed the node's executor
            errors.append(exc)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    release, busy = threading.Event(), []

    def hold() -> None:
        busy.append(1)
        release.wait(20)

    try:
        executor.create_task(node.start)
        assert wait_until(lambda: node._twin_timer is not None, 10)
        twin = node._twin_timer
        group = ReentrantCallbackGroup()
        holders = [node.create_timer(0.01, hold, callback_group=group) for _ in range(2)]
        assert wait_until(lambda: len(busy) >= 2, 10)   # both executor threads held
        assert wait_until(lambda: twin.time_until_next_call() < -0.1, 10)   # its call waits for a thread
        monkeypatch.setattr(node_module, "DUPLICATE_WINDOW", 0.0)
        node._check_duplicate_name()   # as /diagnostics calls it, on another thread than the executor's
        release.set()
        assert wait_until(lambda: len(busy) >= 6 or errors, 10)   # the queued calls ran, later ones too
        assert thread.is_alive() and not errors, errors
        assert node._twin_timer is None and twin not in list(node.timers)
        for holder in holders:
            node.destroy_timer(holder)
    finally:
        release.set()
        executor.shutdown()
        node.destroy_node()


def test_camera_inputs_take_the_event_callbacks_from_humbles_module(probe, monkeypatch):
    """Humble's rclpy has rclpy.qos_event, not rclpy.event_handler: a stand-in module of that name."""
    import rclpy.event_handler

    class HumbleCallbacks(rclpy.event_handler.SubscriptionEventCallbacks):
        pass

    humble = types.ModuleType("rclpy.qos_event")
    humble.SubscriptionEventCallbacks = HumbleCallbacks
    monkeypatch.setitem(sys.modules, "rclpy.qos_event", humble)
    monkeypatch.setitem(sys.modules, "rclpy.event_handler", None)   # import fails, as on Humble
    spec = importlib.util.spec_from_file_location("ovss_ros.ros.camera_inputs_on_humble", camera_inputs.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SubscriptionEventCallbacks is HumbleCallbacks
    inputs = module.CameraInputs(probe.node, lambda cam, msg: None, None)
    events = inputs._events("cam/image")
    assert isinstance(events, HumbleCallbacks) and events.incompatible_qos is not None
    monkeypatch.undo()
    sub = probe.node.create_subscription(Image, f"humble_events_{uuid.uuid4().hex[:6]}", lambda m: None,
                                         qos.inputs("reliable"), event_callbacks=events)   # rclpy takes it
    probe.node.destroy_subscription(sub)


def test_a_reader_that_cannot_count_its_publishers_counts_as_matched(probe):
    """Humble's subscriptions have no get_publisher_count: the silence check must still run for them."""
    assert camera_inputs._matched(SimpleNamespace())
    name = f"matched_{uuid.uuid4().hex[:6]}"
    sub = probe.node.create_subscription(Image, name, lambda m: None, qos.inputs("best_effort"))
    assert not camera_inputs._matched(sub)
    pub = probe.node.create_publisher(Image, name, qos.inputs("best_effort"))
    assert wait_until(lambda: camera_inputs._matched(sub), 10)
    probe.node.destroy_publisher(pub)
    probe.node.destroy_subscription(sub)
