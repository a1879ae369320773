"""ovss-label-bags on a local Ray runtime with two workers and the embedded toy model: several small toy bags
(sqlite3 and mcap) and a corrupt one; outputs equal ovss-bag-segment's, the corrupt bag fails alone with its
reason, an interrupted run resumes, and the dataset manifest matches the labels."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image

from ovss_ros.msg import ClassMap, SegmentationMasks

from ovss_ros.fleet import cli
from ovss_ros.toy_world.bag import IMAGE_TOPIC, write_toy_bag
from ovss_ros.toy_world.world import class_names

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
MODEL = str(REPO / "ovss_ros" / "data" / "toy_blip")
VOCAB = ", ".join(class_names("pattern"))
LABELS = "/camera/segmentation/labels"
COMMON = ["--vocabulary", VOCAB, "--model", MODEL, "--preset", "tiny", "--device", "cpu", "--topics", IMAGE_TOPIC,
          "--no-progress"]
TYPES = {"labels": Image, "confidence": Image, "overlay": Image, "masks": SegmentationMasks, "class_map": ClassMap}
GOOD = {"b0": (4, "sqlite3"), "b1": (3, "mcap"), "b2": (5, "sqlite3")}    # name: (frames, storage)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray runtime (2 CPUs) for the module: the CLI uses it in this process, and subprocesses join
    it by address like a user's existing cluster. Shut down at the end of the module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ctx = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("in")
    for i, (name, (n, storage)) in enumerate(GOOD.items()):
        write_toy_bag(root / name, seed=i, n_frames=n, storage=storage)
    write_toy_bag(root / "corrupt", seed=9, n_frames=3)
    db = root / "corrupt" / "corrupt.db3"
    data = bytearray(db.read_bytes())
    data[100:4000] = bytes(range(256)) * 15 + bytes(60)              # the SQLite header and schema garbled
    db.write_bytes(bytes(data))
    _with_broken_frame(root / "b0", root / "broken_frame", index=2)
    return root


def _with_broken_frame(src, dst, index):
    """A copy of a good bag whose index-th camera message is garbage: the bag opens, its first frames are
    segmented, then a worker cannot deserialize one (a failure in the middle of the work)."""
    from ovss_ros.ros.bag_io import copy_connection, open_writer

    with Reader(str(src)) as r, open_writer(str(dst), "sqlite3") as w:
        conns = {c.id: copy_connection(w, c) for c in r.connections}
        seen = 0
        for c, t, raw in r.messages():
            if c.topic == IMAGE_TOPIC:
                seen += 1
                raw = raw[:40] + bytes([255]) * 40 if seen == index + 1 else raw
            w.write(conns[c.id], t, bytes(raw))


def messages(path):
    with Reader(str(path)) as r:
        return [(c.topic, t, bytes(raw)) for c, t, raw in r.messages()]


def report(out):
    return json.loads((out / "fleet_report.json").read_text())


@pytest.fixture(scope="module")
def labelled(cluster, bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "labelled"
    rc = cli.main([str(bags), "--out", str(out), "--workers", "2", "--frames-per-batch", "2", *COMMON])
    return rc, out


def test_every_good_bag_is_labelled_and_the_corrupt_one_fails_alone(labelled, bags):
    rc, out = labelled
    assert rc == 1                                        # a failure is reported in the exit status
    rep = report(out)
    assert rep["bags"] == {"total": 5, "ok": 3, "skipped_complete": 0, "failed": 2, "interrupted": 0,
                           "not_started": 0}
    failures = {f["bag"]: f["reason"] for f in rep["failures"]}
    assert "corrupt.db3" in failures.pop("corrupt")                   # unreadable: found before any work
    assert "deserialize" in failures.pop("broken_frame") and not failures   # failed in the middle
    assert sorted(p.name for p in out.iterdir()) == ["b0", "b1", "b2", "fleet_job.json", "fleet_report.json"]
    for name, (n, _) in GOOD.items():
        assert len([m for m in messages(out / name) if m[0] == LABELS]) == n
    assert rep["frames"] == sum(n for n, _ in GOOD.values())
    workers = rep["workers"]
    assert len(workers) == 2 and all(w["frames"] > 0 for w in workers)        # the work was shared
    # the workers also segmented broken_frame's first batch, whose bag then failed
    assert sum(w["frames"] for w in workers) == rep["frames"] + 2 and rep["fps"] > 0


@pytest.mark.parametrize("name", ["b0", "b1"])           # sqlite3 and mcap
def test_output_equals_ovss_bag_segment(labelled, bags, tmp_path, name):
    """Same messages, same order, same stamps, equal field by field (the serializer leaves CDR padding bytes
    undefined, so outputs are compared deserialized; the originals byte for byte). Single-threaded torch on
    both sides (each worker takes --cpus-per-worker threads), so the arithmetic is the same."""
    _, out = labelled
    ref = tmp_path / "ref"
    run = subprocess.run([sys.executable, "-m", "ovss_ros.ros.bag_segment", str(bags / name), str(ref), *COMMON[:-1]],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    want, got = messages(ref), messages(out / name)
    assert [m[:2] for m in got if m[0] == LABELS] == [m[:2] for m in want if m[0] == LABELS]
    assert [m[:2] for m in got] == [m[:2] for m in want]
    for (topic, _, a), (_, _, b) in zip(got, want):
        if "/segmentation/" in topic:
            cls = TYPES[topic.rsplit("/", 1)[1]]
            assert deserialize_message(a, cls) == deserialize_message(b, cls), topic
        else:
            assert a == b, topic


def test_dataset_manifest_matches_the_labels(cluster, bags, labelled, tmp_path):
    _, bag_out = labelled
    out = tmp_path / "ds"
    rc = cli.main([str(bags / "b[0-9]"), "--out", str(out), "--kind", "dataset", "--workers", "2", *COMMON])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["bag"] for r in rows] == [name for name, (n, _) in GOOD.items() for _ in range(n)]
    classes = json.loads((out / "classes.json").read_text())["classes"]
    assert classes == [c.strip() for c in VOCAB.split(",")]
    for name in GOOD:
        want = {}
        for topic, t, raw in messages(bag_out / name):
            if topic == LABELS:
                m = deserialize_message(raw, Image)
                want[t] = (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.header.frame_id,
                           np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width))
        mine = [r for r in rows if r["bag"] == name]
        assert [r["bag_time"] for r in mine] == list(want)          # every frame, in bag order
        for r in mine:
            stamp, frame_id, labels = want[r["bag_time"]]
            png = cv2.imread(str(out / r["labels"]), cv2.IMREAD_UNCHANGED)
            assert (png == labels).all() and r["stamp"] == stamp and r["frame_id"] == frame_id
            assert r["topic"] == IMAGE_TOPIC and (r["height"], r["width"]) == labels.shape
            ids = np.bincount(labels.ravel(), minlength=len(classes) + 1)
            assert r["pixels"] == {"background": int(ids[0]), **{c: int(ids[k]) for k, c in enumerate(classes, 1)
                                                                  if ids[k]}}
            assert r["classes"] == [c for c in classes if c in r["pixels"]]


def wait_until(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _state(path: Path):
    return sorted((str(p.relative_to(path)), p.stat().st_ino, p.stat().st_mtime_ns) for p in [path, *path.rglob("*")])


def test_interrupted_run_leaves_only_complete_outputs_and_resumes(cluster, tmp_path):
    """Ctrl-C once some bags are complete: nothing half-written under a final name; a rerun leaves the
    complete bags untouched and does the rest. The first run starts its own local runtime (no --address,
    as a user would), the rerun joins the module's runtime by address (an existing cluster)."""
    src, out = tmp_path / "in", tmp_path / "out"
    names = [f"r{i}" for i in range(6)]
    for i, name in enumerate(names):
        write_toy_bag(src / name, seed=i, n_frames=4, storage="mcap" if i % 2 else "sqlite3")
    args = [str(src), "--out", str(out), "--workers", "2", "--frames-per-batch", "1", *COMMON]
    # Ctrl-C as from a terminal: a suite started in the background by a non-interactive shell ignores SIGINT, and
    # the child would inherit that; a caught signal is reset to its default in the child at exec
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ovss_ros.fleet.cli", *args, "--num-cpus", "2",
                                 "--debug-extra-latency", "1.0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    try:
        assert wait_until(lambda: any((out / n).exists() for n in names) or proc.poll() is not None, 240)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, log[-3000:]
    done = [n for n in names if (out / n).exists()]
    assert 1 <= len(done) < len(names), log[-3000:]
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())
    for n in done:                                             # whatever has a final name is whole
        assert len([m for m in messages(out / n) if m[0] == LABELS]) == 4
    rep = report(out)
    assert rep["interrupted"] and rep["bags"]["ok"] == len(done) and rep["address"] == "local"
    before = {n: _state(out / n) for n in done}

    rerun = subprocess.run([sys.executable, "-m", "ovss_ros.fleet.cli", *args, "--address", cluster],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    rep = report(out)
    assert rep["bags"]["skipped_complete"] == len(done) and rep["bags"]["ok"] == len(names) - len(done)
    assert rep["address"] == cluster and rep["cluster"]["CPU"] == 2
    assert {n: _state(out / n) for n in done} == before       # not rewritten
    for n in names:
        assert len([m for m in messages(out / n) if m[0] == LABELS]) == 4


def test_a_rerun_with_other_settings_is_refused(labelled, bags):
    _, out = labelled
    assert cli.main([str(bags / "b0"), "--out", str(out), *COMMON[:-1], "--no-progress", "--no-overlay"]) == 2
