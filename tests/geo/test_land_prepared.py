"""The land mesh and the countries load from a prepared file in the user's cache, and answer exactly as when built."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely

from worldnet.geo import land, naturalearth
from worldnet.geo.sphere import uniform_sphere


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own; the process-wide mesh and countries are forgotten before and after."""
    monkeypatch.setenv("WORLDNET_CACHE_DIR", str(tmp_path / "cache"))
    _forget()
    yield tmp_path / "cache"
    _forget()


def _forget() -> None:
    land.land_mesh.cache_clear()
    naturalearth.load_countries.cache_clear()
    naturalearth.land_rings.cache_clear()


def _points(mesh: land.LandMesh, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Points anywhere, and points within a few km of a coastline (where land, sea and borders meet)."""
    lat, lon = uniform_sphere(n, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    pick = rng.choice(len(mesh._coast_lat), n, replace=False)
    near_lat = np.clip(mesh._coast_lat[pick] + rng.normal(0, 0.05, n), -90, 90)
    near_lon = (mesh._coast_lon[pick] + rng.normal(0, 0.05, n) + 180) % 360 - 180
    return np.concatenate([lat, near_lat]), np.concatenate([lon, near_lon])


def test_the_prepared_mesh_answers_as_the_built_one(cache):
    built = land.LandMesh(naturalearth.read_countries())
    first = land.land_mesh()  # nothing prepared yet: built, then written
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["countries", "land"]
    _forget()
    t = time.perf_counter()
    loaded = land.land_mesh()
    seconds = time.perf_counter() - t
    assert loaded is not first and seconds < 1.5, seconds  # about 0.15 s here; building takes about 2 s
    assert loaded._kd is None  # no k-d tree until a query needs one
    assert shapely.equals_exact(loaded.countries.geometry, built.countries.geometry, 0).all()
    assert (loaded.countries.iso_a2 == built.countries.iso_a2).all() and (loaded.countries.continent == built.countries.continent).all()
    lat, lon = _points(built)
    np.testing.assert_array_equal(loaded.country_index(lat, lon), built.country_index(lat, lon))
    np.testing.assert_array_equal(loaded.locate(lat, lon), built.locate(lat, lon))
    a, b = loaded.snap(lat, lon), built.snap(lat, lon)
    for field in ("lat", "lon", "moved_km", "moved"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_a_few_points_at_sea_find_the_same_coast_without_the_tree(cache):
    mesh = land.land_mesh()
    lat, lon = _points(mesh, 400)
    sea = ~mesh.is_land(lat, lon)
    lat, lon = lat[sea][:300], lon[sea][:300]
    assert len(lat) == 300
    tree = mesh.nearest_coast(lat, lon)  # more than FEW_POINTS: through the k-d tree
    assert mesh._kd is not None
    for i in range(0, len(lat), 10):  # one to a few points at a time: the exact search without the tree
        few = mesh.nearest_coast(lat[i : i + 3], lon[i : i + 3])
        for got, want in zip(few, tree, strict=True):
            np.testing.assert_array_equal(got, want[i : i + 3])
    # a border vertex two countries share is as near as can be to two countries: the tree decides, as it always did
    la, lo, co = mesh._coast_lat, mesh._coast_lon, mesh._coast_country
    order = np.lexsort((lo, la))
    same = (np.diff(la[order]) == 0) & (np.diff(lo[order]) == 0) & (np.diff(co[order]) != 0)
    shared = order[np.flatnonzero(same)[:3]]
    assert len(shared) == 3
    assert mesh._nearest_few(la[shared], lo[shared]) is None
    want = mesh._kdtree.query(land.latlon_to_xyz(la[shared], lo[shared]))[1]
    np.testing.assert_array_equal(mesh.nearest_coast(la[shared], lo[shared])[3], co[want])


def test_the_drawn_land_is_prepared_too(cache):
    built = naturalearth.land_rings(0.2)  # simplified from the polygons (about 0.6 s), then prepared
    _forget()
    t = time.perf_counter()
    loaded = naturalearth.land_rings(0.2)
    assert time.perf_counter() - t < 0.5
    assert len(loaded) == len(built) > 1000
    assert all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(loaded, built, strict=True))


def test_a_damaged_prepared_file_is_built_again_and_replaced(cache):
    land.land_mesh()
    for f in cache.iterdir():
        f.write_bytes(b"PK\x03\x04 not a whole zip")
    _forget()
    mesh = land.land_mesh()
    assert mesh.countries.iso_a2[mesh.locate([48.85], [2.35])][0] == "FR"
    assert all(naturalearth.read_prepared(f) is not None for f in cache.iterdir())


def test_an_unwritable_cache_costs_a_rebuild_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("WORLDNET_CACHE_DIR", str(blocker / "cache"))
    _forget()
    try:
        assert len(naturalearth.load_countries()) > 200 and not (blocker / "cache").exists()
        assert naturalearth.write_prepared(blocker / "cache" / "x.npz", {"a": np.zeros(1)}) is False
    finally:
        _forget()
