"""Geolocation metrics: the paper's columns plus the field's standard ones."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Accuracy thresholds: the field's 1/25/200/750/2500 km (street, city, region,
#: country, continent) plus the paper's 1,000 km column.
THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 1000, 2500)

#: GeoGuessr-style score scale (km), as used by OSV-5M and others.
GEOSCORE_SCALE_KM = 1492.7


def accuracy_within(distances_km: ArrayLike, thresholds_km: tuple[int, ...] = THRESHOLDS_KM) -> dict[str, float]:
    """Fraction of predictions within each threshold, keyed ``acc_{t}km``."""
    d = _distances(distances_km)
    return {f"acc_{t}km": float(np.mean(d <= t)) for t in thresholds_km}


def geoscore(distances_km: ArrayLike) -> float:
    """Mean of ``5000 * exp(-d / 1492.7)``: 5000 is perfect, ~0 is the far side of the world."""
    d = _distances(distances_km)
    return float(np.mean(5000.0 * np.exp(-d / GEOSCORE_SCALE_KM)))


def bootstrap_mean_ci(distances_km: ArrayLike, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean distance."""
    d = _distances(distances_km)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def distance_summary(distances_km: ArrayLike, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every distance metric worldnet reports, in one flat dict.

    Returns:
        ``mean_km``, ``mean_km_lo``/``mean_km_hi`` (bootstrap 95% CI), ``median_km``,
        ``acc_{t}km`` for each threshold, ``geoscore`` and ``n``.
    """
    d = _distances(distances_km)
    lo, hi = bootstrap_mean_ci(d, n_boot=n_boot, seed=seed)
    out = {
        "n": float(len(d)),
        "mean_km": float(d.mean()),
        "mean_km_lo": lo,
        "mean_km_hi": hi,
        "median_km": float(np.median(d)),
    }
    out.update(accuracy_within(d))
    out["geoscore"] = geoscore(d)
    return out


def _distances(distances_km: ArrayLike) -> NDArray[np.float64]:
    d = np.asarray(distances_km, dtype=np.float64).reshape(-1)
    if d.size == 0:
        raise ValueError("no distances to summarise: the evaluation set is empty")
    if np.any(~np.isfinite(d)) or np.any(d < 0):
        raise ValueError("distances must be finite and non-negative")
    return d
