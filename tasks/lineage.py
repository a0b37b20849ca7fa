"""When a stage may be skipped, and what it leaves behind: cache keys, records, lineage and the MLflow run context.

A stage's key is the hash of its inputs' contents, its parameters
(:data:`tasks.config.STAGE_PARAMS`) and its code. Its record under the catalog
root (:mod:`tasks.records`) proves it up to date on any machine; its MLflow run
carries the lineage tags (each input's fingerprint and the run that made it)
and copies of its outputs, from which a lost output is restored.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from prefect.cache_policies import NO_CACHE
from upath import UPath

from tasks.config import STAGE_IO, STAGE_PARAMS, PipelineConfig, stage_task
from tasks.records import (
    RECORDS,
    StageRecord,
    code_hash,
    content_hash,
    read_record,
    record_path,
    root_id,
    stage_key,
    why_stale,
    write_record,
)
from tasks.retry import retry_unless_user_error
from tasks.tracking import EXPERIMENT
from worldnet.data.ingest import InputSummary, input_summary
from worldnet.head_modes import HEAD_MODES
from worldnet.io import write_text_atomic
from worldnet.storage import as_path, local_path, relative_to


def _io_paths(cfg: PipelineConfig, names: tuple[str, ...]) -> list[UPath]:
    """Concrete paths of catalog entries, expanding ``{protocol}`` and ``{mode}`` templates."""
    cat = cfg.catalog()
    out: list[UPath] = []
    for n in names:
        if n == "raw_images":  # one entry per input dataset
            out.extend(as_path(r) for r in cfg.data_roots())
            continue
        template = cat.entry(n)["path"]
        protos = cfg.protocols if "{protocol}" in template else [None]
        modes = HEAD_MODES if "{mode}" in template else [None]
        for proto in protos:
            for mode in modes:
                kw = {k: v for k, v in (("protocol", proto), ("mode", mode)) if v is not None}
                out.append(cat.path(n, **kw))
    return out


def stage_inputs(cfg: PipelineConfig, stage: str) -> dict[str, str]:
    """Content hash of every input of ``stage``, by catalog-relative path (raw photo folders: names, sizes, times)."""
    ins, _ = STAGE_IO.get(stage, ((), ()))
    root = cfg.catalog().root
    out = {}
    for n in ins:
        for i, p in enumerate(_io_paths(cfg, (n,))):
            out[_input_key(n, i, p, root)] = content_hash(p, raw=n == "raw_images")
    return out


def _input_key(name: str, i: int, path: UPath, root: UPath) -> str:
    """An input's name in records and lineage tags: ``raw_images`` (``raw_images.1``, … for further datasets), else its path."""
    if name == "raw_images":
        return name if i == 0 else f"{name}.{i}"
    return _rel(path, root)


def stage_outputs(cfg: PipelineConfig, stage: str) -> dict[str, str]:
    """Content hash of every output of ``stage`` as it is on disk now."""
    _, outs = STAGE_IO.get(stage, ((), ()))
    root = cfg.catalog().root
    return {_rel(p, root): content_hash(p) for p in _io_paths(cfg, outs)}


def stage_params(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    conf = asdict(cfg)
    return {k: conf[k] for k in STAGE_PARAMS.get(stage, ())}


def current_key(cfg: PipelineConfig, stage: str) -> tuple[str, dict[str, str], dict[str, Any], str]:
    """(key, input hashes, parameters, code hash) of ``stage`` as it would run now."""
    inputs, params, code = stage_inputs(cfg, stage), stage_params(cfg, stage), code_hash(_stage_function(stage))
    return stage_key(inputs, params, code), inputs, params, code


def up_to_date(cfg: PipelineConfig, stage: str) -> tuple[StageRecord | None, str | None]:
    """(record, None) when the stage's record proves it up to date; else (record, why it must run)."""
    record = read_record(cfg.catalog().root, stage)
    key = current_key(cfg, stage)[0]
    return record, why_stale(record, key, stage_outputs(cfg, stage), root_id(cfg.catalog().root))


def record_stage(cfg: PipelineConfig, stage: str, key_parts: tuple[str, dict[str, str], dict[str, Any], str], result: Any) -> None:
    """After ``stage`` succeeded: write its record beside its outputs, and log it to the stage's MLflow run."""
    key, inputs, params, code = key_parts
    cat = cfg.catalog()
    run_id = LAST_RUN.get(stage, "")
    rec = StageRecord(stage, key, inputs, params, code, stage_outputs(cfg, stage), root_id(cat.root), run_id, result, time.time())
    path = write_record(cat.root, rec)
    if run_id and cat.local:
        mlflow.tracking.MlflowClient().log_artifact(run_id, str(local_path(path)), f"catalog/{RECORDS}")


def _producers_file(cfg: PipelineConfig) -> UPath:
    return cfg.catalog().root / "producers.json"


def _producers(cfg: PipelineConfig) -> dict[str, str]:
    f = _producers_file(cfg)
    found: dict[str, str] = json.loads(f.read_text()) if f.is_file() else {}
    return found


def _lineage(cfg: PipelineConfig, stage: str) -> None:
    """Tag the run with each input's fingerprint and the MLflow run that produced it."""
    ins, _ = STAGE_IO.get(stage, ((), ()))
    producers = _producers(cfg)
    root = cfg.catalog().root
    for n in ins:
        for i, p in enumerate(_io_paths(cfg, (n,))):
            if not p.exists():
                continue
            key = _input_key(n, i, p, root)
            mlflow.set_tag(f"input.{key}.sha256", content_hash(p, raw=n == "raw_images")[:16])
            if key in producers:
                mlflow.set_tag(f"input.{key}.run_id", producers[key])


def _rel(p: UPath, root: UPath) -> str:
    return relative_to(p, root)


def _size_mb(p: UPath) -> float:
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def _log_outputs(cfg: PipelineConfig, stage: str, run_id: str) -> None:
    """Log each output under ``catalog/<its path>`` (if small enough) so it can be restored."""
    _, outs = STAGE_IO.get(stage, ((), ()))
    cat = cfg.catalog()
    producers = _producers(cfg)
    for p in _io_paths(cfg, outs):
        if not p.exists():
            continue
        rel = _rel(p, cat.root)
        producers[rel] = run_id
        if not cat.local:  # already in a shared, durable store: record where, do not copy
            mlflow.set_tag(f"catalog.{rel}", f"in store: {p}"[:500])
            continue
        if _size_mb(p) > cfg.mlflow_artifact_limit_mb:
            mlflow.set_tag(f"catalog.{rel}", f"not logged: over {cfg.mlflow_artifact_limit_mb} MB")
            continue
        if p.is_dir():
            mlflow.log_artifacts(str(p), artifact_path=f"catalog/{rel}")
        else:
            mlflow.log_artifact(str(p), artifact_path=f"catalog/{Path(rel).parent.as_posix()}")
        mlflow.set_tag(f"catalog.{rel}", "logged")
    write_text_atomic(_producers_file(cfg), json.dumps(producers, indent=1, sort_keys=True))


def restore_outputs(cfg: PipelineConfig, stage: str) -> list[str]:
    """Download ``stage``'s missing outputs (and its record) from the MLflow run that made them here.

    Only a run tagged with this catalog root's id and this stage's current key
    (inputs, parameters and code) qualifies, so an artifact of another root,
    or of other inputs, is never restored. Runs before a stage's record
    existed are ignored for the same reason.

    Returns:
        The catalog-relative paths restored. What no qualifying run logged
        stays missing; the stage then reruns.
    """
    cat = cfg.catalog()
    if not cat.local:  # a remote root is the durable copy; MLflow holds none of it
        return []
    _, outs = STAGE_IO.get(stage, ((), ()))
    missing = [p for p in _io_paths(cfg, outs) if not p.exists()]
    rec = record_path(cat.root, stage)
    if not missing and rec.exists():
        return []
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    key = current_key(cfg, stage)[0]
    runs = mlflow.tracking.MlflowClient().search_runs(
        [exp.experiment_id],
        f"tags.`worldnet.root_id` = '{root_id(cat.root)}' and tags.`worldnet.key` = '{key}' and tags.stage = '{stage}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return []
    root = local_path(cat.root)
    restored: list[str] = []
    for p in [*missing, rec]:
        rel = _rel(p, cat.root)
        if p.exists():
            continue
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            try:
                got = Path(mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path=f"catalog/{rel}", dst_path=tmp))
            except Exception:  # noqa: BLE001 - not logged (too large, or a remote root): the stage reruns
                continue
            dest = local_path(p)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(got, dest)  # same filesystem: atomic
        restored.append(rel)
    return restored


#: Prefect's own cache is off: whether a stage is up to date is decided by its record under the catalog root
#: (:mod:`tasks.records`), which travels with the catalog to any machine and any ``PREFECT_HOME``.
STAGE_TASK: dict[str, Any] = dict(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless_user_error,
    cache_policy=NO_CACHE,
    persist_result=False,
)


#: MLflow run id of each stage's latest run in this process (its record names it).
LAST_RUN: dict[str, str] = {}


@contextmanager
def stage_run(cfg: PipelineConfig, stage: str, parent_run_id: str | None) -> Iterator[mlflow.ActiveRun]:
    """A nested MLflow run for one stage: lineage tags first, outputs logged on success."""
    with mlflow.start_run(run_name=stage, nested=parent_run_id is not None, parent_run_id=parent_run_id) as run:
        mlflow.set_tags({"stage": stage, "worldnet.root_id": root_id(cfg.catalog().root)})
        if stage != "register":  # register has no record: it always runs
            mlflow.set_tag("worldnet.key", current_key(cfg, stage)[0])
        LAST_RUN[stage] = run.info.run_id
        _lineage(cfg, stage)
        t = time.perf_counter()
        yield run
        mlflow.log_metric("stage_seconds", time.perf_counter() - t)
        _log_outputs(cfg, stage, run.info.run_id)


def input_summary_of(cfg: PipelineConfig) -> InputSummary | None:
    """Read, kept and rejected rows of this root's input (ingest's rejects and the shard stage's corrupt images).

    ``None`` before the ingest stage has ever run on this root.
    """
    cat = cfg.catalog()
    if not cat.exists("manifest_raw") or not cat.exists("rejects"):
        return None
    tables = [(cat.load("rejects"), str(cat.path("rejects")))]
    if cat.exists("shard_rejects"):
        tables.append((cat.load("shard_rejects"), str(cat.path("shard_rejects"))))
    manifest = cat.load("manifest_raw")
    kept = manifest.height - (tables[1][0].height if len(tables) > 1 else 0)
    return input_summary(kept, *tables, manifest=manifest)


def _stage_function(stage: str) -> Callable[..., Any]:
    """The function of ``stage``'s task, whose source is part of its key (found by the stage's declaration)."""
    fn: Callable[..., Any] = stage_task(stage).fn
    return fn


__all__ = [
    "LAST_RUN",
    "STAGE_TASK",
    "current_key",
    "input_summary_of",
    "record_stage",
    "restore_outputs",
    "stage_inputs",
    "stage_outputs",
    "stage_params",
    "stage_run",
    "up_to_date",
]
