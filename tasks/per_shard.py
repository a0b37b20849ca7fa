"""Per-shard Prefect tasks: the units the shard, extract and batch-predict stages map over.

A stage task plans the shards, then ``.map`` s one of these over them through
the flow's task runner: threads in this process by default, or the workers of
a Dask cluster (``worldnet run --task-runner dask``). Each task is idempotent
(its output is committed atomically and recognised as done on a rerun), so
Prefect's retries and Dask's rescheduling of a lost worker are both safe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import polars as pl
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped
from tqdm import tqdm
from upath import UPath

from tasks.retry import retry_unless_user_error
from worldnet.data.shards import ShardJob, ShardResult, ShardSpec, collect_shards, plan_shards, write_shard
from worldnet.features.backbones import Backbone, BackboneSpec, build_backbone
from worldnet.features.engine import OnnxBackbone, build_engine
from worldnet.features.extract import extract_features
from worldnet.features.names import View
from worldnet.features.onnx_graph import weights_fingerprint
from worldnet.models.batch import predict_shard
from worldnet.models.fast import load_predictor
from worldnet.models.predictor import Predictor, finetuned_weights
from worldnet.parallel import default_workers
from worldnet.storage import as_path, shared_across_processes

T = TypeVar("T")

#: One model at a time per process: with the thread runner the mapped extract
#: tasks queue here and each gets every core, instead of N models fighting.
MODEL_LOCK = threading.Lock()

PER_SHARD: dict[str, Any] = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_unless_user_error, cache_policy=NO_CACHE)


def runs_in_this_process() -> bool:
    """Whether the current flow's task runner runs tasks in this process (threads)."""
    ctx = FlowRunContext.get()
    return ctx is None or isinstance(ctx.task_runner, ThreadPoolTaskRunner)


def require_shared_store(root: str, stage: str) -> None:
    """Refuse a process-private store (``memory://``) when tasks run in other processes."""
    if not shared_across_processes(root) and not runs_in_this_process():
        raise ValueError(
            f"the {stage!r} stage maps tasks onto other processes, which cannot see {root} "
            "(memory:// lives in one process): use --task-runner threads, or a shared store such as file:// or s3://"
        )


def worker_threads() -> int | None:
    """Threads this task may use: its Dask worker's share, or None (every core) outside Dask."""
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return int(get_worker().state.nthreads)
    except ValueError:  # not on a Dask worker
        return None


@lru_cache(maxsize=4)
def cached_backbone(name: str, weights: str | None, frame: tuple[int, int] | None = None, view: View | None = None) -> Backbone:
    """Build each backbone once per process, frame and view (a Dask worker embeds many shards)."""
    return build_backbone(name, weights, frame, view)


@lru_cache(maxsize=4)
def cached_engine(
    name: str,
    weights: str | None,
    frame: tuple[int, int] | None,
    view: View | None,
    engine: str,
    device: str,
    flat: bool,
    graphs_dir: str | None,
    threads: int | None,
) -> Backbone | OnnxBackbone:
    """Each backbone on its engine once per process (see :func:`worldnet.features.engine.build_engine`)."""
    return build_engine(name, weights, frame, view=view, engine=engine, device=device, flat=flat, graphs_dir=graphs_dir, threads=threads)


def backbone_spec(name: str, weights: str | None, frame: tuple[int, int] | None = None, view: View | None = None) -> BackboneSpec:
    """The spec of a backbone, built (once per process) under the model lock."""
    with MODEL_LOCK:
        return cached_backbone(name, weights, frame, view).spec


# Task functions must pickle by reference (Dask ships them to workers; by
# value would drag module globals such as MODEL_LOCK along), so they have their
# own module-level names (``_shard_one``), apart from the Task objects: a
# reference to ``shard_one_task`` would find the Task, not the function.


def _shard_one(job: ShardJob) -> dict[str, object]:
    """Write one image shard (resize + re-encode); corrupt images become listed rejects."""
    return write_shard(job)


shard_one_task = task(name="shard-one", task_run_name="shard-{job.index:05d}", **PER_SHARD)(_shard_one)


def _extract_one(
    shard: str,
    shards_dir: str,
    out_dir: str,
    backbone: str,
    weights: str | None,
    flat: bool,
    device: str,
    frame: tuple[int, int] | None = None,
    engine: str = "auto",
    graphs_dir: str | None = None,
    view: View | None = None,
    finetuned: str | None = None,
) -> dict[str, Any]:
    """Embed one image shard into its feature shard (``pid`` says which process did it, ``engine`` on what).

    ``finetuned``: the catalog's fine-tuned stages (any store); each process reads them into its local cache.
    """
    if finetuned is not None:
        weights = finetuned_weights(as_path(finetuned).read_bytes())
    with MODEL_LOCK:  # building under the lock too: two threads seeding one global RNG would interleave draws
        threads = worker_threads()
        model = cached_engine(backbone, weights, tuple(frame) if frame else None, view, engine, device, flat, graphs_dir, threads)
        wid = weights_fingerprint(backbone, weights) if weights else None
        res = extract_features(
            model, shards_dir, out_dir, only=[shard], threads=threads, flat=flat, device=device, progress=False, weights_id=wid
        )
    used = "onnx" if isinstance(model, OnnxBackbone) else "torch"
    return {"images": res.images, "seconds": res.seconds, "pid": os.getpid(), "engine": used}


extract_one_task = task(name="extract-one", task_run_name="extract-{shard}", **PER_SHARD)(_extract_one)


@lru_cache(maxsize=2)
def cached_predictor(model_url: str, engine: str = "auto", graphs_dir: str | None = None, threads: int | None = None) -> Predictor:
    """Load each model once per process (a Dask worker predicts many shards): ONNX Runtime and numpy, or PyTorch for ``torch``.

    The batch's model file has its numpy twin beside it (``flows.predict`` writes it), so a worker builds no
    backbone in PyTorch (:func:`worldnet.models.fast.load_predictor`).
    """
    return load_predictor(as_path(model_url), engine=engine, graph_dirs=[graphs_dir] if graphs_dir else [], threads=threads)


def _predict_one(
    shard: str, shards_dir: str, parts_dir: str, model_url: str, engine: str = "auto", graphs_dir: str | None = None
) -> dict[str, Any]:
    """Predict one image shard into its part file (``pid`` says which process did it, ``engine`` on what)."""
    with MODEL_LOCK:
        threads = worker_threads()
        predictor = cached_predictor(model_url, engine, graphs_dir, threads)
        torch.set_num_threads(threads or default_workers())
        rows = predict_shard(predictor, as_path(shards_dir) / shard, parts_dir)
    return {"rows": rows, "pid": os.getpid(), "engine": predictor.engine}


predict_one_task = task(name="predict-one", task_run_name="predict-{shard}", **PER_SHARD)(_predict_one)


def map_with_progress(
    fn: Any, items: Sequence[T], *, desc: str, unit: str, size: Callable[[T], int] = lambda _: 1, progress: bool = True, **common: Any
) -> list[Any]:
    """``fn.map(items, **common)`` through the flow's task runner, with a progress bar; results in item order.

    Raises the first failure (after the task's own retries) so the stage fails
    loudly; what other tasks committed stays committed and a rerun skips it.
    """
    if not items:
        return []
    futures = fn.map(list(items), **{k: unmapped(v) for k, v in common.items()})
    order = {f.task_run_id: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    with tqdm(total=sum(size(x) for x in items), desc=desc, unit=unit, disable=not progress) as bar:
        for fut in as_completed(futures):
            i = order[fut.task_run_id]
            results[i] = fut.result()
            bar.update(size(items[i]))
    return results


def write_shards_mapped(table: pl.DataFrame, out_dir: UPath, spec: ShardSpec, *, progress: bool = True) -> ShardResult:
    """Plan ``table`` 's shards, write the pending ones as mapped ``shard-one`` tasks, index them all."""
    plan = plan_shards(table, out_dir, spec)
    map_with_progress(shard_one_task, plan.jobs, desc="image shards", unit="shard", progress=progress)
    return collect_shards(plan, written=len(plan.jobs))
