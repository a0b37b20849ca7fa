"""Grouped k-fold cross-validation over a catalog root's recorded features (``worldnet cv``'s last step).

The features come from the same recorded stages as ``worldnet run`` (see
:mod:`flows.cv`), so a ``cv`` and a ``run`` on one root and view share their
shards and features. With fine-tuning, each fold fine-tunes its own backbone
on its training photos only, from one activation cache of every photo.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import polars as pl
from prefect import task

from tasks.config import PipelineConfig, finetune_epochs, resolve_finetune
from tasks.finetune_stage import tuning_backbone
from tasks.lineage import STAGE_TASK
from tasks.model_stages import train_config
from worldnet.data.shards import shard_paths
from worldnet.evaluate import ProtocolResult, cross_validate
from worldnet.features.backbones import resolve_device
from worldnet.features.extract import load_features
from worldnet.geo.regions import country_of


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@task(name="cross_validate", task_run_name="cv-{group}-{folds}", **STAGE_TASK)
def cross_validate_task(cfg: PipelineConfig, group: str, folds: int, finetune: str = "off") -> dict[str, Any]:
    """Every model scored on out-of-fold predictions pooled over ``folds`` folds that keep each ``group`` whole."""
    X, labels = load_features(cfg.catalog().require("feature_shards"))
    fold_photos, device = labels.height * (folds - 1) // folds, resolve_device(cfg.device).type
    tuned, why = resolve_finetune(finetune, cfg.backbone, fold_photos, device, backbones=folds)
    epochs = finetune_epochs(cfg.finetune_epochs, fold_photos, device, backbones=folds)
    _say(f"fine-tuning: {f'on, {epochs} epochs' if tuned else 'off'} ({why})")
    keys = country_of(labels["lat"].to_numpy(), labels["lon"].to_numpy()) if group == "country" else labels["city"].to_numpy()
    groups = np.array([str(g) for g in keys])
    train_cfg = train_config(cfg)
    with mlflow.start_run(run_name="cv"):
        mlflow.log_params({"group": group, "folds": folds, "finetune": finetune, "finetune_resolved": "on" if tuned else "off"})
        res: ProtocolResult = cross_validate(
            X,
            labels,
            groups,
            n_folds=folds,
            cluster_strategy=cfg.cluster_strategy,
            k=cfg.k,
            head_mode=cfg.head_mode,
            seed=cfg.seed,
            cfg=train_cfg,
            progress=lambda f, n, secs: _say(f"fold {f + 1}/{n} done in {secs:.1f}s"),
            fold_features=_fold_finetuner(cfg, labels, epochs) if tuned else None,
        )
        for row in res.metrics.iter_rows(named=True):
            mlflow.log_metric(f"{row['model']}_mean_km".replace(" ", "_").replace("(", "").replace(")", ""), row["mean_km"])
    return {"metrics": res.metrics, "images": labels.height, "groups": len(set(groups))}


def _fold_finetuner(
    cfg: PipelineConfig, labels: pl.DataFrame, epochs: int
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Each fold's fine-tuned features, from one activation cache of every photo (:func:`worldnet.features.finetune.fold_finetuner`)."""
    from worldnet.features.backbones import build_backbone
    from worldnet.features.finetune import FinetuneConfig, cache_activations, fold_finetuner
    from worldnet.parallel import default_workers

    cat = cfg.catalog()
    bb, frame, view, key = tuning_backbone(cfg, labels)
    stages = cfg.finetune_stages
    shards = shard_paths(cat.require("image_shards"))
    acts = cache_activations(bb, stages, shards, cat.path("finetune_cache"), mirror=view.flip, key=key, threads=default_workers())
    order = {i: n for n, i in enumerate(acts.ids)}
    if set(order) != set(labels["image_id"].to_list()):
        raise RuntimeError("the fine-tune cache is out of step with the features; rerun with `worldnet run --only shard`")
    if acts.ids != labels["image_id"].to_list():
        acts.data = acts.data[[order[i] for i in labels["image_id"].to_list()]]
        acts.ids = labels["image_id"].to_list()
    return fold_finetuner(
        lambda: build_backbone(cfg.backbone, None, frame, view),
        acts,
        labels,
        FinetuneConfig(stages=stages, epochs=epochs, seed=cfg.seed),
        strategy=cfg.cluster_strategy,
        k=cfg.k,
        progress=cfg.progress,
    )


__all__ = ["cross_validate_task"]
