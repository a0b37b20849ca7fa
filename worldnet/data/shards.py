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
from collections.abc import Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from worldnet.data.schema import rejects_frame
from worldnet.io import write_text_atomic, write_with_atomic
from worldnet.parallel import process_pool

SHARD_COLUMNS = ("image_id", "city", "lat", "lon", "continent", "seen", "unseen", "jpeg", "width", "height")
#: Refuse images above this many pixels (decompression bombs).
MAX_PIXELS = 60_000_000


@dataclass(frozen=True)
class ShardSpec:
    """How shards are cut and encoded."""

    shard_size: int = 256
    width: int = 400
    height: int = 300
    quality: int = 90


def shard_name(k: int) -> str:
    """File name of shard ``k``."""
    return f"shard-{k:05d}.parquet"


def decode_resize(data: bytes, width: int, height: int) -> Image.Image:
    """Decode JPEG bytes and resize to cover ``width``×``height``, then centre-crop."""
    img: Image.Image = Image.open(io.BytesIO(data))
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(f"image is {img.width}x{img.height}, over the {MAX_PIXELS:,}-pixel limit")
    scale = max(width / img.width, height / img.height)
    img.draft("RGB", (max(1, int(img.width * scale)), max(1, int(img.height * scale))))
    img = img.convert("RGB")
    img.load()
    scale = max(width / img.width, height / img.height)
    rw, rh = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    if (rw, rh) != img.size:
        img = img.resize((rw, rh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (rw - width) // 2, (rh - height) // 2
    return img.crop((left, top, left + width, top + height))


def _input_hash(rows: list[dict[str, object]], spec: ShardSpec) -> str:
    h = hashlib.sha256(json.dumps([spec.width, spec.height, spec.quality]).encode())
    for r in rows:
        h.update(f"{r['image_id']}|{r['path']}|{r['lat']}|{r['lon']}|{r['seen']}|{r['unseen']}\n".encode())
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _is_complete(path: Path, input_hash: str) -> bool:
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(meta.get("input_hash") == input_hash and meta.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest())


def _write_shard(args: tuple[Path, list[dict[str, object]], ShardSpec, str]) -> dict[str, object]:
    path, rows, spec, input_hash = args
    out: dict[str, list[object]] = {c: [] for c in SHARD_COLUMNS}
    rejects: list[dict[str, object]] = []
    for r in rows:
        try:
            with open(str(r["path"]), "rb") as fh:
                img = decode_resize(fh.read(), spec.width, spec.height)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=spec.quality)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject, not a crash
            rejects.append(
                {
                    "source": path.name,
                    "image_id": r["image_id"],
                    "path": r["path"],
                    "reason": "corrupt_image",
                    "detail": f"{type(exc).__name__}: {exc}"[:300],
                }
            )
            continue
        for c in SHARD_COLUMNS[:7]:
            out[c].append(r[c])
        out["jpeg"].append(buf.getvalue())
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
            "jpeg": pa.array(out["jpeg"], pa.binary()),
            "width": pa.array(out["width"], pa.int32()),
            "height": pa.array(out["height"], pa.int32()),
        }
    )
    write_with_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="none"))
    meta = {
        "shard": path.name,
        "rows": table.num_rows,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input_hash": input_hash,
        "rejects": rejects,
    }
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
    out_dir: str | Path,
    spec: ShardSpec = ShardSpec(),
    *,
    workers: int | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> ShardResult:
    """Write ``table`` (manifest joined with splits) as resized image shards.

    Args:
        table: Rows with image_id, city, lat, lon, continent, seen, unseen, path.
        out_dir: Folder for ``shard-XXXXX.parquet`` files and their sidecars.
        spec: Shard size and image encoding.
        workers: Processes (default: all cores; 1 = in this process).
        progress: Show a progress bar.
        stop_after: Write at most this many new shards, then stop (to test
            resuming; a real crash behaves the same).

    Returns:
        The shard index, the decode rejects, and how many shards were written
        or skipped as already complete.
    """
    if spec.shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table.sort("image_id").select("image_id", "city", "lat", "lon", "continent", "seen", "unseen", "path").to_dicts()
    jobs = []
    skipped = 0
    for k, start in enumerate(range(0, len(rows), spec.shard_size)):
        chunk = rows[start : start + spec.shard_size]
        path = out / shard_name(k)
        h = _input_hash(chunk, spec)
        if _is_complete(path, h):
            skipped += 1
            continue
        jobs.append((path, chunk, spec, h))
    if stop_after is not None:
        jobs = jobs[:stop_after]
    bar = tqdm(total=len(jobs), desc="image shards", unit="shard", disable=not progress)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            _write_shard(job)
            bar.update()
    else:
        with process_pool(workers) as pool:
            for fut in as_completed([pool.submit(_write_shard, j) for j in jobs]):
                fut.result()
                bar.update()
    bar.close()
    n_expected = (len(rows) + spec.shard_size - 1) // spec.shard_size
    metas = [json.loads(_sidecar(out / shard_name(k)).read_text()) for k in range(n_expected) if _sidecar(out / shard_name(k)).is_file()]
    # shards beyond the current table (from an older, larger run) are stale: drop them
    for stale in sorted(out.glob("shard-*.parquet"))[n_expected:]:
        stale.unlink()
        _sidecar(stale).unlink(missing_ok=True)
    index = pl.DataFrame(
        {"shard": [m["shard"] for m in metas], "rows": [m["rows"] for m in metas], "sha256": [m["sha256"] for m in metas]},
        schema={"shard": pl.String, "rows": pl.Int64, "sha256": pl.String},
    )
    rejects = rejects_frame([r for m in metas for r in m["rejects"]])
    return ShardResult(index=index, rejects=rejects, written=len(jobs), skipped=skipped)


def shard_paths(out_dir: str | Path) -> list[Path]:
    """Complete shards in a folder, in order."""
    return sorted(p for p in Path(out_dir).glob("shard-*.parquet") if _sidecar(p).is_file())


def iter_shard_rows(path: Path, columns: list[str] | None = None, batch_size: int = 64) -> Iterator[dict[str, list[object]]]:
    """Stream a shard in record batches without loading it all."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        yield batch.to_pydict()


def read_shard_meta(out_dir: str | Path) -> pl.DataFrame:
    """Every column but the JPEG bytes, across all shards (for labels and splits)."""
    paths = shard_paths(out_dir)
    if not paths:
        raise FileNotFoundError(f"no image shards in {out_dir}: run the 'shard' stage first")
    cols = [c for c in SHARD_COLUMNS if c != "jpeg"]
    return pl.concat([pl.read_parquet(p, columns=cols) for p in paths])
