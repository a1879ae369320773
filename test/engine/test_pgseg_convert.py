"""ovss-convert-pgseg on synthetic checkpoints with the released names, shapes and file layout
(pgseg_checkpoints.py), checked against the plain-torch reference (pgseg_reference.py)."""
import importlib.util
import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import pgseg_checkpoints as ckpts
import pgseg_reference as ref
from ovss_ros.engine.loading import ModelLoadError
from ovss_ros.pgseg import checkpoint_file
from ovss_ros.pgseg.convert import ConversionError, convert, infer_config, main, one_line, rename
from ovss_ros.pgseg.loading import PGSegCheck
from ovss_ros.pgseg.model import PGSegModel, project, text_embeddings, vision_forward
from ovss_ros.engine.segmenter import Segmenter

SMALL_HEADS = dict(vision_heads=ckpts.SMALL["num_heads"], text_heads=ckpts.SMALL["text_heads"])
HEAD_ARGS = ["--vision-heads", str(ckpts.SMALL["num_heads"]), "--text-heads", str(ckpts.SMALL["text_heads"])]
WORDS = ["a photo of", "red car", "blue sky", "green tree", "road", "person", "dog"]
ESC = "\x1b"


@pytest.mark.parametrize("npr,entries,dropped", [(True, 437, 11), (False, 406, 0)])
def test_every_released_name_and_shape_maps_onto_the_model(npr, entries, dropped):
    """At full size, on the meta device: the 437 (PGSeg) / 406 (GroupViT) tensors of the released files; the
    released widths take the released head counts without being told."""
    shapes = ckpts.released_key_shapes(npr=npr)
    assert len(shapes) == entries
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    tensors, gone, unknown = rename(state)
    config = infer_config(state)
    assert (config.vision_config.depths, config.vision_config.num_group_tokens) == ([6, 3, 3], [64, 8, 0])
    assert (config.vision_config.num_attention_heads, config.text_config.num_attention_heads) == (6, 4)
    assert getattr(config, "npr_prototypes", None) == ([64, 8] if npr else None)
    with torch.device("meta"):
        expected = PGSegModel(config).state_dict()
    assert not unknown and len(gone) == dropped
    assert set(tensors) == set(expected)
    assert all(tensors[k].shape == expected[k].shape for k in expected)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """.state (authors' names), .tmp, .bpe; pgseg.pth in the released layout (a pickled config object beside the
    weights), plain.pth with the tensors alone."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("convert")
    state = ckpts.authors_state_dict(npr=True, size="small", seed=1)
    ckpts.save_authors_checkpoint(tmp / "pgseg.pth", state)
    ckpts.save_plain_state_dict(tmp / "plain.pth", state)
    return SimpleNamespace(state=state, tmp=tmp,
                           bpe=ckpts.small_bpe(tmp / "bpe.txt.gz", ckpts.SMALL["vocab_size"], WORDS))


def _record(directory):
    return json.loads((directory / "conversion.json").read_text())


# ---- reading ----------------------------------------------------------------------------------------------------

def test_the_released_layout_converts_by_default_and_its_config_is_never_run(source, tmp_path):
    """The pickled config object is skipped, not unpickled: a global in it that would make a folder when
    called stays a placeholder."""
    marker = tmp_path / "code_ran"

    class RunsCode:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    torch.save({"model": source.state, "config": ckpts.AuthorsConfig(hook=RunsCode()), "epoch": 29},
               tmp_path / "hostile.pth")
    for name in ("pgseg.pth", "hostile.pth"):
        folder = source.tmp if name == "pgseg.pth" else tmp_path
        record = convert(folder / name, tmp_path / name.replace(".", "_"), bpe=source.bpe, **SMALL_HEADS)
        assert record["not_unpickled"][0] == "pgseg_checkpoints.AuthorsConfig"
    assert "posix.mkdir" in _record(tmp_path / "hostile_pth")["not_unpickled"]
    assert not marker.exists()


@pytest.fixture
def fake_omegaconf(tmp_path, monkeypatch):
    """A checkpoint whose config is an `omegaconf.DictConfig`, pickled while a stand-in omegaconf was
    importable; the module is then gone, as on a machine without omegaconf."""
    package = tmp_path / "site" / "omegaconf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "class DictConfig:\n"
        "    def __init__(self, content):\n"
        "        self._content = dict(content)\n"
        "        self._flags = {'readonly': True}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    omegaconf = importlib.import_module("omegaconf")     # the stand-in above: not a dependency of the package

    state = ckpts.authors_state_dict(npr=True, size="small", seed=2)
    config = omegaconf.DictConfig({"model": {"type": "MultiLabelContrastive"}, "train": {"epochs": 30}})
    torch.save({"model": state, "optimizer": {}, "epoch": 29, "config": config}, tmp_path / "released.pth")
    monkeypatch.delitem(sys.modules, "omegaconf")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "site")])
    importlib.invalidate_caches()
    if importlib.util.find_spec("omegaconf") is not None:     # a real install would satisfy --trust-pickle
        monkeypatch.setitem(sys.modules, "omegaconf", None)
    return tmp_path / "released.pth"


def test_an_omegaconf_config_needs_no_omegaconf(fake_omegaconf, source, tmp_path, capsys):
    record = convert(fake_omegaconf, tmp_path / "out", bpe=source.bpe, **SMALL_HEADS)
    assert record["not_unpickled"] == ["omegaconf.DictConfig"]
    assert sys.modules.get("omegaconf") is None           # never imported
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_trust_pickle_without_omegaconf_is_one_line_saying_what_to_do(fake_omegaconf, source, tmp_path, capsys):
    with pytest.raises(ConversionError) as err:
        convert(fake_omegaconf, tmp_path / "out", bpe=source.bpe, trust_pickle=True, **SMALL_HEADS)
    msg = str(err.value)
    assert "'omegaconf'" in msg and "pip install omegaconf" in msg and "drop --trust-pickle" in msg
    assert "\n" not in msg and ESC not in msg
    rc = main([str(fake_omegaconf), str(tmp_path / "out"), "--bpe", str(source.bpe), "--trust-pickle", *HEAD_ARGS])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.startswith("ovss-convert-pgseg: error: --trust-pickle")
    assert err.count("\n") == 1 and "Traceback" not in err and "omegaconf" in err
    assert not (tmp_path / "out").exists()


def test_trust_pickle_reads_a_file_whose_classes_are_importable(source, tmp_path):
    record = convert(source.tmp / "pgseg.pth", tmp_path / "out", bpe=source.bpe, trust_pickle=True, **SMALL_HEADS)
    assert record["not_unpickled"] == [] and (tmp_path / "out" / "model.safetensors").is_file()


def test_weights_that_need_a_class_are_refused_by_name(source, tmp_path, capsys):
    state = dict(source.state)
    state["img_encoder.extra"] = ckpts.AuthorsConfig(value=1)
    torch.save({"model": state, "epoch": 1}, tmp_path / "odd.pth")
    with pytest.raises(ConversionError) as err:
        convert(tmp_path / "odd.pth", tmp_path / "out", bpe=source.bpe, **SMALL_HEADS)
    msg = str(err.value)
    assert "pgseg_checkpoints.AuthorsConfig" in msg and "'model'" in msg and "--trust-pickle" in msg
    assert ESC not in msg and "\n" not in msg
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")          # a whole module, not a state dict
    rc = main([str(tmp_path / "module.pth"), str(tmp_path / "out"), "--bpe", str(source.bpe)])
    err = capsys.readouterr().err
    assert rc == 2 and "torch.nn.modules.linear.Linear" in err and ESC not in err and err.count("\n") == 1


def test_quoted_library_messages_lose_their_escape_codes(source, tmp_path, monkeypatch):
    """torch colours its own messages; the converter quotes them whole, without the codes."""
    coloured = ("\x1b[1mWeights only load failed.\x1b[0m " + "x" * 400
                + "\n\x1b[31mUnsupported global: GLOBAL omegaconf.dictconfig.DictConfig\x1b[0m")

    def failing_load(*args, **kwargs):
        raise RuntimeError(coloured)

    monkeypatch.setattr(checkpoint_file.torch, "load", failing_load)
    for trust in (False, True):
        with pytest.raises(ConversionError) as err:
            convert(source.tmp / "pgseg.pth", tmp_path / "out", bpe=source.bpe, trust_pickle=trust)
        msg = str(err.value)
        assert ESC not in msg and "\n" not in msg and "GLOBAL omegaconf.dictconfig.DictConfig" in msg
    assert one_line("\x1b]8;;http://x\x07link\x1b]8;;\x07 a\tb\r\nc") == "link a b c"


# ---- output -------------------------------------------------------------------------------------------------------

def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_failed_conversion_leaves_no_folder(source, tmp_path):
    with pytest.raises(ConversionError, match="600 rows"):
        convert(source.tmp / "plain.pth", tmp_path / "out",
                bpe=ckpts.small_bpe(tmp_path / "b.gz", 590, WORDS), **SMALL_HEADS)
    assert _entries(tmp_path) == ["b.gz"]                  # neither the folder nor its hidden partial one


def test_an_interrupted_conversion_leaves_no_folder(source, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ovss_ros.pgseg.tokenizer.write_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(source.tmp / "plain.pth", tmp_path / "deeper" / "out", bpe=source.bpe, **SMALL_HEADS)
    assert _entries(tmp_path / "deeper") == []


def test_an_existing_folder_is_refused_unless_empty(source, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="exists and is not empty"):
        convert(source.tmp / "plain.pth", tmp_path / "full", bpe=source.bpe, **SMALL_HEADS)
    assert _entries(tmp_path / "full") == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ConversionError, match="not a directory"):
        convert(source.tmp / "plain.pth", tmp_path / "file", bpe=source.bpe, **SMALL_HEADS)
    (tmp_path / "empty").mkdir()
    convert(source.tmp / "plain.pth", tmp_path / "empty", bpe=source.bpe, **SMALL_HEADS)
    assert "conversion.json" in _entries(tmp_path / "empty")
    assert _entries(tmp_path) == ["empty", "file", "full"]


def test_a_converter_folder_without_its_complete_record_is_refused(source, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    convert(source.tmp / "plain.pth", out, bpe=source.bpe, **SMALL_HEADS)
    assert json.loads((out / "config.json").read_text())["converted_by"] == "ovss-convert-pgseg"
    record = _record(out)
    PGSegCheck.from_pretrained(str(out))                     # complete: accepted
    (out / "conversion.json").unlink()
    for load in (lambda: Segmenter.from_pretrained(str(out), device="cpu"), lambda: PGSegCheck.from_pretrained(out)):
        with pytest.raises(ModelLoadError, match="ovss-convert-pgseg .* has no conversion.json") as err:
            load()
        assert "\n" not in str(err.value)
    (out / "conversion.json").write_text(json.dumps({k: v for k, v in record.items() if k != "licence"}))
    with pytest.raises(ModelLoadError, match="conversion.json is incomplete .*licence"):
        Segmenter.from_pretrained(str(out), device="cpu")
    (out / "conversion.json").write_text(json.dumps({**record, "text_heads": 4}))
    with pytest.raises(ModelLoadError, match="attention heads"):
        Segmenter.from_pretrained(str(out), device="cpu")


def test_folders_not_written_by_the_converter_need_no_record(tiny_pgseg_dir, tmp_path):
    """save_pgseg folders (test fixtures), the embedded toy model and a plain transformers GroupViT folder."""
    from transformers import GroupViTModel

    from ovss_ros.toy_world import PGSEG_MODEL_DIR

    check = PGSegCheck.from_pretrained(tiny_pgseg_dir, local_files_only=True)
    plain = GroupViTModel(check.model_config)
    plain.save_pretrained(tmp_path / "plain")
    check.tokenizer.save_pretrained(tmp_path / "plain")
    for folder in (tiny_pgseg_dir, PGSEG_MODEL_DIR, tmp_path / "plain"):
        assert not (folder / "conversion.json").exists()
        PGSegCheck.from_pretrained(folder, local_files_only=True)


# ---- heads --------------------------------------------------------------------------------------------------------

def test_other_widths_need_both_head_counts(source, tmp_path):
    """SMALL's widths (48, 32) are not the released ones: the released guesses (6, 32 // 64 -> 1) would convert
    without a complaint and segment wrongly."""
    for heads in ({}, {"vision_heads": 2}, {"text_heads": 2}):
        with pytest.raises(ConversionError) as err:
            convert(source.tmp / "plain.pth", tmp_path / "out", bpe=source.bpe, **heads)
        msg = str(err.value)
        assert "--vision-heads" in msg and "--text-heads" in msg and "not stored in the tensor shapes" in msg
        assert "segments wrongly" in msg and "48" in msg and not (tmp_path / "out").exists()
    with pytest.raises(ConversionError, match="--vision-heads 5 does not divide the width 48"):
        convert(source.tmp / "plain.pth", tmp_path / "out", bpe=source.bpe, vision_heads=5, text_heads=2)
    record = convert(source.tmp / "plain.pth", tmp_path / "out", bpe=source.bpe, vision_heads=4, text_heads=2)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["vision_config"]["num_attention_heads"], config["text_config"]["num_attention_heads"]) == (4, 2)
    assert (record["vision_heads"], record["text_heads"]) == (4, 2) == tuple(_record(tmp_path / "out")[k] for k in
                                                                            ("vision_heads", "text_heads"))


def test_the_cli_converts_once_and_prints_the_licence_once(source, tmp_path, capsys):
    assert main([str(source.tmp / "pgseg.pth"), str(tmp_path / "out"), "--bpe", str(source.bpe), *HEAD_ARGS]) == 0
    lines = capsys.readouterr().out.splitlines()
    licence = [line for line in lines if "licen" in line.lower()]
    assert len(licence) == 1 and "NVIDIA" in licence[0] and "Source Code License" in licence[0]
    assert "non-commercial" in licence[0] and "converted folder" in licence[0]
    assert "NVIDIA's Source Code License (non-commercial use only)" in _record(tmp_path / "out")["licence"]


# ---- what it converts to --------------------------------------------------------------------------------------------

def test_round_trip_gives_the_reference_forward(source, tmp_path, monkeypatch):
    """convert -> load offline -> the image and text features of the plain-torch reference on the same
    weights (the reference runs one image at a time)."""
    record = convert(source.tmp / "plain.pth", tmp_path / "out", bpe=source.bpe, **SMALL_HEADS)
    assert record["kind"] == "pgseg" and len(record["dropped_training_only"]) == 11
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seg = Segmenter.from_pretrained(str(tmp_path / "out"), device="cpu", image_size=64, crop_size=64, crop_stride=32)
    ours, w = seg.model, source.state
    torch.manual_seed(0)
    for image in torch.randn(2, 3, 64, 96):
        tokens, _, _ = ref.encode_image(w, image, ckpts.SMALL["num_heads"], npr=True)
        vision = vision_forward(ours, image[None])
        assert torch.allclose(project(ours, ours.visual_projection, vision.tokens)[0],
                              ref.conv_mlp(w, "img_projector", tokens), atol=1e-5)
        assert torch.allclose(project(ours, ours.visual_projection, vision.tokens.mean(1))[0],
                              ref.conv_mlp(w, "img_projector", tokens.mean(0, keepdim=True))[0], atol=1e-5)
    ids = seg.loaded.tokenizer(["a photo of a dog.", "road"], padding="longest", return_tensors="pt")
    padded = torch.zeros(2, 77, dtype=torch.long)                # the authors pad with 0 to the context length
    padded[:, :ids.input_ids.shape[1]] = ids.input_ids * ids.attention_mask
    ours_text = text_embeddings(ours, ids.input_ids, ids.attention_mask)
    assert torch.allclose(ours_text, F.normalize(ours_text, dim=-1))        # already unit rows
    assert torch.allclose(ours_text, ref.encode_text(w, padded, ckpts.SMALL["text_heads"]), atol=1e-5)


def test_missing_and_unexpected_keys_are_named_in_one_error(source, tmp_path):
    state = dict(source.state)
    del state["img_encoder.layers.0.downsample.assign.q_proj.weight"]
    state["img_encoder.layers.0.extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ConversionError) as err:
        convert(tmp_path / "broken.pth", tmp_path / "out", bpe=source.bpe, **SMALL_HEADS)
    msg = str(err.value)
    assert "missing keys: vision_model.encoder.stages.0.downsample.assign.q_proj.weight" in msg
    assert "unexpected keys: img_encoder.layers.0.extra_head.weight" in msg


def test_not_a_groupvit_checkpoint(tmp_path):
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not a GroupViT / PGSeg checkpoint"):
        convert(tmp_path / "other.pth", tmp_path / "out", bpe=tmp_path / "none.gz")
