"""The data layer's stage tasks: ingest, de-bias, split, shard and extract features.

Each is a thin Prefect task over a :mod:`worldnet` function: it reads and
writes through the data catalog and logs one nested MLflow run
(:func:`tasks.lineage.stage_run`).
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
import polars as pl
from prefect import task

from tasks.config import PipelineConfig
from tasks.finetune_stage import finetuned_file, stage_weights
from tasks.lineage import STAGE_TASK, stage_run
from tasks.per_shard import backbone_spec, extract_one_task, map_with_progress, require_shared_store, write_shards_mapped
from worldnet.data.debias import debias
from worldnet.data.ingest import enforce_strict, ingest_many, reject_counts, require_rows
from worldnet.data.shards import ShardSpec, infer_frame, shard_frame
from worldnet.data.split import make_splits, split_counts
from worldnet.features.extract import pending_shards, remove_orphans, write_feature_frame
from worldnet.features.onnx_graph import weights_fingerprint
from worldnet.geo.regions import one_driving_side


@task(name="ingest", task_run_name="ingest-{cfg.dataset_kind}", **STAGE_TASK)
def ingest_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    cat = cfg.catalog()
    with stage_run(cfg, "ingest", parent_run_id):
        t = time.perf_counter()
        roots = cfg.data_roots()
        manifest, rejects, per_dataset = ingest_many(cfg.dataset_kind, roots)
        cat.save("manifest_raw", manifest)
        cat.save("rejects", rejects)
        counts = reject_counts(rejects)
        mlflow.log_params({"dataset_kind": cfg.dataset_kind, "data_root": ", ".join(roots)[:6000]})
        if len(per_dataset) > 1:
            mlflow.log_metrics({f"rows_{name}": kept for name, (_, kept) in per_dataset.items()})
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
        require_rows(manifest, rejects, ", ".join(roots), str(cat.path("rejects")))
        if cfg.strict:
            enforce_strict(rejects)
        return {"rows": manifest.height, "rejects": counts}


@task(name="debias", **STAGE_TASK)
def debias_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    cat = cfg.catalog()
    with stage_run(cfg, "debias", parent_run_id):
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
    with stage_run(cfg, "split", parent_run_id):
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
    with stage_run(cfg, "shard", parent_run_id):
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
        if cfg.strict:
            enforce_strict(res.rejects)
        return {"shards": res.index.height, "corrupt_images": res.rejects.height}


def _one_driving_side(manifest: pl.DataFrame) -> bool:
    return one_driving_side(manifest["lat"].to_numpy(), manifest["lon"].to_numpy())


@task(name="extract_features", task_run_name="extract-{cfg.backbone}", **STAGE_TASK)
def extract_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Map one ``extract-one`` task per image shard whose features are missing."""
    cat = cfg.catalog()
    require_shared_store(cfg.root, "extract_features")
    with stage_run(cfg, "extract_features", parent_run_id):
        t = time.perf_counter()
        shards_dir, out_dir = cat.require("image_shards"), cat.path("feature_shards")
        frame = shard_frame(shards_dir)
        view = cfg.view(lambda: _one_driving_side(cat.load("manifest_debiased")))  # read only for flip=auto
        remove_orphans(shards_dir, out_dir)
        weights = stage_weights(cfg)
        tuned = finetuned_file(cfg) is not None
        wid = weights_fingerprint(cfg.backbone, weights) if weights else None
        spec = backbone_spec(cfg.backbone, cfg.backbone_weights, frame, view)
        todo = pending_shards(shards_dir, out_dir, spec, cfg.flat_features, wid)
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
            finetuned=str(cat.path("finetuned_backbone")) if tuned else None,
            flat=cfg.flat_features,
            device=cfg.device,
            frame=frame,
            view=view,
            engine=cfg.engine,
            graphs_dir=str(cat.path("onnx_graphs")),
        )
        images = sum(int(d["images"]) for d in done)
        processes = len({d["pid"] for d in done})
        seconds = time.perf_counter() - t
        write_feature_frame(out_dir, frame, spec)
        engines = sorted({str(d["engine"]) for d in done})
        mlflow.log_params({"backbone": cfg.backbone, "dim": spec.dim, "input_size": str(spec.input_size), "frame": str(frame)})
        mlflow.log_params({"flip_setting": cfg.flip, "flip": spec.flip, "finetuned": tuned, "weights_id": wid or "pretrained"})
        mlflow.log_param("engine", ",".join(engines) or "none (all shards done before)")
        ips = images / seconds if images else 0.0
        mlflow.log_metrics({"images": images, "shards_embedded": len(todo), "images_per_second": ips, "seconds": seconds})
        return {"images": images, "images_per_second": ips, "worker_processes": processes, "engine": ",".join(engines)}


__all__ = ["debias_task", "extract_task", "ingest_task", "shard_task", "split_task"]
