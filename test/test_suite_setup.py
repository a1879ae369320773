"""The test suite's own set-up: the one tiny BLIP every suite shares (test/conftest.py), and pytest.ini's
warning filters."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_shared_tiny_blip_is_the_tiny_architecture_and_knows_every_suite_word(tiny_blip_dir, tiny_blip_words):
    from transformers import BertTokenizerFast

    from ovss_ros.tiny_model import ARCHITECTURES, blip_config

    cfg = json.loads((tiny_blip_dir / "config.json").read_text())
    want = blip_config(1, **ARCHITECTURES["tiny"])
    assert cfg["vision_config"]["image_size"] == want.vision_config.image_size == 96
    assert cfg["vision_config"]["num_hidden_layers"] == want.vision_config.num_hidden_layers
    assert cfg["text_config"]["num_hidden_layers"] == want.text_config.num_hidden_layers
    assert (tiny_blip_dir / "model.safetensors").is_file()
    tok = BertTokenizerFast.from_pretrained(str(tiny_blip_dir))
    for needed in ("striped", "checked", "hexagon", "traffic", "aeroplane", "tvmonitor"):
        assert needed in tiny_blip_words
    ids = tok(" ".join(tiny_blip_words), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(tiny_blip_words) and tok.unk_token_id not in ids


def test_deprecations_are_shown_in_the_summary_not_ignored_nor_raised(tmp_path):
    """What transformers (or torch) deprecates in the BLIP internals the engine uses must reach the warnings
    summary, under the repository's pytest.ini, without failing the run."""
    (tmp_path / "test_warns.py").write_text(
        "import warnings\n"
        "def test_warns():\n"
        "    warnings.warn_explicit('blip attr going away', DeprecationWarning, 'modeling_blip.py', 1,\n"
        "                           module='transformers.models.blip.modeling_blip')\n"
        "    warnings.warn_explicit('default changes in v6', FutureWarning, 'modeling_utils.py', 1,\n"
        "                           module='transformers.modeling_utils')\n"
        "    warnings.warn_explicit('torch api deprecated', DeprecationWarning, 'module.py', 1,\n"
        "                           module='torch.nn.modules.module')\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pytest.ini"), "--rootdir", str(tmp_path),
                          "-p", "no:cacheprovider", "-q", str(tmp_path / "test_warns.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "warnings summary" in out.stdout
    for text in ("blip attr going away", "default changes in v6", "torch api deprecated"):
        assert text in out.stdout, out.stdout[-3000:]
