"""Cluster training locations into the centroids worldNET classifies over.

* ``city``: one cluster per city, centroid = spherical mean of its images (the
  paper's choice: GSV-Cities only has city-level structure).
* ``kmeans``: spherical k-means on 3-D unit vectors (seeded k-means++ start),
  so clusters straddling the antimeridian get the right centroid; ``k=0``
  chooses k from the number of training places (:func:`clusters_for`).
* ``geocells``: cells that follow borders, as PIGEON's do: one per country
  (Natural Earth's), a country with many places split by spherical k-means
  in proportion to its places, one with too few merged into the nearest cell.
  A border is where signs, road markings and bollards change, so a cell of
  one country is a class the features can tell apart.
* ``auto``: ``city`` when the groups are compact, as cities are (GSV-Cities,
  cells of a region); ``kmeans`` when they sprawl, as countries of one to
  hundreds of scattered places do (:func:`resolve_strategy`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from worldnet.geo.sphere import haversine_km, latlon_to_xyz, spherical_mean

STRATEGIES = ("auto", "city", "kmeans", "geocells")

CENTROID_SCHEMA = {
    "cluster_id": pl.Int64,
    "name": pl.String,
    "lat": pl.Float64,
    "lon": pl.Float64,
    "n_images": pl.Int64,
    "strategy": pl.String,
}

#: ``auto`` takes the groups as clusters when half the photos lie within this of their group's centre.
CITY_SPREAD_KM = 300.0
#: ``k=0``: k grows as the square root of the training places (twice the places, 1.4 times the clusters), within these bounds.
K_PER_SQRT_PLACE = 1.5
K_BOUNDS = (2, 400)


def group_spread_km(labels: pl.DataFrame) -> float:
    """The median distance of a photo from its group's centre: tens of km for a city, thousands for a country."""
    lat, lon = labels["lat"].to_numpy(), labels["lon"].to_numpy()
    groups = labels["city"].to_numpy()
    dist = np.empty(len(lat))
    for g in np.unique(groups):
        m = groups == g
        clat, clon = _centre(lat[m], lon[m])
        dist[m] = haversine_km(lat[m], lon[m], np.full(m.sum(), clat), np.full(m.sum(), clon))
    return float(np.median(dist))


def _centre(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float]:
    try:
        return spherical_mean(lat, lon)
    except ValueError:  # points that cancel out have no mean direction: any of them will do as the centre
        return float(lat[0]), float(lon[0])


def resolve_strategy(labels: pl.DataFrame, strategy: str) -> str:
    """``auto`` → ``city`` when the groups are compact (see :data:`CITY_SPREAD_KM`), else ``kmeans``; others unchanged."""
    if strategy != "auto":
        return strategy
    if "city" not in labels.columns or labels["city"].n_unique() < 2:
        return "kmeans"
    return "city" if group_spread_km(labels) <= CITY_SPREAD_KM else "kmeans"


def clusters_for(n_places: int) -> int:
    """k for spherical k-means from the number of distinct training places (see :data:`K_PER_SQRT_PLACE`)."""
    return int(np.clip(round(K_PER_SQRT_PLACE * np.sqrt(max(n_places, 1))), K_BOUNDS[0], max(K_BOUNDS[0], min(K_BOUNDS[1], n_places))))


def cluster_locations(
    labels: pl.DataFrame, strategy: str = "city", *, k: int = 23, seed: int = 0, n_iter: int = 50
) -> tuple[pl.DataFrame, np.ndarray]:
    """Centroids table and each row's cluster id.

    Args:
        labels: Rows with lat, lon (and city for the ``city`` strategy).
        strategy: ``city``, ``kmeans`` or ``auto``.
        k: Number of clusters for ``kmeans`` (0: from the data, see :func:`clusters_for`).
        seed: Seed for ``kmeans``.
        n_iter: Lloyd iterations for ``kmeans``.

    Raises:
        ValueError: Unknown strategy, no rows, or ``k`` larger than the rows.
    """
    if labels.height == 0:
        raise ValueError("no training locations to cluster")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown clustering strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    strategy = resolve_strategy(labels, strategy)
    lat, lon = labels["lat"].to_numpy(), labels["lon"].to_numpy()
    if strategy == "kmeans" and k == 0:
        k = clusters_for(_n_places(lat, lon))
    if strategy == "city":
        names = sorted(labels["city"].unique().to_list())
        lookup = {n: i for i, n in enumerate(names)}
        assign = np.array([lookup[c] for c in labels["city"].to_list()])
    elif strategy == "geocells":
        assign, names = _geocells(lat, lon, k or clusters_for(_n_places(lat, lon)), seed, n_iter)
    elif strategy == "kmeans":
        if not 1 <= k <= labels.height:
            raise ValueError(f"k={k} must be between 1 and the number of rows ({labels.height}), or 0 to choose it from the data")
        assign = _spherical_kmeans(latlon_to_xyz(lat, lon), k, seed, n_iter)
        names = [f"cluster_{i:03d}" for i in range(k)]
    else:
        raise ValueError(f"unknown clustering strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    rows = []
    for i, name in enumerate(names):
        m = assign == i
        clat, clon = spherical_mean(lat[m], lon[m])
        rows.append({"cluster_id": i, "name": name, "lat": clat, "lon": clon, "n_images": int(m.sum()), "strategy": strategy})
    return pl.DataFrame(rows, schema=CENTROID_SCHEMA), assign


def _place_index(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Each row's place number (the views of one place share its coordinates)."""
    return np.unique(np.stack([np.round(lat, 5), np.round(lon, 5)], 1), axis=0, return_inverse=True)[1].ravel()


def _n_places(lat: np.ndarray, lon: np.ndarray) -> int:
    """Distinct locations."""
    return int(_place_index(lat, lon).max(initial=-1)) + 1


#: geocells: a country with fewer places than this joins the nearest cell instead of being a class of its own.
MIN_CELL_PLACES = 4


def _geocells(lat: np.ndarray, lon: np.ndarray, k: int, seed: int, n_iter: int) -> tuple[np.ndarray, list[str]]:
    """Cell id per row and cell names (``US-3``): countries, split by k-means in proportion to their places (``k`` in all)."""
    from worldnet.geo.regions import country_of

    country = country_of(lat, lon).astype(str)
    places = _place_index(lat, lon)
    total = int(places.max(initial=-1)) + 1
    xyz = latlon_to_xyz(lat, lon)
    assign = np.full(len(lat), -1, dtype=np.int64)
    names: list[str] = []
    small: list[str] = []
    for cc in sorted(set(country.tolist())):
        m = np.flatnonzero(country == cc)
        n = len(np.unique(places[m]))
        if n < MIN_CELL_PLACES:
            small.append(cc)
            continue
        cells = int(min(n // MIN_CELL_PLACES, max(1, round(k * n / total))))
        sub = _spherical_kmeans(xyz[m], cells, seed, n_iter) if cells > 1 else np.zeros(len(m), dtype=np.int64)
        for j in range(cells):
            assign[m[sub == j]] = len(names)
            names.append(f"{cc or 'XX'}-{j}")
    if not names:  # every country is small: one cell for the lot
        return np.zeros(len(lat), dtype=np.int64), ["all-0"]
    centres = np.stack([xyz[assign == i].sum(0) for i in range(len(names))])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True).clip(1e-12)
    rest = assign < 0
    assign[rest] = np.argmax(xyz[rest] @ centres.T, axis=1)
    return assign, names


def _spherical_kmeans(xyz: np.ndarray, k: int, seed: int, n_iter: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = [xyz[rng.integers(len(xyz))]]
    for _ in range(1, k):  # k-means++ on chord distance
        d2 = np.min(((xyz[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(xyz[rng.choice(len(xyz), p=p)])
    c = np.array(centres)
    assign = np.zeros(len(xyz), dtype=np.int64)
    for _ in range(n_iter):
        new = np.argmax(xyz @ c.T, axis=1)
        for j in range(k):
            m = new == j
            if m.any():
                v = xyz[m].sum(0)
                c[j] = v / max(np.linalg.norm(v), 1e-12)
        if np.array_equal(new, assign):
            break
        assign = new
    # guarantee every cluster id 0..k-1 holds at least one point
    for j in range(k):
        if not (assign == j).any():
            assign[int(np.argmax(xyz @ c[j]))] = j
    return assign


def assign_to_centroids(lat: np.ndarray, lon: np.ndarray, centroids: pl.DataFrame) -> np.ndarray:
    """Nearest centroid (great-circle) of each point: labels for new data.

    Geocells (names ``CC-n``) keep to borders: a point takes the nearest cell
    of its own country, and the nearest of all only where its country has none.
    """
    c = latlon_to_xyz(centroids["lat"].to_numpy(), centroids["lon"].to_numpy())
    sim = latlon_to_xyz(lat, lon) @ c.T
    if "strategy" in centroids.columns and centroids.height and centroids["strategy"][0] == "geocells":
        from worldnet.geo.regions import country_of

        cell_country = np.array([n.rsplit("-", 1)[0] for n in centroids["name"].to_list()])
        own = country_of(lat, lon).astype(str)[:, None] == cell_country[None, :]
        has = own.any(axis=1)
        sim = np.where(own | ~has[:, None], sim, -np.inf)
    return np.argmax(sim, axis=1)


__all__ = ["assign_to_centroids", "cluster_locations", "clusters_for", "resolve_strategy"]
