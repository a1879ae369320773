"""Where training scenes come from: v1 fresh per step (the shipped model's stream), or a pre-rendered pool."""
import numpy as np

from ovss_ros.toy_world import world, world_v2
from ovss_ros.toy_world.scene_source import SceneSource
from ovss_ros.toy_world.world import scene_seed


def _same(a, b):
    return np.array_equal(a.rgb, b.rgb) and np.array_equal(a.labels, b.labels)


def test_fresh_v1_scenes_are_the_stream_the_v1_model_was_trained_on():
    src = SceneSource("pattern", version=1, batch=3, seed=2)
    got = src.step(5)
    want = [world.make_scene(scene_seed("train", (2 * 100_000 + 5) * 3 + j), "pattern") for j in range(3)]
    assert all(_same(g, w) for g, w in zip(got, want))
    assert not _same(src.step(6)[0], got[0])


def test_pool_holds_v2_scenes_in_seed_order_and_batches_are_seeded():
    a = SceneSource("pattern", version=2, batch=4, seed=1, pool=6, workers=2)
    assert len(a.pool) == 6
    for i, s in enumerate(a.pool):
        assert _same(s, world_v2.make_scene(scene_seed("train", 1 * 100_000 * 4 + i), "pattern"))
    b = SceneSource("pattern", version=2, batch=4, seed=1, pool=6, workers=1)
    for step in range(3):
        x, y = a.step(step), b.step(step)
        assert len(x) == 4 and len({id(s) for s in x}) == 4          # no scene twice in a batch
        assert all(_same(p, q) for p, q in zip(x, y))
    assert a.names == world_v2.class_names("pattern")


def test_heldout_scenes_follow_the_version():
    v1 = SceneSource("shape", version=1).heldout(2)
    v2 = SceneSource("shape", version=2).heldout(2)
    assert v1[0].rgb.shape == (96, 96, 3) and v2[0].rgb.shape == (120, 160, 3)
    assert _same(v2[1], world_v2.make_scene(scene_seed("heldout", 1), "shape"))
