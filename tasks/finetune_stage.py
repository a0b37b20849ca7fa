"""The ``finetune`` stage: the backbone's last stages trained for place, between ``shard`` and ``extract_features``.

A thin Prefect task over :mod:`worldnet.features.finetune`: it reads the image
shards through the catalog, caches the frozen stages' activations under
``finetune_cache`` (scratch, resumable), trains, and writes
``finetuned_backbone``, which the extraction stage, the saved models and
registration use. With fine-tuning off (or not applicable) the file records
why, and everything downstream runs on the pretrained backbone exactly as
before.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import polars as pl
from prefect import task

from tasks.config import PipelineConfig, finetune_epochs, resolve_finetune
from tasks.lineage import STAGE_TASK, stage_run
from worldnet.data.shards import shard_frame, shard_paths
from worldnet.features.backbones import resolve_device
from worldnet.features.finetune import (
    FinetuneConfig,
    cache_activations,
    finetune_rows,
    finetune_tail,
    load_finetuned,
    place_targets,
    save_finetuned,
)
from worldnet.features.onnx_graph import weights_fingerprint
from worldnet.geo.regions import one_driving_side
from worldnet.models.predictor import finetuned_weights
from worldnet.parallel import default_workers
from worldnet.storage import read_parquet

if TYPE_CHECKING:
    from worldnet.features.backbones import Backbone
    from worldnet.features.names import View


def finetuned_file(cfg: PipelineConfig) -> str | None:
    """A local path of this root's fine-tuned stages, or None when the backbone is not fine-tuned (off, or not yet run)."""
    cat = cfg.catalog()
    if not cat.exists("finetuned_backbone"):
        return None
    data = cat.path("finetuned_backbone").read_bytes()
    return finetuned_weights(data) if _is_tuned(data) else None


def stage_weights(cfg: PipelineConfig) -> str | None:
    """The backbone weights every stage after ``finetune`` uses: the fine-tuned stages, else the user's file (if any)."""
    return finetuned_file(cfg) or cfg.backbone_weights


def _is_tuned(data: bytes) -> bool:
    import io

    import torch

    blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return isinstance(blob, dict) and int(blob.get("stages", 0)) > 0


def tuning_backbone(cfg: PipelineConfig, labels: pl.DataFrame) -> tuple[Backbone, tuple[int, int], View, str]:
    """The pretrained backbone fine-tuning starts from (the shards' frame, the run's view), and the key of its activation cache.

    The ``finetune`` stage and ``cv``'s per-fold fine-tuning share one cache this way.
    """
    from worldnet.features.backbones import build_backbone

    frame = shard_frame(cfg.catalog().require("image_shards"))
    view = cfg.view(lambda: one_driving_side(labels["lat"].to_numpy(), labels["lon"].to_numpy()))
    backbone = build_backbone(cfg.backbone, None, frame, view)
    key = {
        "backbone": weights_fingerprint(cfg.backbone),
        "input": list(backbone.spec.input_size),
        "flip": view.flip,
        "stages": cfg.finetune_stages,
    }
    return backbone, frame, view, json.dumps(key)


@task(name="finetune", task_run_name="finetune-{cfg.backbone}", **STAGE_TASK)
def finetune_task(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Fine-tune the backbone's last stages on the photos every protocol trains on (or record why not)."""
    import torch

    cat = cfg.catalog()
    with stage_run(cfg, "finetune", parent_run_id):
        t0 = time.perf_counter()
        out = cat.path("finetuned_backbone")
        shards = shard_paths(cat.require("image_shards"))
        labels = pl.concat([read_parquet(s, columns=["image_id", "city", "lat", "lon", "place_id", *cfg.protocols]) for s in shards])
        train, val = finetune_rows(labels, cfg.protocols)
        device = resolve_device(cfg.device).type
        on, why = resolve_finetune(cfg.finetune, cfg.backbone, int(train.sum()), device)
        mlflow.log_params({"finetune": cfg.finetune, "finetune_resolved": "on" if on else "off", "finetune_reason": why})
        if not on:
            # the same bytes however it came to be off, so the stages after it do not rerun for a reason that changed
            save_finetuned(out, cfg.backbone, 0, {}, {})
            return {"finetuned": False, "reason": why}
        backbone, _, view, key = tuning_backbone(cfg, labels)
        epochs = finetune_epochs(cfg.finetune_epochs, int(train.sum()), device)
        mlflow.log_param("finetune_epochs_resolved", epochs)
        ft = FinetuneConfig(stages=cfg.finetune_stages, epochs=epochs, seed=cfg.seed)
        threads = default_workers()
        torch.set_num_threads(threads)
        cache = cat.path("finetune_cache")
        acts = cache_activations(backbone, ft.stages, shards, cache, mirror=view.flip, key=key, threads=threads, progress=cfg.progress)
        if acts.ids != labels["image_id"].to_list():
            raise RuntimeError("the fine-tune cache is out of step with the image shards; delete it and rerun the 'finetune' stage")
        t_cache = time.perf_counter() - t0
        t_tr, keep, t_va, k = place_targets(
            labels.filter(pl.Series(train)), labels.filter(pl.Series(val)), cfg.cluster_strategy, cfg.k, cfg.seed
        )
        rows_tr, rows_va = np.flatnonzero(train), np.flatnonzero(val)[keep]
        res = finetune_tail(
            backbone, acts, rows_tr, t_tr, rows_va, t_va, ft, checkpoint=cache / _checkpoint_name(key, ft), progress=cfg.progress
        )
        meta = {
            "config": ft.__dict__,
            "train_photos": len(rows_tr),
            "val_photos": len(rows_va),
            "clusters": k,
            "best_epoch": res.best_epoch,
            "history": res.history,
            "protocols": list(cfg.protocols),
            "train_ids": [str(i) for i in labels["image_id"].filter(pl.Series(train)).to_list()],
        }
        save_finetuned(out, cfg.backbone, ft.stages, res.state, meta)
        load_finetuned(out)  # read back: a file the next stage cannot use fails here
        for h in res.history:
            mlflow.log_metrics(
                {"train_loss": h["train_loss"], "val_loss": h["val_loss"], "epoch_seconds": h["seconds"]}, step=int(h["epoch"])
            )
        mlflow.log_params({"stages": ft.stages, "epochs": ft.epochs, "lr": ft.lr, "crop": ft.crop, "mirror": view.flip, "clusters": k})
        mlflow.log_metrics(
            {
                "train_photos": len(rows_tr),
                "val_photos": len(rows_va),
                "best_epoch": res.best_epoch,
                "cache_seconds": t_cache,
                "train_seconds": res.seconds,
            }
        )
        return {
            "finetuned": True,
            "train_photos": len(rows_tr),
            "val_photos": len(rows_va),
            "best_epoch": res.best_epoch,
            "epochs_run": len(res.history),
            "cache_seconds": round(t_cache, 1),
            "train_seconds": round(res.seconds, 1),
        }


def _checkpoint_name(key: str, ft: FinetuneConfig) -> str:
    return f"checkpoint-{hashlib.sha256((key + json.dumps(ft.__dict__, sort_keys=True)).encode()).hexdigest()[:12]}.pt"


__all__ = ["finetune_task", "finetuned_file", "stage_weights"]
