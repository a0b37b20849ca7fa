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


def _scattered_countries(seed=0):
    """Photos of three compact cities, and of three whole countries whose places lie hundreds of km apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for city, (lat, lon) in {"Paris": (48.85, 2.35), "Cairo": (30.04, 31.24), "Tokyo": (35.68, 139.69)}.items():
        rows += [(lat + rng.normal(0, 0.05), lon + rng.normal(0, 0.05), city) for _ in range(30)]
    boxes = {"USA": (30, 47, -120, -75), "Australia": (-37, -20, 115, 150), "Brazil": (-30, -5, -60, -38)}
    for country, (lat0, lat1, lon0, lon1) in boxes.items():
        rows += [(rng.uniform(lat0, lat1), rng.uniform(lon0, lon1), country) for _ in range(60)]
    lat, lon, city = zip(*rows, strict=True)
    return _labels(lat, lon, list(city))


def test_auto_takes_compact_groups_as_clusters_and_sprawling_ones_to_kmeans():
    from worldnet.clustering import resolve_strategy

    world = _scattered_countries()
    cities = world.filter(pl.col("city").is_in(["Paris", "Cairo", "Tokyo"]))
    assert resolve_strategy(cities, "auto") == "city"
    assert resolve_strategy(world, "auto") == "kmeans"
    cents, _ = cluster_locations(world, "auto", k=0)
    assert set(cents["strategy"].to_list()) == {"kmeans"} and 3 < cents.height < world.height / 5


def test_k_grows_with_the_square_root_of_the_places():
    from worldnet.clustering import clusters_for

    assert clusters_for(100) == 15 and clusters_for(400) == 30
    assert clusters_for(1) == 2 and clusters_for(10**9) == 400


def test_geocells_keep_to_borders_and_split_big_countries():
    world = _scattered_countries()
    cents, assign = cluster_locations(world, "geocells", k=12)
    countries = {n.rsplit("-", 1)[0] for n in cents["name"].to_list()}
    assert {"US", "AU", "BR", "FR", "EG", "JP"} <= countries
    assert sum(n.startswith("US-") for n in cents["name"].to_list()) >= 2  # the sprawling country is split
    # new points take a cell of their own country, even where another country's cell is nearer
    tijuana_side = assign_to_centroids(np.array([32.6]), np.array([-117.0]), cents)
    assert cents["name"][int(tijuana_side[0])].startswith("US-")
    assert (assign_to_centroids(world["lat"].to_numpy(), world["lon"].to_numpy(), cents) == assign).mean() > 0.95


def test_target_smoothing_follows_the_spacing_of_the_centroids():
    from worldnet.models.worldnet_model import centroid_spacing_km

    row = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])  # 1° apart on the equator: 111 km
    assert centroid_spacing_km(row) == pytest.approx(111.2, abs=0.5)
    assert centroid_spacing_km(row * 5) == pytest.approx(556, abs=2)
    assert centroid_spacing_km(row[:1]) == 0.0
