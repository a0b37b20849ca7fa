"""Task runners the pipeline can run on: threads here, or a Dask cluster via ``prefect-dask``.

The per-shard stages (shard, extract_features, predict-batch) map one task per
shard through whichever runner the flow has; every other stage is one task and
runs in the flow's process either way.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

RUNNERS = ("threads", "dask")


def make_task_runner(kind: str = "threads", *, dask_address: str | None = None, dask_workers: int | None = None) -> Any:
    """Build the task runner ``kind`` names.

    Args:
        kind: ``threads`` (default: a thread pool in this process; the model
            stages and image decoding already use every core) or ``dask``.
        dask_address: Scheduler of an existing Dask cluster
            (``tcp://HOST:8786``); its workers must have worldnet installed and
            see the catalog root (a shared filesystem or an object store).
        dask_workers: Without an address, start a ``distributed.LocalCluster``
            of this many single-threaded worker processes (default: one per core).

    Raises:
        ValueError: For an unknown kind or Dask options without ``dask``.
    """
    if kind not in RUNNERS:
        raise ValueError(f"unknown task runner {kind!r}; choose one of {', '.join(RUNNERS)}")
    if kind == "threads":
        if dask_address or dask_workers:
            raise ValueError("--dask-address/--dask-workers need --task-runner dask")
        return ThreadPoolTaskRunner()
    if dask_address and dask_workers:
        raise ValueError("give --dask-address (an existing cluster) or --dask-workers (a local one), not both")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    from worldnet.parallel import default_workers

    n = dask_workers or default_workers()
    if n < 1:
        raise ValueError("--dask-workers must be at least 1")
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True, "dashboard_address": None},
    )
