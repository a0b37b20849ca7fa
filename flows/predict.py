"""Batch prediction as a Prefect flow: shard the photos, map one prediction task per shard, collect.

    worldnet predict-batch PHOTOS/ [--model models:/worldnet@champion] [--task-runner dask ...] [--by-folder | --places FILE.csv]

Outputs go to the catalog's ``batch_*`` entries under ``{root}/06_predict/{batch}``:
the predictions table, one part per shard, the photos that failed to decode
(with why), and the model file used, copied beside them so every worker
reads the same bytes from the shared store. With places (each sub-folder one
place, or a CSV naming each photo's place), ``places.parquet`` beside the
predictions answers each place once from its photos' combined distributions.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from upath import UPath

from tasks.per_shard import map_with_progress, predict_one_task, require_shared_store, write_shards_mapped
from tasks.records import RootBusyError
from tasks.tracking import registry_model_file, tracking_root
from worldnet import defaults
from worldnet.catalog import Catalog
from worldnet.data.ingest import reject_counts
from worldnet.data.shards import ShardSpec
from worldnet.io import write_bytes_atomic, write_with_atomic
from worldnet.models.batch import collect_predictions, csv_places, folder_places, photo_table, place_table
from worldnet.models.fast import twin_file
from worldnet.models.predictor import load_worldnet
from worldnet.storage import as_path

#: The places table's file, beside the batch's predictions.


def places_path(cat: Catalog) -> UPath:
    """Where a batch's places table goes: beside its predictions (the catalog's ``batch_places``)."""
    return cat.path("batch_places")


def place_assignment(photos: str, table: pl.DataFrame, by_folder: bool = False, places: str | None = None) -> pl.DataFrame | None:
    """``image_id, place`` of the photos that belong to a place, or None when no places were asked for.

    Raises:
        ValueError: Both ``by_folder`` and ``places`` were given, or the places CSV is wrong (:func:`csv_places`).
    """
    if by_folder and places:
        raise ValueError("--by-folder and --places both say where the places are; give one")
    if by_folder:
        return folder_places(table)
    return csv_places(places, photos, table) if places else None


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
    root: str = defaults.ROOT,
    shard_size: int = 256,
    progress: bool = True,
    engine: str = "auto",
    by_folder: bool = False,
    places: str | None = None,
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
        by_folder: Each immediate sub-folder of ``photos`` is one place (photos directly in it belong to none).
        places: A CSV with columns ``path,place`` (paths relative to ``photos``) naming each photo's place.

    Returns:
        Counts, where the predictions and rejects are, and how many processes worked; with places,
        how many, how many had no readable photo, and where their table is.
    """
    cat = Catalog.from_yaml(root, batch=batch)
    require_shared_store(root, "predict-batch")
    with batch_lock(tracking_root(root), batch):
        return _predict_batch(cat, photos, batch, model, root, shard_size, progress, engine, by_folder, places)


def default_batch_name(photos: str | Path) -> str:
    """A batch name from the folder's name and a short hash of its full path: two folders called ``photos`` never share one."""
    folder = Path(photos).resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-.") or "photos"
    return f"{stem[:60]}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"


@contextmanager
def batch_lock(tracking: Path, batch: str) -> Iterator[None]:
    """One ``predict-batch`` per batch name at a time (an OS lock, released when the process ends, even by ``kill -9``).

    Raises:
        RootBusyError: Another process is predicting a batch of that name.
    """
    path = tracking / "locks" / f"batch-{batch}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RootBusyError(f"batch {batch!r} is being predicted by another process; wait for it, or choose another --name") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _predict_batch(
    cat: Catalog,
    photos: str,
    batch: str,
    model: str,
    root: str,
    shard_size: int,
    progress: bool,
    engine: str,
    by_folder: bool,
    places: str | None,
) -> dict[str, Any]:
    """The body of :func:`predict_batch`, under its batch lock."""
    write_bytes_atomic(cat.path("batch_model"), resolve_model(model, tracking_root(root)))
    twin_file(cat.path("batch_model"), cat.path("batch_model").parent)  # its numpy twin beside it: workers answer without PyTorch
    parts = cat.path("batch_prediction_parts")
    if parts.exists():  # a batch describes the photos given now: an earlier run's rows (other photos, another model) go
        parts.fs.rm(parts.path, recursive=True)
    table_in, left_out = photo_table(photos)
    assignment = place_assignment(photos, table_in, by_folder, places)  # a wrong CSV fails before any work
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
    place_counts: dict[str, Any] = {}
    if assignment is not None:
        wn, _, snap = load_worldnet(cat.path("batch_model"))
        placed = place_table(cat.path("batch_prediction_parts"), assignment, wn, snap=snap)
        write_with_atomic(places_path(cat), lambda tmp: placed.write_parquet(tmp))
        place_counts = {
            "places": placed.height,
            "places_without_views": int((placed["n_views"] == 0).sum()),
            "unplaced": table.height - int(placed["n_views"].sum()),
            "places_file": str(places_path(cat)),
        }
    elif places_path(cat).exists():  # a table from an earlier run with places would not describe these predictions
        places_path(cat).unlink()
    return {
        "photos": table_in.height,
        "predicted": table.height,
        "rejects": rejects.height,
        "reject_counts": reject_counts(rejects),
        "predictions": str(cat.path("batch_predictions")),
        "rejects_file": str(cat.path("batch_rejects")),
        "worker_processes": len({d["pid"] for d in done}),
        "engine": ",".join(sorted({str(d["engine"]) for d in done})),
        **place_counts,
    }
