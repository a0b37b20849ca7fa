"""The embedded default dataset: a synthetic GSV-Cities world.

Writes the official GSV-Cities layout so that ingestion cannot tell it from the
real thing::

    Dataframes/{City}.csv   place_id,year,month,northdeg,city_id,lat,lon,panoid
    Images/{City}/{City}_{place_id:07d}_{year}_{month:02d}_{northdeg:03d}_{lat}_{lon}_{panoid}.jpg

Places are scattered within ``radius_km`` of each real city centre, always on
land; each place has several photos (headings, years, months) like the real
dataset; European cities get more images by default, like GSV-Cities, so that
de-biasing has work to do. Same arguments, same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from worldnet.data.cities import City, resolve_cities
from worldnet.data.scene import encode_jpeg, place_style, render
from worldnet.geo import country_of, is_land
from worldnet.geo.regions import continent_of
from worldnet.io import write_bytes_atomic, write_text_atomic
from worldnet.parallel import default_workers, process_pool

CSV_COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
PANOID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Relative image weight of European cities vs the rest (GSV-Cities is Eurocentric).
EUROPE_WEIGHT = 2.6
#: The image sides ``generate`` renders, in pixels (a photo is rendered in memory whole).
MIN_SIDE, MAX_SIDE = 16, 4096


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    Attributes:
        out: Root folder; ``Dataframes/`` and ``Images/`` are created inside.
        cities: City names (default: the 23 GSV-Cities cities).
        extra_cities: Add the extra real cities (Sydney, Tokyo, ...).
        per_city: Mean images per city; the total is ``per_city * len(cities)``.
        size: Image width and height in pixels.
        seed: Sampling seed (the world's look itself is fixed).
        eurocentric: Give European cities more images, like GSV-Cities.
        images_per_place: Photos per place (GSV-Cities has at least 4).
        radius_km: How far from the centre places are scattered.
        workers: Processes for rendering (default: all cores).
    """

    out: Path
    cities: Sequence[str] | None = None
    extra_cities: bool = False
    per_city: int = 100
    size: tuple[int, int] = (400, 300)
    seed: int = 0
    eurocentric: bool = True
    images_per_place: int = 4
    radius_km: float = 15.0
    workers: int | None = None


@dataclass
class SynthSummary:
    """What was written."""

    root: Path
    images_per_city: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_images(self) -> int:
        return sum(self.images_per_city.values())


def city_image_counts(cities: Sequence[City], per_city: int, eurocentric: bool) -> dict[str, int]:
    """Images per city: ``per_city`` on average, skewed towards Europe if asked."""
    if per_city < 1:
        raise ValueError("per_city must be at least 1")
    continents = continent_of([c.lat for c in cities], [c.lon for c in cities])
    w = np.array([EUROPE_WEIGHT if (eurocentric and k == "Europe") else 1.0 for k in continents])
    raw = w / w.sum() * per_city * len(cities)
    counts = np.maximum(4, np.floor(raw).astype(int))
    # hand out the rounding remainder deterministically, largest fraction first
    short = per_city * len(cities) - counts.sum()
    for i in np.argsort(-(raw - np.floor(raw)), kind="stable")[: max(0, short)]:
        counts[i] += 1
    return {c.name: int(n) for c, n in zip(cities, counts, strict=True)}


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def _fmt(x: float) -> str:
    return repr(round(float(x), 6))


def sample_places(city: City, n: int, radius_km: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` (lat, lon) points on land within ``radius_km`` of the centre."""
    found: list[np.ndarray] = []
    have = 0
    for _ in range(50):
        m = max(4 * (n - have), 16)
        r = radius_km * np.sqrt(rng.uniform(0, 1, m))
        theta = rng.uniform(0, 2 * np.pi, m)
        lat = city.lat + r * np.cos(theta) / 111.195
        lon = city.lon + r * np.sin(theta) / (111.195 * math.cos(math.radians(city.lat)))
        lon = (lon + 180) % 360 - 180
        ok = is_land(lat, lon)
        pts = np.stack([lat[ok], lon[ok]], axis=1)[: n - have]
        found.append(pts)
        have += len(pts)
        if have >= n:
            return np.concatenate(found)
    raise ValueError(f"could not place {n} points on land within {radius_km} km of {city.name}")


def plan_city(city: City, n_images: int, config: SynthConfig) -> list[dict[str, object]]:
    """The CSV rows of one city: places, and several photos of each."""
    rng = np.random.default_rng([config.seed, _stable_int(city.name)])
    n_places = math.ceil(n_images / config.images_per_place)
    pts = sample_places(city, n_places, config.radius_km, rng)
    place_ids = np.sort(rng.choice(10_000 * max(1, n_places // 50 + 1), n_places, replace=False))
    rows: list[dict[str, object]] = []
    for p, (pid, (lat, lon)) in enumerate(zip(place_ids, pts, strict=True)):
        k_here = min(config.images_per_place, n_images - p * config.images_per_place)
        headings = (rng.integers(0, 360) + np.arange(k_here) * (360 // max(1, k_here))) % 360
        for k in range(k_here):
            # small GPS jitter between photos of one place, like real panoramas
            plat = lat + rng.normal(0, 2e-5)
            plon = lon + rng.normal(0, 2e-5)
            rows.append(
                {
                    "place_id": int(pid),
                    "year": int(rng.integers(2007, 2022)),
                    "month": int(rng.integers(1, 13)),
                    "northdeg": int(headings[k]),
                    "city_id": city.name,
                    "lat": _fmt(plat),
                    "lon": _fmt(plon),
                    "panoid": "".join(rng.choice(list(PANOID_ALPHABET), 22)),
                }
            )
    return rows


def image_name(city: str, row: dict[str, object]) -> str:
    """The official GSV-Cities file name of a CSV row."""
    return (
        f"{city}_{int(row['place_id']):07d}_{row['year']}_{int(row['month']):02d}_"  # type: ignore[call-overload]
        f"{int(row['northdeg']):03d}_{row['lat']}_{row['lon']}_{row['panoid']}.jpg"  # type: ignore[call-overload]
    )


def _render_chunk(args: tuple[str, list[dict[str, object]], str, str, str, int, tuple[int, int]]) -> int:
    city, rows, continent, country, images_dir, seed, size = args
    for row in rows:
        lat, lon = float(row["lat"]), float(row["lon"])  # type: ignore[arg-type]
        style = place_style(lat, lon, continent, country, city, row["place_id"])
        rng = np.random.default_rng(
            [seed, _stable_int(city), int(row["place_id"]), int(row["northdeg"]), int(row["year"])]  # type: ignore[call-overload]
        )
        img = render(style, int(row["northdeg"]), rng, size)  # type: ignore[call-overload]
        data = encode_jpeg(img, int(rng.integers(60, 96)))
        write_bytes_atomic(Path(images_dir) / city / image_name(city, row), data)
    return len(rows)


def generate(config: SynthConfig, *, progress: bool = True) -> SynthSummary:
    """Write the synthetic world to ``config.out`` and return what was written."""
    t0 = time.perf_counter()
    cities = resolve_cities(list(config.cities) if config.cities else None, extra=config.extra_cities)
    w, h = config.size
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise ValueError(f"image size {w}x{h}: each side must be from {MIN_SIDE} to {MAX_SIDE} px")
    counts = city_image_counts(cities, config.per_city, config.eurocentric)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder to write Dataframes/ and Images/ into")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # everything is written into a hidden staging folder and moved into place at the end, Images/ before
    # Dataframes/: a failed or interrupted run never leaves CSVs that list photos it did not write
    root = Path(tempfile.mkdtemp(prefix=".synth-partial-", dir=out))
    try:
        _write_world(config, cities, counts, root, (w, h), progress)
        _move_into(root, out)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(root, ignore_errors=True)
    return SynthSummary(root=out, images_per_city=counts, seconds=time.perf_counter() - t0)


def _move_into(staged: Path, out: Path) -> None:
    """Move a staged world's files into ``out``, replacing files of the same names (others are kept)."""
    for sub in ("Images", "Dataframes"):
        src = staged / sub
        if not src.is_dir():
            continue
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            dest = out / sub / f.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)


def _write_world(
    config: SynthConfig, cities: list[City], counts: dict[str, int], root: Path, size: tuple[int, int], progress: bool
) -> None:
    """Write the CSVs and render the photos of ``cities`` under ``root``."""
    w, h = size
    images_dir = root / "Images"
    continents = continent_of([c.lat for c in cities], [c.lon for c in cities])
    countries = country_of([c.lat for c in cities], [c.lon for c in cities])
    jobs = []
    chunk = 24
    for city, cont, ctry in zip(cities, continents, countries, strict=True):
        rows = plan_city(city, counts[city.name], config)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(root / "Dataframes" / f"{city.name}.csv", buf.getvalue())
        for i in range(0, len(rows), chunk):
            jobs.append((city.name, rows[i : i + chunk], str(cont), str(ctry), str(images_dir), config.seed, (w, h)))
    workers = config.workers or default_workers()
    bar = tqdm(total=sum(counts.values()), desc="synth images", unit="img", disable=not progress)
    if workers == 1:
        for job in jobs:
            bar.update(_render_chunk(job))
    else:
        with process_pool(workers) as pool:
            for fut in as_completed([pool.submit(_render_chunk, j) for j in jobs]):
                bar.update(fut.result())
    bar.close()


def contact_sheet(root: Path, out_png: Path, per_city: int = 6, thumb: tuple[int, int] = (120, 90)) -> Path:
    """A PNG with one row per city of its first photos, so a person can see the world."""
    cities = sorted(p.name for p in (Path(root) / "Images").iterdir() if p.is_dir())
    if not cities:
        raise FileNotFoundError(
            f"no Images/ cities under {root}: generate the world there first (generate(SynthConfig(out=...)), or `worldnet synth`)"
        )
    label_w = 110
    sheet = Image.new("RGB", (label_w + per_city * thumb[0], len(cities) * thumb[1]), "white")
    d = ImageDraw.Draw(sheet)
    for r, city in enumerate(cities):
        d.text((6, r * thumb[1] + thumb[1] // 2 - 6), city, fill=(0, 0, 0))
        files = sorted((Path(root) / "Images" / city).glob("*.jpg"))
        step = max(1, len(files) // per_city)
        for c, f in enumerate(files[::step][:per_city]):
            with Image.open(f) as im:
                sheet.paste(im.convert("RGB").resize(thumb), (label_w + c * thumb[0], r * thumb[1]))
    out_png = Path(out_png)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(out_png, buf.getvalue())
    return out_png
