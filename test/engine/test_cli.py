"""ovss-segment refuses bad input with one `ovss-segment: error: ...` line and exit status 2."""
import numpy as np
import pytest
from PIL import Image

from ovss_ros.cli import main


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("extra,reason", [
    (["--set", "threshold=abc"], "threshold='abc': expected a number"),
    (["--set", "thresold=0.2"], "unknown engine parameter"),
    (["--set", "threshold"], "expected key=value"),
    (["--preset", "fast"], "unknown preset 'fast'"),
    (["--set", "prompt_template=a {} {}"], "prompt_template"),
])
def test_bad_parameters_are_one_line_and_status_2(tiny_dir, image, tmp_path, capsys, extra, reason):
    rc = main([str(image), "--classes", "dog", "--model", str(tiny_dir), "--preset", "tiny", "--device", "cpu",
               "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ovss-segment: error: ") and reason in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_preset_too_big_for_the_model_names_the_one_that_fits(tiny_dir, image, tmp_path, capsys):
    rc = main([str(image), "--classes", "dog", "--model", str(tiny_dir), "--preset", "paper", "--device", "cpu",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "gradcam_layer=7" in err and "the `tiny` preset fits this model" in err


def test_missing_vocabulary_file_is_one_line(tiny_dir, image, tmp_path, capsys):
    rc = main([str(image), "--vocabulary-file", str(tmp_path / "nope.txt"), "--model", str(tiny_dir),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ovss-segment: error: ") and "nope.txt" in err
