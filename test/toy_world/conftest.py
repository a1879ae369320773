import pytest


@pytest.fixture(scope="session")
def random_toy_dir(tmp_path_factory):
    """An untrained model with the toy vocabulary: exercises code paths, carries no knowledge."""
    from ovss_ros.tiny_model import build_blip, save_model
    from ovss_ros.toy_world.world import vocabulary_words

    model, processor = build_blip(vocabulary_words(), seed=0)
    return save_model(model, processor, tmp_path_factory.mktemp("toy_random"))
