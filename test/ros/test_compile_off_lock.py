"""engine.compile=torch_compile never blocks the node's vocabulary or parameter paths (issue 18): the node's
worker applies both between frames under the engine lock, and the compilation runs on a thread of its own,
holding neither. A stand-in slow compilation (blocked on an event) proves it: while it is in progress the
worker applies a vocabulary and a parameter change, runs a frame (eager), and the engine lock is free."""
import threading

import numpy as np
import pytest

from ovss_ros.engine.segmenter import Segmenter
from ovss_ros.pnp_ovss import segmenter as pnp_segmenter
from ovss_ros.pnp_ovss.config import make_config
from ovss_ros.pnp_ovss.model_check import ModelCheck
from ovss_ros.pnp_ovss.model_loading import load_blip
from ovss_ros.ros.engine_state import EngineState
from ovss_ros.ros.worker import Change, Frame, LatestFrames, Worker

WAIT = 60.0   # seconds: only reached when the path under test is blocked (the test then fails)


@pytest.fixture
def slow_compile(monkeypatch):
    release, started = threading.Event(), threading.Event()

    def slow_warm_up(seg, passes):
        started.set()
        assert release.wait(2 * WAIT), "the test never released the compilation"
    monkeypatch.setattr(pnp_segmenter, "warm_up", slow_warm_up)
    yield release, started
    release.set()


def test_vocabulary_parameters_and_frames_go_on_while_the_model_compiles(tiny_blip_dir, slow_compile):
    release, started = slow_compile
    state = EngineState(ModelCheck.from_pretrained(str(tiny_blip_dir), local_files_only=True),
                        make_config("tiny", presence_threshold=0.0))
    seg = Segmenter(load_blip(str(tiny_blip_dir), device="cpu", local_files_only=True), make_config("tiny"))
    state.attach(seg)
    frames, results, errors, segmented = LatestFrames(), [], [], threading.Event()

    def process(batch):       # what FramePipeline does with the engine: a whole pass under its lock
        with state.lock:
            results.extend(state.segmenter.segment(f.msg) for f in batch)
        segmented.set()
    worker = Worker(frames, process, lambda batch, exc: errors.append(exc))
    worker.start()
    try:
        # the parameter path switches compile on: the worker applies it and is free again at once
        state.accept_config(state.check_config({"compile": "torch_compile"}))
        on = frames.put_change(Change("engine", state.apply_config))
        assert on.done.wait(WAIT) and on.outcome is None
        assert started.wait(WAIT) and seg.compiled.state == "compiling"
        vocabulary = frames.put_change(Change("vocabulary", lambda: state.apply_vocabulary(["dog", "car"])))
        assert vocabulary.done.wait(WAIT) and vocabulary.outcome is True and seg.vocabulary == ("dog", "car")
        state.accept_config(state.check_config({"threshold": 0.1}))
        param = frames.put_change(Change("engine", state.apply_config))
        assert param.done.wait(WAIT) and param.outcome is None and seg.config.threshold == 0.1
        rgb = np.random.default_rng(0).integers(0, 255, (72, 100, 3), dtype=np.uint8)
        frames.put(Frame("cam", rgb))
        assert segmented.wait(WAIT) and not errors and results[0].labels.shape == (72, 100)
        assert state.lock.acquire(timeout=WAIT)        # nobody holds the engine while it compiles
        state.lock.release()
        assert seg.compiled.state == "compiling"       # all of the above happened during the compilation
        assert seg._text_span is None                  # frames ran eager meanwhile
    finally:
        release.set()
        worker.stop(WAIT)
    assert seg.wait_compiled(WAIT)                     # then the compiled passes are swapped in
