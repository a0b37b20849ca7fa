"""Batch prediction: a folder of photos → image shards → one predictions file per shard → one table.

The same shard machinery as training (decode + resize once, corrupt images
listed as rejects, atomic commits), so the flow in ``flows/predict.py`` can map
one task per shard onto Dask workers and a rerun redoes only missing parts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
from upath import UPath

from worldnet.data.photos import PHOTO_SUFFIXES, list_photos
from worldnet.data.schema import rejects_frame
from worldnet.data.shards import iter_shard_rows
from worldnet.features.extract import decode_for
from worldnet.io import write_with_atomic
from worldnet.models.predictor import Predictor
from worldnet.storage import as_path, read_parquet, sorted_glob

PREDICTION_SCHEMA = {
    "image_id": pl.String,
    "lat": pl.Float64,
    "lon": pl.Float64,
    "country": pl.String,
    "continent": pl.String,
    "top_cluster": pl.String,
    "top_p": pl.Float64,
    "snapped_km": pl.Float64,
}


def photo_table(folder: str | os.PathLike[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every photo under ``folder`` (recursively), as rows the shard writer takes, and the files left out.

    ``image_id`` is the path relative to ``folder``, so names may repeat across
    sub-folders. Location columns are empty: these photos are what we predict.
    Files that are not photos by name (:data:`~worldnet.data.photos.PHOTO_SUFFIXES`,
    the formats ``predict`` reads) come back as rejects (``not_a_photo``), so
    nothing under the folder is silently ignored.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or holds no photos.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of photos: pass the folder that holds them")
    files, skipped = list_photos(root)
    if not files:
        raise FileNotFoundError(f"no photos ({'/'.join(PHOTO_SUFFIXES)}) under {root}; {len(skipped)} other files")
    n = len(files)
    left_out = rejects_frame(
        [
            {
                "source": str(root),
                "image_id": p.relative_to(root).as_posix(),
                "path": str(p),
                "reason": "not_a_photo",
                "detail": f"name ends {p.suffix or '(no suffix)'}: not one of {' '.join(PHOTO_SUFFIXES)} (or a hidden file)",
            }
            for p in skipped
        ]
    )
    table = pl.DataFrame(
        {
            "image_id": [p.relative_to(root).as_posix() for p in files],
            "city": [""] * n,
            "lat": [float("nan")] * n,
            "lon": [float("nan")] * n,
            "continent": [""] * n,
            "seen": [""] * n,
            "unseen": [""] * n,
            "path": [str(p) for p in files],
        }
    )
    return table, left_out


def part_name(shard: str) -> str:
    """Predictions file of image shard ``shard``."""
    return shard.replace("shard-", "pred-")


def predict_shard(predictor: Predictor, shard: str | Path | UPath, parts_dir: str | Path | UPath, *, batch_size: int = 32) -> int:
    """Predict every image of one shard into ``parts_dir/pred-k.parquet`` (atomically); returns its rows.

    A part already there with the shard's row count is kept (a rerun or a
    retried task does no work twice).
    """
    shard_path, parts = as_path(shard), as_path(parts_dir)
    target = parts / part_name(shard_path.name)
    n_rows = read_parquet(shard_path, columns=["image_id"]).height
    if target.is_file() and read_parquet(target, columns=["image_id"]).height == n_rows:
        return n_rows
    spec = predictor.backbone.spec
    ids: list[str] = []
    feats: list[np.ndarray] = []
    for batch in iter_shard_rows(shard_path, ["image_id", "jpeg"], batch_size):
        arrays = np.stack([decode_for(spec, cast(bytes, d)) for d in batch["jpeg"]])
        feats.append(predictor.embed(arrays))
        ids.extend(str(i) for i in batch["image_id"])
    X = np.concatenate(feats) if feats else np.zeros((0, spec.dim), np.float32)
    preds = predictor.predict_features(X, ids, top_k=1) if ids else []
    df = pl.DataFrame(
        {
            "image_id": [p.path for p in preds],
            "lat": [p.lat for p in preds],
            "lon": [p.lon for p in preds],
            "country": [p.country for p in preds],
            "continent": [p.continent for p in preds],
            "top_cluster": [p.top_clusters[0][0] for p in preds],
            "top_p": [p.top_clusters[0][1] for p in preds],
            "snapped_km": [p.snapped_km for p in preds],
        },
        schema=PREDICTION_SCHEMA,
    )
    write_with_atomic(target, lambda tmp: df.write_parquet(tmp))
    return df.height


def collect_predictions(parts_dir: str | Path | UPath) -> pl.DataFrame:
    """All parts, in shard order, as one table."""
    parts = sorted_glob(parts_dir, "pred-*.parquet")
    if not parts:
        return pl.DataFrame(schema=PREDICTION_SCHEMA)
    return pl.concat([read_parquet(p) for p in parts])


__all__ = ["PREDICTION_SCHEMA", "collect_predictions", "part_name", "photo_table", "predict_shard"]
