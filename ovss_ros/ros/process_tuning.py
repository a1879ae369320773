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
  up to `trim` bytes of freed heap stay with the process. glibc gives threads their own arenas (up to 8 per
  core), each keeping up to `trim` bytes at its top, which malloc_trim does not return for thread arenas; a
  lifecycle cycle starts new threads (worker, overlay) that landed in other arenas, so RSS grew 38 MB a
  cycle for 7 cycles (toy model, benchmarks/bench_lifecycle_memory.py; 4 arenas: +13.8 % over 10 cycles, 2:
  +5.4 %). So the node's process uses one arena (`one_malloc_arena`, unless MALLOC_ARENA_MAX is set): what the
  allocator keeps is bounded by `trim` once, not per arena, and every cycle reuses it; and where the node
  frees the model (deactivate, cleanup) `release_free_memory` hands the free pages inside the heap back.

Either is skipped where the environment already sets it, so an operator's choice wins."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


def passive_openmp_wait() -> bool:
    """OMP_WAIT_POLICY=PASSIVE unless set; only effective before torch is imported. True if set here."""
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def one_malloc_arena() -> bool:
    """mallopt(M_ARENA_MAX, 1) unless MALLOC_ARENA_MAX is set: one `trim` kept in all, not one per thread
    arena (see above). glibc fixes the arena limit the first time a thread needs an arena of its own, so
    this must run before the node's imports (called from main(), after them, it had no effect). True if
    applied."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))


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


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_memory() -> bool:
    """malloc_trim(0): return the free pages of every glibc arena to the system (not only the main heap's
    top, which is all the trim threshold governs). True if memory was released; False where there is no
    glibc or nothing was free."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return bool(trim(0))
