"""Fixed schemas for the tables that travel between stages.

Manifest: one row per usable image (or per metadata row in metadata-only mode).

=========== ======= ==========================================================
column      type    meaning
=========== ======= ==========================================================
image_id    str     unique id: ``{city}_{place_id:07d}_{year}_{month:02d}_{heading:03d}_{panoid}``
                    for GSV-Cities, the CSV's ``image_id`` or the photo's path relative
                    to the dataset for ``csv``, the file stem for ``flat``
city        str     city (GSV-Cities name, or the CSV's city column, or "")
lat, lon    f64     WGS84 degrees
place_id    i64     the place (groups the views of one spot); null if unknown
year, month i32     capture date; null if unknown
heading     i32     compass heading (``northdeg``); null if unknown
path        str     absolute image path; null in metadata-only mode
source      str     reader that produced the row: gsv_cities | gsv_metadata | flat | csv
continent   str     from the geo core (Natural Earth)
dataset     str     which input it came from (the dataset folder's name), when several are read together
duplicate_of str    the first image id with byte-identical content; null for a photo with no twin
=========== ======= ==========================================================

Rejects: one row per problem, never silently dropped.

=========== ======= ==========================================================
source      str     file the problem came from (CSV, folder, shard)
row         i64     1-based line in that file (header = line 1); null if n/a
image_id    str     the image concerned, when known
path        str     the image path, when known
reason      str     one of :data:`REJECT_REASONS`
detail      str     human-readable specifics
=========== ======= ==========================================================
"""

from __future__ import annotations

import polars as pl

MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "image_id": pl.String(),
    "city": pl.String(),
    "lat": pl.Float64(),
    "lon": pl.Float64(),
    "place_id": pl.Int64(),
    "year": pl.Int32(),
    "month": pl.Int32(),
    "heading": pl.Int32(),
    "path": pl.String(),
    "source": pl.String(),
    "continent": pl.String(),
    "dataset": pl.String(),
    "duplicate_of": pl.String(),
}

REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "row": pl.Int64(),
    "image_id": pl.String(),
    "path": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
}

#: Every reason a row can be rejected for.
REJECT_REASONS: tuple[str, ...] = (
    "unparseable_row",
    "coords_invalid",
    "date_out_of_range",
    "duplicate_image_id",
    "missing_image",
    "empty_file",
    "not_an_image",
    "corrupt_image",
    "image_too_small",  # shard/predict: a side under worldnet.data.photos.MIN_SIDE px (a 1x1 or 10000x1 image)
    "nonfinite_pixels",  # shard/predict: a float image with NaN or infinite samples (no range says what they mean)
    "filename_coords_mismatch",
    "unlisted_image",
)

#: Google Street View started in 2007; the real metadata's 1970 rows are the
#: Unix epoch standing in for "unknown", so dates before this are rejected.
MIN_YEAR = 2007
MAX_YEAR = 2030


def empty_rejects() -> pl.DataFrame:
    """A rejects table with no rows."""
    return pl.DataFrame(schema=REJECTS_SCHEMA)


def rejects_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """Build a rejects table from dicts, filling absent columns with null."""
    if not rows:
        return empty_rejects()
    return pl.DataFrame([{k: r.get(k) for k in REJECTS_SCHEMA} for r in rows], schema=REJECTS_SCHEMA)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast ``df`` to ``schema`` (missing columns become null; no rows in, no rows out)."""
    if df.height == 0:  # a select of literals on a column-less frame would make one all-null row
        return pl.DataFrame(schema=schema)
    cols = [(pl.col(name).cast(dtype) if name in df.columns else pl.lit(None, dtype=dtype)).alias(name) for name, dtype in schema.items()]
    return df.select(cols)


class DatasetNotFoundError(FileNotFoundError):
    """The input folder is not a dataset worldnet can read."""
