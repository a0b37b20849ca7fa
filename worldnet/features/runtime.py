"""CPU runtime settings that decide inference speed more than the model does.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and returns it
on free, so each layer's activations cost page faults on every batch: with
EfficientNet-Lite0 at batch 16 on 2 cores more than half the time went to the
kernel (26 → 57 img/s once fixed). Turning off mmap'd allocations and keeping
freed memory in the heap lets the same pages be reused batch after batch.
The price is that the process keeps its peak heap until it exits, which suits
an extraction worker. Set ``WORLDNET_NO_MALLOPT=1`` to opt out.

Threads: glibc gives each new thread its own arena, whose heaps are capped at
64 MiB and trimmed on their own terms, so the fix above does not reach a model
run from a worker thread (a Prefect or Dask task): 2-thread extraction fell
from 46 to 27 img/s there. One arena for the whole process restores it
(:func:`single_malloc_arena`); it must be set before the threads first
allocate, hence at start-up (``MALLOC_ARENA_MAX=1`` for child processes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_tuned = False


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or os.environ.get("WORLDNET_NO_MALLOPT"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def single_malloc_arena() -> bool:
    """Serve every thread from glibc's main arena; returns whether it was applied.

    Call at process start, before worker threads exist (threads keep the arena
    they first allocated from). A no-op off glibc or with ``WORLDNET_NO_MALLOPT``.
    """
    libc = _libc()
    try:
        return bool(libc and libc.mallopt(_M_ARENA_MAX, 1))
    except (AttributeError, ctypes.ArgumentError):
        return False


def tune_cpu_allocator() -> bool:
    """Make glibc keep and reuse large buffers; returns whether it was applied.

    A no-op (returning False) off Linux/glibc, or with ``WORLDNET_NO_MALLOPT`` set.
    Safe to call many times.
    """
    global _tuned
    if _tuned:
        return True
    libc = _libc()
    if libc is None:
        return False
    try:
        ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
        libc.mallopt(_M_ARENA_MAX, 1)  # threads created from now on share the tuned main arena
    except (AttributeError, ctypes.ArgumentError):  # musl and others have no mallopt
        return False
    _tuned = ok
    return ok


__all__ = ["single_malloc_arena", "tune_cpu_allocator"]
