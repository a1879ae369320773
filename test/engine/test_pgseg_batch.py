"""PGSeg batches frames through its encoder: all windows of all frames of one window shape in one pass, the
results split back per frame and equal to the frames run one by one."""
import numpy as np
import pytest
import torch

from ovss_ros.engine.profiling import count_host_syncs
from ovss_ros.engine.segmenter import Segmenter
from ovss_ros.pgseg import segmenter as pgseg_segmenter

VOCAB = ["red", "green", "blue", "dog"]
EXTRAS = ("labels", "confidence", "class_maps", "raw_maps")
# name -> (config changes, frame sizes, the windows of each encoder pass the batch takes)
CASES = {
    "one window, square": (dict(), [(60, 80), (60, 80), (60, 80)], [3]),
    "one window, square, mixed sizes": (dict(), [(60, 80), (40, 90), (75, 50)], [3]),
    # short side 96, no crop: 60x80 -> 96x128, 40x90 -> 96x216, 60x80 again: two shapes, two passes
    "one window, short side, mixed sizes": (dict(image_size=96, resize="short_side", crop_size=None),
                                            [(60, 80), (40, 90), (60, 80)], [2, 1]),
    # 96-px windows at stride 48: 60x80 -> 96x128 (2 windows), 40x90 -> 96x216 (4), 50x50 -> 96x96 (1)
    "sliding windows": (dict(image_size=96, resize="short_side", crop_size=96, crop_stride=48),
                        [(60, 80), (40, 90), (50, 50)], [7]),
    "sliding windows, same size": (dict(image_size=96, resize="short_side", crop_size=96, crop_stride=48),
                                   [(60, 80), (60, 80), (60, 80)], [6]),
    # 128-px windows over a 96-px short side are 96 x min(128, width): 60x80 -> 96x128 (1 window),
    # 40x90 -> 96x216 (3 of 96x128), 50x50 -> 96x96 (1 of 96x96): two shapes
    "sliding windows, mixed shapes": (dict(image_size=96, resize="short_side", crop_size=128, crop_stride=64),
                                      [(60, 80), (40, 90), (50, 50)], [4, 1]),
}


@pytest.fixture(scope="module")
def pg(tiny_pgseg_dir):
    seg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu", background_threshold=0.3)
    seg.set_vocabulary(VOCAB)
    return seg


@pytest.fixture
def configured(pg):
    before = pg.config

    def apply(changes):
        pg.update_config(**changes)
        return pg
    yield apply
    pg.update_config(**before.to_dict())


@pytest.fixture
def passes(monkeypatch):
    """The batch size of every encoder pass."""
    seen = []
    real = pgseg_segmenter.vision_forward

    def counted(model, pixels, *a, **k):
        seen.append(pixels.shape[0])
        return real(model, pixels, *a, **k)
    monkeypatch.setattr(pgseg_segmenter, "vision_forward", counted)
    return seen


def frames(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img[h // 4: 3 * h // 4, w // 5: w // 2 + i * 3] = (220, 30, 30)
        out.append(img)
    return out


def assert_same(batch, single):
    assert np.array_equal(batch.labels, single.labels)
    assert np.array_equal(batch.class_ids, single.class_ids) and np.array_equal(batch.present, single.present)
    np.testing.assert_allclose(batch.presence, single.presence, atol=1e-6)
    for name in ("confidence", "class_maps", "raw_maps"):
        b, s = getattr(batch, name), getattr(single, name)
        assert b.shape == s.shape, name
        np.testing.assert_allclose(b, s, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_a_batch_takes_one_encoder_pass_per_window_shape_and_equals_the_frames_one_by_one(configured, passes,
                                                                                         case):
    changes, sizes, expected_passes = CASES[case]
    seg = configured(changes)
    images = frames(sizes)
    batch = seg.segment_batch(images, outputs=EXTRAS)
    assert sorted(passes) == sorted(expected_passes), passes
    passes.clear()
    singles = [seg.segment(im, outputs=EXTRAS) for im in images]
    assert len(passes) == len(images)                      # one by one: one pass each
    for b, s, im in zip(batch, singles, images):
        assert b.labels.shape == im.shape[:2]
        assert_same(b, s)


def test_three_frames_of_one_size_run_the_encoder_once(pg, passes):
    images = frames([(72, 100)] * 3, seed=4)
    pg.segment_batch(images)
    assert passes == [3]
    pg.segment_torch_batch([torch.from_numpy(im) for im in images])
    assert passes == [3, 3]


def test_forced_classes_per_frame_in_one_batch(pg, passes):
    images = frames([(60, 80), (60, 80), (60, 80)], seed=5)
    presents = [["red", "dog"], None, []]
    batch = pg.segment_batch(images, presents, outputs=EXTRAS)
    assert passes == [3]
    for b, im, p in zip(batch, images, presents):
        assert_same(b, pg.segment(im, p, outputs=EXTRAS))
    assert list(batch[0].class_ids) == [1, 4] and len(batch[2].class_ids) == 0 and not batch[2].labels.any()


@pytest.mark.parametrize("presents,extra", [(None, 0), ([["red"], None, ["dog", "blue"]], 1)])
def test_a_batch_waits_for_the_kept_classes_once(pg, presents, extra):
    """HOST_SYNCS: the kept classes come down once per batch, forced classes go up once per batch; only the
    presence download is per frame (the tensor face returns it on the host)."""
    tensors = [torch.from_numpy(im) for im in frames([(60, 80), (40, 90), (60, 80)], seed=6)]
    pg.segment_torch_batch(tensors, presents)
    with count_host_syncs(pg.device) as syncs:
        pg.segment_torch_batch(tensors, presents, outputs=EXTRAS)
    assert sum(syncs.values()) == 1 + len(tensors) + extra, dict(syncs)
    assert set(pgseg_segmenter.HOST_SYNCS) == {"kept_classes", "presence", "present"}
