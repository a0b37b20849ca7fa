"""Batch prediction as a Prefect flow: shard the photos, map one prediction task per shard, collect.

    worldnet predict-batch PHOTOS/ [--model models:/worldnet@champion] [--task-runner dask ...]

Outputs go to the catalog's ``batch_*`` entries under ``{root}/06_predict/{batch}``:
the predictions table, one part per shard, the photos that failed to decode
(with why), and the model file used, copied beside them so every worker
reads the same bytes from the shared store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow

from tasks.per_shard import map_with_progress, predict_one_task, require_shared_store, write_shards_mapped
from tasks.tracking import registry_model_file, tracking_root
from worldnet.catalog import Catalog
from worldnet.data.ingest import reject_counts
from worldnet.data.shards import ShardSpec
from worldnet.io import write_bytes_atomic
from worldnet.models.batch import collect_predictions, photo_table
from worldnet.models.predictor import load_worldnet
from worldnet.storage import as_path


def resolve_model(model: str, tracking: Path) -> bytes:
    """The bytes of a worldNET model: a registry URI (``models:/worldnet@champion``) or a file/URL.

    Raises:
        FileNotFoundError: The registry has no such model, or the file is missing.
    """
    if not model.startswith("models:/"):
        p = as_path(model)
        if not p.is_file():
            raise FileNotFoundError(f"model file {model} not found: pass a worldnet .pt file or models:/worldnet@champion")
        return p.read_bytes()
    return registry_model_file(model, tracking).read_bytes()


@flow(name="worldnet-predict-batch", flow_run_name="predict-{batch}")
def predict_batch(
    photos: str,
    batch: str,
    model: str = "models:/worldnet@champion",
    root: str = ".worldnet",
    shard_size: int = 256,
    progress: bool = True,
    engine: str = "auto",
) -> dict[str, Any]:
    """Geolocate every photo under ``photos``; one task per shard on the flow's task runner.

    Args:
        photos: Local folder of photos (searched recursively).
        batch: Name of this batch: its outputs go under ``{root}/06_predict/{batch}``.
        model: Registry URI or a worldnet ``.pt`` file (local or fsspec URL).
        root: Catalog root (folder or fsspec URL shared with the workers).
        shard_size: Photos per shard, i.e. per task.
        progress: Show progress bars.
        engine: Backbone engine: auto (ONNX Runtime on CPU), onnx or torch.

    Returns:
        Counts, where the predictions and rejects are, and how many processes worked.
    """
    cat = Catalog.from_yaml(root, batch=batch)
    require_shared_store(root, "predict-batch")
    write_bytes_atomic(cat.path("batch_model"), resolve_model(model, tracking_root(root)))
    table_in, left_out = photo_table(photos)
    frame = load_worldnet(cat.path("batch_model"))[0].frame or (ShardSpec.width, ShardSpec.height)
    spec = ShardSpec(shard_size=shard_size, width=frame[0], height=frame[1])  # framed as the model's training photos were
    shards = write_shards_mapped(table_in, cat.path("batch_shards"), spec, progress=progress)
    rejects = pl.concat([left_out, shards.rejects], how="vertical_relaxed")
    cat.save("batch_rejects", rejects)
    done = map_with_progress(
        predict_one_task,
        shards.index["shard"].to_list(),
        desc="predict",
        unit="shard",
        progress=progress,
        shards_dir=str(cat.path("batch_shards")),
        parts_dir=str(cat.path("batch_prediction_parts")),
        model_url=str(cat.path("batch_model")),
        engine=engine,
        graphs_dir=str(cat.path("onnx_graphs")),
    )
    table = collect_predictions(cat.path("batch_prediction_parts"))
    cat.save("batch_predictions", table)
    return {
        "photos": table_in.height,
        "predicted": table.height,
        "rejects": rejects.height,
        "reject_counts": reject_counts(rejects),
        "predictions": str(cat.path("batch_predictions")),
        "rejects_file": str(cat.path("batch_rejects")),
        "worker_processes": len({d["pid"] for d in done}),
        "engine": ",".join(sorted({str(d["engine"]) for d in done})),
    }
