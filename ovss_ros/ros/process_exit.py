"""How the node's process ends after SIGINT/SIGTERM or the shutdown transition: within a second, also in the
middle of a frame (docs/ros_node.md, "Lifecycle").

Measured with 4000 x 3000 rgb8 frames streaming in (every output subscribed, 2 shared cores at load 5-8),
where the time went before: joining the worker and overlay threads (they were given 0.5 s and 0.2 s and used
them while the frame ran: 0.2-0.56 s) and waiting up to 1 s for a publish in progress to leave the publish
gate. What is left: 0.001-0.1 s for the signal to reach main(), 0.04-0.13 s of clean-up here (destroying
subscriptions and publishers, the node, rclpy's shutdown), and 0.1-0.6 s from os._exit until the process is
gone, which is the kernel unmapping its ~0.9 GB (exit_mmap; a bare process with 800 MB takes 0.25-0.3 s to
exit on the same loaded cores): the one part that grows with the process's memory and the machine's load.

So the exit path waits for no thread: the gate is closed without waiting (a publish already under way
finishes on its own; rclpy destroys a publisher only once it is not in use), the worker and overlay threads
are told to stop and not joined (daemon threads; the closed gate keeps them from publishing), the node and
rclpy are shut down so peers see it leave, and the process ends with os._exit after flushing Python's and
C's stdio (rcutils logs through C stdio): waiting for torch to finish the frame, and tearing down torch and
the model at interpreter exit, take seconds and change nothing. A deadline thread ends the process with the
same status if that clean-up itself hangs."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from typing import Callable

EXIT_BUDGET = 0.3   # s from the start of the clean-up to os._exit, at the latest (it takes 0.04-0.13 s)
EXECUTOR_WAIT = 0.05   # s for executor threads to leave their callbacks (they store, or publish diagnostics)


def flush_output() -> None:
    """Python's and C's buffered output (os._exit flushes neither)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):   # closed or replaced stream: nothing to keep
            pass
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").fflush(None)
    except (OSError, AttributeError):   # no C library to flush (not glibc/musl)
        pass


def end_process(code: int) -> None:
    flush_output()
    os._exit(code)


class ExitDeadline:
    """Ends the process with code() if it is still running `seconds` after start(): the clean-up after a
    signal must not turn into a wait for a thread or for DDS."""

    def __init__(self, code: Callable[[], int], seconds: float = EXIT_BUDGET) -> None:
        self._timer = threading.Timer(seconds, lambda: end_process(code()))
        self._timer.daemon = True
        self._timer.name = "ovss-exit-deadline"

    def start(self) -> "ExitDeadline":
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()
