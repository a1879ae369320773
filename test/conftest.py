"""Fixtures shared by every suite (engine, toy world, ROS)."""
from __future__ import annotations

from pathlib import Path

import pytest

# Words the suites put in class names; the fixture adds the toy world's words and Pascal VOC's class names
# (ovss-eval's VOC test), which the engine must know: it refuses words its tokenizer reads as [UNK].
TINY_WORDS = ("red", "green", "blue", "yellow", "circle", "square", "triangle", "dog", "cat", "person", "car",
              "tree", "sky", "road", "traffic", "light", "striped", "plain")


@pytest.fixture(scope="session")
def tiny_blip_words() -> list[str]:
    """Every word the shared tiny BLIP knows."""
    from ovss_ros.evaluation.class_names import VOC
    from ovss_ros.toy_world.world import vocabulary_words

    return list(dict.fromkeys([*TINY_WORDS, *vocabulary_words(), *VOC]))


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory, tiny_blip_words) -> Path:
    """One tiny random-weight BLIP ITM (the `tiny` architecture of ovss_ros.pnp_ovss.tiny_model: ViT 96 px, patch 8,
    2 vision + 3 text layers), saved once per session like a real checkpoint (safetensors, tokenizer,
    processor). It knows tiny_blip_words(); random weights exercise code paths and carry no knowledge."""
    from ovss_ros.pnp_ovss.tiny_model import build_blip, save_model

    model, processor = build_blip(tiny_blip_words, architecture="tiny", seed=0)
    return Path(save_model(model, processor, tmp_path_factory.mktemp("tiny_blip")))


@pytest.fixture(scope="session")
def tiny_pgseg_dir(tmp_path_factory, tiny_blip_words) -> Path:
    """One tiny random-weight PGSeg (GroupViT + NPR; ovss_ros.pgseg.tiny_model's `tiny` shapes: 96 px, patch 8,
    24 -> 8 groups), saved like a converted checkpoint; its BPE spells tiny_blip_words() and the prompts."""
    from ovss_ros.pgseg.tiny_model import build_pgseg, save_pgseg

    directory = tmp_path_factory.mktemp("tiny_pgseg")
    model, tok = build_pgseg(["a photo of picture", *tiny_blip_words], directory, seed=0)
    return save_pgseg(model, tok, directory)


@pytest.fixture(scope="session")
def benchmark_script():
    """benchmark_script("vision_probe") -> benchmarks/vision_probe.py as a module: the scripts are not a package,
    and their tests call their functions."""
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):   # a fresh module per call: some tests patch what a script holds
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
