"""``worldnet cv`` as a flow: the recorded stages of ``run`` up to the features, then grouped k-fold cross-validation.

Ingest, split, shards and features are the pipeline's own stages with their
records, so a ``cv`` and a ``run`` on one catalog root and view share them: the
second extracts nothing. The pipeline's ``finetune`` stage is off here: each
fold fine-tunes its own backbone, if asked, inside the cross-validation step.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import flow

from flows.pipeline import pipeline
from tasks.config import PipelineConfig, check_cv
from tasks.cv_stage import cross_validate_task

#: The pipeline stages cross-validation reads from.
CV_STAGES = ["ingest", "debias", "split", "shard", "finetune", "extract_features"]


def cv_config(cfg: PipelineConfig) -> PipelineConfig:
    """The configuration of the stages ``cv`` runs: ``cfg`` with the backbone as pretrained."""
    return replace(cfg, finetune="off")


@flow(name="worldnet-cv", flow_run_name="cv-{group}-{folds}")
def cv_flow(cfg: PipelineConfig, group: str = "country", folds: int = 5, wait_lock: float = 0.0) -> dict[str, Any]:
    """Bring ``CV_STAGES`` up to date on ``cfg``'s root, then score every model on folds that keep each group whole.

    ``cfg.finetune`` says whether each fold fine-tunes its own backbone (``auto``: only where a CPU can afford one per
    fold); the stages themselves always run on the pretrained backbone.

    Raises:
        ValueError: For an unknown ``group`` or a fold count outside 2..100.
    """
    check_cv(group, folds)
    frozen = cv_config(cfg)
    stages = pipeline(frozen, stages=CV_STAGES, wait_lock=wait_lock)
    result: dict[str, Any] = cross_validate_task(frozen, group, folds, cfg.finetune)
    return {**result, "input": stages.get("input"), "stages": stages}


__all__ = ["CV_STAGES", "cv_config", "cv_flow"]
