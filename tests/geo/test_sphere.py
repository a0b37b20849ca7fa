import numpy as np
import pytest
import torch

from worldnet.geo import haversine_km, haversine_km_torch, latlon_to_xyz, spherical_mean, xyz_to_latlon


def test_london_paris():
    assert haversine_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.5, abs=1.0)


def test_antipodes_half_circumference():
    assert haversine_km(10.0, 20.0, -10.0, -160.0) == pytest.approx(20015.1, abs=1.0)


def test_haversine_broadcasts():
    d = haversine_km(0.0, 0.0, np.array([0.0, 0.0, 90.0]), np.array([0.0, 1.0, 0.0]))
    assert d.shape == (3,)
    assert d[0] == 0 and d[1] == pytest.approx(111.195, abs=0.01) and d[2] == pytest.approx(10007.5, abs=1)


def test_torch_matches_numpy_and_has_finite_gradient_at_zero():
    rng = np.random.default_rng(0)
    a = rng.uniform([-80, -180], [80, 180], size=(50, 2))
    b = rng.uniform([-80, -180], [80, 180], size=(50, 2))
    ref = haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    t = haversine_km_torch(*(torch.tensor(x, dtype=torch.float64) for x in (a[:, 0], a[:, 1], b[:, 0], b[:, 1])))
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-9)
    lat = torch.tensor([10.0], dtype=torch.float64, requires_grad=True)
    haversine_km_torch(lat, torch.tensor([5.0]), torch.tensor([10.0]), torch.tensor([5.0])).sum().backward()
    assert torch.isfinite(lat.grad).all()


def test_torch_gradient_matches_finite_differences():
    lat = torch.tensor([12.0, -40.0], dtype=torch.float64, requires_grad=True)
    lon = torch.tensor([30.0, 170.0], dtype=torch.float64, requires_grad=True)
    tlat = torch.tensor([48.0, -33.0], dtype=torch.float64)
    tlon = torch.tensor([2.0, -170.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: haversine_km_torch(a, b, tlat, tlon), (lat, lon))


def test_xyz_roundtrip():
    lat = np.array([0.0, 45.0, -89.9, 12.3])
    lon = np.array([0.0, -179.5, 100.0, 179.9])
    xyz = latlon_to_xyz(lat, lon)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=-1), 1.0)
    rlat, rlon = xyz_to_latlon(xyz)
    np.testing.assert_allclose(rlat, lat, atol=1e-9)
    np.testing.assert_allclose(rlon, lon, atol=1e-9)


def test_mean_across_antimeridian_stays_on_it():
    lat, lon = spherical_mean([0.0, 0.0], [179.0, -179.0])
    assert lat == pytest.approx(0.0, abs=1e-9)
    assert abs(lon) == pytest.approx(180.0, abs=1e-9)


def test_mean_near_pole_stays_near_pole():
    lat, _ = spherical_mean([89.0, 89.0, 89.0], [0.0, 120.0, -120.0])
    assert lat > 89.9


def test_weighted_mean_leans_to_heavier_point():
    lat, lon = spherical_mean([0.0, 0.0], [0.0, 90.0], weights=[3.0, 1.0])
    assert lat == pytest.approx(0.0, abs=1e-9)
    assert 0 < lon < 45


@pytest.mark.parametrize(
    ("lat", "lon", "w", "msg"),
    [
        ([10.0, -10.0], [20.0, -160.0], None, "cancel out"),
        ([1.0, 2.0], [3.0, 4.0], [0.0, 0.0], "sum to zero"),
        ([1.0], [3.0], [-1.0], "non-negative"),
        ([], [], None, "at least one"),
    ],
)
def test_mean_degenerate_raises(lat, lon, w, msg):
    with pytest.raises(ValueError, match=msg):
        spherical_mean(lat, lon, w)
