"""compile=torch_compile measured (issue 18): graph breaks by dynamo's explain, compilations counted per pass
while segmenting batches of 1..4 frames, compiled state owned by its segmenter, compilation off the caller's
thread. The counting tests use dynamo's `eager` backend: how often dynamo compiles does not depend on the
backend, and inductor's C++ builds would take minutes here (test_tensor_face.py runs inductor once)."""
import threading

import numpy as np
import pytest
import torch

from ovss_ros.engine.segmenter import Segmenter
from ovss_ros.pnp_ovss import compiled, text_pass
from ovss_ros.pnp_ovss import segmenter as pnp_segmenter
from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.pnp_ovss.model_loading import load_blip

CLASSES = ["dog", "car", "tree"]


def _seg(loaded, **overrides):
    seg = Segmenter(loaded, make_config("tiny", presence_threshold=0.0, **overrides))
    seg.set_vocabulary(CLASSES)
    return seg


@pytest.fixture
def blocked_compile(monkeypatch):
    """A stand-in for a slow compilation: the warm-up waits for `release` (set it to let it finish)."""
    release, started = threading.Event(), threading.Event()

    def slow_warm_up(seg, passes):
        started.set()
        assert release.wait(60), "the test never released the compilation"
    monkeypatch.setattr(pnp_segmenter, "warm_up", slow_warm_up)
    yield release, started
    release.set()


def test_the_vision_pass_has_no_graph_break(tiny_loaded):
    seg = _seg(tiny_loaded)      # whatever attention the segmenter installs in the ViT is what is explained
    for frames in (1, 3):
        pixels = torch.randn(frames, 3, seg.input_size, seg.input_size)
        out = torch._dynamo.explain(lambda px: seg.run_vision(seg.model.vision_model, px))(pixels)
        assert out.graph_break_count == 0 and out.graph_count == 1, out.break_reasons


def test_every_text_stretch_gradcam_runs_is_one_graph(tiny_loaded, rgb):
    """The text pass as a frame runs it (presence with captured layers, GradCAM on every layer): each stretch
    between captured probabilities is one graph; requires_grad_ and the gradient stay outside them."""
    seg = _seg(tiny_loaded)
    explained = []

    def explaining_span(*args):
        explained.append(torch._dynamo.explain(text_pass.layer_span)(*args))
        return text_pass.layer_span(*args)
    seg._text_span = explaining_span
    seg.segment(rgb)
    layers = seg.check.layers(seg.config.gradcam_layer)
    assert len(explained) == len(layers) + 1        # one stretch up to each captured layer, one to the head
    assert [(e.graph_count, e.graph_break_count) for e in explained] == [(1, 0)] * len(explained)


def test_batches_of_1_to_4_frames_compile_the_vision_pass_at_most_twice(tiny_loaded, rgb, monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    seg = _seg(tiny_loaded, compile="torch_compile")
    eager = _seg(tiny_loaded)
    during = seg.segment(rgb)        # while the warm-up compiles on its thread, the same model serves eager
    assert seg.wait_compiled(600), seg.compiled.state
    np.testing.assert_array_equal(during.labels, eager.segment(rgb).labels)
    warmed = dict(seg.compiled.graphs)
    assert warmed["vision"] == 2 and warmed["text"] > 0     # 1 frame, then a symbolic batch dimension
    frames = [rgb, np.ascontiguousarray(rgb[::-1]), np.ascontiguousarray(rgb[:, ::-1]), rgb]
    for n in (1, 2, 3, 4):
        results = seg.segment_batch(frames[:n])
        for res, ref in zip(results, eager.segment_batch(frames[:n])):
            np.testing.assert_array_equal(res.labels, ref.labels)
    assert seg.compiled.graphs == warmed      # no frame compiled anything: the warm-up covered batches 1..4


def test_compiled_state_belongs_to_its_model(tiny_loaded, tiny_dir, blocked_compile):
    other = load_blip(str(tiny_dir), device="cpu", local_files_only=True)
    a, b = _seg(tiny_loaded, compile="torch_compile"), _seg(other, compile="torch_compile")
    assert a.compiled is not b.compiled and a.compiled.text is not b.compiled.text
    vision_a, vision_b = (s.compiled.vision._torchdynamo_orig_callable for s in (a, b))
    assert vision_a.__self__ is tiny_loaded.model.vision_model and vision_b.__self__ is other.model.vision_model
    # what compiles is a private copy: its own code object, so its own dynamo cache and recompile budget
    forward = type(tiny_loaded.model.vision_model).forward
    assert len({id(forward.__code__), id(vision_a.__func__.__code__), id(vision_b.__func__.__code__)}) == 3
    copies = [compiled._private_copy(text_pass.layer_span) for _ in range(2)]
    assert len({id(text_pass.layer_span.__code__), *(id(c.__code__) for c in copies)}) == 3
    module_values = [(m.__name__, k, v) for m in (text_pass, compiled) for k, v in vars(m).items()]
    held = [(m, k, x) for m, k, v in module_values for x in (v if isinstance(v, (list, tuple)) else [v])]
    assert not [(m, k) for m, k, x in held if hasattr(x, "_torchdynamo_orig_callable")]   # no module-global compiled fn
    a.update_config(compile="none")
    assert a.compiled is None and b.compiled is not None


def test_frames_run_eager_while_compiling_and_a_stale_compilation_is_dropped(tiny_loaded, rgb, blocked_compile):
    release, started = blocked_compile
    seg = _seg(tiny_loaded)
    ref = seg.segment(rgb)
    seg.update_config(compile="torch_compile")        # returns at once: the warm-up runs on its own thread
    passes = seg.compiled
    assert started.wait(30) and passes.state == "compiling"
    res = seg.segment(rgb)                             # not blocked: eager meanwhile
    np.testing.assert_array_equal(res.labels, ref.labels)
    assert seg._vision_model is tiny_loaded.model.vision_model and seg._text_span is None
    seg.update_config(compile="none")                  # switched off before the compilation ended
    release.set()
    assert passes.wait(30)
    assert seg._vision_model is tiny_loaded.model.vision_model and seg._text_span is None
    assert not seg.wait_compiled(1)


def test_a_failed_compilation_leaves_the_segmenter_eager(tiny_loaded, rgb, monkeypatch):
    def no_compiler(seg, passes):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(pnp_segmenter, "warm_up", no_compiler)
    seg = _seg(tiny_loaded, compile="torch_compile")
    assert not seg.wait_compiled(30)
    assert seg.compiled.state == "failed: RuntimeError: no C++ compiler"
    assert seg.segment(rgb).labels.shape == rgb.shape[:2]
