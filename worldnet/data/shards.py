"""Resized image shards: Parquet files of N JPEGs each, written crash-safe.

Images are decoded with libjpeg's draft mode (decode at 1/2, 1/4, 1/8 scale
when that still covers the target), resized to *cover* the target size
(preserving aspect) and centre-cropped, then re-encoded. 4:3 street photos at
the default 400×300 are therefore never distorted, only scaled.

Crash safety: each shard is written to a temporary name and renamed, then a
small sidecar (rows, sha256, input hash, rejects) is written the same way. A
rerun skips shards whose sidecar matches both the file's checksum and the
inputs, and redoes the rest, so a killed run resumes to byte-identical output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm
from upath import UPath

from worldnet.data.frame import MAX_PIXELS as MAX_PIXELS
from worldnet.data.frame import ShardSpec as ShardSpec
from worldnet.data.frame import decode_resize as decode_resize
from worldnet.data.frame import frame_photo as frame_photo
from worldnet.data.photos import MIN_SIDE, PhotoRejectedError
from worldnet.data.schema import rejects_frame
from worldnet.io import atomic_path, write_text_atomic
from worldnet.parallel import process_pool
from worldnet.storage import as_path, is_local, open_input, shared_across_processes, sorted_glob

SHARD_COLUMNS = ("image_id", "city", "lat", "lon", "continent", "seen", "unseen", "place_id", "jpeg", "width", "height")
#: The default cut and encoding (400x300, 256 photos a shard, JPEG quality 90).
DEFAULT_SPEC = ShardSpec()


def infer_frame(paths: list[str], height: int = 300, sample: int = 64) -> tuple[int, int]:
    """(width, height) for the shards: the photos' median aspect at ``height`` px, so no photo loses its sides.

    Reads only the headers of the first ``sample`` photos (in sorted order, so
    the answer is deterministic); unreadable ones are skipped here and
    reported by the shard stage itself. Width is a multiple of 4, between
    ``height / 2`` and ``3 * height``; 4:3 when nothing can be read.
    """
    aspects = []
    for p in sorted(paths)[:sample]:
        try:
            with open_input(p) as fh, Image.open(fh) as img:
                w, h = img.size
                if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF says the photo is stored rotated
                    w, h = h, w
        except Exception:  # noqa: BLE001 - reported by the shard stage, not here
            continue
        if w >= MIN_SIDE and h >= MIN_SIDE:  # a photo the shard stage rejects as too small has no say
            aspects.append(w / h)
    aspect = float(np.median(aspects)) if aspects else 4 / 3
    width = int(round(height * aspect / 4)) * 4
    return min(max(width, height // 2), 3 * height), height


def shard_frame(out_dir: str | Path | UPath) -> tuple[int, int]:
    """(width, height) of the images in the shards under ``out_dir`` (all shards share one frame).

    Raises:
        FileNotFoundError: No shard holds an image yet.
    """
    for path in shard_paths(out_dir):
        for batch in iter_shard_rows(path, ["jpeg"], 1):
            with Image.open(io.BytesIO(cast(bytes, batch["jpeg"][0]))) as img:
                return img.size
    raise FileNotFoundError(f"no image shard with an image under {out_dir}: run the 'shard' stage first")


def shard_name(k: int) -> str:
    """File name of shard ``k``."""
    return f"shard-{k:05d}.parquet"


def _input_hash(rows: list[dict[str, object]], spec: ShardSpec) -> str:
    h = hashlib.sha256(json.dumps([spec.width, spec.height, spec.quality]).encode())
    for r in rows:
        h.update(
            f"{r['image_id']}|{r['path']}|{r['lat']}|{r['lon']}|{r['seen']}|{r['unseen']}|{r.get('place_id')}|{_stamp(r['path'])}\n".encode()
        )
    return h.hexdigest()


def _stamp(path: object) -> str:
    """A photo file's size and modification time: a changed or repaired photo makes its shard stale (a cheap stat, no read)."""
    try:
        st = os.stat(str(path))
    except (OSError, ValueError):
        return "?"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _sidecar(path: UPath) -> UPath:
    return path.with_suffix(".json")


def object_identity(path: UPath) -> dict[str, object]:
    """What an object store says about a committed file without sending its body: size, and ETag where offered."""
    info = path.fs.info(path.path)
    out: dict[str, object] = {"size": int(info.get("size") or 0)}
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("checksum")
    if etag:
        out["etag"] = str(etag).strip('"')
    return out


def _is_complete(path: UPath, input_hash: str) -> bool:
    """A shard is complete when its sidecar is for these inputs and the file is the one the sidecar describes.

    Locally the file is re-hashed (cheap). On an object store its recorded
    size and ETag are compared with what the store reports, so a no-op rerun
    reads no shard body.
    """
    side = _sidecar(path)
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("input_hash") != input_hash:
        return False
    if is_local(path):
        return path.is_file() and meta.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        now = object_identity(path)
    except FileNotFoundError:
        return False
    recorded = meta.get("object")
    return isinstance(recorded, dict) and bool(recorded) and recorded == now


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: everything a worker on any machine needs (it pickles small)."""

    index: int
    path: UPath
    rows: list[dict[str, object]]
    spec: ShardSpec
    input_hash: str


@dataclass(frozen=True)
class ShardPlan:
    """The shards a table cuts into, and which of them still need writing."""

    out_dir: UPath
    jobs: list[ShardJob]
    n_shards: int
    skipped: int


def plan_shards(table: pl.DataFrame, out_dir: str | Path | UPath, spec: ShardSpec = DEFAULT_SPEC) -> ShardPlan:
    """Cut ``table`` into shard jobs, leaving out shards already complete for the same input.

    Pure planning (reads sidecars, writes nothing), so one process can plan and
    any number of workers write the jobs, in any order.
    """
    if spec.shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    out = as_path(out_dir)
    if "place_id" not in table.columns:
        table = table.with_columns(place_id=pl.lit(None, dtype=pl.Int64))
    rows = table.sort("image_id").select("image_id", "city", "lat", "lon", "continent", "seen", "unseen", "place_id", "path").to_dicts()
    jobs = []
    skipped = 0
    n_shards = (len(rows) + spec.shard_size - 1) // spec.shard_size
    for k in range(n_shards):
        chunk = rows[k * spec.shard_size : (k + 1) * spec.shard_size]
        path = out / shard_name(k)
        h = _input_hash(chunk, spec)
        if _is_complete(path, h):
            skipped += 1
            continue
        jobs.append(ShardJob(k, path, chunk, spec, h))
    return ShardPlan(out, jobs, n_shards, skipped)


def write_shard(job: ShardJob) -> dict[str, object]:
    """Decode, resize and re-encode one shard's images; write the shard and its sidecar atomically.

    Images that fail to decode are rejects (listed in the sidecar with the
    reason), never a crash. Returns the sidecar's content.
    """
    path, rows, spec, input_hash = job.path, job.rows, job.spec, job.input_hash
    out: dict[str, list[object]] = {c: [] for c in SHARD_COLUMNS}
    rejects: list[dict[str, object]] = []
    for r in rows:
        try:
            with open_input(str(r["path"])) as fh:
                framed = frame_photo(fh.read(), spec)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject, not a crash
            rejects.append(
                {
                    "source": path.name,
                    "image_id": r["image_id"],
                    "path": r["path"],
                    "reason": exc.reason if isinstance(exc, PhotoRejectedError) else "corrupt_image",
                    "detail": (exc.detail if isinstance(exc, PhotoRejectedError) else f"{type(exc).__name__}: {exc}")[:300],
                }
            )
            continue
        for c in SHARD_COLUMNS[:8]:
            out[c].append(r[c])
        out["jpeg"].append(framed)
        out["width"].append(spec.width)
        out["height"].append(spec.height)
    table = pa.table(
        {
            "image_id": pa.array(out["image_id"], pa.string()),
            "city": pa.array(out["city"], pa.string()),
            "lat": pa.array(out["lat"], pa.float64()),
            "lon": pa.array(out["lon"], pa.float64()),
            "continent": pa.array(out["continent"], pa.string()),
            "seen": pa.array(out["seen"], pa.string()),
            "unseen": pa.array(out["unseen"], pa.string()),
            "place_id": pa.array(out["place_id"], pa.int64()),
            "jpeg": pa.array(out["jpeg"], pa.binary()),
            "width": pa.array(out["width"], pa.int32()),
            "height": pa.array(out["height"], pa.int32()),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="none")
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    meta = {
        "shard": path.name,
        "rows": table.num_rows,
        "sha256": digest,
        "input_hash": input_hash,
        "rejects": rejects,
    }
    if not is_local(path):  # how the store identifies the committed object: a later check needs no download
        meta["object"] = object_identity(path)
    write_text_atomic(_sidecar(path), json.dumps(meta))
    return meta


@dataclass
class ShardResult:
    """What the shard stage produced."""

    index: pl.DataFrame  # shard, rows, sha256
    rejects: pl.DataFrame
    written: int
    skipped: int


def write_shards(
    table: pl.DataFrame,
    out_dir: str | Path | UPath,
    spec: ShardSpec = DEFAULT_SPEC,
    *,
    workers: int | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> ShardResult:
    """Write ``table`` (manifest joined with splits) as resized image shards, in a local process pool.

    The pipeline instead maps :func:`write_shard` over :func:`plan_shards` 's
    jobs as Prefect tasks (on Dask if asked); this is the same work in one call,
    for scripts, ``worldnet cv`` and benchmarks.

    Args:
        table: Rows with image_id, city, lat, lon, continent, seen, unseen, path.
        out_dir: Folder (or fsspec URL) for ``shard-XXXXX.parquet`` files and their sidecars.
        spec: Shard size and image encoding.
        workers: Processes (default: all cores; 1 = in this process, which
            ``memory://`` roots always use: other processes cannot see them).
        progress: Show a progress bar.
        stop_after: Write at most this many new shards, then stop (to test
            resuming; a real crash behaves the same).

    Returns:
        The shard index, the decode rejects, and how many shards were written
        or skipped as already complete.
    """
    plan = plan_shards(table, out_dir, spec)
    jobs = plan.jobs if stop_after is None else plan.jobs[:stop_after]
    if not shared_across_processes(plan.out_dir):
        workers = 1
    bar = tqdm(total=len(jobs), desc="image shards", unit="shard", disable=not progress)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            write_shard(job)
            bar.update()
    else:
        with process_pool(workers) as pool:
            for fut in as_completed([pool.submit(write_shard, j) for j in jobs]):
                fut.result()
                bar.update()
    bar.close()
    return collect_shards(plan, written=len(jobs))


def collect_shards(plan: ShardPlan, written: int) -> ShardResult:
    """The index and rejects of a planned set of shards once written; drops stale shards beyond it."""
    out = plan.out_dir
    metas = [json.loads(side.read_text()) for k in range(plan.n_shards) if (side := _sidecar(out / shard_name(k))).is_file()]
    # shards beyond the current table (from an older, larger run) are stale: drop them
    for stale in sorted_glob(out, "shard-*.parquet")[plan.n_shards :]:
        stale.unlink()
        if _sidecar(stale).exists():
            _sidecar(stale).unlink()
    index = pl.DataFrame(
        {"shard": [m["shard"] for m in metas], "rows": [m["rows"] for m in metas], "sha256": [m["sha256"] for m in metas]},
        schema={"shard": pl.String, "rows": pl.Int64, "sha256": pl.String},
    )
    rejects = rejects_frame([r for m in metas for r in m["rejects"]])
    return ShardResult(index=index, rejects=rejects, written=written, skipped=plan.skipped)


def shard_paths(out_dir: str | Path | UPath) -> list[UPath]:
    """Complete shards in a folder, in order."""
    return [p for p in sorted_glob(out_dir, "shard-*.parquet") if _sidecar(p).is_file()]


def iter_shard_rows(path: str | Path | UPath, columns: list[str] | None = None, batch_size: int = 64) -> Iterator[dict[str, list[object]]]:
    """Stream a shard in record batches without loading it all."""
    with open_input(path) as fh:
        pf = pq.ParquetFile(fh)
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield batch.to_pydict()
