"""Shared fixtures of the ROS tests: an isolated DDS domain, a tiny random BLIP saved once, an in-process
probe node, and node processes started with --ros-args."""
from __future__ import annotations

import os
import random
import fcntl
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from rostest_helpers import Collector, wait_until

REPO = Path(__file__).resolve().parents[2]



def _claim_domain_id() -> int:
    """A ROS domain id no other test run on this machine holds: an flock on a file per id, kept for the life
    of this process (the kernel releases it when the process ends, even on a crash)."""
    lock_dir = Path(tempfile.gettempdir()) / "ovss_ros_test_domains"
    lock_dir.mkdir(exist_ok=True)
    ids = list(range(1, 102))   # the range ROS documents as safe on every platform
    random.Random().shuffle(ids)
    for domain in ids:
        handle = open(lock_dir / f"{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _DOMAIN_LOCKS.append(handle)
        return domain
    raise RuntimeError("every ROS domain id 1..101 is held by another test run")


_DOMAIN_LOCKS: list = []
# Before anything in this process touches rclpy: node processes inherit these too.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
if os.environ.get("ROS_DISTRO") == "humble":   # Humble predates ROS_AUTOMATIC_DISCOVERY_RANGE
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(_claim_domain_id())
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_blip_dir) -> str:
    """The session's tiny random BLIP (test/conftest.py) as the path string node parameters take."""
    return str(tiny_blip_dir)


class Probe:
    """A test-side rclpy node spun in a background thread."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.rclpy = rclpy
        self.node = rclpy.create_node(f"probe_{os.getpid()}")
        self._clients: dict = {}
        self._subscriptions: list = []   # (subscription, collector), dropped when their test module ends
        # every subscription and client gets a callback group of its own: in the node's one default group a
        # service reply waits behind every message of every topic the session listens to
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def collect(self, msg_type, topic: str, qos=10) -> Collector:
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

        c = Collector()
        sub = self.node.create_subscription(msg_type, topic, c, qos,
                                            callback_group=MutuallyExclusiveCallbackGroup())
        self._subscriptions.append((sub, c))
        return c

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def drop_subscriptions(self, keep: int) -> None:
        """Destroy the subscriptions made after the first `keep` and free what they collected: left to the
        end of the session, every module's collectors go on storing every message (frames included)."""
        dropped, self._subscriptions = self._subscriptions[keep:], self._subscriptions[:keep]
        for sub, collector in dropped:
            self.node.destroy_subscription(sub)
            collector.clear()

    def call(self, srv_type, name: str, request, timeout: float = 20.0, attempts: int = 3):
        """Call a service and return its response. One client per service, kept: a new client's first request
        can go out before the server has matched the client's reply reader, and that reply is lost (a DDS
        discovery race), so an unanswered request is sent again, up to `attempts` times in `timeout`.
        Callers send only requests that may be repeated (ChangeState goes through change_state(), which
        makes the connection with GetState first)."""
        key = (srv_type, name)
        client = self._clients.get(key)
        if client is None:
            from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

            client = self._clients[key] = self.node.create_client(
                srv_type, name, callback_group=MutuallyExclusiveCallbackGroup())
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        for _ in range(attempts):
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if done.wait(timeout / attempts):
                return future.result()
            client.remove_pending_request(future)
        raise AssertionError(f"service {name} did not answer within {timeout} s")

    def wait_subscribers(self, publisher, count: int = 1, timeout: float = 20.0) -> None:
        assert wait_until(lambda: publisher.get_subscription_count() >= count, timeout), \
            f"no subscriber on {publisher.topic_name}"

    def state(self) -> str:
        """What the probe is doing, for a failed test's report: whether its executor thread runs, which of its
        entities wait for a callback the executor has not run (rclpy leaves those out of its wait set) and
        where each of its threads is."""
        import traceback

        lines = [f"executor thread alive: {self.thread.is_alive()}"]
        entities = [(f"subscription {sub.topic_name}", sub) for sub, _ in self._subscriptions]
        entities += [(f"client {client.srv_name}", client) for client in self._clients.values()]
        lines += [f"callback pending: {name}" for name, e in entities if getattr(e, "_executor_event", False)]
        frames = sys._current_frames()
        for t in threading.enumerate():
            if t is self.thread or t.name.startswith("ThreadPoolExecutor"):
                stack = traceback.format_stack(frames[t.ident])[-3:] if t.ident in frames else []
                lines.append(f"thread {t.name}:\n" + "".join(stack))
        return "\n".join(lines)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


_PROBE: list = []   # the session's probe once a test has asked for it


@pytest.fixture(scope="session")
def probe():
    import rclpy

    rclpy.init()
    p = Probe()
    _PROBE.append(p)
    yield p
    _PROBE.clear()
    p.close()
    rclpy.try_shutdown()


_RUNNING: list = []   # NodeProcess objects not stopped yet, for the report of a failed test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the tail of each running node's log and whether it is still alive:
    a service that does not answer reads the same in the test whether the node hung, died or never got the
    request."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        if _PROBE:
            report.sections.append(("the probe", _PROBE[0].state()))
        for node in _RUNNING:
            code = node.proc.poll()
            state = "running" if code is None else f"exited with {code}"
            report.sections.append((f"node {node.namespace}/{node.name} ({state}), end of its log",
                                    node.log()[-4000:]))


class NodeProcess:
    """ovss_node in its own process, configured only through --ros-args."""

    def __init__(self, log_path: Path, params: dict, namespace: str, name: str = "ovss_node",
                 extra_args=(), program=("-m", "ovss_ros.ros.node")) -> None:
        args = [sys.executable, *program, "--ros-args", "-r", f"__ns:={namespace}",
                "-r", f"__node:={name}", *extra_args]
        for key, value in params.items():
            args += ["-p", f"{key}:={_ros_value(value)}"]
        self.namespace, self.name = namespace, name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        _RUNNING.append(self)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if self in _RUNNING:
            _RUNNING.remove(self)
        return self.proc.returncode


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"'{v}'" for v in value) + "]"
    return str(value)


# Node processes of the test module running now: each is stopped when its module ends (about 0.45 GB
# each; kept for the whole session, the ~50 nodes of a run exhausted the machine's memory).
_MODULE_NODES: list = []


@pytest.fixture(scope="module", autouse=True)
def _stop_the_modules_nodes():
    """Set up before, and torn down after, every module-scoped fixture of the module that may start nodes."""
    started: list = []
    _MODULE_NODES.append(started)
    subscriptions = _PROBE[0].subscription_count if _PROBE else 0
    yield
    _MODULE_NODES.remove(started)
    for p in started:
        p.stop()
    if _PROBE:
        _PROBE[0].drop_subscriptions(subscriptions)


@pytest.fixture(scope="session")
def start_node(tmp_path_factory, tiny_model_dir):
    """start_node(namespace, **params) -> NodeProcess (tiny model, CPU); stopped when the test module that
    started it ends (at session end at the latest)."""
    procs = []

    def start(namespace: str, extra_args=(), program=("-m", "ovss_ros.ros.node"), **params) -> NodeProcess:
        base = {"model": tiny_model_dir, "preset": "tiny", "device": "cpu", "diagnostics_period": 0.5}
        log = tmp_path_factory.mktemp("node_logs") / f"{namespace.strip('/') or 'root'}.log"
        proc = NodeProcess(log, {**base, **params}, namespace, extra_args=extra_args, program=program)
        procs.append(proc)
        if _MODULE_NODES:
            _MODULE_NODES[-1].append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()




