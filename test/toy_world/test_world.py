"""The scene generator: deterministic, exact ground truth, a usable vocabulary."""
import numpy as np
import pytest

from ovss_ros.pnp_ovss.tiny_model import word_tokenizer
from ovss_ros.toy_world.sequence import make_sequence
from ovss_ros.toy_world.world import (HELDOUT_OFFSET, class_names, make_scene, object_mask, scene_seed,
                                      vocabulary_words)


@pytest.mark.parametrize("world", ["pattern", "shape"])
def test_same_seed_same_scene_other_seed_other_scene(world):
    a, b, c = make_scene(3, world), make_scene(3, world), make_scene(4, world)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.rgb, c.rgb)
    assert a.rgb.shape == (96, 96, 3) and a.rgb.dtype == np.uint8 and a.labels.dtype == np.uint8


@pytest.mark.parametrize("world", ["pattern", "shape"])
def test_labels_are_the_objects_painted_in_order(world):
    for seed in range(20):
        s = make_scene(seed, world)
        expect = np.zeros_like(s.labels)
        for o in s.objects:
            expect[object_mask(o, 96)] = s.classes.index(o.class_name(world)) + 1
        assert np.array_equal(s.labels, expect)
        assert set(s.present_names) <= {o.class_name(world) for o in s.objects}
        assert 1 <= len(s.objects) <= 4


def test_every_object_stays_mostly_visible_and_classes_are_distinct():
    for seed in range(30):
        s = make_scene(seed)
        names = [o.class_name("pattern") for o in s.objects]
        assert len(names) == len(set(names))
        for k, o in enumerate(s.objects):
            full = object_mask(o, 96).sum()
            assert (s.labels == s.classes.index(names[k]) + 1).sum() >= 0.45 * full   # clipped at borders too


def test_vocabulary_and_seeds():
    assert len(class_names("pattern")) == 12 and "striped red" in class_names("pattern")
    assert len(class_names("shape")) == 12 and "blue triangle" in class_names("shape")
    assert scene_seed("heldout", 5) == HELDOUT_OFFSET + 5 and scene_seed("train", 5) == 5
    with pytest.raises(ValueError):
        scene_seed("test", 0)
    with pytest.raises(ValueError):
        class_names("texture")


def test_tokenizer_round_trips_every_class_word():
    tok = word_tokenizer(vocabulary_words())
    for world in ("pattern", "shape"):
        for name in class_names(world):
            ids = tok(f"a picture of {name}")["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids, skip_special_tokens=True) == f"a picture of {name}"


def test_scenes_vary_in_what_matters():
    scenes = [make_scene(scene_seed("heldout", i)) for i in range(60)]
    counts = np.bincount(np.concatenate([s.labels.ravel() for s in scenes]), minlength=13)
    assert (counts[1:] > 0).all()                         # every class appears
    assert 0.4 < counts[0] / counts.sum() < 0.9           # background is neither everything nor nothing
    sizes = {round(o.radius) for s in scenes for o in s.objects}
    assert max(sizes) - min(sizes) >= 8


def test_sequence_is_deterministic_moves_and_has_exact_ground_truth():
    a, b = make_sequence(1, 6), make_sequence(1, 6)
    assert all(np.array_equal(x.rgb, y.rgb) and np.array_equal(x.labels, y.labels) for x, y in zip(a, b))
    assert not np.array_equal(a[0].labels, a[-1].labels)          # objects move
    for f in a:
        expect = np.zeros_like(f.labels)
        for o in f.objects:
            expect[object_mask(o, 96)] = f.classes.index(o.class_name("pattern")) + 1
        assert np.array_equal(f.labels, expect)
    big = make_sequence(1, 2, size=192)
    assert big[0].rgb.shape == (192, 192, 3)
