"""Every stage task by name: the table :mod:`flows.pipeline` runs from.

The tasks live by pipeline layer in :mod:`tasks.data_stages` and
:mod:`tasks.model_stages` (``register`` in :mod:`tasks.registry`); the
configuration in :mod:`tasks.config`; keys, records and lineage in
:mod:`tasks.lineage`.
"""

from __future__ import annotations

from typing import Any

from tasks.data_stages import debias_task, extract_task, ingest_task, shard_task, split_task
from tasks.finetune_stage import finetune_task
from tasks.lineage import STAGE_FUNCTIONS
from tasks.model_stages import (
    cluster_task,
    evaluate_task,
    report_task,
    train_baselines_task,
    train_classifier_task,
    train_interpolation_task,
)

#: Each recorded stage's Prefect task (``register`` always runs and has no record).
STAGE_TASKS: dict[str, Any] = {
    "ingest": ingest_task,
    "debias": debias_task,
    "split": split_task,
    "shard": shard_task,
    "finetune": finetune_task,
    "extract_features": extract_task,
    "cluster": cluster_task,
    "train_classifier": train_classifier_task,
    "train_interpolation": train_interpolation_task,
    "train_baselines": train_baselines_task,
    "evaluate": evaluate_task,
    "report": report_task,
}

STAGE_FUNCTIONS.update({name: t.fn for name, t in STAGE_TASKS.items()})

__all__ = ["STAGE_TASKS"]
