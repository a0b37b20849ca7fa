"""Prefect tasks: thin wrappers over ``worldnet`` stage functions.

Each task reads and writes through the data catalog, logs a nested MLflow run
(parameters, metrics, artifacts, and the hashes/run ids of its inputs for
lineage), and is cached on a key built from its input files' hashes, its
parameters and its own source — never on in-memory tensors, which hash
differently in every process.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from prefect import task
from prefect.context import TaskRunContext

from tasks.tracking import file_hash
from worldnet.catalog import Catalog
from worldnet.data.debias import debias
from worldnet.data.ingest import enforce_strict, ingest, reject_counts
from worldnet.data.shards import ShardSpec, write_shards
from worldnet.data.split import make_splits, split_counts
from worldnet.evaluate import run_protocol
from worldnet.features.backbones import build_backbone
from worldnet.features.extract import extract_features, load_features
from worldnet.models.predictor import save_worldnet
from worldnet.models.worldnet_model import TrainConfig
from worldnet.report import paper_table, write_report

STAGES = ("ingest", "debias", "split", "shard", "extract_features", "train_evaluate", "report", "register")

#: What each stage reads and writes, by catalog name (drives caching and lineage).
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ingest": (("raw_images",), ("manifest_raw", "rejects")),
    "debias": (("manifest_raw",), ("manifest_debiased",)),
    "split": (("manifest_debiased",), ("splits",)),
    "shard": (("manifest_debiased", "splits"), ("image_shards",)),
    "extract_features": (("image_shards",), ("feature_shards",)),
    "train_evaluate": (("feature_shards",), ("predictions", "metrics", "worldnet_model", "centroids")),
    "report": (("predictions", "metrics"), ("report",)),
}


@dataclass
class PipelineConfig:
    """Every knob of a pipeline run (all JSON-serialisable, logged to MLflow as params)."""

    data_root: str = ".worldnet/data/synthetic"
    root: str = ".worldnet"
    dataset_kind: str = "gsv_cities"
    strict: bool = False
    debias_strategy: str = "balance_continents"
    debias_cap: int = 100
    debias_max_share: float = 0.45
    test_fraction: float = 0.3
    val_fraction: float = 0.1
    unseen_cities: list[str] | None = None
    n_unseen: int = 5
    shard_size: int = 256
    image_width: int = 400
    image_height: int = 300
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    flat_features: bool = False
    device: str = "auto"
    cluster_strategy: str = "city"
    k: int = 23
    head_mode: str = "in_sample"
    snap: bool = True
    seed: int = 0
    protocols: list[str] = field(default_factory=lambda: ["seen", "unseen"])
    progress: bool = True

    def catalog(self) -> Catalog:
        return Catalog.from_yaml(self.root, data_root=self.data_root, backbone=self.backbone)


def _io_paths(cfg: PipelineConfig, names: tuple[str, ...]) -> list[Path]:
    cat = cfg.catalog()
    out = []
    for n in names:
        if "{protocol}" in cat.entry(n)["path"]:
            out += [cat.path(n, protocol=p) for p in cfg.protocols]
        else:
            out.append(cat.path(n))
    return out


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode())
        h.update(file_hash(p).encode() if p.exists() else b"<missing>")
    return h.hexdigest()


def stage_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache on input + output file hashes, the config, and the task's source code.

    Including the outputs means a deleted artifact is rebuilt, not served from cache.
    """
    name = context.task.name
    cfg: PipelineConfig = parameters["cfg"]
    ins, outs = STAGE_IO.get(name, ((), ()))
    src = inspect.getsource(context.task.fn)
    conf = {k: v for k, v in asdict(cfg).items() if k != "progress"}
    return hashlib.sha256(
        "|".join([name, json.dumps(conf, sort_keys=True), src, _digest(_io_paths(cfg, ins)), _digest(_io_paths(cfg, outs))]).encode()
    ).hexdigest()


def _lineage(cfg: PipelineConfig, stage: str) -> None:
    ins, _ = STAGE_IO.get(stage, ((), ()))
    for p in _io_paths(cfg, ins):
        if p.exists():
            mlflow.set_tag(f"input.{p.name}.sha256", file_hash(p)[:16])


STAGE_TASK = dict(retries=2, retry_delay_seconds=[2, 10], cache_key_fn=stage_cache_key, persist_result=True)


def _run(cfg: PipelineConfig, stage: str, parent_run_id: str | None):
    run = mlflow.start_run(run_name=stage, nested=parent_run_id is not None, parent_run_id=parent_run_id)
    mlflow.set_tag("stage", stage)
    _lineage(cfg, stage)
    return run


@task(name="ingest", task_run_name="ingest-{cfg.dataset_kind}", **STAGE_TASK)
def ingest_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    cat = cfg.catalog()
    with _run(cfg, "ingest", parent_run_id):
        t = time.perf_counter()
        manifest, rejects = ingest(cfg.dataset_kind, cfg.data_root)
        cat.save("manifest_raw", manifest)
        cat.save("rejects", rejects)
        counts = reject_counts(rejects)
        mlflow.log_params({"dataset_kind": cfg.dataset_kind, "data_root": cfg.data_root})
        mlflow.log_metrics({"rows": manifest.height, "rejects": rejects.height, **{f"rejects_{k}": v for k, v in counts.items()}, "seconds": time.perf_counter() - t})
        if rejects.height:
            mlflow.log_artifact(str(cat.path("rejects")))
        if cfg.strict:
            enforce_strict(rejects)
        return {"rows": manifest.height, "rejects": counts}


@task(name="debias", **STAGE_TASK)
def debias_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    cat = cfg.catalog()
    with _run(cfg, "debias", parent_run_id):
        out, summary = debias(cat.load("manifest_raw"), cfg.debias_strategy, cap=cfg.debias_cap, max_share=cfg.debias_max_share, seed=cfg.seed)
        cat.save("manifest_debiased", out)
        mlflow.log_params({"strategy": cfg.debias_strategy, "cap": cfg.debias_cap, "max_share": cfg.debias_max_share})
        mlflow.log_metrics({"rows_before": sum(summary.before_city.values()), "rows_after": out.height})
        mlflow.log_text(summary.table(), "debias_summary.txt")
        return {"rows": out.height, "table": summary.table()}


@task(name="split", **STAGE_TASK)
def split_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, int]:
    cat = cfg.catalog()
    with _run(cfg, "split", parent_run_id):
        splits = make_splits(
            cat.load("manifest_debiased"), test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
            unseen_cities=cfg.unseen_cities, n_unseen=cfg.n_unseen, seed=cfg.seed,
        )
        cat.save("splits", splits)
        counts = split_counts(splits)
        mlflow.log_metrics(counts)
        return counts


@task(name="shard", **STAGE_TASK)
def shard_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, int]:
    cat = cfg.catalog()
    with _run(cfg, "shard", parent_run_id):
        table = cat.load("manifest_debiased").join(cat.load("splits"), on="image_id")
        spec = ShardSpec(cfg.shard_size, cfg.image_width, cfg.image_height)
        res = write_shards(table, cat.path("image_shards"), spec, progress=cfg.progress)
        cat.save("shard_rejects", res.rejects)
        mlflow.log_params({"shard_size": cfg.shard_size, "size": f"{cfg.image_width}x{cfg.image_height}"})
        mlflow.log_metrics({"shards": res.index.height, "written": res.written, "skipped": res.skipped, "corrupt_images": res.rejects.height})
        return {"shards": res.index.height, "corrupt_images": res.rejects.height}


@task(name="extract_features", task_run_name="extract-{cfg.backbone}", **STAGE_TASK)
def extract_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, float]:
    cat = cfg.catalog()
    with _run(cfg, "extract_features", parent_run_id):
        backbone = build_backbone(cfg.backbone, cfg.backbone_weights)
        res = extract_features(
            backbone, cat.require("image_shards"), cat.path("feature_shards"), flat=cfg.flat_features, device=cfg.device, progress=cfg.progress
        )
        mlflow.log_params({"backbone": cfg.backbone, "dim": backbone.spec.dim, "input_size": str(backbone.spec.input_size)})
        mlflow.log_metrics({"images": res.images, "images_per_second": res.images_per_second, "seconds": res.seconds})
        return {"images": res.images, "images_per_second": res.images_per_second}


@task(name="train_evaluate", task_run_name="train-evaluate-{cfg.backbone}", **STAGE_TASK)
def train_evaluate_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Cluster, train worldNET and the baselines, and score them, for each protocol."""
    cat = cfg.catalog()
    X, labels = load_features(cat.require("feature_shards"))
    summary: dict[str, Any] = {}
    with _run(cfg, "train_evaluate", parent_run_id):
        mlflow.log_params({"cluster_strategy": cfg.cluster_strategy, "k": cfg.k, "head_mode": cfg.head_mode, "snap": cfg.snap})
        for proto in cfg.protocols:
            r = run_protocol(X, labels, proto, cluster_strategy=cfg.cluster_strategy, k=cfg.k, head_mode=cfg.head_mode, snap=cfg.snap, cfg=TrainConfig(seed=cfg.seed), seed=cfg.seed)
            cat.save("predictions", r.predictions, protocol=proto)
            cat.save("metrics", r.metrics, protocol=proto)
            cat.save("centroids", r.centroids, protocol=proto)
            save_worldnet(r.worldnet, cat.path("worldnet_model", protocol=proto), backbone=cfg.backbone, snap=cfg.snap)
            for row in r.metrics.iter_rows(named=True):
                key = row["model"].replace(" ", "_").replace("(", "").replace(")", "")
                mlflow.log_metrics({f"{proto}.{key}.mean_km": row["mean_km"], f"{proto}.{key}.acc_1000km": row["acc_1000km"]})
            mlflow.log_metrics({f"{proto}.classifier_val_accuracy": r.classifier["val_accuracy"], **{f"{proto}.{k}": v for k, v in r.snap.items()}})
            wn = r.metrics.filter(pl.col("model") == "worldNET").row(0, named=True)
            summary[proto] = {"worldnet_mean_km": wn["mean_km"], "table": paper_table(r.metrics)}
    return summary


@task(name="report", **STAGE_TASK)
def report_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, str]:
    from worldnet.evaluate import ProtocolResult
    from worldnet.models.predictor import load_worldnet

    cat = cfg.catalog()
    results = []
    for proto in cfg.protocols:
        wn, _, _ = load_worldnet(cat.require("worldnet_model", protocol=proto))
        results.append(ProtocolResult(proto, cat.load("predictions", protocol=proto), cat.load("metrics", protocol=proto), wn, cat.load("centroids", protocol=proto)))
    with _run(cfg, "report", parent_run_id):
        paths = write_report(results, cat.path("report"))
        for p in paths.values():
            mlflow.log_artifact(str(p), artifact_path="report")
        return {k: str(v) for k, v in paths.items()}
