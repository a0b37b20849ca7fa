"""Clustering: city centroids, seeded spherical k-means, and the antimeridian."""

import numpy as np
import polars as pl
import pytest

from worldnet.clustering import assign_to_centroids, cluster_locations
from worldnet.geo.sphere import haversine_km


def _labels(lat, lon, city):
    return pl.DataFrame({"lat": np.asarray(lat, float), "lon": np.asarray(lon, float), "city": city})


def test_city_centroid_straddling_the_antimeridian_stays_there():
    # Fiji-like points on both sides of 180°: a lat/lon average would land near lon 0
    rng = np.random.default_rng(0)
    lon = np.where(rng.random(40) < 0.5, 179.7 + rng.random(40) * 0.3, -179.9 + rng.random(40) * 0.3)
    lat = -17.8 + rng.normal(0, 0.1, 40)
    cents, assign = cluster_locations(_labels(lat, lon, ["Suva"] * 40), "city")
    c = cents.row(0, named=True)
    assert abs(abs(c["lon"]) - 180) < 0.5, c
    assert haversine_km(c["lat"], c["lon"], -17.8, 180.0) < 60
    assert (assign == 0).all() and c["n_images"] == 40


def test_kmeans_finds_antimeridian_cluster_and_is_seeded():
    rng = np.random.default_rng(1)
    groups = [(-17.8, 179.95), (48.85, 2.35), (40.7, -74.0)]
    lat = np.concatenate([g[0] + rng.normal(0, 0.2, 30) for g in groups])
    lon = np.concatenate([g[1] + rng.normal(0, 0.2, 30) for g in groups])
    lon = (lon + 180) % 360 - 180
    labels = _labels(lat, lon, ["x"] * 90)
    cents, assign = cluster_locations(labels, "kmeans", k=3, seed=7)
    again, assign2 = cluster_locations(labels, "kmeans", k=3, seed=7)
    assert cents.equals(again) and np.array_equal(assign, assign2)
    # every true group ends up in exactly one cluster, and each centroid is near its group
    for i, (glat, glon) in enumerate(groups):
        ids = set(assign[i * 30 : (i + 1) * 30].tolist())
        assert len(ids) == 1
        c = cents.filter(pl.col("cluster_id") == ids.pop()).row(0, named=True)
        assert haversine_km(c["lat"], c["lon"], glat, glon) < 50
    assert sorted(cents["n_images"].to_list()) == [30, 30, 30]


def test_city_strategy_one_cluster_per_city_sorted():
    cents, assign = cluster_locations(_labels([1, 2, 50], [1, 2, 10], ["B", "B", "A"]), "city")
    assert cents["name"].to_list() == ["A", "B"]
    assert assign.tolist() == [1, 1, 0]
    assert cents["n_images"].to_list() == [1, 2]


def test_assign_to_centroids_uses_great_circle_distance():
    cents = pl.DataFrame({"cluster_id": [0, 1], "name": ["w", "e"], "lat": [0.0, 0.0], "lon": [-179.0, 170.0], "n_images": [1, 1]})
    # 179.5 is 1.5° from -179 across the antimeridian but 9.5° from 170
    assert assign_to_centroids(np.array([0.0]), np.array([179.5]), cents).tolist() == [0]


@pytest.mark.parametrize(("strategy", "k", "match"), [("kmeans", 10, "between 1 and"), ("nope", 2, "choose one of")])
def test_bad_arguments_say_what_is_allowed(strategy, k, match):
    with pytest.raises(ValueError, match=match):
        cluster_locations(_labels([1, 2], [1, 2], ["a", "b"]), strategy, k=k)
