"""The fleet's parts without Ray: which bags the inputs name, how workers are planned, and the shared bag loop
writing in bag order when batches finish out of order."""
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ovss_ros.fleet.inputs import duplicate_names, find_bags
from ovss_ros.fleet.runtime import WorkerStartError, plan_workers
from ovss_ros.ros.bag_pipeline import FrameResult, Interrupted, run_bag
from ovss_ros.toy_world.bag import write_toy_bag


@pytest.fixture(scope="module")
def bag_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    write_toy_bag(root / "a", n_frames=5)
    write_toy_bag(root / "site" / "b", n_frames=3, storage="mcap")
    (root / "loose").mkdir()
    write_toy_bag(root / "tmp_c", n_frames=3, storage="mcap")
    (root / "tmp_c" / "tmp_c.mcap").rename(root / "loose" / "c.mcap")   # a bare .mcap, no metadata.yaml
    shutil.rmtree(root / "tmp_c")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a bag")
    return root


def test_inputs_name_bag_dirs_files_globs_and_folders(bag_tree):
    r = bag_tree
    got = find_bags([str(r / "a"), str(r / "site" / "b" / "b.mcap"), str(r / "loose" / "*.mcap")])
    assert [(b.name, b.path, b.error) for b in got] == [
        ("a", r / "a", ""), ("b", r / "site" / "b", ""), ("c", r / "loose" / "c.mcap", "")]
    searched = find_bags([str(r)], exclude=r / "site")       # a folder of bags; the output folder left out
    assert [b.name for b in searched if not b.error] == ["a", "c"]
    again = find_bags([str(r / "a"), str(r / "a" / "metadata.yaml")])
    assert [b.name for b in again] == ["a"]                  # one bag named twice is labelled once


def test_inputs_naming_no_bag_become_failures_not_a_stop(bag_tree):
    got = find_bags([str(bag_tree / "notes"), str(bag_tree / "nothing*"), str(bag_tree / "a")])
    assert [bool(b.error) for b in got] == [True, True, False]
    assert "no rosbag2 directory" in got[0].error and "no such file" in got[1].error


def test_same_names_from_two_folders_are_refused(tmp_path):
    write_toy_bag(tmp_path / "x" / "run", n_frames=1)
    write_toy_bag(tmp_path / "y" / "run", n_frames=1)
    assert list(duplicate_names(find_bags([str(tmp_path / "x" / "run"), str(tmp_path / "y" / "run")]))) == ["run"]


def test_workers_fill_the_cluster_or_are_refused_when_they_cannot_fit():
    cpus, gpus = {"CPU": 8.0, "GPU": 0.0}, {"CPU": 16.0, "GPU": 2.0}
    assert plan_workers(cpus, "auto", None, 1, 2.0) == (4, 2.0, 0.0)
    assert plan_workers(gpus, "auto", None, 3, 1.0) == (6, 1.0, pytest.approx(1 / 3))
    assert plan_workers(gpus, "cpu", 2, 1, 1.0) == (2, 1.0, 0.0)           # --device cpu: no GPU reserved
    with pytest.raises(WorkerStartError, match="cannot hold 9"):
        plan_workers(cpus, "auto", 9, 1, 1.0)
    with pytest.raises(WorkerStartError):
        plan_workers(cpus, "cuda", 1, 1, 1.0)                               # cuda asked, none there


class Recorder:
    """A sink that records what it is given, in order."""

    def __init__(self):
        self.events, self.closed = [], False

    def open(self, reader, cameras):
        self.events.append(("open", tuple(c.topic for c in cameras)))

    def copy(self, conn, stamp, raw):
        self.events.append(("copy", conn.topic, stamp))

    def frame(self, conn, stamp, result):
        self.events.append(("frame", conn.topic, stamp, result.data["size"]))

    def close(self):
        self.closed = True


def _segment(frames):
    return [FrameResult(True, data={"size": len(raw)}) for _, raw in frames]


def test_batches_finishing_out_of_order_are_written_in_bag_order(bag_tree):
    """Later batches finish first here (like a fast worker next to a slow one); the sink still sees exactly
    what the one-frame-at-a-time loop of ovss-bag-segment gives it."""
    from ovss_ros.ros.bag_pipeline import done

    ref = Recorder()
    run_bag(bag_tree / "a", ref, None, lambda frames: done(_segment(frames)))
    finished, lock = [], threading.Lock()

    def slow_first(i, frames):
        time.sleep(0.05 * (3 - i % 3))        # the first of every three batches takes longest
        with lock:
            finished.append(i)
        return _segment(frames)

    with ThreadPoolExecutor(3) as pool:
        counter = iter(range(1000))
        got = Recorder()
        stats = run_bag(bag_tree / "a", got, None, lambda f: pool.submit(slow_first, next(counter), f),
                        batch_size=2, lookahead=2)
    assert finished != sorted(finished)        # batches did finish out of order
    assert got.events == ref.events and got.closed
    assert stats.frames == 10 and stats.cameras == 2   # 5 camera + 5 ground-truth images


def test_a_stop_request_interrupts_and_closes_the_sink(bag_tree):
    stop, sink = threading.Event(), Recorder()

    def submit(frames):
        stop.set()                            # Ctrl-C arrives while the first batch is out
        return ThreadPoolExecutor(1).submit(lambda: _segment(frames))

    with pytest.raises(Interrupted):
        run_bag(bag_tree / "a", sink, None, submit, batch_size=1, lookahead=4, stop=stop)
    assert sink.closed


def test_engine_node_and_bag_segment_run_without_ray():
    """Ray is the fleet's optional dependency: the rest imports and works with it made unimportable."""
    code = ("import sys; sys.modules['ray'] = None\n"
            "import ovss_ros, ovss_ros.pnp_ovss.segmenter, ovss_ros.cli, ovss_ros.ros.node, ovss_ros.ros.bag_segment\n"
            "print('ok', any(k == 'ray' or k.startswith('ray.') for k in sys.modules if sys.modules[k]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "ok False" in out.stdout, out.stderr[-2000:]


def test_a_sink_that_keeps_no_copies_reads_the_camera_topics_only(bag_tree):
    """A dataset needs the frames alone: other topics (lidar, ...) are not even read."""
    from ovss_ros.ros.bag_pipeline import done

    sink = Recorder()
    sink.copies = False
    run_bag(bag_tree / "a", sink, ["/camera/image_raw"], lambda frames: done(_segment(frames)))
    assert {e[1] for e in sink.events if e[0] in ("copy", "frame")} == {"/camera/image_raw"}
    assert len([e for e in sink.events if e[0] == "frame"]) == 5


def test_frames_go_through_the_engines_batched_path_when_it_has_one(bag_tree):
    """segment_batch, where the engine has it, gets a whole batch; a ValueError there redoes the batch frame by
    frame so only the bad frame is skipped."""
    from types import SimpleNamespace

    from rosbags.rosbag2 import Reader

    from ovss_ros.ros.bag_pipeline import segment_frames

    with Reader(str(bag_tree / "a")) as r:
        frames = [(c.msgtype, bytes(raw)) for c, _, raw in r.messages() if c.topic == "/camera/image_raw"][:3]

    class Engine:
        config = SimpleNamespace(max_image_pixels=10**8)

        def __init__(self, fail_batch):
            self.calls, self.fail_batch = [], fail_batch

        def segment_batch(self, rgbs, outputs=("labels",)):
            assert set(outputs) == {"labels", "confidence", "class_maps"}     # what a written bag carries
            self.calls.append(("batch", len(rgbs)))
            if self.fail_batch:
                raise ValueError("one frame is too large")
            return [rgb.mean() for rgb in rgbs]

        def segment(self, rgb, outputs=("labels",)):
            self.calls.append(("one", 1))
            if len(self.calls) == 3:
                raise ValueError("too large")
            return rgb.mean()

    def render(seg, res, rgb, header):
        return FrameResult(True, data={"mean": res, "sec": header.stamp.sec})

    ok = Engine(False)
    out = segment_frames(ok, frames, render)
    assert ok.calls == [("batch", 3)] and all(r.ok for r in out)
    bad = Engine(True)
    out = segment_frames(bad, frames, render)
    assert bad.calls == [("batch", 3), ("one", 1), ("one", 1), ("one", 1)]
    assert [r.ok for r in out] == [True, False, True] and out[1].reason == "too large"
    assert [r.data["mean"] for r in out if r.ok] == [o.data["mean"] for i, o in
                                                     enumerate(segment_frames(ok, frames, render)) if i != 1]


def test_a_worker_runs_the_method_the_job_names(bag_tree, tiny_pgseg_dir):
    """--method reaches every worker's Segmenter: pgseg on a PGSeg checkpoint segments and renders the bag's
    messages; pnp_ovss on it is refused by name, so the run stops before any work."""
    from rosbags.rosbag2 import Reader

    from ovss_ros.fleet.actors import JobSpec, SegmentWorker
    from ovss_ros.fleet.cli import job_record, parse_args

    args = parse_args(["in", "--out", "o", "--vocabulary", "red circle, dog", "--model", str(tiny_pgseg_dir),
                       "--method", "pgseg", "--preset", "tiny"])
    assert args.method == "pgseg" and job_record(args, ["red circle", "dog"])["method"] == "pgseg"
    assert parse_args(["in", "--out", "o", "--vocabulary", "dog"]).method is None     # what the checkpoint is
    with Reader(str(bag_tree / "a")) as r:
        frames = [(c.msgtype, bytes(raw)) for c, _, raw in r.messages() if c.topic == "/camera/image_raw"][:2]
    spec = JobSpec(model=str(tiny_pgseg_dir), vocabulary=("red circle", "dog"), method="pgseg", preset="tiny",
                   device="cpu")
    worker = SegmentWorker(spec, 0)
    assert worker.error == "" and worker.seg.method == "pgseg"
    out = worker.segment(frames)
    assert [r.ok for r in out] == [True, True] and {"labels", "class_map", "masks"} <= set(out[0].messages)
    wrong = SegmentWorker(JobSpec(model=str(tiny_pgseg_dir), vocabulary=("dog",), method="pnp_ovss",
                                  preset="tiny", device="cpu"), 1)
    assert wrong.seg is None and "method 'pnp_ovss' needs a BLIP" in wrong.error
