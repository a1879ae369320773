"""ovss-convert-pgseg on synthetic checkpoints with the released names and shapes (pgseg_checkpoints.py)."""
import torch
import pytest

import pgseg_checkpoints as ckpts
import pgseg_reference_literal as ref
from ovss_ros.pgseg.convert import ConversionError, convert, infer_config, main, rename
from ovss_ros.pgseg.model import PGSegModel, project, text_embeddings, vision_forward
from ovss_ros.segmenter import Segmenter
from test_pgseg_parity import small_bpe

SMALL_HEADS = dict(vision_heads=ckpts.SMALL["num_heads"], text_heads=ckpts.SMALL["text_heads"])


@pytest.mark.parametrize("npr,entries,dropped", [(True, 437, 11), (False, 406, 0)])
def test_every_released_name_and_shape_maps_onto_the_model(npr, entries, dropped):
    """At full size, on the meta device: the 437 (PGSeg) / 406 (GroupViT) tensors of the released files."""
    shapes = ckpts.released_key_shapes(npr=npr)
    assert len(shapes) == entries
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    tensors, gone, unknown = rename(state)
    config = infer_config(state)
    assert (config.vision_config.depths, config.vision_config.num_group_tokens) == ([6, 3, 3], [64, 8, 0])
    assert getattr(config, "npr_prototypes", None) == ([64, 8] if npr else None)
    with torch.device("meta"):
        expected = PGSegModel(config).state_dict()
    assert not unknown and len(gone) == dropped
    assert set(tensors) == set(expected)
    assert all(tensors[k].shape == expected[k].shape for k in expected)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("convert")
    model = ckpts.build_reference(npr=True, size="small", seed=1)
    ckpts.save_authors_checkpoint(tmp / "pgseg.pth", model)
    ckpts.save_plain_state_dict(tmp / "plain.pth", model)
    return model, tmp, small_bpe(tmp / "bpe.txt.gz", ckpts.SMALL["vocab_size"])


def test_a_pickled_checkpoint_is_refused_unless_trusted(source, tmp_path, capsys):
    model, tmp, bpe = source
    with pytest.raises(ConversionError, match="--trust-pickle") as err:
        convert(tmp / "pgseg.pth", tmp_path / "out", bpe=bpe)
    assert "weights_only=True" in str(err.value) and not (tmp_path / "out").exists()
    rc = main([str(tmp / "pgseg.pth"), str(tmp_path / "out"), "--bpe", str(bpe)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ovss-convert-pgseg: error:") and "--trust-pickle" in err
    rc = main([str(tmp / "pgseg.pth"), str(tmp_path / "out"), "--bpe", str(bpe), "--trust-pickle",
               "--vision-heads", "2", "--text-heads", "2"])
    assert rc == 0 and (tmp_path / "out" / "model.safetensors").exists()


def test_round_trip_gives_the_source_forward(source, tmp_path, monkeypatch):
    """convert -> load offline -> the same image and text features as the authors' model with its weights."""
    model, tmp, bpe = source
    record = convert(tmp / "plain.pth", tmp_path / "out", bpe=bpe, **SMALL_HEADS)     # tensors only: no trust needed
    assert record["kind"] == "pgseg" and len(record["dropped_training_only"]) == 11
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seg = Segmenter.from_pretrained(str(tmp_path / "out"), device="cpu", image_size=64, crop_size=64, crop_stride=32)
    ours = seg.model
    img = torch.randn(2, 3, 64, 96)
    theirs = model.encode_image(img, return_feat=True, as_dict=True)
    vision = vision_forward(ours, img)
    assert torch.allclose(project(ours, ours.visual_projection, vision.tokens), theirs["image_feat"], atol=1e-5)
    assert torch.allclose(project(ours, ours.visual_projection, vision.tokens.mean(1)), theirs["image_x"], atol=1e-5)
    ids = seg.loaded.tokenizer(["a photo of a dog.", "road"], padding="longest", return_tensors="pt")
    padded = torch.zeros(2, 1, 77, dtype=torch.long)
    padded[:, 0, :ids.input_ids.shape[1]] = ids.input_ids * ids.attention_mask
    assert torch.allclose(text_embeddings(ours, ids.input_ids, ids.attention_mask),
                          ref.build_text_embedding(model, padded), atol=1e-5)


def test_missing_and_unexpected_keys_are_named_in_one_error(source, tmp_path):
    model, tmp, bpe = source
    state = dict(model.state_dict())
    del state["img_encoder.layers.0.downsample.assign.q_proj.weight"]
    state["img_encoder.layers.0.extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ConversionError) as err:
        convert(tmp_path / "broken.pth", tmp_path / "out", bpe=bpe, **SMALL_HEADS)
    msg = str(err.value)
    assert "missing keys: vision_model.encoder.stages.0.downsample.assign.q_proj.weight" in msg
    assert "unexpected keys: img_encoder.layers.0.extra_head.weight" in msg


def test_a_bpe_of_the_wrong_size_is_refused(source, tmp_path):
    model, tmp, _ = source
    with pytest.raises(ConversionError, match="600 rows"):
        convert(tmp / "plain.pth", tmp_path / "out", bpe=small_bpe(tmp_path / "b.gz", 590), **SMALL_HEADS)


def test_not_a_groupvit_checkpoint(tmp_path):
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not a GroupViT / PGSeg checkpoint"):
        convert(tmp_path / "other.pth", tmp_path / "out", bpe=tmp_path / "none.gz")
