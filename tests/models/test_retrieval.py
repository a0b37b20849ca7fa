"""Retrieval: the nearest training photos vote over the centroids, never their own fold's, and a saved model keeps it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.test_numpy_model import DIM, K, _model
from worldnet.geo.sphere import haversine_km, is_worldwide
from worldnet.models.numpy_model import read_twin, twin_path
from worldnet.models.predictor import load_worldnet, save_worldnet
from worldnet.models.retrieval import Retrieval, embed, fold_votes, sample_memory
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet, group_folds


def _clustered(n_per: int = 20, k: int = 3, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features that sit around one random direction per cluster (so a photo's neighbours share its cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


def test_votes_are_distributions_that_follow_the_neighbours_and_do_not_depend_on_the_batch():
    X, y = _clustered()
    r = Retrieval.fit(X, y, 3, k=5)
    v = r.votes(X)
    assert v.shape == (60, 3) and np.allclose(v.sum(1), 1.0) and (v >= 0).all()
    assert (v.argmax(1) == y).mean() > 0.95  # a photo's nearest photos are of its cluster
    np.testing.assert_array_equal(r.votes(X[7:8]), v[7:8])  # one row alone: the very same vote
    mixed = r.blend(np.full((60, 3), 1 / 3, np.float32), X)
    assert mixed.dtype == np.float32 and np.allclose(mixed.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(mixed, 0.5 / 3 + 0.5 * v, atol=1e-6)


def test_a_rows_vote_comes_from_the_other_folds_only():
    """Each fold's own photos are of one cluster and every other photo of another: the vote must be all the other's."""
    X, _ = _clustered(n_per=30, k=2)
    groups = np.arange(60) // 3  # places of three photos
    folds = group_folds(groups, 5, seed=0)
    assert sum(f.astype(int) for f in folds).tolist() == [1] * 60  # every row held out once, places whole
    for held in folds:
        labels = np.where(held, 0, 1)
        v = fold_votes(embed(X, X.mean(0)), labels, folds, 2, k=10)
        np.testing.assert_allclose(v[held], np.tile([0.0, 1.0], (held.sum(), 1)), atol=1e-6)


def test_memory_is_capped_with_every_cluster_kept():
    labels = np.array([0] * 500 + [1] * 3 + [2])
    keep = sample_memory(labels, 50, seed=0)
    assert len(keep) == 50 and set(labels[keep]) == {0, 1, 2} and len(set(keep)) == 50
    np.testing.assert_array_equal(sample_memory(labels[:40], 50), np.arange(40))
    with pytest.raises(ValueError, match="one cluster label per training photo"):
        Retrieval.fit(np.zeros((3, 4), np.float32), np.zeros(2), 1)


def test_on_for_worldwide_photos_off_in_one_region():
    world = np.array([[48.9, 2.4], [35.7, 139.7], [-33.9, 151.2], [40.7, -74.0], [-23.5, -46.6]])
    us_west = np.array([[37.8, -122.4], [34.1, -118.2], [47.6, -122.3], [36.2, -115.1], [45.5, -122.7]])
    assert is_worldwide(world) and not is_worldwide(us_west)


def test_training_mixes_it_where_the_data_is_worldwide_and_a_saved_model_answers_alike_on_both_paths(tmp_path):
    X, y = _clustered(n_per=20, k=3, dim=DIM)
    world = np.array([[40.4, -3.7], [13.7, 100.5], [-33.9, 151.2]])
    latlon = world[y] + np.random.default_rng(1).normal(scale=0.3, size=(60, 2))
    cfg = TrainConfig(max_epochs=3, head_epochs=5, crossfit_folds=3)
    wn = fit_worldnet(X, y, latlon, np.arange(60) // 2, X[:9], y[:9], world, ["a", "b", "c"], mode="crossfit", cfg=cfg)
    assert wn.retrieval is not None and wn.metrics["retrieval"] == 1.0
    off = fit_worldnet(
        X,
        y,
        latlon,
        np.arange(60) // 2,
        X[:9],
        y[:9],
        world,
        ["a", "b", "c"],
        cfg=TrainConfig(max_epochs=3, head_epochs=5, retrieval=False),
    )
    assert off.retrieval is None and off.metrics["retrieval"] == 0.0

    path = save_worldnet(wn, tmp_path / "m.pt", backbone="tiny_random")
    loaded, twin = load_worldnet(path)[0], read_twin(twin_path(path))
    assert loaded.retrieval is not None and twin.retrieval is not None
    np.testing.assert_array_equal(twin.retrieval.memory, loaded.retrieval.memory)
    Q = X[::7] + 0.1
    (_, p), (ll2, p2), (ll3, p3) = wn.predict(Q), loaded.predict(Q), twin.predict(Q)
    np.testing.assert_allclose(p2, p, atol=1e-6)  # the memory is kept as it is saved (float16)
    np.testing.assert_allclose(p3, p2, atol=1e-4)
    assert haversine_km(ll3[:, 0], ll3[:, 1], ll2[:, 0], ll2[:, 1]).max() < 1.0
    assert not np.allclose(p, wn.retrieval.blend(np.zeros_like(p), Q))  # the classifier's part counts too


def test_a_random_model_with_retrieval_has_a_twin_that_agrees(tmp_path):
    wn = _model("mlp", 3, 10, 0.5)
    rng = np.random.default_rng(2)
    wn.retrieval = Retrieval.fit(rng.normal(size=(40, DIM)).astype(np.float32), rng.integers(0, K, 40), K)
    path = save_worldnet(wn, tmp_path / "r.pt", backbone="tiny_random")
    X = rng.normal(size=(16, DIM)).astype(np.float32)
    (a, pa), (b, pb) = load_worldnet(path)[0].predict(X), read_twin(twin_path(path)).predict(X)
    np.testing.assert_allclose(pb, pa, atol=1e-4)
    assert haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1]).max() < 1.0


def test_training_votes_come_from_a_memory_as_large_as_the_models():
    """Above the model's memory the other folds are sampled down to it, so a training vote sees neighbours as dense as an answer's."""
    X, y = _clustered(n_per=40, k=3)
    E = embed(X, X.mean(0))
    folds = group_folds(np.arange(120), 2, seed=0)
    full, capped = fold_votes(E, y, folds, 3, k=5), fold_votes(E, y, folds, 3, k=5, max_memory=12)
    assert np.allclose(full.sum(1), 1.0) and np.allclose(capped.sum(1), 1.0)
    assert not np.allclose(full, capped)  # fewer, farther neighbours
    single = fold_votes(E, y, [np.ones(120, bool)], 3)
    assert not single.any()  # no other fold: no vote (the head then trains on the classifier's distribution alone)
