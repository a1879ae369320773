"""Every weights `dtype` x every `vision_dtype`, both methods, on the CPU: labels agree with the float32 run
through the numpy face (one frame per call), the tensor face and both batch faces, on the embedded toy models
(trained: decisions with margins) and on the session's random-weight models (saved like real checkpoints).

The pairs torch cannot run (an encoder pass in one half type over weights in the other) are refused when the
settings are made, by the segmenter and by the node's configure-time check, never on the first frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ovss_ros.config import MODEL_DTYPES, VISION_DTYPES, vision_autocast_dtype
from ovss_ros.model_check import ModelCheck
from ovss_ros.pgseg.loading import METHODS, PGSegCheck
from ovss_ros.segmenter import Segmenter
from ovss_ros.toy_world import MODEL_DIRS
from ovss_ros.toy_world.world import class_names, make_scene, scene_seed

AGREEMENT = 0.99
HALF = ("bfloat16", "float16")
N_SCENES = 5          # the first held-out scenes; pixels pooled over them
FACES = ("numpy", "tensor", "batch", "tensor_batch")


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
def sources(tiny_blip_dir, tiny_pgseg_dir):
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
        ("random", "pnp_ovss"): (tiny_blip_dir, random_vocab[:4], dict(presence="all", postprocess="none"),
                                 random_frames()),
        ("random", "pgseg"): (tiny_pgseg_dir, random_vocab, dict(background="never", top_k=None), random_frames()),
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
    half = dtype != "float32" or vision_autocast_dtype(vision_dtype, dtype, "cpu") is not None
    if worst < AGREEMENT and source == "random" and half:
        # Random weights decide on differences under the half types' resolution (2^-8 bf16, 2^-11 fp16): the
        # tiny BLIP's class GradCAM maps differ by ~1e-3 of their value, GroupViT's first grouping's top-2 soft
        # assignments by ~1e-4 on ~0.04 (its weights rounded to bf16 but computed in float32 keep 99.9 %). The
        # toy models' rows check the same paths on decisions with margins.
        pytest.xfail(f"random weights decide below half precision's resolution: agreement {agreement}")
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
    """`auto` is bf16 autocast on CUDA for float32 weights; half weights run as they are (a bf16 pass over
    fp16 weights would be the refused pair)."""
    cuda = vision_autocast_dtype("auto", dtype, "cuda")
    assert cuda == ("bfloat16" if dtype == "float32" else None)
    assert vision_autocast_dtype("auto", dtype, "cpu") is None
    for v in VISION_DTYPES:           # whatever runs autocasts float32 weights, or half weights to their own type
        for device in ("cpu", "cuda"):
            cast = vision_autocast_dtype(v, dtype, device)
            assert refused(dtype, v) or cast is None or dtype == "float32" or cast == dtype, (v, device, cast)
