"""The paper's baselines behave as the paper describes, and scale."""

import numpy as np
import pytest
from sklearn.cluster import MeanShift
from threadpoolctl import threadpool_limits

from worldnet.geo.sphere import haversine_km, latlon_to_xyz, spherical_mean, xyz_to_latlon
from worldnet.models.baselines import fit_direct_regression, meanshift_modes, nearest_neighbours, nn_classifier, predict_direct_regression


def _neighbour_sets(n: int, k: int = 10, seed: int = 0) -> np.ndarray:
    """(n, k, 2) lat/lon sets: a dense group plus scattered outliers, as kNN neighbours look."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, k, 2))
    for i in range(n):
        centre = rng.uniform([30, -125], [50, -100])
        dense = int(rng.integers(4, k))
        out[i, :dense] = centre + rng.normal(0, 0.8, (dense, 2))
        out[i, dense:] = rng.uniform([25, -130], [55, -95], (k - dense, 2))
    return out


def test_vectorised_meanshift_finds_the_densest_mode_like_scikit_learn():
    sets = _neighbour_sets(60)
    xyz = latlon_to_xyz(sets[..., 0], sets[..., 1])
    ours = np.stack(xyz_to_latlon(meanshift_modes(xyz, bandwidth=0.1)), 1)
    agree = 0
    # scikit-learn's reference on one OpenMP thread: each fit is a few tiny parallel regions, and with PyTorch's own
    # libgomp loaded in the process (any earlier test) their idle threads spin against each other on 2 cores,
    # 0.4 s becoming 30-60 s; the clusters it finds do not depend on the threads
    with threadpool_limits(limits=1, user_api="openmp"):
        for i in range(len(sets)):
            ms = MeanShift(bandwidth=0.1).fit(xyz[i])
            lat, lon = xyz_to_latlon(ms.cluster_centers_[np.bincount(ms.labels_).argmax()])
            agree += haversine_km(ours[i, 0], ours[i, 1], float(lat), float(lon)) < 5
    assert agree >= 0.9 * len(sets)


def test_inverted_file_search_recalls_the_exact_neighbours():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    train = (centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 64))).astype(np.float32)
    test = (centres[rng.integers(0, 50, 300)] + 0.3 * rng.normal(size=(300, 64))).astype(np.float32)
    unit = [a / np.linalg.norm(a, axis=1, keepdims=True) for a in (train, test)]
    d_exact, exact = nearest_neighbours(*unit, 10)
    d_ivf, ivf = nearest_neighbours(*unit, 10, exact_pairs=0)  # force the index
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, ivf, strict=True)])
    assert recall > 0.9
    assert np.all(np.diff(d_exact, axis=1) >= -1e-6)  # nearest first


def test_nn_classifier_predicts_near_its_neighbours():
    rng = np.random.default_rng(1)
    ll = np.c_[rng.uniform(35, 45, 400), rng.uniform(-120, -110, 400)]
    X = np.c_[ll, rng.normal(size=(400, 6))].astype(np.float32)  # features that encode location
    for variant in ("weighted", "meanshift"):
        p = nn_classifier(X[:300], ll[:300], X[300:], k=5, variant=variant)
        assert haversine_km(ll[300:, 0], ll[300:, 1], p[:, 0], p[:, 1]).mean() < 400
    with pytest.raises(ValueError, match="variant"):
        nn_classifier(X[:10], ll[:10], X[10:], variant="median")


def test_direct_regression_hedges_towards_the_mean_instead_of_collapsing():
    # features with no location signal: the paper's regression lands near the mean model;
    # the old global 0-1 normalisation at lr 0.01 saturated the sigmoid and put every photo on a pole
    rng = np.random.default_rng(2)
    ll = np.c_[rng.uniform(33, 48, 600), rng.uniform(-124, -114, 600)]
    X = rng.normal(size=(600, 1280)).astype(np.float32)
    model, std = fit_direct_regression(X[:500], ll[:500], seed=0)
    p = predict_direct_regression(model, std, X[500:])
    mean = spherical_mean(ll[:500, 0], ll[:500, 1])
    km = haversine_km(ll[500:, 0], ll[500:, 1], p[:, 0], p[:, 1]).mean()
    km_mean = haversine_km(ll[500:, 0], ll[500:, 1], mean[0], mean[1]).mean()
    assert km < 1.2 * km_mean
    # and with a real signal it learns it
    Xs = np.c_[ll[:, :1] / 10, ll[:, 1:] / 10, X[:, :50]].astype(np.float32)
    model, std = fit_direct_regression(Xs[:500], ll[:500], seed=0)
    p = predict_direct_regression(model, std, Xs[500:])
    assert haversine_km(ll[500:, 0], ll[500:, 1], p[:, 0], p[:, 1]).mean() < 0.6 * km_mean


def test_best_constant_sits_with_the_bulk_and_beats_every_training_point_as_a_constant():
    from worldnet.models.baselines import BestConstant, MeanModel

    rng = np.random.default_rng(0)
    europe = np.c_[rng.normal(50, 3, 60), rng.normal(8, 5, 60)]
    far = np.array([[-33.9, 151.2], [35.7, 139.7], [-23.5, -46.6]])
    pts = np.r_[europe, far]
    best = BestConstant.fit(pts)

    def mean_km(lat, lon):
        return haversine_km(pts[:, 0], pts[:, 1], np.full(len(pts), lat), np.full(len(pts), lon)).mean()

    assert mean_km(best.lat, best.lon) <= min(mean_km(a, b) for a, b in pts) + 1e-6
    assert haversine_km(best.lat, best.lon, 50.0, 8.0) < 600  # in Europe, where most photos are
    mean = MeanModel.fit(pts)  # the paper's: the plain mean of latitudes and longitudes
    assert (mean.lat, mean.lon) == pytest.approx((pts[:, 0].mean(), pts[:, 1].mean()))
    assert mean_km(best.lat, best.lon) < mean_km(mean.lat, mean.lon)
    with pytest.raises(ValueError, match="at least one"):
        BestConstant.fit(np.zeros((0, 2)))
