"""Readers that turn a dataset on disk into one manifest plus a rejects table.

Supported inputs:

* ``gsv_cities``: the official layout, ``Dataframes/*.csv`` + ``Images/{City}/…jpg``;
* ``gsv_metadata``: a metadata table (Parquet/CSV with the GSV-Cities columns,
  no images), e.g. ``../shared/data/gsv_cities_metadata``;
* ``flat``: the original worldNET code's ``{City}_{lat}_{lon}.jpg`` in one folder;
* ``csv``: a generic ``path,lat,lon[,city][,image_id][,place_id][,heading][,year,month]``
  CSV (OSV-5M's ``metadata.csv`` works: its images are ``images/{image_id}.jpg``);
  a folder holding exactly one CSV is read as that CSV.

Several datasets read together (:func:`ingest_many`) become one manifest whose
``dataset`` column names where each row came from.

Every reader returns ``(manifest, rejects)``; row-level problems become rejects
and never stop the good rows. :func:`validate` then applies the checks shared
by all readers.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from worldnet.data.photos import HEAD_BYTES, describe_head, sniff_format
from worldnet.data.schema import (
    MANIFEST_SCHEMA,
    MAX_YEAR,
    MIN_YEAR,
    DatasetNotFoundError,
    conform,
    empty_rejects,
    rejects_frame,
)
from worldnet.geo.regions import continent_of

GSV_COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
COORD_TOLERANCE_DEG = 1e-5


def gsv_image_id(city: str, place_id: int, year: int, month: int, heading: int | None, panoid: str) -> str:
    """The manifest id of a GSV-Cities photo (the file name minus coordinates)."""
    head = "" if heading is None else f"_{heading:03d}"
    return f"{city}_{place_id:07d}_{year}_{month:02d}{head}_{panoid}"


def _index_city_folder(folder: Path) -> dict[str, str]:
    """Map ``{City}_{pid}_{year}_{month}_{deg}_`` prefixes to the actual file names."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    with os.scandir(folder) as it:
        for entry in it:
            parts = entry.name.split("_", 5)
            if len(parts) == 6:
                out["_".join(parts[:5]) + "_"] = entry.name
    return out


def read_gsv_cities(root: str | os.PathLike[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read the official GSV-Cities layout (CSV rows → image files).

    Raises:
        DatasetNotFoundError: If ``root`` has no ``Dataframes/*.csv``.
    """
    root = Path(root).resolve()
    csvs = sorted((root / "Dataframes").glob("*.csv"))
    if not csvs:
        raise DatasetNotFoundError(f"no Dataframes/*.csv under {root}: give data_root=FOLDER of a GSV-Cities dataset")
    rows: list[dict[str, object]] = []
    rejects: list[dict[str, object]] = []
    for csv_path in csvs:
        city = csv_path.stem
        folder = root / "Images" / city
        by_prefix = _index_city_folder(folder)
        used: set[str] = set()
        # utf-8-sig: a CSV saved by Excel starts with a byte-order mark, which must not hide the first column's name
        with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            names = [h.strip() for h in header] if header else []
            absent = [c for c in GSV_COLUMNS if c not in names]
            if absent:
                lost = sum(1 for _ in reader)
                rejects.append(
                    {
                        "source": str(csv_path),
                        "row": 1,
                        "reason": "unparseable_row",
                        "detail": f"header lacks {absent} (found {names}); its {lost} data rows were not read: fix the header",
                    }
                )
                continue
            # columns by name: a leading pandas index or an extra column anywhere costs nothing
            where = [names.index(c) for c in GSV_COLUMNS]
            for line_no, fields in enumerate(reader, start=2):
                if len(fields) != len(names):
                    parsed: tuple[int, int, int, int, str, str, str, str] | str = (
                        f"expected {len(names)} fields, got {len(fields)}: {fields!r}"[:300]
                    )
                else:
                    parsed = _parse_gsv_fields([fields[i] for i in where], 0, len(GSV_COLUMNS))
                if isinstance(parsed, str):
                    rejects.append({"source": str(csv_path), "row": line_no, "reason": "unparseable_row", "detail": parsed})
                    continue
                pid, year, month, deg, _city_id, lat_s, lon_s, panoid = parsed
                image_id = gsv_image_id(city, pid, year, month, deg, panoid)
                prefix = f"{city}_{pid:07d}_{year}_{month:02d}_{deg:03d}_"
                expected = f"{prefix}{lat_s}_{lon_s}_{panoid}.jpg"
                found = by_prefix.get(prefix)
                base = {"source": str(csv_path), "row": line_no, "image_id": image_id, "path": str(folder / expected)}
                if found is None:
                    rejects.append({**base, "reason": "missing_image", "detail": f"no file {expected}"})
                    continue
                used.add(found)
                if found != expected:
                    mismatch = _filename_coords_mismatch(found[len(prefix) :], float(lat_s), float(lon_s))
                    if mismatch:
                        rejects.append({**base, "path": str(folder / found), "reason": "filename_coords_mismatch", "detail": mismatch})
                        continue
                rows.append(
                    {
                        "image_id": image_id,
                        "city": city,
                        "lat": float(lat_s),
                        "lon": float(lon_s),
                        "place_id": pid,
                        "year": year,
                        "month": month,
                        "heading": deg,
                        "path": str(folder / found),
                        "source": "gsv_cities",
                        "_row": line_no,
                        "_src": str(csv_path),
                    }
                )
        rejects.extend(_unlisted(folder, set(by_prefix.values()) - used, f"Dataframes/{csv_path.name}"))
    listed = {c.stem for c in csvs}
    images = root / "Images"
    for folder in sorted(p for p in images.iterdir() if p.is_dir() and p.name not in listed) if images.is_dir() else []:
        rejects.extend(_unlisted(folder, {e.name for e in os.scandir(folder) if e.is_file()}, "any Dataframes/*.csv"))
    return _finish(rows), rejects_frame(rejects)


def _unlisted(folder: Path, names: set[str], csv_name: str) -> list[dict[str, object]]:
    """Photos in ``folder`` that no CSV row names: listed, never silently left out."""
    return [
        {
            "source": str(folder),
            "path": str(folder / n),
            "reason": "unlisted_image",
            "detail": f"in {folder.name}/ but in no row of {csv_name}",
        }
        for n in sorted(names)
    ]


def _parse_gsv_fields(fields: list[str], offset: int, width: int) -> tuple[int, int, int, int, str, str, str, str] | str:
    if len(fields) != width:
        return f"expected {width} fields, got {len(fields)}: {fields!r}"[:300]
    f = [x.strip() for x in fields[offset:]]
    try:
        pid, year, month, deg = int(f[0]), int(f[1]), int(f[2]), int(f[3])
        float(f[5]), float(f[6])
    except ValueError as exc:
        return f"{exc}: {fields!r}"[:300]
    if not f[7]:
        return "empty panoid"
    return pid, year, month, deg, f[4], f[5], f[6], f[7]


def _filename_coords_mismatch(rest: str, lat: float, lon: float) -> str:
    """Compare the ``{lat}_{lon}_{panoid}.jpg`` tail of a file name with the CSV."""
    parts = rest.split("_", 2)
    try:
        flat, flon = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        return f"cannot read coordinates from file name tail {rest!r}"
    if abs(flat - lat) > COORD_TOLERANCE_DEG or abs(flon - lon) > COORD_TOLERANCE_DEG:
        return f"file name says ({flat}, {flon}), CSV says ({lat}, {lon})"
    return ""


def read_gsv_metadata(path: str | os.PathLike[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Metadata-only mode: a GSV-Cities table without images (Parquet or CSV).

    Vectorised throughout, so the real 470,834-row table takes a few seconds.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.parquet")) or sorted(path.glob("*.csv"))
        if not files:
            raise DatasetNotFoundError(f"no .parquet or .csv metadata under {path}")
        path = files[0]
    if not path.is_file():
        raise DatasetNotFoundError(f"metadata table {path} does not exist: give data_root=PATH of an existing table")
    df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    city_col = "city" if "city" in df.columns else "city_id"
    heading = pl.col("northdeg").cast(pl.Int32) if "northdeg" in df.columns else pl.lit(None, dtype=pl.Int32)
    df = df.with_row_index("_row", offset=2 if path.suffix == ".csv" else 1).with_columns(
        city=pl.col(city_col).cast(pl.String),
        heading=heading,
    )
    head = pl.when(pl.col("heading").is_null()).then(pl.lit("")).otherwise(pl.lit("_") + pl.col("heading").cast(pl.String).str.zfill(3))
    df = df.with_columns(
        image_id=pl.col("city")
        + "_"
        + pl.col("place_id").cast(pl.String).str.zfill(7)
        + "_"
        + pl.col("year").cast(pl.String)
        + "_"
        + pl.col("month").cast(pl.String).str.zfill(2)
        + head
        + "_"
        + pl.col("panoid").cast(pl.String),
        path=pl.lit(None, dtype=pl.String),
        source=pl.lit("gsv_metadata"),
    )
    manifest = _finish_frame(df.with_columns(pl.col("_row")))
    return manifest, empty_rejects().with_columns(source=pl.lit(str(path)))


def read_flat(folder: str | os.PathLike[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The original worldNET layout: ``{City}_{lat}_{lon}.jpg`` files in one folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder} is not a folder of {{City}}_{{lat}}_{{lon}}.jpg images")
    rows: list[dict[str, object]] = []
    rejects: list[dict[str, object]] = []
    for p in sorted(folder.glob("*.jp*g")):
        parts = p.stem.rsplit("_", 2)
        try:
            city, lat, lon = parts[0], float(parts[1]), float(parts[2])
        except (ValueError, IndexError):
            rejects.append(
                {
                    "source": str(folder),
                    "path": str(p),
                    "image_id": p.stem,
                    "reason": "unparseable_row",
                    "detail": "name is not {City}_{lat}_{lon}.jpg",
                }
            )
            continue
        rows.append({"image_id": p.stem, "city": city, "lat": lat, "lon": lon, "path": str(p), "source": "flat"})
    return _finish(rows), rejects_frame(rejects)


def read_csv_table(csv_path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A generic ``path,lat,lon`` CSV, with optional ``city``, ``image_id``, ``place_id``, ``heading``, ``year``, ``month``.

    Without a ``path`` column but with ``image_id``, images are looked up as
    ``{image_root}/images/{image_id}.jpg`` then ``{image_root}/{image_id}.jpg``
    (OSV-5M's layout). Relative paths are resolved against ``image_root``
    (default: the CSV's folder).

    Without an ``image_id`` column a photo's id is its path relative to the
    dataset (``images/Paris/00001_0.jpg``), unique by construction: two
    cities' ``0.jpg`` are two photos, not a duplicate. ``place_id`` groups the
    views of one location (an integer, or any text, which is hashed to one);
    ``heading``, ``year`` and ``month`` are kept where given, and an empty
    field means unknown, never a reject.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetNotFoundError(f"CSV {csv_path} does not exist")
    root = Path(image_root).resolve() if image_root else csv_path.resolve().parent
    rows: list[dict[str, object]] = []
    rejects: list[dict[str, object]] = []
    with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if not {"lat", "lon"} <= set(header) or not ({"path", "image_id"} & set(header)):
            raise DatasetNotFoundError(f"{csv_path} needs columns lat, lon and path or image_id; it has {header}")
        for line_no, fields in enumerate(reader, start=2):
            if len(fields) != len(header):
                rejects.append(
                    {
                        "source": str(csv_path),
                        "row": line_no,
                        "reason": "unparseable_row",
                        "detail": f"expected {len(header)} fields, got {len(fields)}",
                    }
                )
                continue
            rec = dict(zip(header, (f.strip() for f in fields), strict=True))
            try:
                lat, lon = float(rec["lat"]), float(rec["lon"])
                extras = _csv_extras(rec)
            except ValueError as exc:
                rejects.append({"source": str(csv_path), "row": line_no, "reason": "unparseable_row", "detail": str(exc)[:300]})
                continue
            if rec.get("path"):
                path = Path(rec["path"])
                path = path if path.is_absolute() else root / path
                # ``..`` may not climb out of the dataset; a link the user made inside it (a subset assembled without
                # copying) is theirs to follow
                if not Path(os.path.normpath(path)).is_relative_to(root):
                    rejects.append(
                        {
                            "source": str(csv_path),
                            "row": line_no,
                            "image_id": rec.get("image_id") or None,
                            "path": rec["path"],
                            "reason": "path_outside_dataset",
                            "detail": f"resolves outside {root}; photos must sit in the CSV's folder or below it (it was not opened)",
                        }
                    )
                    continue
            else:
                cand = root / "images" / f"{rec['image_id']}.jpg"
                path = cand if cand.exists() else root / f"{rec['image_id']}.jpg"
            rows.append(
                {
                    "image_id": rec.get("image_id") or _relative_id(path, root),
                    "city": rec.get("city", ""),
                    "lat": lat,
                    "lon": lon,
                    **extras,
                    "path": str(path),
                    "source": "csv",
                    "_row": line_no,
                    "_src": str(csv_path),
                }
            )
    return _finish(rows), rejects_frame(rejects)


def _relative_id(path: Path, root: Path) -> str:
    """A photo's id when the CSV gives none: its path relative to the dataset, with forward slashes."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _optional_int(rec: dict[str, str], column: str) -> int | None:
    """An optional integer field: empty or absent is None (unknown); ``90.0`` reads as 90; anything else is a ValueError."""
    text = rec.get(column, "")
    if text == "" or text.lower() in ("nan", "na", "null", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number (leave it empty where unknown)") from None
    if value != value or value != int(value):
        raise ValueError(f"{column} {text!r} is not a whole number (leave it empty where unknown)")
    return int(value)


def _place_number(text: str) -> int | None:
    """A ``place_id`` as an integer: as written when it is one, else a stable 62-bit hash of the text (``ALA.3_2``)."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 2


def _csv_extras(rec: dict[str, str]) -> dict[str, object]:
    """The optional columns of a ``csv`` row: place, heading and capture date (None where empty)."""
    heading = _optional_int(rec, "heading")
    return {
        "place_id": _place_number(rec.get("place_id", "")),
        "heading": None if heading is None else heading % 360,
        "year": _optional_int(rec, "year"),
        "month": _optional_int(rec, "month"),
    }


def _finish(rows: list[dict[str, object]]) -> pl.DataFrame:
    if not rows:
        return conform(pl.DataFrame(), MANIFEST_SCHEMA)
    return _finish_frame(pl.DataFrame(rows, infer_schema_length=None))


def _finish_frame(df: pl.DataFrame) -> pl.DataFrame:
    extra = [c for c in ("_row", "_src") if c in df.columns]
    out = conform(df, MANIFEST_SCHEMA)
    return out.with_columns(df.select(extra)) if extra else out


def validate(manifest: pl.DataFrame, *, check_files: bool = True, source: str = "") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Checks every reader shares; returns the good rows and the new rejects.

    Coordinates must be finite and in range, dates plausible (see
    :data:`~worldnet.data.schema.MIN_YEAR`), ids unique (the first occurrence
    is kept), and image files must exist, be non-empty and start like a JPEG.
    Full decoding happens in the shard stage, which reports corrupt files too.
    Good rows get their continent.
    """
    if manifest.height == 0:  # nothing to check (and no literal column may conjure a row out of nothing)
        return manifest.select(list(MANIFEST_SCHEMA)), empty_rejects()
    df = manifest.with_row_index("_i")
    if "_row" not in df.columns:
        df = df.with_columns(_row=pl.lit(None, dtype=pl.Int64))
    if "_src" not in df.columns:
        df = df.with_columns(_src=pl.lit(source or None, dtype=pl.String))
    bad_coord = (
        pl.col("lat").is_null()
        | pl.col("lon").is_null()
        | pl.col("lat").is_nan()
        | pl.col("lon").is_nan()
        | (pl.col("lat").abs() > 90)
        | (pl.col("lon").abs() > 180)
    )
    bad_date = pl.col("year").is_not_null() & (
        (pl.col("year") < MIN_YEAR) | (pl.col("year") > MAX_YEAR) | (pl.col("month") < 1) | (pl.col("month") > 12)
    )
    dup = pl.col("image_id").is_duplicated() & ~pl.col("_i").is_in(df.group_by("image_id").agg(pl.col("_i").min())["_i"].implode())
    reason = (
        pl.when(bad_coord)
        .then(pl.lit("coords_invalid"))
        .when(bad_date)
        .then(pl.lit("date_out_of_range"))
        .when(dup)
        .then(pl.lit("duplicate_image_id"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    detail = (
        pl.when(bad_coord)
        .then(pl.format("lat={} lon={} (must be finite, |lat|<=90, |lon|<=180)", pl.col("lat"), pl.col("lon")))
        .when(bad_date)
        .then(
            pl.format("year={} month={} (street view dates run {}-{})", pl.col("year"), pl.col("month"), pl.lit(MIN_YEAR), pl.lit(MAX_YEAR))
        )
        .when(dup)
        .then(pl.lit("image id seen earlier in the input; first occurrence kept"))
    )
    df = df.with_columns(_reason=reason, _detail=detail)
    if check_files and df.height:
        file_reason, file_detail = _check_files(df["path"].to_list())
        df = df.with_columns(
            _reason=pl.coalesce(pl.col("_reason"), pl.Series(file_reason, dtype=pl.String)),
            _detail=pl.coalesce(pl.col("_detail"), pl.Series(file_detail, dtype=pl.String)),
        )
    bad = df.filter(pl.col("_reason").is_not_null())
    rejects = bad.select(
        source=pl.col("_src"), row=pl.col("_row").cast(pl.Int64), image_id="image_id", path="path", reason="_reason", detail="_detail"
    )
    good = df.filter(pl.col("_reason").is_null())
    if good.height:
        good = good.with_columns(continent=pl.Series(continent_of(good["lat"].to_numpy(), good["lon"].to_numpy()), dtype=pl.String))
        if check_files:
            good = good.with_columns(duplicate_of=pl.Series(duplicate_groups(good["image_id"].to_list(), good["path"].to_list())))
    return good.select(list(MANIFEST_SCHEMA)), rejects


def duplicate_groups(ids: list[str], paths: list[str | None]) -> list[str | None]:
    """For each photo, the id of the first photo with byte-identical content (None when it has no twin).

    The same photo under two ids or two places would otherwise land in
    training and in test, and the test would measure memory. Only files whose
    sizes collide are read and hashed, so a folder of distinct photos costs a
    ``stat`` each.
    """
    sizes: dict[int, list[int]] = {}
    for i, p in enumerate(paths):
        if p is None:
            continue
        try:
            sizes.setdefault(os.stat(p).st_size, []).append(i)
        except OSError:
            continue
    out: list[str | None] = [None] * len(ids)
    for same_size in sizes.values():
        if len(same_size) < 2:
            continue
        first: dict[str, int] = {}
        for i in same_size:
            try:
                with open(str(paths[i]), "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
            except OSError:
                continue
            if digest in first:
                out[i] = out[first[digest]] = ids[first[digest]]
            else:
                first[digest] = i
    return out


def _check_files(paths: list[str | None]) -> tuple[list[str | None], list[str | None]]:
    reasons: list[str | None] = []
    details: list[str | None] = []
    for p in paths:
        if p is None:
            reasons.append(None)
            details.append(None)
            continue
        try:
            with open(p, "rb") as fh:
                head = fh.read(HEAD_BYTES)
        except FileNotFoundError:
            reasons.append("missing_image")
            details.append(f"no file {p}")
            continue
        except OSError as exc:
            reasons.append("missing_image")
            details.append(f"cannot open {p}: {exc}")
            continue
        if not head:
            reasons.append("empty_file")
            details.append("zero bytes")
        elif sniff_format(head) is None:
            reasons.append("not_an_image")
            details.append(describe_head(head))
        else:
            reasons.append(None)
            details.append(None)
    return reasons, details


def detect_kind(location: str | os.PathLike[str]) -> str:
    """The dataset kind of ``location``.

    ``gsv_cities``: a folder with ``Dataframes/``; ``csv``: a ``.csv`` file, or
    a folder holding exactly one (``metadata.csv`` beside ``images/``, as
    datasets are usually shared); ``gsv_metadata``: a ``.parquet`` file;
    ``flat``: any other folder.

    Raises:
        FileNotFoundError: ``location`` does not exist.
        DatasetNotFoundError: A folder holds several CSVs and no ``Dataframes/``.
    """
    p = Path(location)
    if p.is_dir():
        if (p / "Dataframes").is_dir():
            return "gsv_cities"
        csvs = _folder_csvs(p)
        if len(csvs) > 1:
            raise DatasetNotFoundError(
                f"{p} holds {len(csvs)} CSV files ({', '.join(c.name for c in csvs[:5])}): name the one that lists the photos"
            )
        return "csv" if csvs else "flat"
    if p.suffix.lower() == ".csv":
        return "csv"
    if p.suffix.lower() == ".parquet":
        return "gsv_metadata"
    raise FileNotFoundError(f"{p} is neither a dataset folder nor a .csv/.parquet file: check the data root")


def _folder_csvs(folder: Path) -> list[Path]:
    return sorted(c for c in folder.glob("*.csv") if c.is_file() and not c.name.startswith("."))


def _csv_of(location: str | os.PathLike[str]) -> Path:
    """The CSV a ``csv`` dataset means: the file itself, or a folder's one CSV."""
    p = Path(location)
    if not p.is_dir():
        return p
    csvs = _folder_csvs(p)
    if len(csvs) != 1:
        found = ", ".join(c.name for c in csvs) or "none"
        raise DatasetNotFoundError(f"{p} must hold exactly one CSV listing the photos (found {found}): or name the CSV itself")
    return csvs[0]


READERS = {
    "gsv_cities": read_gsv_cities,
    "gsv_metadata": read_gsv_metadata,
    "flat": read_flat,
    "csv": lambda location: read_csv_table(_csv_of(location)),
}


def ingest(kind: str, location: str | os.PathLike[str], *, check_files: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read and validate a dataset of the given kind (``auto``: see :func:`detect_kind`); returns ``(manifest, rejects)``."""
    if kind == "auto":
        kind = detect_kind(location)
    if kind not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of auto, {', '.join(READERS)}")
    raw, parse_rejects = READERS[kind](location)
    good, rejects = validate(raw, check_files=check_files and kind != "gsv_metadata", source=str(location))
    return good, pl.concat([parse_rejects, rejects], how="vertical_relaxed")


def dataset_name(location: str | os.PathLike[str]) -> str:
    """A dataset's short name: its folder's name (a CSV's parent folder), as the input line and the ``dataset`` column say it."""
    p = Path(location)
    return (p.parent.name if p.is_file() or p.suffix.lower() in (".csv", ".parquet") else p.name) or str(p)


#: Place ids of the i-th dataset read together are offset by i times this, so two datasets' place 7 stay two places.
PLACE_OFFSET = 10**12


def ingest_many(kind: str, locations: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, tuple[int, int]]]:
    """Several datasets as one: ``(manifest, rejects, {dataset: (read, kept)})``, each read with its own layout.

    One location reads exactly as :func:`ingest`. With several, each row's
    ``dataset`` column names its dataset, image ids are prefixed with it
    (``street_world/images/Paris/00001_0.jpg``) so that ids stay unique, and
    place ids are offset per dataset so that places never merge across
    datasets. ``kind`` applies to every location (``auto`` detects each).

    Raises:
        ValueError: No location, or two locations with the same name.
    """
    if not locations:
        raise ValueError("no dataset given: name at least one data root")
    names = [dataset_name(loc) for loc in locations]
    if len(set(names)) != len(names):
        raise ValueError(f"datasets read together need distinct folder names; got {names}")
    manifests, rejects, counts = [], [], {}
    for i, (loc, name) in enumerate(zip(locations, names, strict=True)):
        good, bad = ingest(kind, loc)
        if len(locations) > 1:
            good = good.with_columns(
                image_id=pl.lit(f"{name}/") + pl.col("image_id"),
                duplicate_of=pl.lit(f"{name}/") + pl.col("duplicate_of"),
                place_id=pl.col("place_id") + i * PLACE_OFFSET,
            )
            bad = bad.with_columns(image_id=pl.lit(f"{name}/") + pl.col("image_id"))
        manifests.append(good.with_columns(dataset=pl.lit(name)))
        rejects.append(bad)
        counts[name] = (good.height + bad.height, good.height)
    return pl.concat(manifests, how="vertical_relaxed"), pl.concat(rejects, how="vertical_relaxed"), counts


def reject_counts(rejects: pl.DataFrame) -> dict[str, int]:
    """Rejects per reason, for summaries and MLflow metrics."""
    if rejects.height == 0:
        return {}
    counts = rejects.group_by("reason").len().sort("reason")
    return dict(zip(counts["reason"].to_list(), (int(x) for x in counts["len"].to_list()), strict=True))


class EmptyDatasetError(ValueError):
    """Nothing usable was read: an empty dataset, or every row rejected."""


def require_rows(manifest: pl.DataFrame, rejects: pl.DataFrame, location: str, rejects_path: str | None = None) -> None:
    """Stop with one line that says why, when no row survived ingest (instead of failing later in the split).

    Raises:
        EmptyDatasetError: ``manifest`` is empty.
    """
    if manifest.height:
        return
    where = f"; see {rejects_path}" if rejects_path else ""
    if rejects.height == 0:
        raise EmptyDatasetError(
            f"{location} holds no photo rows: give a GSV-Cities folder (Dataframes/ + Images/), a CSV with path,lat,lon "
            "(or a folder holding one), or a folder of {City}_{lat}_{lon}.jpg files, with at least one row"
        )
    counts = ", ".join(f"{n} {r}" for r, n in reject_counts(rejects).items())
    raise EmptyDatasetError(f"no usable rows in {location}: all {rejects.height} were rejected ({counts}){where}")


@dataclass(frozen=True)
class InputSummary:
    """What became of the input: read, kept, and rejected by reason, with where the rejects are listed.

    ``datasets``: ``(name, read, kept)`` of each dataset when several were read together.
    """

    read: int
    kept: int
    rejected: dict[str, int]
    rejects_paths: tuple[str, ...] = ()
    datasets: tuple[tuple[str, int, int], ...] = ()
    #: Photos with a byte-identical twin under another id, and how many such groups (kept together in every split).
    duplicates: tuple[int, int] = (0, 0)

    def line(self) -> str:
        """``input: 1,707 read, 1,700 kept, 7 rejected (3 missing_image, 4 not_an_image); rejects: PATH``."""
        n_rej = sum(self.rejected.values())
        text = f"input: {self.read:,} read, {self.kept:,} kept, {n_rej:,} rejected"
        if n_rej:
            text += " (" + ", ".join(f"{n:,} {r}" for r, n in sorted(self.rejected.items())) + ")"
        if self.duplicates[0]:
            n, groups = self.duplicates
            text += f"; {n:,} byte-identical photos in {groups:,} group{'s' if groups != 1 else ''}, each kept on one side of every split"
        if len(self.datasets) > 1:
            text += "; by dataset: " + ", ".join(f"{name} {read:,} read, {kept:,} kept" for name, read, kept in self.datasets)
        if n_rej and self.rejects_paths:
            text += "; rejects: " + ", ".join(self.rejects_paths)
        return text


def input_summary(kept: int, *rejects: tuple[pl.DataFrame, str | None], manifest: pl.DataFrame | None = None) -> InputSummary:
    """An :class:`InputSummary` from the rows kept and each ``(rejects table, its path)``.

    ``kept`` is what is left after every table (e.g. ingest's rows minus the
    shard stage's corrupt images); ``read`` counts kept and rejected alike.
    ``manifest`` (ingest's rows, with their ``dataset``) adds per-dataset
    counts when it holds several datasets.
    """
    counts: dict[str, int] = {}
    paths: list[str] = []
    for table, path in rejects:
        for r, n in reject_counts(table).items():
            counts[r] = counts.get(r, 0) + n
        if table.height and path:
            paths.append(path)
    datasets: tuple[tuple[str, int, int], ...] = ()
    if manifest is not None and "dataset" in manifest.columns:
        names = sorted(n for n in manifest["dataset"].unique().to_list() if n)
        if len(names) > 1:
            datasets = tuple(_dataset_counts(name, manifest, [t for t, _ in rejects]) for name in names)
    dups = (0, 0)
    if manifest is not None and "duplicate_of" in manifest.columns:
        twins = manifest["duplicate_of"].drop_nulls()
        dups = (twins.len(), twins.n_unique())
    return InputSummary(
        read=kept + sum(counts.values()), kept=kept, rejected=counts, rejects_paths=tuple(paths), datasets=datasets, duplicates=dups
    )


def _dataset_counts(name: str, manifest: pl.DataFrame, rejects: list[pl.DataFrame]) -> tuple[str, int, int]:
    """``(name, read, kept)`` of one dataset: its manifest rows, less and plus the rejects that name it."""
    rows = int((manifest["dataset"] == name).sum())
    first, later = 0, 0
    for i, table in enumerate(rejects):
        if table.height == 0:
            continue
        mine = (
            table["image_id"].fill_null("").str.starts_with(f"{name}/")
            | table["source"].fill_null("").str.contains(f"/{name}/", literal=True)
            | table["source"].fill_null("").str.ends_with(f"/{name}")
            | table["path"].fill_null("").str.contains(f"/{name}/", literal=True)
        )
        n = int(mine.sum())
        first, later = (first + n, later) if i == 0 else (first, later + n)
    return name, rows + first, rows - later


class StrictModeError(ValueError):
    """``--strict`` was given and some rows were rejected."""


def enforce_strict(rejects: pl.DataFrame) -> None:
    """Raise with the full per-reason report if anything was rejected."""
    if rejects.height:
        lines = [f"{n} × {r}" for r, n in reject_counts(rejects).items()]
        first = rejects.head(5).select("source", "row", "reason", "detail").rows()
        raise StrictModeError(
            f"strict=True: {rejects.height} rows rejected ({', '.join(lines)}); first: {first}. "
            "Fix the input, or run without strict=True to continue with the good rows."
        )


__all__ = [
    "EmptyDatasetError",
    "InputSummary",
    "enforce_strict",
    "ingest",
    "ingest_many",
    "input_summary",
    "require_rows",
    "read_csv_table",
    "read_flat",
    "read_gsv_cities",
    "read_gsv_metadata",
    "reject_counts",
    "validate",
]
