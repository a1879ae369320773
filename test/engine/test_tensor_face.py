"""The tensor face (segment_torch): device tensors in and out, resize and normalisation on the device, and
the compile option."""
import numpy as np
import pytest
import torch

from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.engine.image_io import ImageError, preprocess, preprocess_torch
from ovss_ros.engine.segmenter import Segmenter

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize("shape,size", [((480, 640), 384), ((72, 100), 96), ((50, 40), 96), ((96, 96), 96)])
def test_device_preprocessing_is_within_one_level_of_pil(shape, size):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    rgb[: shape[0] // 2] = rng.integers(0, 255, 3, dtype=np.uint8)          # flat regions and noise
    ref = preprocess(rgb, size, MEAN, STD)
    ours = preprocess_torch(torch.from_numpy(rgb), size, torch.tensor(MEAN), torch.tensor(STD)).numpy()
    level = (np.abs(ours - ref) * np.asarray(STD, np.float32)[:, None, None] * 255)   # in 8-bit levels
    assert ours.shape == ref.shape == (3, size, size)
    assert level.max() <= 1.0 + 1e-3 and level.mean() < 0.1, (level.max(), level.mean())


@pytest.fixture
def seg(tiny_loaded):
    s = Segmenter(tiny_loaded, make_config("tiny", presence_threshold=0.0, presence_top_k=2))
    s.set_vocabulary(["dog", "car", "tree"])
    return s


def test_tensor_face_returns_device_tensors_and_agrees_with_the_numpy_face(seg, rgb):
    res = seg.segment_torch(torch.from_numpy(rgb), outputs=["confidence", "class_maps"])
    ref = seg.segment(rgb, outputs=["confidence", "class_maps"])
    assert isinstance(res.labels, torch.Tensor) and res.labels.dtype == torch.uint8
    assert res.labels.shape == rgb.shape[:2] and res.raw_maps is None
    assert res.class_maps.shape == (len(res.class_ids), *rgb.shape[:2])
    assert res.class_ids.tolist() == ref.class_ids.tolist() and (res.present == ref.present).all()
    np.testing.assert_allclose(res.presence, ref.presence, atol=0.02)
    agree = (res.labels.numpy() == ref.labels).mean()
    assert agree > 0.97, agree        # inputs differ by at most one 8-bit level (test above)


def test_tensor_face_refuses_what_it_cannot_take(seg, rgb):
    with pytest.raises(ImageError, match="uint8"):
        seg.segment_torch(torch.from_numpy(rgb).float())
    with pytest.raises(ImageError, match="H x W x 3"):
        seg.segment_torch(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
    with pytest.raises(ImageError, match="torch.Tensor"):
        seg.segment_torch(rgb)
    assert seg.segment_torch(torch.from_numpy(rgb)).labels.shape == rgb.shape[:2]   # still serving


def test_torch_compile_gives_the_same_labels(tiny_loaded, rgb):
    plain = Segmenter(tiny_loaded, make_config("realtime", image_size=None, gradcam_layer=1, gradcam_head=2,
                                               presence="all", vision_dtype="float32"))
    plain.set_vocabulary(["dog", "car", "tree"])
    ref = plain.segment(rgb, outputs=["raw_maps"])
    plain.update_config(compile="torch_compile")
    assert plain.wait_compiled()     # compiled off the caller's thread; frames run eager until then
    assert plain._vision_model is not tiny_loaded.model.vision_model
    res = plain.segment(rgb, outputs=["raw_maps"])
    np.testing.assert_allclose(res.raw_maps, ref.raw_maps, rtol=1e-4, atol=1e-6 * ref.raw_maps.max())
    np.testing.assert_array_equal(res.labels, ref.labels)
    plain.update_config(compile="none")
    assert plain._vision_model is tiny_loaded.model.vision_model
