import pytest


@pytest.fixture(scope="session")
def random_toy_dir(tiny_blip_dir):
    """An untrained model that knows the toy vocabulary (test/conftest.py's shared tiny BLIP): exercises
    code paths, carries no knowledge."""
    return tiny_blip_dir
