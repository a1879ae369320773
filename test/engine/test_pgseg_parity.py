"""PGSeg in the engine (transformers GroupViT + our NPR and decode) against the project's own plain-torch reference
(pgseg_reference.py), on random weights saved in the authors' checkpoint format and taken through the real path:
authors' file -> ovss-convert-pgseg -> Segmenter.from_pretrained. Group-class scores within 1e-5; labels equal on
>= 99.99 % of pixels, and any pixel that differs is a float near-tie in the reference; NPR on and off, sliding
window and whole image, background threshold below, above and without the max. Breaking one step of the decode
(top-k filter, Q * P, background rule, NPR residual, logit-scale clamp) must break the comparison."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import pgseg_checkpoints as ckpts
import pgseg_reference as ref
from ovss_ros.pgseg import inference, segmenter
from ovss_ros.pgseg.convert import main as convert_main
from ovss_ros.pgseg.model import PrototypeRegularizer
from ovss_ros.engine.segmenter import Segmenter

CLASSES = ["red car", "blue sky", "green tree", "road", "person", "dog"]
SHORT, CROP, STRIDE = 96, 64, 32
HEADS = ckpts.SMALL["num_heads"]
SCENES = (3, 6)                      # seeds whose scenes give two or more labels in every configuration below
ABOVE = 1.0                          # a background threshold at or over every window's max(Q * P)


def scene(seed=SCENES[0], h=96, w=128):
    """A 4 x 4 grid of random colours with sensor noise: enough structure for random weights to use several
    groups and classes."""
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((h // 4, w // 4, 1)))
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["pgseg", "groupvit", "pgseg_clamped"])
def checkpoint(request, tmp_path_factory):
    """.state (authors' names), .directory (converted), .npr, .name. `pgseg_clamped` stores exp(logit_scale) =
    400, so the inference clamp at 100 decides the scores."""
    torch.set_num_threads(1)
    npr = request.param != "groupvit"
    state = ckpts.authors_state_dict(npr=npr, size="small", seed=0)
    if request.param == "pgseg_clamped":
        state["logit_scale"] = torch.tensor(math.log(400.0))
    tmp = tmp_path_factory.mktemp(request.param)
    ckpts.save_authors_checkpoint(tmp / "checkpoint.pth", state, kind="pgseg" if npr else "groupvit")
    bpe = ckpts.small_bpe(tmp / "bpe.txt.gz", ckpts.SMALL["vocab_size"], ["a photo of", *CLASSES])
    rc = convert_main([str(tmp / "checkpoint.pth"), str(tmp / "converted"), "--bpe", str(bpe),
                       "--vision-heads", str(HEADS), "--text-heads", str(ckpts.SMALL["text_heads"])])
    assert rc == 0
    return SimpleNamespace(state=state, directory=tmp / "converted", npr=npr, name=request.param)


def engine(directory, *, slide, background, npr=True):
    seg = Segmenter.from_pretrained(str(directory), preset="pgseg", device="cpu", image_size=SHORT,
                                    crop_size=CROP if slide else None, crop_stride=STRIDE, npr=npr,
                                    background="threshold" if background is not None else "never",
                                    background_threshold=background if background is not None else 0.95)
    seg.set_vocabulary(CLASSES)
    return seg


def reference_text(state, seg):
    """The prompts' token ids as the authors feed them (zero-padded to 77) through the reference text tower."""
    ids = torch.zeros(len(CLASSES), 77, dtype=torch.long)
    for i, row in enumerate(seg.loaded.tokenizer([seg.config.prompt_template.format(c) for c in CLASSES])["input_ids"]):
        ids[i, :len(row)] = torch.tensor(row)
    return ref.encode_text(state, ids, ckpts.SMALL["text_heads"])


def compare(checkpoint, *, slide, background, npr=True, rgb=None):
    """Runs both; returns a dict of what the assertions need."""
    rgb = scene() if rgb is None else rgb
    seg = engine(checkpoint.directory, slide=slide, background=background, npr=npr)
    text = reference_text(checkpoint.state, seg)
    probs, qps = ref.segment(checkpoint.state, text, rgb, HEADS, short_side=SHORT, crop=CROP if slide else None,
                             stride=STRIDE, background=background, npr=npr and checkpoint.npr)
    ours = seg.decode_windows(seg.preprocess(rgb))["scores"]
    theirs = torch.stack(qps)
    assert ours.shape == theirs.shape
    expected = probs.argmax(dim=0).numpy() + (0 if background is not None else 1)     # our ids: class k is k + 1
    labels = seg.segment(rgb).labels.astype(np.int64)
    differ = labels != expected
    # a differing pixel must be a tie in the reference: our label's probability equal to the best within float noise
    ours_prob = np.take_along_axis(probs.numpy(), (labels - (0 if background is not None else 1))[None], 0)[0]
    ties = np.abs(probs.max(dim=0).values.numpy() - ours_prob) <= 1e-6
    return dict(text=float((seg._text - text).abs().max()), scores=float((ours - theirs).abs().max()),
                agree=1.0 - differ.mean(), untied=int((differ & ~ties).sum()), distinct=len(np.unique(expected)),
                max_qp=[float(q.max()) for q in qps])


def below_max(checkpoint, slide, rgb):
    """A background threshold just under the smallest window maximum of Q * P: every window then applies the
    threshold itself, and groups scoring under it become background."""
    return 0.99 * min(compare(checkpoint, slide=slide, background=None, rgb=rgb)["max_qp"])


@pytest.mark.parametrize("seed", SCENES)
@pytest.mark.parametrize("slide", [True, False], ids=["slide", "whole"])
@pytest.mark.parametrize("background", ["below_max", "above_max", None], ids=["bg_below_max", "bg_above_max", "no_bg"])
def test_engine_matches_the_reference(checkpoint, slide, background, seed):
    rgb = scene(seed)
    threshold = {"below_max": lambda: below_max(checkpoint, slide, rgb), "above_max": lambda: ABOVE,
                 None: lambda: None}[background]()
    r = compare(checkpoint, slide=slide, background=threshold, rgb=rgb)
    assert r["distinct"] >= 2, "the scene must exercise more than one label"
    assert r["text"] < 1e-5
    assert r["scores"] < 1e-5
    assert r["agree"] >= 0.9999 and r["untied"] == 0


def test_the_clamp_is_exercised(checkpoint):
    """Only the clamped checkpoint's scale is above 100; the engine uses 100 for it."""
    stored = float(checkpoint.state["logit_scale"].exp())
    assert (stored > 100) == (checkpoint.name == "pgseg_clamped")
    seg = engine(checkpoint.directory, slide=False, background=None)
    assert float(segmenter.logit_scale(seg.model)) == pytest.approx(min(stored, 100.0), rel=1e-6)


def test_npr_off_is_the_groupvit_forward(checkpoint):
    """npr=False on a PGSeg checkpoint runs GroupViT's forward: it matches the reference without NPR and differs
    from the run with NPR."""
    if not checkpoint.npr:
        pytest.skip("a GroupViT checkpoint has no NPR")
    off = compare(checkpoint, slide=True, background=None, npr=False)
    assert off["scores"] < 1e-5 and off["agree"] >= 0.9999 and off["untied"] == 0
    seg_on, seg_off = (engine(checkpoint.directory, slide=True, background=None, npr=n) for n in (True, False))
    x = seg_on.preprocess(scene())
    assert (seg_on.decode_windows(x)["scores"] - seg_off.decode_windows(x)["scores"]).abs().max() > 1e-3


# ---- mutations: each breaks one step of the engine's decode --------------------------------------------------

ORIGINAL_SCORES = inference.group_class_scores
ORIGINAL_WINDOW = inference.window_scores


def _no_top_k_filter(groups, pooled, text, scale, top_k, keep=None):
    return ORIGINAL_SCORES(groups, pooled, text, scale, None, keep)


def _q_without_p(groups, pooled, text, scale, top_k, keep=None):
    qp, image, mask = ORIGINAL_SCORES(groups, pooled, text, scale, top_k, keep)
    return qp / (scale * groups @ text.T).softmax(dim=-1), image, mask


def _fixed_background_threshold(group_index, scores, background):
    out = ORIGINAL_WINDOW(group_index, scores, None)
    if background is None:
        return out
    bg = (out.max(dim=1).values < background).to(out.dtype)          # without min(threshold, max score)
    return torch.cat([bg[:, None], out], dim=1)


MUTATIONS = {
    "top_k_filter": (inference, "group_class_scores", _no_top_k_filter),
    "q_times_p": (inference, "group_class_scores", _q_without_p),
    "background_rule": (inference, "window_scores", _fixed_background_threshold),
    "npr_residual": (PrototypeRegularizer, "forward", lambda self, x, found=None: torch.zeros_like(x)),
    "clamp": (segmenter, "logit_scale", lambda model: model.logit_scale.exp()),
}


@pytest.mark.parametrize("broken", list(MUTATIONS))
def test_breaking_any_step_breaks_the_comparison(checkpoint, broken, monkeypatch):
    if broken == "npr_residual" and not checkpoint.npr:
        pytest.skip("a GroupViT checkpoint has no NPR")
    if (broken == "clamp") != (checkpoint.name == "pgseg_clamped"):
        pytest.skip("the clamp acts only on the clamped checkpoint, whose saturated softmax (scale 100) hides the "
                    "other steps; the other checkpoints carry those")
    below = below_max(checkpoint, True, scene())
    monkeypatch.setattr(*MUTATIONS[broken])
    # the background rule only differs where the threshold is above max(Q * P); the rest show anywhere
    results = [compare(checkpoint, slide=True, background=below), compare(checkpoint, slide=False, background=ABOVE)]
    assert any(r["scores"] >= 1e-5 or r["untied"] > 0 for r in results), f"breaking {broken} went unnoticed"
