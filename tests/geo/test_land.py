import time

import numpy as np
import polars as pl
import pytest

from worldnet.geo import continent_of, country_of, haversine_km, is_land, land_mesh, snap_to_land, uniform_sphere

GSV_CITIES = {
    # city: (lat, lon, continent)
    "Bangkok": (13.7563, 100.5018, "Asia"),
    "Osaka": (34.6937, 135.5023, "Asia"),
    "Melbourne": (-37.8136, 144.9631, "Oceania"),
    "BuenosAires": (-34.6037, -58.3816, "South America"),
    "Medellin": (6.2442, -75.5812, "South America"),
    "TRT": (43.6532, -79.3832, "North America"),
    "Miami": (25.7743, -80.2200, "North America"),
    "MexicoCity": (19.4326, -99.1332, "North America"),
    "Boston": (42.3601, -71.0589, "North America"),
    "Chicago": (41.8781, -87.6298, "North America"),
    "LosAngeles": (34.0522, -118.2437, "North America"),
    "Minneapolis": (44.9778, -93.2650, "North America"),
    "Phoenix": (33.4484, -112.0740, "North America"),
    "WashingtonDC": (38.9072, -77.0369, "North America"),
    "Barcelona": (41.3874, 2.1686, "Europe"),
    "Brussels": (50.8503, 4.3517, "Europe"),
    "Lisbon": (38.7223, -9.1393, "Europe"),
    "London": (51.5072, -0.1276, "Europe"),
    "Madrid": (40.4168, -3.7038, "Europe"),
    "OSL": (59.9139, 10.7522, "Europe"),
    "PRG": (50.0755, 14.4378, "Europe"),
    "PRS": (48.8566, 2.3522, "Europe"),
    "Rome": (41.9028, 12.4964, "Europe"),
}


def test_gsv_city_continents():
    lat = [v[0] for v in GSV_CITIES.values()]
    lon = [v[1] for v in GSV_CITIES.values()]
    got = continent_of(lat, lon)
    want = [v[2] for v in GSV_CITIES.values()]
    assert dict(zip(GSV_CITIES, got, strict=True)) == dict(zip(GSV_CITIES, want, strict=True))
    assert is_land(lat, lon).all()


def test_countries():
    assert list(country_of([48.85, 35.68, -33.87], [2.35, 139.69, 151.21])) == ["FR", "JP", "AU"]


def test_mid_atlantic_snaps_to_a_coast_and_reports_distance():
    res = snap_to_land([30.0], [-40.0])
    assert res.moved[0]
    assert is_land(res.lat, res.lon)[0]
    # the reported distance is the real great-circle distance to the new point
    assert res.moved_km[0] == pytest.approx(float(haversine_km(30.0, -40.0, res.lat[0], res.lon[0])))
    assert 500 < res.moved_km[0] < 2000  # the Azores are ~1,300 km away


def test_land_points_do_not_move():
    res = snap_to_land([48.85, -33.87], [2.35, 151.21])
    assert not res.moved.any()
    assert (res.moved_km == 0).all()


def test_snap_is_nearest_in_km_off_northern_norway():
    # North of Norway's coast: degrees of longitude are short here, so the
    # nearest coast in km is due south, not east/west along a parallel.
    res = snap_to_land([71.6], [25.0])
    mesh = land_mesh()
    # brute force over every coastline vertex within a wide window
    lat, lon = mesh._coast_lat, mesh._coast_lon
    win = (np.abs(lat - 71.6) < 5) & (np.abs(lon - 25.0) < 30)
    best = haversine_km(71.6, 25.0, lat[win], lon[win]).min()
    assert res.moved_km[0] == pytest.approx(best, abs=1e-6)


def test_snap_across_antimeridian():
    # Just east of 180° near Fiji's Taveuni (≈179.9°W); nearest land is across the line.
    res = snap_to_land([-16.8], [-179.6])
    assert res.moved[0]
    assert res.moved_km[0] < 60


def test_snap_error_bound_is_documented():
    assert land_mesh().error_bound_km < 1.0


def test_ten_thousand_ocean_points_snap_fast():
    lat, lon = uniform_sphere(20000, np.random.default_rng(1))
    sea = ~is_land(lat, lon)
    lat, lon = lat[sea][:10000], lon[sea][:10000]
    assert len(lat) == 10000
    t = time.perf_counter()
    res = snap_to_land(lat, lon)
    elapsed = time.perf_counter() - t
    assert res.moved.all()
    assert is_land(res.lat, res.lon).all()
    assert elapsed < 2.0, f"snapping took {elapsed:.2f}s"


def test_bad_coordinates_raise():
    with pytest.raises(ValueError, match="out of range"):
        is_land([91.0], [0.0])


@pytest.mark.real_data
def test_real_gsv_cities_land_and_continents(shared_data):
    t = time.perf_counter()
    df = pl.read_parquet(shared_data / "gsv_cities_metadata" / "gsv_cities_metadata.parquet")
    lat, lon = df["lat"].to_numpy(), df["lon"].to_numpy()
    land = is_land(lat, lon)
    assert land.mean() >= 0.985
    snap = snap_to_land(lat, lon)
    assert snap.moved_km.max() < 3.0
    cont = continent_of(lat, lon)
    check = pl.DataFrame({"city": df["city"], "got": cont}).with_columns(
        want=pl.col("city").replace_strict({k: v[2] for k, v in GSV_CITIES.items()})
    )
    per_city = check.group_by("city").agg((pl.col("got") == pl.col("want")).mean().alias("ok"))
    assert per_city["ok"].min() >= 0.999, per_city.sort("ok").head(3)
    assert time.perf_counter() - t < 60
