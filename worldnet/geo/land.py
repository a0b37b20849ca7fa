"""The land mesh: is a point on land, and where is the nearest land?

Method (and why). Point-in-polygon uses an STRtree of the exploded Natural
Earth country parts for bounding boxes, then an exact prepared-polygon test.
Boundary points count as land, so a snapped point tests as land.

"Nearest land" must be nearest in kilometres. Nearest in raw degrees is wrong
wherever a degree of longitude is short (off northern Norway a degree of
longitude is ~40 km, a degree of latitude 111 km) and across the antimeridian.
So every coastline is densified to at most ``max_segment_deg`` between vertices
and the vertices go into a k-d tree of 3-D unit vectors, where the straight
(chord) distance is monotone in great-circle distance: the nearest vertex in
the tree is the nearest in km, on any part of the globe.

Error bound: the true nearest coast point lies on some segment of length at
most ``L = max_segment_deg * 111.2 km``; its closer end vertex is at most L/2
from it. So the snapped point is a real coastline vertex, and the reported
distance exceeds the true distance to the coast by at most L/2 (0.56 km at the
default 0.01°). That is well below the 10m data's own ~1 km accuracy.

Cost. Densifying the 10m data gives 2 million coastline vertices; building
the polygons, the STRtree and the k-d tree took about 2 s per process. The
densified polygons are prepared once in the user's cache (beside the
countries, :mod:`worldnet.geo.naturalearth`, keyed by the same data hash) and
loaded in tens of milliseconds; the k-d tree is built only when a query
needs it. A few points at sea (one photo's answer) are looked up exactly
without it: the nearest of a sample of vertices bounds the distance, so only
vertices within that many degrees of latitude are measured, in the same
chord metric (:meth:`LandMesh.nearest_coast`; ``tests/geo/test_land_prepared.py``
checks that both lookups agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from worldnet.geo.naturalearth import Countries, data_key, load_countries, prepared_dir, read_prepared, write_prepared
from worldnet.geo.sphere import EARTH_RADIUS_KM, haversine_km, latlon_to_xyz

DEFAULT_MAX_SEGMENT_DEG = 0.01

#: Up to this many points at sea are looked up without the k-d tree (see :meth:`LandMesh.nearest_coast`).
FEW_POINTS = 32
#: Every this-many-th coastline vertex bounds a few points' search (:meth:`LandMesh.nearest_coast`).
SAMPLE_STRIDE = 16


@dataclass(frozen=True)
class SnapResult:
    """Where each point ended up after snapping to land.

    Attributes:
        lat: Latitudes after snapping (unchanged for points on land).
        lon: Longitudes after snapping.
        moved_km: Distance moved; 0 for points already on land.
        moved: True where the point was in the sea and was moved.
    """

    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    moved_km: NDArray[np.float64]
    moved: NDArray[np.bool_]


class LandMesh:
    """Country polygons plus a k-d tree of their densified coastlines.

    Build it once (:func:`land_mesh` caches one per process); every query is
    vectorised over arrays of points.
    """

    def __init__(self, countries: Countries, max_segment_deg: float = DEFAULT_MAX_SEGMENT_DEG):
        if max_segment_deg <= 0:
            raise ValueError("max_segment_deg must be positive")
        self.countries = countries
        self.max_segment_deg = max_segment_deg
        parts, part_country = shapely.get_parts(countries.geometry, return_index=True)
        # Densify the polygons themselves so every coastline vertex in the k-d tree
        # is an exact vertex of the polygon that the containment test uses: a
        # snapped point then always tests as land (no floating-point near-misses).
        parts = shapely.segmentize(parts, max_segment_deg)
        self._parts = parts
        self._part_country = part_country
        self._tree = shapely.STRtree(parts)
        coast = shapely.boundary(parts)
        coords, idx = shapely.get_coordinates(coast, return_index=True)
        self._coast_lon = coords[:, 0]
        self._coast_lat = coords[:, 1]
        self._coast_country = part_country[idx]
        self._kd: Any = None
        self._sample: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None

    @classmethod
    def from_prepared(cls, countries: Countries, max_segment_deg: float, a: dict[str, np.ndarray]) -> LandMesh:
        """The mesh from :meth:`prepared` arrays: the densified polygons as ragged coordinates, nothing recomputed.

        Raises:
            ValueError: The arrays do not describe ``countries``.
        """
        coords, rings, polys, part_country = a["coords"], a["ring_offsets"], a["part_offsets"], a["part_country"]
        if len(polys) != len(part_country) + 1 or part_country.max(initial=0) >= len(countries) or rings[-1] != len(coords):
            raise ValueError("prepared land arrays that do not match the countries")
        self = cls.__new__(cls)
        self.countries = countries
        self.max_segment_deg = max_segment_deg
        self._parts = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (rings, polys))
        self._part_country = part_country
        self._tree = shapely.STRtree(self._parts)
        # the polygons' rings in order are their boundaries' coordinates (what __init__ reads): the same arrays
        ring_part = np.repeat(np.arange(len(polys) - 1), np.diff(polys))
        self._coast_lon = coords[:, 0]
        self._coast_lat = coords[:, 1]
        self._coast_country = part_country[np.repeat(ring_part, np.diff(rings))]
        self._kd = None
        self._sample = None
        return self

    def prepared(self) -> dict[str, np.ndarray] | None:
        """The arrays :meth:`from_prepared` reads, or None if they would not give back exactly this mesh."""
        kind, coords, (rings, polys) = shapely.to_ragged_array(self._parts)
        ring_part = np.repeat(np.arange(len(polys) - 1), np.diff(polys))
        same = (
            kind == shapely.GeometryType.POLYGON
            and np.array_equal(coords[:, 0], self._coast_lon)
            and np.array_equal(coords[:, 1], self._coast_lat)
            and np.array_equal(self._part_country[np.repeat(ring_part, np.diff(rings))], self._coast_country)
        )
        if not same:
            return None
        return {"coords": coords, "ring_offsets": rings, "part_offsets": polys, "part_country": self._part_country}

    @property
    def _kdtree(self) -> Any:
        """The k-d tree of the coastline's unit vectors, built on first use (about a second)."""
        if self._kd is None:
            from scipy.spatial import cKDTree

            self._kd = cKDTree(latlon_to_xyz(self._coast_lat, self._coast_lon))
        return self._kd

    @property
    def error_bound_km(self) -> float:
        """Worst-case overestimate of a snap distance (half a densified segment)."""
        return self.max_segment_deg * np.pi / 180 * EARTH_RADIUS_KM / 2

    def country_index(self, lat: ArrayLike, lon: ArrayLike) -> NDArray[np.int64]:
        """Index into ``countries`` of the polygon holding each point; -1 at sea."""
        la, lo = _as_points(lat, lon)
        out = np.full(la.shape, -1, dtype=np.int64)
        if la.size == 0:
            return out
        pts = shapely.points(lo, la)
        pt_idx, part_idx = self._tree.query(pts)
        for part in np.unique(part_idx):
            cand = pt_idx[part_idx == part]
            cand = cand[out[cand] < 0]
            if cand.size == 0:
                continue
            geom = self._parts[part]
            shapely.prepare(geom)
            inside = shapely.intersects_xy(geom, lo[cand], la[cand])
            out[cand[inside]] = self._part_country[part]
        return out

    def is_land(self, lat: ArrayLike, lon: ArrayLike) -> NDArray[np.bool_]:
        """True where a point lies on (or on the edge of) a country polygon."""
        return self.country_index(lat, lon) >= 0

    def nearest_coast(
        self, lat: ArrayLike, lon: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
        """Nearest coastline vertex of each point: (lat, lon, km, country index).

        Nearest by chord between unit vectors (monotone in great-circle
        distance). Up to :data:`FEW_POINTS` points are searched without the k-d
        tree (:meth:`_nearest_few`); more, or a point equally near two vertices
        that differ, go through the tree, so either way the answer is the tree's.
        """
        la, lo = _as_points(lat, lon)
        idx = self._nearest_few(la, lo) if len(la) <= FEW_POINTS else None
        if idx is None:
            _, idx = self._kdtree.query(latlon_to_xyz(la, lo))
        clat, clon = self._coast_lat[idx], self._coast_lon[idx]
        return clat, clon, haversine_km(la, lo, clat, clon), self._coast_country[idx]

    def _nearest_few(self, la: NDArray[np.float64], lo: NDArray[np.float64]) -> NDArray[np.int64] | None:
        """The nearest coastline vertex of each of a few points, exactly, or None where the k-d tree must decide.

        The nearest of every :data:`SAMPLE_STRIDE`-th vertex is at chord ``d``,
        so the nearest vertex of all lies within the angle ``2·asin(d/2)``, hence
        within as many degrees of latitude: only those vertices are measured.
        A tie (two vertices within a micrometre of the same distance, at
        different places or in different countries) is left to the tree, whose
        choice among ties this cannot know.
        """
        if self._sample is None:
            pick = np.arange(0, len(self._coast_lat), SAMPLE_STRIDE)
            self._sample = (pick, latlon_to_xyz(self._coast_lat[pick], self._coast_lon[pick]))
        _, sample_xyz = self._sample
        out = np.empty(len(la), dtype=np.int64)
        for i, q in enumerate(latlon_to_xyz(la, lo)):
            bound = float(np.sqrt(((sample_xyz - q) ** 2).sum(axis=1).min()))
            reach = np.degrees(2 * np.arcsin(min(1.0, bound / 2))) + 1e-6
            near = np.flatnonzero(np.abs(self._coast_lat - la[i]) <= reach)
            d = np.sqrt(((latlon_to_xyz(self._coast_lat[near], self._coast_lon[near]) - q) ** 2).sum(axis=1))
            best = near[d <= d.min() * (1 + 1e-12) + 1e-12]
            if len(best) > 1:
                first = best[0]
                alike = (
                    (self._coast_lat[best] == self._coast_lat[first]).all()
                    and (self._coast_lon[best] == self._coast_lon[first]).all()
                    and (self._coast_country[best] == self._coast_country[first]).all()
                )
                if not alike:
                    return None
            out[i] = best[0]
        return out

    def snap(self, lat: ArrayLike, lon: ArrayLike) -> SnapResult:
        """Move points in the sea to the nearest land; leave points on land alone."""
        la, lo = _as_points(lat, lon)
        sea = ~self.is_land(la, lo)
        out_lat, out_lon = la.copy(), lo.copy()
        moved_km = np.zeros(la.shape)
        if sea.any():
            clat, clon, km, _ = self.nearest_coast(la[sea], lo[sea])
            out_lat[sea], out_lon[sea], moved_km[sea] = clat, clon, km
        return SnapResult(lat=out_lat, lon=out_lon, moved_km=moved_km, moved=sea)

    def locate(self, lat: ArrayLike, lon: ArrayLike) -> NDArray[np.int64]:
        """Country index of each point; points at sea get the nearest country."""
        la, lo = _as_points(lat, lon)
        idx = self.country_index(la, lo)
        sea = idx < 0
        if sea.any():
            idx[sea] = self.nearest_coast(la[sea], lo[sea])[3]
        return idx


def _as_points(lat: ArrayLike, lon: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    la = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lo = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    if la.shape != lo.shape:
        raise ValueError(f"lat and lon differ in shape: {la.shape} vs {lo.shape}")
    bad = ~np.isfinite(la) | ~np.isfinite(lo) | (np.abs(la) > 90) | (np.abs(lo) > 180)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} coordinates are NaN or out of range, first at index {i}: "
            f"({la[i]}, {lo[i]}); latitude must be within ±90 and longitude within ±180"
        )
    return la, lo


@lru_cache(maxsize=2)
def land_mesh(max_segment_deg: float = DEFAULT_MAX_SEGMENT_DEG) -> LandMesh:
    """The process-wide land mesh: from its prepared file (tens of ms), else built (about 2 s) and prepared for next time."""
    countries = load_countries()
    path = prepared_dir() / f"land-{data_key()}-{max_segment_deg:g}.npz"
    arrays = read_prepared(path)
    if arrays is not None:
        try:
            return LandMesh.from_prepared(countries, max_segment_deg, arrays)
        except (KeyError, ValueError, IndexError, shapely.errors.GEOSException):
            pass  # a damaged prepared file: build the mesh again and replace it
    mesh = LandMesh(countries, max_segment_deg)
    prepared = mesh.prepared()
    if prepared is not None:
        write_prepared(path, prepared)
    return mesh


def is_land(lat: ArrayLike, lon: ArrayLike) -> NDArray[np.bool_]:
    """True where each (lat, lon) in degrees is on land."""
    return land_mesh().is_land(lat, lon)


def snap_to_land(lat: ArrayLike, lon: ArrayLike) -> SnapResult:
    """Snap points in the sea to the nearest land, measured in km (see module docs)."""
    return land_mesh().snap(lat, lon)
