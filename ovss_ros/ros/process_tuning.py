"""Process-wide settings of the node's process that keep what the node adds to a frame small. Measured with
benchmarks/bench_node.py on a 2-core VM (VGA frames): together they took the ROS overhead from 6.5 to about
3 ms a frame.

- OpenMP threads that sleep when idle: torch's OpenMP threads otherwise spin after every parallel region
  (libgomp's default), taking the CPU from the worker's encoding and publishing, the DDS threads, the
  overlay thread and frame reception (publishing two VGA mono8 images: 4.2 ms with spinning, 0.8 ms
  without; the engine pass itself got faster too). Must be set before torch (libgomp) loads.
- Large buffers kept in the heap (glibc): every frame allocates and frees blocks of hundreds of kB to MB
  (received image, decoded pixels, output images, their C copies and serialized forms); above glibc's mmap
  threshold (128 kB to start) each gets fresh pages and pays page faults on every byte: 2.5 ms to serialize
  one VGA rgb8 image, 0.17 ms with the threshold raised (22 ms against 2.8 ms at 1080p). The price is that
  up to `trim` bytes of freed heap stay with the process.

Either is skipped where the environment already sets it, so an operator's choice wins."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def passive_openmp_wait() -> bool:
    """OMP_WAIT_POLICY=PASSIVE unless set; only effective before torch is imported. True if set here."""
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def keep_large_buffers(mmap_threshold: int = 32 << 20, trim: int = 64 << 20) -> bool:
    """mallopt() glibc's mmap and trim thresholds, unless MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are
    set. True if applied; False where there is no glibc (musl, macOS) or the call fails."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
