"""CPU runtime settings that decide inference speed more than the model does.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and returns it
on free, so each layer's activations cost page faults on every batch: with
EfficientNet-Lite0 at batch 16 on 2 cores more than half the time went to the
kernel (26 → 57 img/s once fixed). Turning off mmap'd allocations and keeping
freed memory in the heap lets the same pages be reused batch after batch.
The price is that the process keeps its peak heap until it exits, which suits
an extraction worker. Set ``WORLDNET_NO_MALLOPT=1`` to opt out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def tune_cpu_allocator() -> bool:
    """Make glibc keep and reuse large buffers; returns whether it was applied.

    A no-op (returning False) off Linux/glibc, or with ``WORLDNET_NO_MALLOPT`` set.
    Safe to call many times.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("WORLDNET_NO_MALLOPT"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError, ctypes.ArgumentError):  # musl and others have no mallopt
        return False
    _tuned = ok
    return ok


__all__ = ["tune_cpu_allocator"]
