import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_dir(tiny_blip_dir):
    """The session's tiny random-weight BLIP (test/conftest.py), by the name the engine tests use."""
    return tiny_blip_dir


@pytest.fixture(scope="session")
def tiny_loaded(tiny_dir):
    from ovss_ros.pnp_ovss.model_loading import load_blip

    return load_blip(str(tiny_dir), device="cpu", local_files_only=True)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (72, 100, 3), dtype=np.uint8)
    img[10:40, 20:60] = (220, 30, 30)
    return img
