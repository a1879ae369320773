"""Model loading: local directories offline, clear failures, safetensors only, device and dtype."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ovss_ros.engine.loading import ModelLoadError
from ovss_ros.pnp_ovss.model_loading import load_blip


def test_local_directory_loads_offline_through_the_normal_path(tiny_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_blip(str(tiny_dir), device="cpu")
    assert loaded.native_image_size == 96 and loaded.tokenizer.is_fast
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not loaded.model.training


def test_hub_id_without_cache_or_network_says_how_to_predownload(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="hf download Salesforce/blip-itm-large-flickr"):
        load_blip("Salesforce/blip-itm-large-flickr", device="cpu")


def test_directory_without_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match="does not hold a BLIP ITM checkpoint"):
        load_blip(str(tmp_path), device="cpu")


def test_pickle_checkpoints_are_refused(tiny_dir, tmp_path):
    """A checkpoint is data, not code: a pickled pytorch_model.bin is never unpickled."""
    import shutil

    from safetensors.torch import load_file

    for f in tiny_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / f.name)
    torch.save(load_file(tiny_dir / "model.safetensors"), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError):
        load_blip(str(tmp_path), device="cpu")


def test_unavailable_cuda_is_a_clear_error(tiny_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_blip(str(tiny_dir), device="cuda:0")


def test_dtype_option(tiny_dir):
    loaded = load_blip(str(tiny_dir), device="cpu", dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_blip(str(tiny_dir), device="cpu", dtype="int8")


def test_engine_runs_without_rclpy(tiny_dir):
    """The engine and CLI import no rclpy: segment with rclpy made unimportable."""
    code = f"""
import sys
sys.modules["rclpy"] = None          # any 'import rclpy' now raises ImportError
import numpy as np
from ovss_ros import Segmenter
from ovss_ros import cli
from ovss_ros.engine import visualize
from ovss_ros.pnp_ovss import class_presence, gradcam, postprocess, salience_dropout
seg = Segmenter.from_pretrained({str(tiny_dir)!r}, preset="tiny", device="cpu")
seg.set_vocabulary(["dog", "tree"])
print(seg.segment(np.zeros((20, 30, 3), np.uint8)).labels.shape)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(20, 30)" in out.stdout


def test_cli_writes_overlay_labels_and_summary(tiny_dir, tmp_path):
    import json

    from PIL import Image

    from ovss_ros.cli import main

    sample = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(sample)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    rc = main([str(sample), str(broken), "--classes", "dog, tree", "--model", str(tiny_dir), "--preset", "tiny",
               "--device", "cpu", "--set", "presence=all", "--out", str(tmp_path / "out")])
    assert rc == 1                                   # the broken file is reported, the good one still written
    summary = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert [c["name"] for c in summary["classes"]] == ["dog", "tree"] and summary["size"] == [70, 50]
    labels = np.asarray(Image.open(tmp_path / "out" / "scene_labels.png"))
    assert labels.shape == (50, 70) and set(np.unique(labels)) <= {0, 1, 2}
    assert np.asarray(Image.open(tmp_path / "out" / "scene_overlay.png")).shape == (50, 70, 3)
    assert main([str(sample), "--classes", "dog,dog", "--model", str(tiny_dir), "--preset", "tiny",
                 "--device", "cpu"]) == 2


def test_missing_local_directory_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_blip(str(tmp_path / "nope"), device="cpu")
