import numpy as np
import pytest

WORDS = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "dog", "cat", "person", "car",
         "tree", "sky", "road", "traffic", "light", "striped", "plain"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random-weight BLIP ITM saved like a real checkpoint (safetensors + tokenizer + processor)."""
    from ovss_ros.tiny_model import build_blip, save_model

    model, processor = build_blip(WORDS, seed=0)
    return save_model(model, processor, tmp_path_factory.mktemp("tiny_blip"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_dir):
    from ovss_ros.model_loading import load_blip

    return load_blip(str(tiny_dir), device="cpu", local_files_only=True)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (72, 100, 3), dtype=np.uint8)
    img[10:40, 20:60] = (220, 30, 30)
    return img
