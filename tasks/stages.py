"""Prefect tasks: thin wrappers over ``worldnet`` stage functions.

Each task reads and writes through the data catalog, logs a nested MLflow run
(parameters, metrics, artifacts, and the hashes/run ids of its inputs for
lineage), and is cached on a key built from its input files' hashes, its
parameters and its own source — never on in-memory tensors, which hash
differently in every process.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from upath import UPath

from tasks.per_shard import backbone_spec, extract_one_task, map_with_progress, require_shared_store, write_shards_mapped
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
from tasks.tracking import EXPERIMENT, tracking_root
from worldnet.catalog import Catalog
from worldnet.data.debias import debias
from worldnet.data.ingest import enforce_strict, ingest, reject_counts
from worldnet.data.shards import ShardSpec, infer_frame, shard_frame
from worldnet.data.split import make_splits, split_counts
from worldnet.evaluate import (
    ProtocolData,
    ProtocolResult,
    cluster_step,
    evaluate_step,
    other_head_mode,
    protocol_data,
    resolve_head_mode,
    train_baselines_step,
    train_classifier_step,
    train_interpolation_step,
)
from worldnet.features.extract import feature_frame, load_features, pending_shards, remove_orphans, write_feature_frame
from worldnet.io import write_text_atomic
from worldnet.models.predictor import load_classifier, load_worldnet, save_classifier, save_worldnet
from worldnet.models.worldnet_model import HEAD_MODES, TrainConfig, WorldNet
from worldnet.report import paper_table, write_report
from worldnet.storage import local_path, relative_to

STAGES = (
    "ingest",
    "debias",
    "split",
    "shard",
    "extract_features",
    "cluster",
    "train_classifier",
    "train_interpolation",
    "train_baselines",
    "evaluate",
    "report",
    "register",
)

#: What each stage reads and writes, by catalog name (drives caching, lineage and restores).
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ingest": (("raw_images",), ("manifest_raw", "rejects")),
    "debias": (("manifest_raw",), ("manifest_debiased",)),
    "split": (("manifest_debiased",), ("splits",)),
    "shard": (("manifest_debiased", "splits"), ("image_shards", "shard_rejects")),
    "extract_features": (("image_shards",), ("feature_shards",)),
    "cluster": (("feature_shards",), ("centroids",)),
    "train_classifier": (("feature_shards", "centroids"), ("classifier",)),
    "train_interpolation": (("feature_shards", "centroids", "classifier"), ("worldnet_model",)),
    "train_baselines": (("feature_shards",), ("baseline_predictions",)),
    "evaluate": (
        ("feature_shards", "centroids", "worldnet_model", "baseline_predictions"),
        ("predictions", "metrics", "evaluation_summary"),
    ),
    "report": (("predictions", "metrics", "evaluation_summary", "worldnet_model", "centroids"), ("report",)),
    "register": (("worldnet_model", "metrics"), ()),
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
    debias_max_drop: float = 0.5
    test_fraction: float = 0.3
    val_fraction: float = 0.1
    unseen_cities: list[str] | None = None
    n_unseen: int = 5
    shard_size: int = 256
    #: Shard frame; width 0 = the photos' own median aspect at this height (a 2:1 panorama keeps its sides).
    image_width: int = 0
    image_height: int = 300
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    flat_features: bool = False
    device: str = "auto"
    cluster_strategy: str = "city"
    k: int = 23
    head_mode: str = "auto"
    #: mlp (the paper's, default) or linear (PCA whitening + softmax regression; fastest at hundreds of thousands of photos).
    classifier: str = TrainConfig.classifier
    crossfit_weight_decay: float = TrainConfig.crossfit_weight_decay
    snap: bool = True
    seed: int = 0
    protocols: list[str] = field(default_factory=lambda: ["seen", "unseen"])
    progress: bool = True
    mlflow_artifact_limit_mb: float = 256.0

    def catalog(self) -> Catalog:
        return Catalog.from_yaml(self.root, data_root=self.data_root, backbone=self.backbone)

    def tracking_root(self) -> Path:
        """Local folder for the MLflow store (see :func:`tasks.tracking.tracking_root`)."""
        return tracking_root(self.root)


def _io_paths(cfg: PipelineConfig, names: tuple[str, ...]) -> list[UPath]:
    """Concrete paths of catalog entries, expanding ``{protocol}`` and ``{mode}`` templates."""
    cat = cfg.catalog()
    out = []
    for n in names:
        template = cat.entry(n)["path"]
        protos = cfg.protocols if "{protocol}" in template else [None]
        modes = HEAD_MODES if "{mode}" in template else [None]
        for proto in protos:
            for mode in modes:
                kw = {k: v for k, v in (("protocol", proto), ("mode", mode)) if v is not None}
                out.append(cat.path(n, **kw))
    return out


#: The configuration fields each stage's result depends on: changing one reruns exactly the stages downstream of it.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "ingest": ("data_root", "dataset_kind", "strict"),
    "debias": ("debias_strategy", "debias_cap", "debias_max_share", "debias_max_drop", "seed"),
    "split": ("test_fraction", "val_fraction", "unseen_cities", "n_unseen", "seed"),
    "shard": ("shard_size", "image_width", "image_height"),
    "extract_features": ("backbone", "backbone_weights", "flat_features", "device"),
    "cluster": ("cluster_strategy", "k", "seed", "protocols"),
    "train_classifier": ("cluster_strategy", "classifier", "seed", "protocols"),
    "train_interpolation": ("cluster_strategy", "classifier", "crossfit_weight_decay", "seed", "snap", "backbone", "protocols"),
    "train_baselines": ("seed", "protocols"),
    "evaluate": ("head_mode", "snap", "seed", "protocols"),
    "report": ("head_mode", "protocols"),
}


def stage_inputs(cfg: PipelineConfig, stage: str) -> dict[str, str]:
    """Content hash of every input of ``stage``, by catalog-relative path (raw photo folders: names, sizes, times)."""
    ins, _ = STAGE_IO.get(stage, ((), ()))
    root = cfg.catalog().root
    out = {}
    for n in ins:
        for p in _io_paths(cfg, (n,)):
            key = "raw_images" if n == "raw_images" else _rel(p, root)
            out[key] = content_hash(p, raw=n == "raw_images")
    return out


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
    inputs, params, code = stage_inputs(cfg, stage), stage_params(cfg, stage), code_hash(_STAGE_FN[stage])
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
        for p in _io_paths(cfg, (n,)):
            if not p.exists():
                continue
            key = _rel(p, root) if n != "raw_images" else "raw_images"
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
def _run(cfg: PipelineConfig, stage: str, parent_run_id: str | None) -> Iterator[mlflow.ActiveRun]:
    """A nested MLflow run for one stage: lineage tags first, outputs logged on success."""
    with mlflow.start_run(run_name=stage, nested=parent_run_id is not None, parent_run_id=parent_run_id) as run:
        mlflow.set_tags({"stage": stage, "worldnet.root_id": root_id(cfg.catalog().root)})
        if stage in _STAGE_FN:  # register has no record: it always runs
            mlflow.set_tag("worldnet.key", current_key(cfg, stage)[0])
        LAST_RUN[stage] = run.info.run_id
        _lineage(cfg, stage)
        t = time.perf_counter()
        yield run
        mlflow.log_metric("stage_seconds", time.perf_counter() - t)
        _log_outputs(cfg, stage, run.info.run_id)


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
        mlflow.log_metrics(
            {
                "rows": manifest.height,
                "rejects": rejects.height,
                **{f"rejects_{k}": v for k, v in counts.items()},
                "seconds": time.perf_counter() - t,
            }
        )
        if rejects.height:
            mlflow.log_artifact(str(cat.path("rejects")))
        if cfg.strict:
            enforce_strict(rejects)
        return {"rows": manifest.height, "rejects": counts}


@task(name="debias", **STAGE_TASK)
def debias_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    cat = cfg.catalog()
    with _run(cfg, "debias", parent_run_id):
        mlflow.log_params(
            {"strategy": cfg.debias_strategy, "cap": cfg.debias_cap, "max_share": cfg.debias_max_share, "max_drop": cfg.debias_max_drop}
        )
        out, summary = debias(
            cat.load("manifest_raw"),
            cfg.debias_strategy,
            cap=cfg.debias_cap,
            max_share=cfg.debias_max_share,
            max_drop=cfg.debias_max_drop,
            seed=cfg.seed,
        )
        cat.save("manifest_debiased", out)
        mlflow.log_metrics(summary.metrics())
        mlflow.log_text(summary.table(), "debias_summary.txt")
        if summary.note:
            mlflow.set_tag("debias_note", summary.note[:500])
        if cfg.progress:
            print(summary.table() if len(summary.before_city) <= 40 else summary.line(), flush=True)
        return {"rows": out.height, "line": summary.line(), "table": summary.table()}


@task(name="split", **STAGE_TASK)
def split_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, int]:
    cat = cfg.catalog()
    with _run(cfg, "split", parent_run_id):
        splits = make_splits(
            cat.load("manifest_debiased"),
            test_fraction=cfg.test_fraction,
            val_fraction=cfg.val_fraction,
            unseen_cities=cfg.unseen_cities,
            n_unseen=cfg.n_unseen,
            seed=cfg.seed,
        )
        cat.save("splits", splits)
        counts = split_counts(splits)
        mlflow.log_metrics({k: float(v) for k, v in counts.items()})
        return counts


@task(name="shard", **STAGE_TASK)
def shard_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, int]:
    """Plan the image shards, map one ``shard-one`` task per pending shard, then index them."""
    cat = cfg.catalog()
    require_shared_store(cfg.root, "shard")
    with _run(cfg, "shard", parent_run_id):
        table = cat.load("manifest_debiased").join(cat.load("splits"), on="image_id")
        width, height = cfg.image_width, cfg.image_height
        if width == 0:
            width, height = infer_frame(table["path"].to_list(), cfg.image_height)
        spec = ShardSpec(cfg.shard_size, width, height)
        res = write_shards_mapped(table, cat.path("image_shards"), spec, progress=cfg.progress)
        cat.save("shard_rejects", res.rejects)
        mlflow.log_params({"shard_size": cfg.shard_size, "size": f"{cfg.image_width}x{cfg.image_height}"})
        mlflow.log_metrics(
            {"shards": res.index.height, "written": res.written, "skipped": res.skipped, "corrupt_images": res.rejects.height}
        )
        return {"shards": res.index.height, "corrupt_images": res.rejects.height}


@task(name="extract_features", task_run_name="extract-{cfg.backbone}", **STAGE_TASK)
def extract_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, float]:
    """Map one ``extract-one`` task per image shard whose features are missing."""
    cat = cfg.catalog()
    require_shared_store(cfg.root, "extract_features")
    with _run(cfg, "extract_features", parent_run_id):
        t = time.perf_counter()
        shards_dir, out_dir = cat.require("image_shards"), cat.path("feature_shards")
        frame = shard_frame(shards_dir)
        remove_orphans(shards_dir, out_dir)
        todo = pending_shards(shards_dir, out_dir, backbone_spec(cfg.backbone, cfg.backbone_weights, frame), cfg.flat_features)
        done = map_with_progress(
            extract_one_task,
            todo,
            desc=f"features {cfg.backbone}",
            unit="shard",
            progress=cfg.progress,
            shards_dir=str(shards_dir),
            out_dir=str(out_dir),
            backbone=cfg.backbone,
            weights=cfg.backbone_weights,
            flat=cfg.flat_features,
            device=cfg.device,
            frame=frame,
        )
        images = sum(int(d["images"]) for d in done)
        processes = len({d["pid"] for d in done})
        seconds = time.perf_counter() - t
        spec = backbone_spec(cfg.backbone, cfg.backbone_weights, frame)
        write_feature_frame(out_dir, frame, spec.input_size)
        mlflow.log_params({"backbone": cfg.backbone, "dim": spec.dim, "input_size": str(spec.input_size), "frame": str(frame)})
        ips = images / seconds if images else 0.0
        mlflow.log_metrics({"images": images, "shards_embedded": len(todo), "images_per_second": ips, "seconds": seconds})
        return {"images": images, "images_per_second": ips, "worker_processes": processes}


def _protocols(cfg: PipelineConfig) -> Iterator[tuple[str, ProtocolData]]:
    """Each protocol's data, from one read of the feature shards."""
    X, labels = load_features(cfg.catalog().require("feature_shards"))
    for proto in cfg.protocols:
        yield proto, protocol_data(X, labels, proto)


def _train_cfg(cfg: PipelineConfig) -> TrainConfig:
    return TrainConfig(seed=cfg.seed, crossfit_weight_decay=cfg.crossfit_weight_decay, classifier=cfg.classifier)


@task(name="cluster", task_run_name="cluster-{cfg.cluster_strategy}", **STAGE_TASK)
def cluster_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Centroids of each protocol's training locations."""
    cat = cfg.catalog()
    out = {}
    with _run(cfg, "cluster", parent_run_id):
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
    with _run(cfg, "train_classifier", parent_run_id):
        tc = _train_cfg(cfg)
        mlflow.log_params({"hidden": tc.hidden, "lr": tc.lr, "max_epochs": tc.max_epochs, "patience": tc.patience})
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
    with _run(cfg, "train_interpolation", parent_run_id):
        mlflow.log_params({"head_mode": cfg.head_mode, "snap": cfg.snap, "crossfit_weight_decay": cfg.crossfit_weight_decay})
        frame = feature_frame(cat.require("feature_shards"))
        for proto, data in _protocols(cfg):
            centroids = cat.load("centroids", protocol=proto)
            fit = load_classifier(cat.require("classifier", protocol=proto))
            for mode in HEAD_MODES:
                wn = train_interpolation_step(data, centroids, fit, mode, cfg.cluster_strategy, _train_cfg(cfg))
                save_worldnet(wn, cat.path("worldnet_model", protocol=proto, mode=mode), backbone=cfg.backbone, snap=cfg.snap, frame=frame)
                mlflow.log_metric(f"{proto}.{mode}.head_final_loss_km", wn.metrics["head_final_loss_km"])
                out[f"{proto}.{mode}"] = wn.metrics["head_final_loss_km"]
    return out


@task(name="train_baselines", **STAGE_TASK)
def train_baselines_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """The paper's baselines; their test predictions are the stage's output."""
    cat = cfg.catalog()
    with _run(cfg, "train_baselines", parent_run_id):
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
    with _run(cfg, "evaluate", parent_run_id):
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
    with _run(cfg, "report", parent_run_id):
        paths = write_report(results, cat.path("report"))
        return {k: str(v) for k, v in paths.items()}


#: Each stage's function, whose source is part of its key.
_STAGE_FN: dict[str, Any] = {
    "ingest": ingest_task.fn,
    "debias": debias_task.fn,
    "split": split_task.fn,
    "shard": shard_task.fn,
    "extract_features": extract_task.fn,
    "cluster": cluster_task.fn,
    "train_classifier": train_classifier_task.fn,
    "train_interpolation": train_interpolation_task.fn,
    "train_baselines": train_baselines_task.fn,
    "evaluate": evaluate_task.fn,
    "report": report_task.fn,
}
