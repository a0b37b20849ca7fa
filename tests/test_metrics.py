import numpy as np
import pytest

from worldnet.metrics import accuracy_within, distance_summary, geoscore


def test_accuracy_thresholds_inclusive():
    acc = accuracy_within([0.5, 25.0, 199.0, 800.0, 3000.0])
    assert acc == {
        "acc_1km": 0.2,
        "acc_25km": 0.4,
        "acc_200km": 0.6,
        "acc_750km": 0.6,
        "acc_1000km": 0.8,
        "acc_2500km": 0.8,
    }


def test_geoscore_bounds():
    assert geoscore([0.0]) == 5000.0
    assert geoscore([1492.7]) == pytest.approx(5000 / np.e)


def test_summary_ci_brackets_mean():
    d = np.random.default_rng(0).exponential(1000, 500)
    s = distance_summary(d)
    assert s["mean_km_lo"] < s["mean_km"] < s["mean_km_hi"]
    assert s["median_km"] == pytest.approx(np.median(d))


def test_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        distance_summary([])
