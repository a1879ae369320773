"""Ray: a local runtime or an existing cluster, and a pool of SegmentWorker actors.

Batches go to the worker with the fewest unfinished batches (counted until each finishes, not until the
driver reads it), so a worker slowed by a heavy batch gets less, and every bag's batches spread over all
workers."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from typing import Optional

from .actors import JobSpec, SegmentWorker


_OWN_RUNTIME = False


class WorkerStartError(RuntimeError):
    """The workers could not be started (no resources, model not loadable, bad vocabulary)."""


# Ray is the `fleet` extra, not a dependency of the ROS package: a robot built with colcon has none
RAY_MISSING = ("Ray is not installed; it is the optional `fleet` extra of ovss_ros: "
               "pip install '.[fleet]' in the ovss_ros checkout, or pip install 'ray>=2.60'")


def require_ray() -> None:
    """WorkerStartError with RAY_MISSING when Ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise WorkerStartError(RAY_MISSING) from exc


def start_runtime(address: Optional[str], num_cpus: Optional[int] = None, num_gpus: Optional[int] = None) -> float:
    """ray.init: a local runtime on this machine (address None) or an existing cluster ('auto', HOST:PORT).
    Returns the seconds it took."""
    # no usage-statistics upload (offline robots, privacy) unless the user asked for it
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    global _OWN_RUNTIME
    if ray.is_initialized():    # the caller's runtime (a notebook, the tests): use it and leave it running
        return 0.0
    t0 = time.perf_counter()
    kwargs = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)   # never RAY_ADDRESS
    _OWN_RUNTIME = True
    return time.perf_counter() - t0


def stop_runtime() -> None:
    """Shuts down the runtime start_runtime started, not one it found running."""
    global _OWN_RUNTIME
    import ray

    if _OWN_RUNTIME and ray.is_initialized():
        ray.shutdown()
    _OWN_RUNTIME = False


def cluster_resources() -> dict:
    import ray

    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)), "nodes": len(ray.nodes())}


def plan_workers(resources: dict, device: str, workers: Optional[int], workers_per_gpu: int,
                 cpus_per_worker: float) -> tuple[int, float, float]:
    """(workers, CPUs each, GPUs each). GPUs are used when the cluster has some and --device is not cpu;
    without --workers the cluster is filled (GPUs x workers per GPU, else CPUs / CPUs per worker)."""
    use_gpu = resources["GPU"] > 0 and device != "cpu"
    gpus_each = 1.0 / workers_per_gpu if use_gpu else 0.0
    fit = int(resources["GPU"] * workers_per_gpu) if use_gpu else int(resources["CPU"] // cpus_per_worker)
    n = workers if workers else max(1, fit)
    if n > max(fit, 0) or (not use_gpu and device.startswith("cuda")):
        need = f"{n} x ({cpus_per_worker:g} CPU" + (f", {gpus_each:g} GPU)" if use_gpu else ")")
        raise WorkerStartError(f"the cluster cannot hold {need}: it has {resources['CPU']:g} CPUs and "
                               f"{resources['GPU']:g} GPUs (lower --workers or --cpus-per-worker, or add machines)")
    return n, float(cpus_per_worker), gpus_each


class WorkerPool:
    def __init__(self, spec: JobSpec, n: int, cpus_each: float, gpus_each: float):
        import ray

        remote = ray.remote(SegmentWorker)
        # a worker process that dies (out of memory, a crash) is restarted and its batch retried once
        self.actors = [remote.options(num_cpus=cpus_each, num_gpus=gpus_each, max_restarts=2,
                                      max_task_retries=1).remote(spec, i) for i in range(n)]
        self.load = [0] * n
        self.next = 0
        self.lock = threading.Lock()

    def wait_ready(self, timeout: float) -> list[dict]:
        """Every worker's info once its model is loaded; WorkerStartError with the first worker's reason."""
        import ray

        refs = [a.info.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if len(ready) < len(refs):
            raise WorkerStartError(f"{len(refs) - len(ready)} of {len(refs)} workers not started after "
                                   f"{timeout:g} s (resources taken by other jobs?)")
        infos = ray.get(refs)
        errors = [i["error"] for i in infos if i["error"]]
        if errors:
            raise WorkerStartError(errors[0])
        return infos

    def submit(self, frames: list) -> Future:
        """One batch to the least busy worker; a Future of its FrameResults."""
        with self.lock:
            n = len(self.load)
            # least busy; ties go round the workers so idle ones all get work
            i = min(((self.next + k) % n for k in range(n)), key=self.load.__getitem__)
            self.load[i] += 1
            self.next = (i + 1) % n
        fut = self.actors[i].segment.remote(frames).future()
        fut.add_done_callback(lambda _f, i=i: self._finished(i))
        return fut

    def _finished(self, i: int) -> None:
        with self.lock:
            self.load[i] -= 1

    def close(self) -> None:
        """End the workers (frees their resources on a runtime that stays up)."""
        import ray

        for a in self.actors:
            ray.kill(a)

    def stats(self, timeout: float = 30.0) -> list[dict]:
        import ray

        try:
            return ray.get([a.stats.remote() for a in self.actors], timeout=timeout)
        except Exception as exc:   # noqa: BLE001 - a dead worker must not hide the run's report
            return [{"error": f"worker statistics unavailable: {exc}"}]
