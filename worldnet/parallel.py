"""Process pools that work from any caller, scripts and notebooks included.

``spawn`` would demand an ``if __name__ == "__main__"`` guard in every user's
script, so on Linux we fork (the workers only render or decode images; they
never touch torch). Elsewhere we fall back to the platform default.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor


def default_workers() -> int:
    """Worker processes to use by default: every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A process pool of ``workers`` processes (default: all cores)."""
    n = workers or default_workers()
    method = "fork" if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context(method))
