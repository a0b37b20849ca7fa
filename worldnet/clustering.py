"""Cluster training locations into the centroids worldNET classifies over.

* ``city``: one cluster per city, centroid = spherical mean of its images (the
  paper's choice: GSV-Cities only has city-level structure).
* ``kmeans``: spherical k-means on 3-D unit vectors (seeded k-means++ start),
  so clusters straddling the antimeridian get the right centroid.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from worldnet.geo.sphere import latlon_to_xyz, spherical_mean

STRATEGIES = ("city", "kmeans")

CENTROID_SCHEMA = {"cluster_id": pl.Int64, "name": pl.String, "lat": pl.Float64, "lon": pl.Float64, "n_images": pl.Int64}


def cluster_locations(
    labels: pl.DataFrame, strategy: str = "city", *, k: int = 23, seed: int = 0, n_iter: int = 50
) -> tuple[pl.DataFrame, np.ndarray]:
    """Centroids table and each row's cluster id.

    Args:
        labels: Rows with lat, lon (and city for the ``city`` strategy).
        strategy: ``city`` or ``kmeans``.
        k: Number of clusters for ``kmeans``.
        seed: Seed for ``kmeans``.
        n_iter: Lloyd iterations for ``kmeans``.

    Raises:
        ValueError: Unknown strategy, no rows, or ``k`` larger than the rows.
    """
    if labels.height == 0:
        raise ValueError("no training locations to cluster")
    lat, lon = labels["lat"].to_numpy(), labels["lon"].to_numpy()
    if strategy == "city":
        names = sorted(labels["city"].unique().to_list())
        lookup = {n: i for i, n in enumerate(names)}
        assign = np.array([lookup[c] for c in labels["city"].to_list()])
    elif strategy == "kmeans":
        if not 1 <= k <= labels.height:
            raise ValueError(f"k={k} must be between 1 and the number of rows ({labels.height})")
        assign = _spherical_kmeans(latlon_to_xyz(lat, lon), k, seed, n_iter)
        names = [f"cluster_{i:03d}" for i in range(k)]
    else:
        raise ValueError(f"unknown clustering strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    rows = []
    for i, name in enumerate(names):
        m = assign == i
        clat, clon = spherical_mean(lat[m], lon[m])
        rows.append({"cluster_id": i, "name": name, "lat": clat, "lon": clon, "n_images": int(m.sum())})
    return pl.DataFrame(rows, schema=CENTROID_SCHEMA), assign


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
    """Nearest centroid (great-circle) of each point: labels for new data."""
    c = latlon_to_xyz(centroids["lat"].to_numpy(), centroids["lon"].to_numpy())
    return np.argmax(latlon_to_xyz(lat, lon) @ c.T, axis=1)


__all__ = ["assign_to_centroids", "cluster_locations"]
