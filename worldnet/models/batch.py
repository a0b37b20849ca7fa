"""Batch prediction: a folder of photos → image shards → one predictions file per shard → one table.

The same shard machinery as training (decode + resize once, corrupt images
listed as rejects, atomic commits), so the flow in ``flows/predict.py`` can map
one task per shard onto Dask workers and a rerun redoes only missing parts.

Photos can be grouped into places (:func:`folder_places`, :func:`csv_places`):
each part keeps every photo's distribution over the centroids, and
:func:`place_table` answers each place once from its photos' combined
distributions (:func:`~worldnet.models.predictor.combine_views`).
"""

from __future__ import annotations

import os
import posixpath
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
from worldnet.models.predictor import Predictor, combine_views, predict_distributions
from worldnet.models.worldnet_model import WorldNet
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

#: The places table: one row per place; a place none of whose photos could be read has ``n_views`` 0 and no answer.
PLACE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "place": pl.String,
    "n_photos": pl.Int64,
    "n_views": pl.Int64,
    **{k: v for k, v in PREDICTION_SCHEMA.items() if k != "image_id"},
    "views": pl.List(pl.String),
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

    Besides the :data:`PREDICTION_SCHEMA` columns, a part keeps each photo's
    distribution over the centroids (``probs``), from which :func:`place_table`
    answers places. A part already there with the shard's row count and that
    column is kept (a rerun or a retried task does no work twice).
    """
    shard_path, parts = as_path(shard), as_path(parts_dir)
    target = parts / part_name(shard_path.name)
    n_rows = read_parquet(shard_path, columns=["image_id"]).height
    if _part_done(target, n_rows):
        return n_rows
    spec = predictor.backbone.spec
    k = len(predictor.model.centroid_names)
    ids: list[str] = []
    feats: list[np.ndarray] = []
    for batch in iter_shard_rows(shard_path, ["image_id", "jpeg"], batch_size):
        arrays = np.stack([decode_for(spec, cast(bytes, d)) for d in batch["jpeg"]])
        feats.append(predictor.embed(arrays))
        ids.extend(str(i) for i in batch["image_id"])
    X = np.concatenate(feats) if feats else np.zeros((0, spec.dim), np.float32)
    preds, probs = predictor.predict_with_probs(X, ids, top_k=1) if ids else ([], np.zeros((0, k), np.float32))
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
    ).with_columns(pl.Series("probs", np.asarray(probs, np.float32).reshape(len(preds), k), dtype=pl.Array(pl.Float32, k)))
    write_with_atomic(target, lambda tmp: df.write_parquet(tmp))
    return df.height


def _part_done(target: UPath, n_rows: int) -> bool:
    """Whether ``target`` is a complete part of ``n_rows`` rows with the photos' distributions."""
    if not target.is_file():
        return False
    try:
        return read_parquet(target, columns=["image_id", "probs"]).height == n_rows
    except pl.exceptions.PolarsError:  # a part written before parts kept the distributions: predict it again
        return False


def collect_predictions(parts_dir: str | Path | UPath) -> pl.DataFrame:
    """All parts, in shard order, as one table (:data:`PREDICTION_SCHEMA`: one row per photo)."""
    parts = sorted_glob(parts_dir, "pred-*.parquet")
    if not parts:
        return pl.DataFrame(schema=PREDICTION_SCHEMA)
    return pl.concat([read_parquet(p, columns=list(PREDICTION_SCHEMA)) for p in parts])


def folder_places(table: pl.DataFrame) -> pl.DataFrame:
    """Each immediate sub-folder of the batch folder is one place: ``image_id, place`` for the photos in one.

    ``table`` is :func:`photo_table`'s. Photos directly in the folder belong to
    no place (they keep their one answer each); photos deeper down belong to
    the sub-folder of the batch folder they are under.
    """
    ids = table.select("image_id")
    return ids.filter(pl.col("image_id").str.contains("/", literal=True)).with_columns(place=pl.col("image_id").str.split("/").list.first())


def csv_places(csv: str | os.PathLike[str], folder: str | os.PathLike[str], table: pl.DataFrame) -> pl.DataFrame:
    """The place of each photo named in a CSV with columns ``path,place`` (paths relative to ``folder``): ``image_id, place``.

    ``table`` is :func:`photo_table`'s. Photos the CSV does not name belong to
    no place. Other columns are ignored; a row naming the same photo and
    place twice counts once.

    Raises:
        FileNotFoundError: ``csv`` is not a file.
        ValueError: The CSV lacks a column, has an empty path or place, names
            a path outside ``folder`` or no photo in it, or gives one photo two places.
    """
    src = Path(csv)
    if not src.is_file():
        raise FileNotFoundError(f"places file {src} not found: pass a CSV with columns path,place")
    try:
        df = pl.read_csv(src, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{src} is not a readable CSV ({reason})") from None
    missing = [c for c in ("path", "place") if c not in df.columns]
    if missing:
        raise ValueError(f"{src} needs the columns path and place (paths relative to {folder}); it has: {', '.join(df.columns) or 'none'}")
    root = Path(folder).resolve()
    rows: dict[str, str] = {}
    for line, (raw_path, raw_place) in enumerate(zip(df["path"].to_list(), df["place"].to_list(), strict=True), start=2):
        path, place = (raw_path or "").strip().replace("\\", "/"), (raw_place or "").strip()
        if not path or not place:
            raise ValueError(f"{src} line {line}: every row needs a path and a place")
        if Path(path).is_absolute():
            try:
                path = Path(path).resolve().relative_to(root).as_posix()
            except ValueError:
                raise ValueError(f"{src} line {line}: {path} is not under {folder}; give paths relative to it") from None
        rel = posixpath.normpath(path)
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{src} line {line}: {path} is outside {folder}; give paths relative to it")
        if rows.setdefault(rel, place) != place:
            raise ValueError(f"{src} line {line}: {rel} is given two places, {rows[rel]!r} and {place!r}")
    known = set(table["image_id"].to_list())
    unknown = [p for p in rows if p not in known]
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise ValueError(f"{src} names {len(unknown)} paths that are no photo under {folder}: {shown}")
    return pl.DataFrame({"image_id": list(rows), "place": list(rows.values())}, schema={"image_id": pl.String, "place": pl.String})


def place_table(parts_dir: str | Path | UPath, places: pl.DataFrame, model: WorldNet, *, snap: bool = True) -> pl.DataFrame:
    """One answer per place (:data:`PLACE_SCHEMA`), from the distributions the parts kept of its photos.

    ``places`` has ``image_id, place`` (:func:`folder_places`, :func:`csv_places`);
    ``model`` and ``snap`` are the batch model's (:func:`~worldnet.models.predictor.load_worldnet`).
    A photo that failed to decode (a reject) counts in ``n_photos`` but not
    ``n_views``, and its place is answered from the others; ``views`` lists the
    photos each answer combines.
    """
    parts = sorted_glob(parts_dir, "pred-*.parquet")
    k = len(model.centroid_names)
    dist = (
        pl.concat([read_parquet(p, columns=["image_id", "probs"]) for p in parts])
        if parts
        else pl.DataFrame(schema={"image_id": pl.String, "probs": pl.Array(pl.Float32, k)})
    )
    joined = places.select("image_id", "place").join(dist, on="image_id", how="left").sort("place", "image_id")
    names: list[str] = []
    n_photos: list[int] = []
    views: list[list[str]] = []
    combined: list[np.ndarray] = []
    for (place,), group in joined.group_by("place", maintain_order=True):
        seen = group.filter(pl.col("probs").is_not_null())
        names.append(str(place))
        n_photos.append(group.height)
        views.append(seen["image_id"].to_list())
        if seen.height:
            combined.append(combine_views(seen["probs"].to_numpy()))
    answered = [n for n, v in zip(names, views, strict=True) if v]
    preds = {p.path: p for p in predict_distributions(model, np.stack(combined), answered, top_k=1, snap=snap)} if combined else {}
    rows = []
    for name, n, used in zip(names, n_photos, views, strict=True):
        p = preds.get(name)
        rows.append(
            {
                "place": name,
                "n_photos": n,
                "n_views": len(used),
                "lat": p.lat if p else None,
                "lon": p.lon if p else None,
                "country": p.country if p else None,
                "continent": p.continent if p else None,
                "top_cluster": p.top_clusters[0][0] if p else None,
                "top_p": p.top_clusters[0][1] if p else None,
                "snapped_km": p.snapped_km if p else None,
                "views": used,
            }
        )
    return pl.DataFrame(rows, schema=PLACE_SCHEMA)


__all__ = [
    "PLACE_SCHEMA",
    "PREDICTION_SCHEMA",
    "collect_predictions",
    "csv_places",
    "folder_places",
    "part_name",
    "photo_table",
    "place_table",
    "predict_shard",
]
