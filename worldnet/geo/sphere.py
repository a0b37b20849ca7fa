"""Distances and averages on the sphere.

Everything geographic in worldnet goes through unit vectors rather than raw
degrees: averaging degrees puts the mean of 179°E and 179°W at 0°, and a
degree of longitude is 111 km at the equator but 0 km at the pole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import torch

#: Mean Earth radius (IUGG), the radius used by every distance in worldnet.
EARTH_RADIUS_KM = 6371.0088

FloatArray = NDArray[np.float64]


def haversine_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> FloatArray:
    """Great-circle distance in kilometres between points given in degrees.

    Broadcasts like numpy, so one point against many works without loops.

    Args:
        lat1: Latitudes of the first points, degrees.
        lon1: Longitudes of the first points, degrees.
        lat2: Latitudes of the second points, degrees.
        lon2: Longitudes of the second points, degrees.

    Returns:
        Distances in km, shaped like the broadcast inputs.
    """
    p1, l1, p2, l2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def haversine_km_torch(lat1: torch.Tensor, lon1: torch.Tensor, lat2: torch.Tensor, lon2: torch.Tensor) -> torch.Tensor:
    """Differentiable great-circle distance in km, for use as a training loss.

    ``arcsin(sqrt(a))`` has an infinite derivative at ``a = 0`` (a perfect
    prediction), so ``a`` is clamped to ``[1e-12, 1]``: the gradient stays
    finite and the distance error this introduces is below a millimetre.

    Args:
        lat1: Latitudes in degrees.
        lon1: Longitudes in degrees.
        lat2: Latitudes in degrees.
        lon2: Longitudes in degrees.

    Returns:
        Distances in km, same shape as the broadcast inputs.
    """
    import torch

    p1, l1, p2, l2 = (torch.deg2rad(t) for t in (lat1, lon1, lat2, lon2))
    a = torch.sin((p2 - p1) / 2) ** 2 + torch.cos(p1) * torch.cos(p2) * torch.sin((l2 - l1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a.clamp(1e-12, 1.0)))


def latlon_to_xyz(lat: ArrayLike, lon: ArrayLike) -> FloatArray:
    """Unit vectors (..., 3) for latitudes and longitudes in degrees."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=-1)


def xyz_to_latlon(xyz: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Latitude and longitude in degrees of vectors (..., 3); need not be unit length."""
    v = np.asarray(xyz, dtype=np.float64)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, lon


def spherical_mean(
    lat: ArrayLike,
    lon: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    min_norm: float = 1e-9,
) -> tuple[float, float]:
    """Weighted mean position on the sphere: average the unit vectors, renormalise.

    Unlike averaging degrees this behaves across the antimeridian and near the
    poles. When the weighted vectors cancel out (an antipodal pair, points
    spread evenly round a great circle, or all-zero weights) the mean has no
    direction, so we refuse rather than return an arbitrary point.

    Args:
        lat: Latitudes in degrees.
        lon: Longitudes in degrees.
        weights: Non-negative weights, one per point; equal weights if None.
        min_norm: The smallest length of the weighted vector sum (relative to
            the total weight) that still defines a direction.

    Returns:
        ``(lat, lon)`` of the mean in degrees.

    Raises:
        ValueError: On empty input, negative or all-zero weights, or when the
            points cancel out and the mean is undefined.
    """
    xyz = latlon_to_xyz(lat, lon).reshape(-1, 3)
    if len(xyz) == 0:
        raise ValueError("spherical_mean needs at least one point")
    w = np.ones(len(xyz)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != xyz.shape[0]:
        raise ValueError(f"got {w.shape[0]} weights for {xyz.shape[0]} points")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights sum to zero: the weighted mean is undefined")
    v = (w[:, None] * xyz).sum(axis=0) / total
    if np.linalg.norm(v) < min_norm:
        raise ValueError("the points cancel out on the sphere (e.g. an antipodal pair): their mean position is undefined")
    mlat, mlon = xyz_to_latlon(v)
    return float(mlat), float(mlon)


#: Photos that lie this far apart on average are worldwide: what the median composition and retrieval are for.
WORLDWIDE_KM = 2500.0


def mean_spread_km(latlon: ArrayLike, sample: int = 1000) -> float:
    """The mean great-circle distance between two of the photos at ``latlon`` (a seeded sample of ``sample`` of them)."""
    ll = np.asarray(latlon, dtype=np.float64)
    if len(ll) < 2:
        return 0.0
    pick = np.random.default_rng(0).choice(len(ll), min(sample, len(ll)), replace=False)
    xyz = latlon_to_xyz(ll[pick, 0], ll[pick, 1])
    return float(np.arccos(np.clip(xyz @ xyz.T, -1.0, 1.0)).mean() * EARTH_RADIUS_KM)


def is_worldwide(latlon: ArrayLike) -> bool:
    """Whether photos at ``latlon`` lie :data:`WORLDWIDE_KM` apart on average (street_world: yes; the US West, 713 km: no)."""
    return mean_spread_km(latlon) >= WORLDWIDE_KM


def uniform_sphere(n: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """``n`` points uniform on the sphere (uniform in area, not in degrees)."""
    z = rng.uniform(-1.0, 1.0, n)
    lon = rng.uniform(-180.0, 180.0, n)
    return np.degrees(np.arcsin(z)), lon
