"""Prefect flows: one per stage, and the ``pipeline`` flow that chains them.

The pipeline is one MLflow parent run; each stage is a nested run. Stages pass
nothing in memory: each reads its inputs from the data catalog, so any stage
can be rerun alone (``only``) or the chain resumed (``from_stage``); unchanged
inputs are served from Prefect's cache.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow

from tasks.registry import register_task
from tasks.stages import (
    STAGES,
    PipelineConfig,
    debias_task,
    extract_task,
    ingest_task,
    report_task,
    shard_task,
    split_task,
    train_evaluate_task,
)
from tasks.tracking import configure_mlflow

_TASKS = {
    "ingest": ingest_task,
    "debias": debias_task,
    "split": split_task,
    "shard": shard_task,
    "extract_features": extract_task,
    "train_evaluate": train_evaluate_task,
    "report": report_task,
}


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


@flow(name="worldnet-pipeline", flow_run_name="worldnet-{cfg.backbone}")
def pipeline(
    cfg: PipelineConfig | None = None,
    stages: list[str] | None = None,
    from_stage: str | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """Run the chosen stages in order under one MLflow parent run.

    Returns:
        Each stage's summary, the timings, and the MLflow parent run id.
    """
    cfg = cfg or PipelineConfig()
    Path(cfg.root).mkdir(parents=True, exist_ok=True)
    configure_mlflow(Path(cfg.root))
    todo = select_stages(stages, from_stage, only)
    out: dict[str, Any] = {"stages": todo, "timings": {}}
    with mlflow.start_run(run_name="pipeline") as parent:
        mlflow.log_params({k: str(v)[:250] for k, v in asdict(cfg).items()})
        mlflow.set_tag("stages", ",".join(todo))
        pid = parent.info.run_id
        out["mlflow_run_id"] = pid
        for stage in todo:
            t = time.perf_counter()
            if stage == "register":
                scores = {p: _worldnet_mean_km(cfg, p) for p in ("seen", "unseen") if p in cfg.protocols}
                out[stage] = register_task(cfg, scores, pid) if len(scores) == 2 else {"decision": "skipped: needs both protocols"}
            else:
                out[stage] = _TASKS[stage](cfg, pid)
            out["timings"][stage] = time.perf_counter() - t
        mlflow.log_metrics({f"seconds_{k}": v for k, v in out["timings"].items()})
    return out


def _worldnet_mean_km(cfg: PipelineConfig, protocol: str) -> float:
    import polars as pl

    m = cfg.catalog().load("metrics", protocol=protocol)
    return float(m.filter(pl.col("model") == "worldNET")["mean_km"][0])


def _stage_flow(stage: str):  # noqa: ANN202 - builds one small flow per stage
    @flow(name=f"worldnet-{stage}".replace("_", "-"))
    def stage_flow(cfg: PipelineConfig | None = None) -> dict[str, Any]:
        return pipeline.fn(cfg or PipelineConfig(), only=stage)

    return stage_flow


ingest_flow = _stage_flow("ingest")
debias_flow = _stage_flow("debias")
split_flow = _stage_flow("split")
shard_flow = _stage_flow("shard")
extract_features_flow = _stage_flow("extract_features")
train_evaluate_flow = _stage_flow("train_evaluate")
report_flow = _stage_flow("report")
register_flow = _stage_flow("register")
