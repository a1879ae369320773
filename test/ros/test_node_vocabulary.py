"""Vocabulary changes through the topic, the parameter and the service reach the engine by one path: after
any burst the node settles on the last one received, and the parameter shows it; a storm of changes through
any one input does not starve the cameras or the diagnostics, and every service call is answered."""
import random

import pytest
from std_msgs.msg import String

from ovss_ros.msg import ClassMap
from ovss_ros.ros import qos
from ovss_ros.ros.vocabulary_path import SUPERSEDED
from rostest_helpers import burst_settles, vocabularies
from vocabulary_storm import INPUTS, run_storm

NS, FULL = "/ovss_vocab", "/ovss_vocab/ovss_node"
STORM_NS = "/ovss_storm"
STORM_SECONDS = 8.0


def test_bursts_through_all_three_inputs_settle_on_the_last_one(probe, start_node):
    node = start_node(NS, vocabulary=["dog"])
    topic = probe.node.create_publisher(String, f"{NS}/vocabulary", qos.reliable(50))
    class_map = probe.collect(ClassMap, f"{NS}/segmentation/class_map", qos.latched())
    assert class_map.wait_for(lambda m: m.vocabulary_version == 1, 120), node.log()
    probe.wait_subscribers(topic)
    rng, vocab = random.Random(7), vocabularies(11)
    for burst in range(40):
        # Calls are answered once the node has the request, so a change after an answered call is received
        # after it; topic messages are ordered among themselves. A burst that uses the topic ends on it.
        uses_topic = burst % 3 == 0
        steps = [rng.choice(("parameter", "service")) for _ in range(rng.randint(2, 5))]
        if uses_topic:
            steps += ["topic"] * rng.randint(1, 6)
        burst_settles(probe, node, NS, FULL, topic, class_map, steps, vocab)
    assert node.alive()


@pytest.fixture(scope="module")
def storm_node(probe, start_node):
    node = start_node(STORM_NS, vocabulary=["plain red"])
    maps = probe.collect(ClassMap, f"{STORM_NS}/segmentation/class_map", qos.latched())
    assert maps.wait_for(lambda m: m.vocabulary_version == 1, 120), node.log()
    return node


@pytest.mark.parametrize("how", INPUTS)
def test_vocabulary_storm_does_not_starve_frames(probe, storm_node, how):
    """50 changes/s for STORM_SECONDS through one input, frames at 10/s: at least half of the frames that reach
    the node are answered, /diagnostics keeps its period, the node settles on the last change, and every
    service call is answered within 5 s (a superseded one says so). benchmarks/bench_vocabulary_storm.py runs
    the same for 20 s per input and records the figures."""
    r = run_storm(probe.node, STORM_NS, how, STORM_SECONDS, rate=50, fps=10, seed=len(how),
                  pid=storm_node.proc.pid, answer_timeout=10, settle_timeout=20)
    print(r)
    log = storm_node.log()[-2000:]
    # the bound: half of the frames that reach the node are answered. How many reach it depends on the
    # cameras' keep-last queue and two shared cores (a third to nine tenths measured); a quarter says the
    # executor still takes frames during the storm
    assert r["frames_reached_node"] >= r["frames_sent"] // 4, (r, log)
    assert r["answered_share"] >= 0.5, (r, log)
    assert r["settled_on_last"], (r, log)
    assert r["class_map_versions_ordered"], r
    assert r["diagnostics_max_gap_s"] < 5.0, r      # period 0.5 s; gaps up to 4.2 s seen on loaded cores
    assert r["text_preparations"] <= r["vocabulary_versions"] < r["changes_sent"], r   # coalesced
    if how in ("service", "parameter"):
        assert r["all_answered"], r
    if how == "service":      # the 5 s bound is the service's; parameter sets queue behind rclpy's own service
        assert r["answer_delay_s"]["max"] < 5.0, r
        assert r["last_call"]["success"] and r["last_call"]["class_names"] == r["last_vocabulary"], r
        assert set(r["refusal_reasons"]) <= {SUPERSEDED}, r
    if how == "parameter":
        assert r["calls_refused"] == 0, r
    assert storm_node.alive()
