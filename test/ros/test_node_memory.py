"""The node process's resident memory over lifecycle cycles (configure -> activate -> frames -> deactivate ->
cleanup, through the lifecycle services): after the first cycle, which pays torch's and the allocator's
one-time growth, RSS stays within 5 %. benchmarks/bench_lifecycle_memory.py measures 20 cycles."""
import itertools

from lifecycle_msgs.msg import Transition
from sensor_msgs.msg import Image

from ovss_ros.ros import qos
from rostest_helpers import change_state, image_msg, scene

SECONDS = itertools.count(70000)
CYCLES = 6


def test_rss_after_each_cycle_stays_within_5_percent_of_the_first(probe, start_node):
    ns = "/ovss_memory_cycles"
    full = f"{ns}/ovss_node"
    from ovss_ros.toy_world import MODEL_DIRS
    from ovss_ros.toy_world.world import class_names

    # the embedded toy model and its classes, as the benchmark: enough work per frame to show arena growth
    node = start_node(ns, autostart=False, model=str(MODEL_DIRS["pnp_ovss"]), vocabulary=list(class_names("pattern")))
    cam = probe.node.create_publisher(Image, f"{ns}/image", qos.reliable(2))
    labels = probe.collect(Image, f"{ns}/segmentation/labels", qos.reliable(10))
    rss = []
    for _ in range(CYCLES):
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert change_state(probe, full, transition), node.log()
        probe.wait_subscribers(cam)
        for _ in range(3):   # VGA-ish frames: each allocates MBs on the worker thread, new every cycle
            sec = next(SECONDS)
            msg = image_msg(scene(240, 320, seed=sec % 3), "rgb8", sec)
            for _ in range(5):   # resent until answered: the first may go out before the reader matched
                cam.publish(msg)
                if labels.wait_for(lambda m: m.header.stamp.sec == sec, 6):
                    break
            else:
                raise AssertionError(f"no labels for frame {sec}\n{node.log()}")
        for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
            assert change_state(probe, full, transition), node.log()
        rss.append(node.rss_mb())
    print("RSS after each cycle (MB):", [round(r, 1) for r in rss])
    assert max(rss[1:]) <= rss[0] * 1.05, rss
