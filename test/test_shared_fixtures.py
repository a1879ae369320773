"""The one tiny BLIP every suite shares (test/conftest.py)."""
import json


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
