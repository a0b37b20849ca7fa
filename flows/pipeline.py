"""Prefect flows: one per stage, and the ``pipeline`` flow that chains them.

The pipeline is one MLflow parent run; each stage is a nested run. Stages pass
nothing in memory: each reads its inputs from the data catalog, so any stage
can be rerun alone (``only``) or the chain resumed (``from_stage``). Prefect's
cache is off: a stage whose record under the catalog root still matches its
inputs, parameters, code and outputs is skipped (:mod:`tasks.records`,
:mod:`tasks.lineage`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import mlflow
from prefect import flow

from flows.runners import make_task_runner
from tasks.config import PIPELINE, STAGES, PipelineConfig, stage_task
from tasks.lineage import current_key, input_summary_of, record_stage, restore_outputs, up_to_date
from tasks.records import root_id, root_lock
from tasks.registry import register_task
from tasks.tracking import configure_mlflow, fail_abandoned_runs


def select_stages(stages: list[str] | None = None, from_stage: str | None = None, only: str | None = None) -> list[str]:
    """Which stages to run, in order.

    Raises:
        ValueError: For unknown stage names or conflicting options.
    """
    chosen = list(stages) if stages else list(STAGES)
    for s in chosen + [x for x in (from_stage, only) if x]:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; stages are {', '.join(STAGES)}")
    if only and from_stage:
        raise ValueError("give either only or from_stage, not both")
    if only:
        return [only]
    if from_stage:
        chosen = [s for s in chosen if STAGES.index(s) >= STAGES.index(from_stage)]
    return [s for s in STAGES if s in chosen]


def upstream_of(stage: str) -> list[str]:
    """The stages before ``stage`` whose outputs it (transitively) depends on, in order."""
    return list(STAGES[: STAGES.index(stage)])


def run_pipeline(
    cfg: PipelineConfig | None = None,
    *,
    task_runner: Any = None,
    stages: list[str] | None = None,
    from_stage: str | None = None,
    only: str | None = None,
    wait_lock: float = 0.0,
) -> dict[str, Any]:
    """Run :func:`pipeline` on ``task_runner`` (see ``flows.runners.make_task_runner``; default: threads)."""
    fl = pipeline.with_options(task_runner=task_runner) if task_runner is not None else pipeline
    result: dict[str, Any] = fl(cfg, stages=stages, from_stage=from_stage, only=only, wait_lock=wait_lock)
    return result


@flow(name="worldnet-pipeline", flow_run_name="worldnet-{cfg.backbone}")
def pipeline(
    cfg: PipelineConfig | None = None,
    stages: list[str] | None = None,
    from_stage: str | None = None,
    only: str | None = None,
    wait_lock: float = 0.0,
) -> dict[str, Any]:
    """Run the chosen stages in order under one MLflow parent run.

    A stage runs unless its record under the catalog root proves it up to
    date: same input hashes, parameters and code as when it last ran, and its
    outputs still as it wrote them (see :mod:`tasks.records`); then its state
    reads ``Up to date``. The stage named by ``only`` or ``from_stage`` always
    runs. Before it, each upstream stage is brought up to date the cheap way:
    missing outputs are restored from the MLflow run of this root that made
    them with the same inputs, then the stage is skipped if its record proves
    it, or rerun.

    Two runs on one catalog root never interleave: the second waits up to
    ``wait_lock`` seconds for the first, then stops with a clear error.

    Args:
        cfg: Every knob of the run (defaults: the synthetic demo world).
        stages: Subset of stages to run (default: all).
        from_stage: Run from this stage to the end.
        only: Run just this stage (see above).
        wait_lock: Seconds to wait for another run holding the catalog root.

    Returns:
        Each stage's summary, its state, why it ran or not, timings, restored
        artifacts, and the MLflow parent run id.
    """
    cfg = cfg or PipelineConfig()
    tracking = cfg.tracking_root()
    tracking.mkdir(parents=True, exist_ok=True)
    todo = select_stages(stages, from_stage, only)
    forced = only or from_stage
    checks = [s for s in upstream_of(forced) if s != "register"] if forced else []
    out: dict[str, Any] = {"stages": todo, "timings": {}, "states": {}, "reasons": {}, "restored": []}
    with root_lock(cfg.catalog().root, tracking, wait_lock, on_wait=lambda m: print(m, flush=True)):
        configure_mlflow(tracking)
        rid = root_id(cfg.catalog().root)
        out["abandoned_runs"] = fail_abandoned_runs(rid)
        if out["abandoned_runs"] and cfg.progress:
            print(f"marked {len(out['abandoned_runs'])} MLflow runs FAILED that a killed run on this root left RUNNING", flush=True)
        with mlflow.start_run(run_name="pipeline") as parent:
            mlflow.set_tag("worldnet.root_id", rid)
            mlflow.log_params({k: str(v)[:250] for k, v in asdict(cfg).items()})
            mlflow.set_tag("stages", ",".join(todo))
            pid = parent.info.run_id
            out["mlflow_run_id"] = pid
            for stage in checks + todo:
                t = time.perf_counter()
                if stage == "register":
                    scores: dict[str, float] = {p: _worldnet_mean_km(cfg, p) for p in ("seen", "unseen") if p in cfg.protocols}
                    out[stage] = register_task(cfg, scores, pid) if len(scores) == 2 else {"decision": "skipped: needs both protocols"}
                    out["states"][stage] = "Completed"
                else:
                    _run_or_skip(cfg, stage, pid, force=stage == forced, out=out)
                out["timings"][stage] = time.perf_counter() - t
                if cfg.progress:
                    why = out["reasons"].get(stage)
                    note = "up to date" if out["states"][stage] == "Up to date" else f"ran: {why}" if why else "ran"
                    print(f"[{len(out['timings'])}/{len(checks) + len(todo)}] {stage} {out['timings'][stage]:.1f}s ({note})", flush=True)
            summary = input_summary_of(cfg)
            if summary is not None:
                out["input"] = summary.line()
                mlflow.set_tag("input", out["input"][:5000])
            mlflow.log_metrics({f"seconds_{k}": v for k, v in out["timings"].items()})
            mlflow.set_tags({f"state.{k}": v for k, v in out["states"].items()})
            if out["restored"]:
                mlflow.set_tag("restored_from_mlflow", ",".join(out["restored"])[:5000])
    return out


def _run_or_skip(cfg: PipelineConfig, stage: str, parent_run_id: str, *, force: bool, out: dict[str, Any]) -> None:
    """Skip ``stage`` if its record proves it up to date, else run it and record it."""
    if not force:
        out["restored"] += restore_outputs(cfg, stage)
        record, why = up_to_date(cfg, stage)
        if why is None and record is not None:
            out["states"][stage] = "Up to date"
            out["reasons"][stage] = "inputs, parameters and code unchanged; outputs as recorded"
            out[stage] = record.result
            return
        out["reasons"][stage] = why
    else:
        out["reasons"][stage] = "asked for"
    key_parts = current_key(cfg, stage)
    state = stage_task(stage)(cfg, parent_run_id, return_state=True)
    out["states"][stage] = state.name
    out[stage] = state.result()
    record_stage(cfg, stage, key_parts, out[stage])


def _worldnet_mean_km(cfg: PipelineConfig, protocol: str) -> float:
    import polars as pl

    m = cfg.catalog().load("metrics", protocol=protocol)
    return float(m.filter(pl.col("model") == "worldNET")["mean_km"][0])


@flow(name="worldnet-scheduled")
def scheduled_pipeline(
    cfg: PipelineConfig | None = None,
    task_runner: str = "threads",
    dask_address: str | None = None,
    dask_workers: int | None = None,
    stages: list[str] | None = None,
    from_stage: str | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """The pipeline for deployments: ``task_runner`` (``threads``, or ``dask`` with ``dask_address`` of an
    existing scheduler or ``dask_workers`` of a LocalCluster) is a parameter, so a scheduled run can use Dask.

    A flow's task runner is fixed when the flow is built, so this flow builds
    the runner from its parameters and runs :func:`pipeline` on it as a subflow.
    """
    runner = make_task_runner(task_runner, dask_address=dask_address, dask_workers=dask_workers)
    return run_pipeline(cfg or PipelineConfig(), task_runner=runner, stages=stages, from_stage=from_stage, only=only)


def _stage_flow(stage: str):  # noqa: ANN202 - builds one small flow per stage
    @flow(name=f"worldnet-{stage}".replace("_", "-"))
    def stage_flow(
        cfg: PipelineConfig | None = None, task_runner: str = "threads", dask_address: str | None = None, dask_workers: int | None = None
    ) -> dict[str, Any]:
        runner = make_task_runner(task_runner, dask_address=dask_address, dask_workers=dask_workers)
        return run_pipeline(cfg or PipelineConfig(), task_runner=runner, only=stage)

    return stage_flow


# One flow per declared stage (``ingest_flow``, ``shard_flow``, ...): the entrypoints of prefect.yaml's stage deployments.
for _stage in PIPELINE:
    globals()[f"{_stage.name}_flow"] = _stage_flow(_stage.name)
