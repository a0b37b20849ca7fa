"""The linear centroid classifier: smoothed targets, capped whitening, and a round trip through the model file."""

import numpy as np
import torch

from worldnet.geo.sphere import haversine_km
from worldnet.models.linear import smoothed_targets, torch_threads, whitening
from worldnet.models.predictor import load_classifier, save_classifier
from worldnet.models.worldnet_model import TrainConfig, fit_classifier, predict_proba


def test_smoothed_targets_spread_over_near_centroids_only():
    cents = np.array([[40.0, -120.0], [41.0, -120.0], [47.0, -100.0]])  # 111 km apart, then far away
    latlon = np.array([[40.1, -120.0]])
    hard = smoothed_targets(latlon, cents, np.array([0]), 0.0)
    assert hard.tolist() == [[1.0, 0.0, 0.0]]
    soft = smoothed_targets(latlon, cents, np.array([0]), 150.0)[0]
    assert abs(soft.sum() - 1) < 1e-6
    assert soft[0] > soft[1] > 0.1 and soft[2] < 1e-3
    d = haversine_km(40.1, -120.0, cents[:, 0], cents[:, 1])
    assert np.allclose(soft[1] / soft[0], np.exp(-(d[1] - d[0]) / 150.0), rtol=1e-4)


def test_whitening_keeps_at_most_one_component_per_eight_rows():
    X = torch.randn(80, 64)
    X -= X.mean(0)
    proj, p = whitening(X, 128)
    assert p == 10 and proj.shape == (64, 10)
    Z = X @ proj
    assert torch.allclose(Z.std(0), torch.ones(10), atol=0.05)


def test_linear_classifier_learns_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    k, n = 5, 400
    y = rng.integers(0, k, n)
    X = (rng.normal(size=(k, 32))[y] * 2 + rng.normal(size=(n, 32))).astype(np.float32)
    fit = fit_classifier(X[:300], y[:300], X[300:], y[300:], k, TrainConfig(seed=0, classifier="linear"))
    assert fit.classifier.kind == "linear"
    assert fit.metrics["val_accuracy"] > 0.9
    save_classifier(fit, tmp_path / "clf.pt")
    again = load_classifier(tmp_path / "clf.pt")
    assert again.classifier.kind == "linear"
    a = predict_proba(fit.classifier, fit.standardiser(X[300:]))
    b = predict_proba(again.classifier, again.standardiser(X[300:]))
    assert torch.allclose(a, b)


def test_training_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
