"""Every weights `dtype` x every `vision_dtype`, both methods, on the CPU: labels agree with the float32 run
through the numpy face (one frame per call), the tensor face and both batch faces, on the embedded toy models
(trained: decisions with margins) and on random-weight models drawn at fan-in scale, so that their decisions
have margins too (saved like real checkpoints).

The pairs torch cannot run (an encoder pass in one half type over weights in the other) are refused when the
settings are made, by the segmenter and by the node's configure-time check, never on the first frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ovss_ros.engine.loading import MODEL_DTYPES
from ovss_ros.engine.config import VISION_DTYPES, vision_autocast_dtype
from ovss_ros.pnp_ovss.model_check import ModelCheck
from ovss_ros.engine.methods import METHODS
from ovss_ros.pgseg.loading import PGSegCheck
from ovss_ros.engine.segmenter import Segmenter
from ovss_ros.toy_world import MODEL_DIRS
from ovss_ros.toy_world.world import class_names, make_scene, scene_seed

AGREEMENT = 0.99
HALF = ("bfloat16", "float16")
N_SCENES = 5          # the first held-out scenes; pixels pooled over them
FACES = ("numpy", "tensor", "batch", "tensor_batch")
BLIP_BF16_FLOOR = 0.90   # below this a random-BLIP bf16 row fails outright (see the xfail there)


def refused(dtype: str, vision_dtype: str) -> bool:
    """torch's autocast pairs float32 with one lower precision: its promote ops (cat, ...) refuse bf16 next to
    fp16, so a half-type pass over weights of the other half type cannot run."""
    return dtype in HALF and vision_dtype in HALF and dtype != vision_dtype


PAIRS = [(d, v) for d in MODEL_DTYPES for v in VISION_DTYPES]
RUNNABLE = [p for p in PAIRS if not refused(*p)]
REFUSED = [p for p in PAIRS if refused(*p)]


def random_frames() -> list[np.ndarray]:
    """Three colour blocks with noise, at sizes other than the models' 96 px (the resize path)."""
    out = []
    for seed, (h, w) in enumerate([(72, 100), (60, 80)]):
        rng = np.random.default_rng(seed)
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2] = (200, 30, 30)
        img[:, w // 2:] = (30, 170, 60)
        img[h * 5 // 18: h * 25 // 36, w * 3 // 10: w * 7 // 10] = (30, 30, 200)
        out.append(np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def sharp_pgseg_dir(tmp_path_factory, tiny_blip_words):
    """The session's tiny PGSeg shapes with random weights at fan-in scale (pgseg.tiny_model.sharpen): the
    default 0.02 init groups pixels by logits ~1e-4 apart, float near-ties that say nothing about a dtype path."""
    from ovss_ros.pgseg.tiny_model import build_pgseg, save_pgseg

    directory = tmp_path_factory.mktemp("sharp_pgseg")
    model, tok = build_pgseg(["a photo of picture", *tiny_blip_words], directory, seed=0, sharpness=2.0)
    return save_pgseg(model, tok, directory)


@pytest.fixture(scope="module")
def sharp_blip_dir(tmp_path_factory, tiny_blip_words):
    """The session's tiny BLIP shapes with random weights at fan-in scale (tiny_model.sharpen)."""
    from ovss_ros.pnp_ovss.tiny_model import build_blip, save_model

    model, processor = build_blip(tiny_blip_words, architecture="tiny", seed=0, sharpness=2.0)
    return save_model(model, processor, tmp_path_factory.mktemp("sharp_blip"))


@pytest.fixture(scope="module")
def sources(sharp_blip_dir, sharp_pgseg_dir):
    """(source, method) -> (model folder, vocabulary, engine overrides, frames)."""
    torch.set_num_threads(2)
    scenes = [make_scene(scene_seed("heldout", i)).rgb for i in range(N_SCENES)]
    toy_vocab = list(class_names())
    # random weights know nothing: every class competes (no ITM / image-level filter deciding for them), and
    # PGSeg's groups are ranked against each other rather than against the background threshold
    random_vocab = ["red", "green", "blue", "yellow", "dog", "cat", "tree", "sky", "road", "car"]
    return {
        ("toy", "pnp_ovss"): (MODEL_DIRS["pnp_ovss"], toy_vocab, {}, scenes),
        ("toy", "pgseg"): (MODEL_DIRS["pgseg"], toy_vocab, {}, scenes),
        ("random", "pnp_ovss"): (sharp_blip_dir, random_vocab[:4], dict(presence="all", postprocess="none"),
                                 random_frames()),
        ("random", "pgseg"): (sharp_pgseg_dir, random_vocab, dict(background="never", top_k=None), random_frames()),
    }


@pytest.fixture(scope="module")
def engines(sources):
    """One segmenter per (source, method, weights dtype), loaded once; tests switch vision_dtype on it."""
    cache = {}

    def get(source: str, method: str, dtype: str):
        key = (source, method, dtype)
        if key not in cache:
            folder, vocab, overrides, _ = sources[source, method]
            seg = Segmenter.from_pretrained(str(folder), method=method, preset="tiny", device="cpu", dtype=dtype,
                                            local_files_only=True, vision_dtype="float32", **overrides)
            assert next(seg.model.parameters()).dtype == getattr(torch, dtype)
            seg.set_vocabulary(vocab)
            cache[key] = seg
        return cache[key]

    return get


def run_face(seg, face: str, frames: list[np.ndarray]) -> list[np.ndarray]:
    tensors = [torch.from_numpy(f) for f in frames]
    if face == "numpy":
        out = [seg.segment(f).labels for f in frames]
    elif face == "tensor":
        out = [seg.segment_torch(t).labels.numpy() for t in tensors]
    elif face == "batch":
        out = [r.labels for r in seg.segment_batch(frames)]
    else:
        out = [r.labels.numpy() for r in seg.segment_torch_batch(tensors)]
    assert [o.shape for o in out] == [f.shape[:2] for f in frames]
    assert max(int(o.max()) for o in out) <= len(seg.vocabulary)
    return out


@pytest.fixture(scope="module")
def reference(sources, engines):
    """(source, method) -> face -> labels of the float32 run (float32 weights, float32 pass)."""
    cache = {}

    def get(source: str, method: str) -> dict:
        if (source, method) not in cache:
            seg = engines(source, method, "float32")
            seg.update_config(vision_dtype="float32")
            frames = sources[source, method][3]
            cache[source, method] = {face: run_face(seg, face, frames) for face in FACES}
            # agreement means something only where the float32 run tells classes apart
            for labels in cache[source, method]["numpy"]:
                assert len(np.unique(labels)) > 1, f"{source} {method}: one label only in float32"
        return cache[source, method]

    return get


@pytest.mark.parametrize("dtype,vision_dtype", RUNNABLE, ids=[f"{d}-{v}" for d, v in RUNNABLE])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", ["toy", "random"])
def test_labels_agree_with_the_float32_run(source, method, dtype, vision_dtype, sources, engines, reference):
    ref = reference(source, method)
    seg = engines(source, method, dtype)
    seg.update_config(vision_dtype=vision_dtype)
    frames = sources[source, method][3]
    agreement = {}
    for face in FACES:
        labels = run_face(seg, face, frames)
        agreement[face] = float(np.mean(np.concatenate([(a == b).ravel() for a, b in zip(labels, ref[face])])))
    worst = min(agreement.values())
    bf16_pass = dtype == "bfloat16" or vision_autocast_dtype(vision_dtype, dtype, "cpu") == "bfloat16"
    if worst < AGREEMENT and (source, method) == ("random", "pnp_ovss") and bf16_pass and worst >= BLIP_BF16_FLOOR:
        # Even at fan-in scale a random BLIP's class maps win by a median ~15 % of their value while a bf16
        # pass moves them by ~2-3 % (rounding the weights alone: ~2 %), so 1-6 % of pixels flip: measured
        # 0.94-0.97 with bf16 weights, 0.987 with bf16 autocast over float32 weights. Sharper cross-attention
        # grows the error with the margin. fp16 (3 more bits) and every PGSeg row pass; the toy BLIP's bf16
        # rows check this path on decisions with margins; a row below the floor fails here.
        pytest.xfail(f"random BLIP's class maps are decided within bf16's error: agreement {agreement}")
    assert worst >= AGREEMENT, agreement


@pytest.mark.parametrize("dtype,vision_dtype", REFUSED, ids=[f"{d}-{v}" for d, v in REFUSED])
@pytest.mark.parametrize("method", METHODS)
def test_a_pass_in_the_other_half_type_is_refused_with_the_settings(method, dtype, vision_dtype, sources, engines):
    folder = str(sources["toy", method][0])
    reason = rf"vision_dtype='{vision_dtype}' cannot run over {dtype} weights"
    with pytest.raises(ValueError, match=reason):
        Segmenter.from_pretrained(folder, method=method, preset="tiny", device="cpu", dtype=dtype,
                                  local_files_only=True, vision_dtype=vision_dtype)
    seg = engines("toy", method, dtype)
    seg.update_config(vision_dtype="auto")
    with pytest.raises(ValueError, match=reason):
        seg.update_config(vision_dtype=vision_dtype)
    assert seg.config.vision_dtype == "auto"
    # the node's configure-time check knows the weights' dtype before any weights load
    check = {"pnp_ovss": ModelCheck, "pgseg": PGSegCheck}[method].from_pretrained(folder, local_files_only=True,
                                                                                  dtype=dtype)
    with pytest.raises(ValueError, match=reason):
        check.check_config(seg.config.replace(vision_dtype=vision_dtype))
    check.check_config(seg.config.replace(vision_dtype=dtype))


@pytest.mark.parametrize("dtype", MODEL_DTYPES)
def test_auto_lowers_only_float32_weights(dtype):
    """`auto` is bf16 autocast on an Ampere-or-later GPU for float32 weights (fp16 before: test_gpu_readiness);
    half weights run as they are (a bf16 pass over fp16 weights would be the refused pair)."""
    cuda = vision_autocast_dtype("auto", dtype, "cuda", capability=(8, 0))
    assert cuda == ("bfloat16" if dtype == "float32" else None)
    assert vision_autocast_dtype("auto", dtype, "cpu") is None
    for v in VISION_DTYPES:           # whatever runs autocasts float32 weights, or half weights to their own type
        for device, capability in (("cpu", None), ("cuda", (8, 0)), ("cuda", (7, 5))):
            cast = vision_autocast_dtype(v, dtype, device, capability=capability)
            assert refused(dtype, v) or cast is None or dtype == "float32" or cast == dtype, (v, device, cast)
