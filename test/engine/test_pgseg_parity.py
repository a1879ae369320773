"""PGSeg on transformers against a literal transcription of the authors' code (pgseg_reference_literal.py), on
random weights at small sizes, through the real conversion path: the authors' checkpoint file -> ovss-convert-pgseg
-> Segmenter.from_pretrained. Group-class scores within 1e-5, identical labels, NPR on and off, sliding window and
whole image, with and without background; breaking any one step of the decode must break the comparison."""
import gzip

import numpy as np
import pytest
import torch

import pgseg_checkpoints as ckpts
import pgseg_reference_literal as ref
from ovss_ros.pgseg import inference
from ovss_ros.pgseg.convert import convert
from ovss_ros.pgseg.model import PrototypeRegularizer
from ovss_ros.pgseg.tokenizer import CLIP_MERGES, word_merges
from ovss_ros.segmenter import Segmenter

CLASSES = ["red car", "blue sky", "green tree", "road", "person", "dog"]
SHORT, CROP, STRIDE = 64, 64, 32


def small_bpe(path, vocab_size: int):
    """A CLIP-format BPE file whose vocabulary has exactly `vocab_size` entries (512 byte symbols + merges + 2)."""
    merges = word_merges(["a photo of", *CLASSES])
    filler = (f"{a}{b}{c}" for a in "qwxz" for b in "aeiou" for c in "jkvy")
    while len(merges) < vocab_size - 514:
        merges += [m for m in word_merges([next(filler)]) if m not in merges]
    merges = merges[:vocab_size - 514]
    assert len(merges) < CLIP_MERGES
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return path


@pytest.fixture(scope="module", params=[True, False], ids=["pgseg", "groupvit"])
def pair(request, tmp_path_factory):
    """(literal model, converted directory) for a PGSeg (NPR) or plain GroupViT checkpoint."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("pgseg_ckpt")
    model = ckpts.build_reference(npr=request.param, size="small", seed=0)
    src = tmp / "checkpoint.pth"
    ckpts.save_authors_checkpoint(src, model, kind="pgseg" if request.param else "groupvit")
    out = tmp / "converted"
    convert(src, out, bpe=small_bpe(tmp / "bpe.txt.gz", ckpts.SMALL["vocab_size"]), trust_pickle=True,
            vision_heads=ckpts.SMALL["num_heads"], text_heads=ckpts.SMALL["text_heads"])
    return model, out


def scene(seed=0, h=80, w=100):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (40, 90, 220)
    img[h // 2:, : w // 2] = (30, 160, 40)
    img[h // 2:, w // 2:] = (200, 30, 30)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def reference_text(model, seg):
    ids = seg.loaded.tokenizer([seg.config.prompt_template.format(c) for c in CLASSES])["input_ids"]
    padded = torch.zeros(len(ids), 1, 77, dtype=torch.long)     # the authors pad with 0 to the context length
    for i, row in enumerate(ids):
        padded[i, 0, :len(row)] = torch.tensor(row)
    return ref.build_text_embedding(model, padded)


def compare(model, directory, rgb, *, slide: bool, background, npr=True):
    """(max |scores - reference|, labels equal, number of distinct labels) for one configuration."""
    seg = Segmenter.from_pretrained(str(directory), preset="pgseg", device="cpu", image_size=SHORT,
                                    crop_size=CROP if slide else None, crop_stride=STRIDE, npr=npr,
                                    background="threshold" if background is not None else "never",
                                    background_threshold=background if background is not None else 0.95)
    seg.set_vocabulary(CLASSES)
    text = reference_text(model, seg)
    assert torch.allclose(seg._text, text, atol=1e-5)
    labels_ref, inf = ref.predict_labels(model, text, rgb, with_bg=background is not None,
                                         bg_thresh=background if background is not None else 0.95,
                                         mode="slide" if slide else "whole", crop=CROP, stride=STRIDE,
                                         short_side=SHORT, return_inference=True)
    ours = seg.decode_windows(seg.preprocess(rgb))["scores"]
    theirs = torch.stack(inf.group_affinity_mats)
    assert ours.shape == theirs.shape
    labels = seg.segment(rgb).labels.astype(np.int64)
    expected = labels_ref.numpy() + (0 if background is not None else 1)     # our ids: class k is k + 1
    return float((ours - theirs).abs().max()), bool(np.array_equal(labels, expected)), len(np.unique(expected))


@pytest.mark.parametrize("slide", [True, False], ids=["slide", "whole"])
@pytest.mark.parametrize("background", [0.3, 0.999, None], ids=["bg", "bg_above_max", "no_bg"])
def test_matches_the_authors_decode(pair, slide, background):
    model, directory = pair
    diff, same, distinct = compare(model, directory, scene(), slide=slide, background=background)
    assert distinct >= 2 or background == 0.999, "the scene must exercise more than one label"
    assert diff < 1e-5
    assert same


def _group_class_scores_without_filter(groups, pooled, text, scale, top_k, keep=None):
    return ORIGINAL_SCORES(groups, pooled, text, scale, None, keep)


def _group_class_scores_q_only(groups, pooled, text, scale, top_k, keep=None):
    qp, image, mask = ORIGINAL_SCORES(groups, pooled, text, scale, top_k, keep)
    p = (scale * groups @ text.T).softmax(dim=-1)
    return qp / p, image, mask


def _window_scores_fixed_threshold(group_index, scores, background):
    out = ORIGINAL_WINDOW(group_index, scores, None)
    if background is None:
        return out
    bg = (out.max(dim=1).values < background).to(out.dtype)          # drops min(threshold, max score)
    return torch.cat([bg[:, None], out], dim=1)


ORIGINAL_SCORES = inference.group_class_scores
ORIGINAL_WINDOW = inference.window_scores


@pytest.mark.parametrize("broken", ["top_k_filter", "q_times_p", "background_rule", "npr_residual"])
def test_breaking_any_step_breaks_the_comparison(pair, broken, monkeypatch):
    model, directory = pair
    if broken == "npr_residual" and not model.npr:
        pytest.skip("a GroupViT checkpoint has no NPR")
    patches = {"top_k_filter": (inference, "group_class_scores", _group_class_scores_without_filter),
               "q_times_p": (inference, "group_class_scores", _group_class_scores_q_only),
               "background_rule": (inference, "window_scores", _window_scores_fixed_threshold),
               "npr_residual": (PrototypeRegularizer, "forward", lambda self, x, found=None: torch.zeros_like(x))}
    monkeypatch.setattr(*patches[broken])
    rgb = scene()
    results = [compare(model, directory, rgb, slide=True, background=0.3),
               compare(model, directory, rgb, slide=False, background=0.999)]   # above max(Q*P)
    assert any(diff >= 1e-5 or not same for diff, same, _ in results), f"breaking {broken} went unnoticed"


def test_npr_switched_off_is_groupvit_forward(pair):
    """config npr=False on a PGSeg checkpoint runs GroupViT's forward: different scores, same code path."""
    model, directory = pair
    if not model.npr:
        pytest.skip("a GroupViT checkpoint has no NPR")
    diff, same, _ = compare(model, directory, scene(), slide=True, background=0.3, npr=False)
    assert diff >= 1e-5 or not same
