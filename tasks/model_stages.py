"""The model layer's stage tasks: cluster, train the classifier, the interpolation heads and the baselines, evaluate, report.

Each protocol (``seen``, ``unseen``) is trained and scored separately from one
read of the feature shards; see :mod:`worldnet.evaluate` for the steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import mlflow
import polars as pl
from prefect import task

from tasks.config import PipelineConfig
from tasks.finetune_stage import finetuned_file
from tasks.lineage import STAGE_TASK, input_summary_of, stage_run
from worldnet.evaluate import ProtocolResult, evaluate_step
from worldnet.features.extract import feature_frame, feature_view, load_features
from worldnet.features.finetune import load_finetuned
from worldnet.head_modes import HEAD_MODES, other_head_mode, resolve_head_mode
from worldnet.io import write_text_atomic
from worldnet.models.predictor import load_classifier, load_worldnet, save_classifier, save_worldnet
from worldnet.models.worldnet_model import TrainConfig, WorldNet
from worldnet.protocol import (
    MIN_HEAD_ROWS,
    ProtocolData,
    cluster_step,
    protocol_data,
    train_baselines_step,
    train_classifier_step,
    train_interpolation_step,
)
from worldnet.report import paper_table, write_report


def _protocols(cfg: PipelineConfig) -> Iterator[tuple[str, ProtocolData]]:
    """Each protocol's data, from one read of the feature shards."""
    X, labels = load_features(cfg.catalog().require("feature_shards"))
    for proto in cfg.protocols:
        yield proto, protocol_data(X, labels, proto)


def train_config(cfg: PipelineConfig) -> TrainConfig:
    """The library's training configuration for this run."""
    return TrainConfig(
        seed=cfg.seed,
        crossfit_weight_decay=cfg.crossfit_weight_decay,
        classifier=cfg.classifier,
        members=cfg.members,
        feature_power=cfg.feature_power,
    )


@task(name="cluster", task_run_name="cluster-{cfg.cluster_strategy}", **STAGE_TASK)
def cluster_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Centroids of each protocol's training locations."""
    cat = cfg.catalog()
    out = {}
    with stage_run(cfg, "cluster", parent_run_id):
        mlflow.log_params({"cluster_strategy": cfg.cluster_strategy, "k": cfg.k})
        for proto, data in _protocols(cfg):
            centroids = cluster_step(data, cfg.cluster_strategy, cfg.k, cfg.seed)
            cat.save("centroids", centroids, protocol=proto)
            mlflow.log_metric(f"{proto}.clusters", centroids.height)
            out[proto] = centroids.height
    return out


@task(name="train_classifier", task_run_name="classifier-{cfg.backbone}", **STAGE_TASK)
def train_classifier_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """The centroid classifier per protocol; logs its validation accuracy."""
    cat = cfg.catalog()
    out = {}
    with stage_run(cfg, "train_classifier", parent_run_id):
        tc = train_config(cfg)
        mlflow.log_params(
            {
                "hidden": tc.hidden,
                "lr": tc.lr,
                "max_epochs": tc.max_epochs,
                "patience": tc.patience,
                "members": tc.members,
                "feature_power": tc.feature_power,
            }
        )
        for proto, data in _protocols(cfg):
            fit = train_classifier_step(data, cat.load("centroids", protocol=proto), cfg.cluster_strategy, tc)
            save_classifier(fit, cat.path("classifier", protocol=proto))
            mlflow.log_metrics({f"{proto}.{k}": v for k, v in fit.metrics.items()})
            out[proto] = fit.metrics
    return out


@task(name="train_interpolation", task_run_name="interpolation-{cfg.head_mode}", **STAGE_TASK)
def train_interpolation_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Both interpolation heads (in_sample and crossfit) over the frozen classifier."""
    cat = cfg.catalog()
    out: dict[str, Any] = {}
    with stage_run(cfg, "train_interpolation", parent_run_id):
        mlflow.log_params({"head_mode": cfg.head_mode, "snap": cfg.snap, "crossfit_weight_decay": cfg.crossfit_weight_decay})
        frame = feature_frame(cat.require("feature_shards"))
        view = feature_view(cat.require("feature_shards"), cfg.backbone)
        tuned = finetuned_file(cfg)  # the fine-tuned stages travel inside each model
        tuned_ids = [str(i) for i in load_finetuned(tuned).meta.get("train_ids", [])] if tuned else []  # type: ignore[attr-defined]
        for proto, data in _protocols(cfg):
            centroids = cat.load("centroids", protocol=proto)
            fit = load_classifier(cat.require("classifier", protocol=proto))
            rows = None
            if tuned:  # the crossfit head fits on training photos the backbone never trained on (worldnet.protocol.head_rows_for)
                rows = ~data.train["image_id"].is_in(tuned_ids).to_numpy()
                rows = rows if rows.sum() >= MIN_HEAD_ROWS else None
                mlflow.log_metric(f"{proto}.crossfit_head_rows", int(rows.sum()) if rows is not None else data.train.height)
            for mode in HEAD_MODES:
                wn = train_interpolation_step(
                    data, centroids, fit, mode, cfg.cluster_strategy, train_config(cfg), rows if mode == "crossfit" else None
                )
                save_worldnet(
                    wn,
                    cat.path("worldnet_model", protocol=proto, mode=mode),
                    backbone=cfg.backbone,
                    snap=cfg.snap,
                    frame=frame,
                    view=view,
                    finetuned=tuned,
                )
                mlflow.log_metric(f"{proto}.{mode}.head_final_loss_km", wn.metrics["head_final_loss_km"])
                out[f"{proto}.{mode}"] = wn.metrics["head_final_loss_km"]
    return out


@task(name="train_baselines", **STAGE_TASK)
def train_baselines_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """The paper's baselines; their test predictions are the stage's output."""
    cat = cfg.catalog()
    with stage_run(cfg, "train_baselines", parent_run_id):
        for proto, data in _protocols(cfg):
            cat.save("baseline_predictions", train_baselines_step(data, seed=cfg.seed), protocol=proto)
    return {"protocols": list(cfg.protocols)}


def _load_worldnets(cfg: PipelineConfig, proto: str) -> dict[str, WorldNet]:
    """The reported head mode as ``worldNET``, and the other mode under its own label."""
    cat = cfg.catalog()
    mode = resolve_head_mode(cfg.head_mode, proto)
    other, other_label = other_head_mode(mode)
    return {
        "worldNET": load_worldnet(cat.require("worldnet_model", protocol=proto, mode=mode))[0],
        other_label: load_worldnet(cat.require("worldnet_model", protocol=proto, mode=other))[0],
    }


@task(name="evaluate", **STAGE_TASK)
def evaluate_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Score worldNET and the baselines on each protocol; predictions and metrics tables."""
    cat = cfg.catalog()
    summary: dict[str, Any] = {}
    with stage_run(cfg, "evaluate", parent_run_id):
        for proto, data in _protocols(cfg):
            worldnets = _load_worldnets(cfg, proto)
            r = evaluate_step(
                data,
                worldnets,
                cat.load("baseline_predictions", protocol=proto),
                cat.load("centroids", protocol=proto),
                snap=cfg.snap,
                seed=cfg.seed,
            )
            cat.save("predictions", r.predictions, protocol=proto)
            cat.save("metrics", r.metrics, protocol=proto)
            for row in r.metrics.iter_rows(named=True):
                key = row["model"].replace(" ", "_").replace("(", "").replace(")", "")
                mlflow.log_metrics({f"{proto}.{key}.mean_km": row["mean_km"], f"{proto}.{key}.acc_1000km": row["acc_1000km"]})
            mlflow.log_metrics(
                {f"{proto}.classifier_val_accuracy": r.classifier["val_accuracy"], **{f"{proto}.{k}": v for k, v in r.snap.items()}}
            )
            write_text_atomic(cat.path("evaluation_summary", protocol=proto), json.dumps({"snap": r.snap, "classifier": r.classifier}))
            wn = r.metrics.filter(pl.col("model") == "worldNET").row(0, named=True)
            summary[proto] = {"worldnet_mean_km": wn["mean_km"], "table": paper_table(r.metrics)}
    return summary


@task(name="report", **STAGE_TASK)
def report_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, str]:
    """Tables (Markdown + CSV), maps, CDFs and the continent confusion matrix."""
    cat = cfg.catalog()
    results = []
    for proto in cfg.protocols:
        wn, _, _ = load_worldnet(cat.require("worldnet_model", protocol=proto, mode=resolve_head_mode(cfg.head_mode, proto)))
        notes = json.loads(cat.require("evaluation_summary", protocol=proto).read_text())
        preds, metrics, centroids = (cat.load(n, protocol=proto) for n in ("predictions", "metrics", "centroids"))
        results.append(ProtocolResult(proto, preds, metrics, wn, centroids, notes["snap"], notes["classifier"]))
    with stage_run(cfg, "report", parent_run_id):
        summary = input_summary_of(cfg)
        paths = write_report(results, cat.path("report"), input_line=summary.line() if summary else None)
        return {k: str(v) for k, v in paths.items()}


__all__ = [
    "cluster_task",
    "evaluate_task",
    "report_task",
    "train_baselines_task",
    "train_classifier_task",
    "train_interpolation_task",
]
