"""The interpolation head's spherical composition and the haversine loss it trains on."""

import numpy as np
import pytest
import torch

from worldnet.geo.sphere import haversine_km, haversine_km_torch, latlon_to_xyz
from worldnet.models.baselines import MeanModel
from worldnet.models.worldnet_model import InterpolationHead, TrainConfig, compose, fit_worldnet, train_head


def _xyz(latlon):
    a = np.asarray(latlon, float)
    return torch.tensor(latlon_to_xyz(a[:, 0], a[:, 1]), dtype=torch.float64)


def test_composition_across_the_antimeridian_stays_there():
    c = _xyz([[0.0, 179.0], [0.0, -179.0]])
    out = compose(torch.tensor([[0.5, 0.5]], dtype=torch.float64), c)
    # a lat/lon average would give lon 0, half the world away
    assert abs(abs(float(out[0, 1])) - 180.0) < 1e-6 and abs(float(out[0, 0])) < 1e-6


def test_one_hot_weights_return_the_centroid_and_mixtures_lie_on_the_great_circle():
    cents = [[48.85, 2.35], [40.71, -74.0], [-33.87, 151.21]]
    c = _xyz(cents)
    for i, (lat, lon) in enumerate(cents):
        w = torch.zeros(1, 3, dtype=torch.float64)
        w[0, i] = 1
        got = compose(w, c)[0]
        assert haversine_km(float(got[0]), float(got[1]), lat, lon) < 1e-6
    # 50/50 of Paris and New York: equidistant from both, on the shorter arc
    mid = compose(torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64), c)[0]
    d1 = haversine_km(float(mid[0]), float(mid[1]), *cents[0])
    d2 = haversine_km(float(mid[0]), float(mid[1]), *cents[1])
    assert abs(d1 - d2) < 1e-6
    assert abs(d1 + d2 - haversine_km(*cents[0], *cents[1])) < 1e-6


def test_head_weights_are_a_distribution_and_start_near_the_classifier():
    head = InterpolationHead(np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]]), hidden=8)
    probs = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), -1)
    w = head.weights(probs)
    torch.testing.assert_close(w.sum(-1), torch.ones(5))
    assert (w > 0).all()


def test_haversine_loss_gradient_matches_finite_differences_through_the_composition():
    torch.manual_seed(0)
    c = _xyz([[51.5, -0.1], [40.4, -3.7], [35.7, 139.7], [-23.5, -46.6]])
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[48.9, 2.3], [10.0, 100.0], [-10.0, -50.0]], dtype=torch.float64)

    def loss(z):
        p = compose(torch.softmax(z, -1), c)
        return haversine_km_torch(p[:, 0], p[:, 1], target[:, 0], target[:, 1]).mean()

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-4)
    # and the gradient points downhill
    g = torch.autograd.grad(loss(logits), logits)[0]
    with torch.no_grad():
        assert loss(logits - 1e-3 * g) < loss(logits)


def _mlp_weight_norm(head: InterpolationHead) -> float:
    return sum(float(layer.weight.detach().norm()) for layer in (head.mlp[0], head.mlp[2]))


def test_head_weight_decay_shrinks_only_the_mlp_weights():
    """The paper's composition (a weighted mean), whose head these weight-decay mechanics were written for."""
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    k = 8
    cents = np.c_[rng.uniform(-40, 60, k), rng.uniform(-180, 180, k)]
    # probabilities that say nothing about the targets: only a prior is learnable
    noise = torch.distributions.Dirichlet(torch.full((k,), 0.3))
    torch.manual_seed(0)
    probs = noise.sample((200,))
    targets = cents[rng.integers(0, k, 200)]
    free, _ = train_head(probs, targets, cents, TrainConfig(seed=0, median_steps=0), weight_decay=0.0)
    decayed, _ = train_head(probs, targets, cents, TrainConfig(seed=0, median_steps=0), weight_decay=100.0)
    assert _mlp_weight_norm(decayed) < 0.1 * _mlp_weight_norm(free)
    # the output bias (the prior over centroids) is not decayed: it grows from its zero start
    assert float(decayed.mlp[2].bias.detach().norm()) > 0.25
    # nor is the log-probability skip: with an informative classifier the decayed head still learns to trust it
    y = torch.from_numpy(rng.integers(0, k, 200))
    informative = torch.softmax(3 * torch.nn.functional.one_hot(y, k).float() + 0.5 * torch.randn(200, k, generator=gen), -1)
    _, losses = train_head(informative, cents[y.numpy()], cents, TrainConfig(seed=0, median_steps=0), weight_decay=100.0)
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="weight_decay"):
        train_head(probs, targets, cents, TrainConfig(seed=0), weight_decay=-1.0)


def _noise_world(seed: int, n_city: int = 12, per: int = 20, dim: int = 16):
    rng = np.random.default_rng(seed)
    cities = np.c_[rng.uniform(-40, 60, n_city), rng.uniform(-180, 180, n_city)]
    city = np.repeat(np.arange(n_city), per)
    latlon = cities[city] + rng.normal(0, 0.1, (len(city), 2))
    return rng.normal(size=(len(city), dim)).astype(np.float32), city, latlon, cities


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossfit_head_falls_back_to_the_prior_when_features_carry_no_location(seed):
    """Pure-noise features: in_sample trusts a classifier that is right only on its own training images."""
    X, city, latlon, cents = _noise_world(seed)
    test_rng = np.random.default_rng(seed + 100)
    X_test = test_rng.normal(size=(120, X.shape[1])).astype(np.float32)
    truth = latlon[test_rng.integers(0, len(latlon), 120)]
    cfg = TrainConfig(seed=seed, max_epochs=20)
    km = {}
    for mode in ("in_sample", "crossfit"):
        wn = fit_worldnet(X, city, latlon, city.astype(str), X[:0], city[:0], cents, [str(i) for i in range(len(cents))], mode, cfg)
        pred = wn.predict(X_test)[0]
        km[mode] = haversine_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1]).mean()
    mean = MeanModel.fit(latlon).predict(len(truth))
    km["mean model"] = haversine_km(truth[:, 0], truth[:, 1], mean[:, 0], mean[:, 1]).mean()
    assert km["crossfit"] < km["in_sample"]
    assert km["crossfit"] < 1.05 * km["mean model"]


def test_the_ensemble_is_its_members_averaged_and_survives_save_and_load(tmp_path):
    """Members trained side by side are the MLPs their seeds train alone, each stopped at its own best epoch."""
    from worldnet.models.predictor import load_classifier, save_classifier
    from worldnet.models.worldnet_model import ClassifierFit, Standardiser, _train_members, one_hot_targets, train_classifier

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(280, 12)).astype(np.float32)
    labels = np.argmax(feats[:, :4] + rng.normal(scale=1.5, size=(280, 4)), 1)  # learnable, noisily
    X, y, X_val, y_val = torch.from_numpy(feats[:240]), labels[:240], torch.from_numpy(feats[240:]), labels[240:]
    cfg = TrainConfig(seed=3, members=3, max_epochs=12, patience=2)
    ens, metrics = train_classifier(X, y, X_val, y_val, 4, cfg)
    assert ens.members == 3 and metrics["members"] == 3
    soft = torch.from_numpy(one_hot_targets(y, 4, 0.05))
    trained = [_train_members(X, soft, X_val, y_val, 4, cfg, [cfg.seed + 7919 * i]) for i in range(3)]
    alone = [m for m, _ in trained]
    assert len({m["best_epoch"] for _, m in trained}) > 1  # the members stopped at different epochs
    single, _ = train_classifier(X, y, X_val, y_val, 4, TrainConfig(seed=3, members=1, max_epochs=12, patience=2))
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(X), -1) for m in alone]).mean(0)
        torch.testing.assert_close(torch.softmax(ens(X), -1), mean, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(torch.softmax(alone[0](X), -1), torch.softmax(alone[1](X), -1), atol=1e-3)  # members differ
        torch.testing.assert_close(single(X), alone[0](X))  # one member is the single MLP of the same seed
    std = Standardiser(np.zeros(12, np.float32), np.ones(12, np.float32))
    back = load_classifier(save_classifier(ClassifierFit(std, ens, metrics), tmp_path / "c.pt")).classifier
    with torch.no_grad():
        torch.testing.assert_close(back(X), ens(X))


def test_the_sample_budget_pays_for_members_on_small_data_only():
    from worldnet.models.worldnet_model import mlp_members

    cfg = TrainConfig()
    assert mlp_members(1_200, cfg) == cfg.members == 5  # 1,200 rows x 60 epochs: a sliver of the 2M-row budget
    assert mlp_members(20_000, cfg) == 1  # 20k x 60 epochs is already over half of it
    assert mlp_members(500_000, cfg) == 1
    assert mlp_members(1_200, TrainConfig(members=1)) == 1
    with pytest.raises(ValueError, match="members"):
        from worldnet.models.worldnet_model import CentroidClassifier

        CentroidClassifier(8, 3, members=2, kind="linear")


def test_crossfit_folds_train_as_long_as_the_full_classifier_did(monkeypatch):
    """Fold classifiers have no validation split: they take the epochs the full classifier's members chose, within a third."""
    import worldnet.models.worldnet_model as wm

    cfg = TrainConfig()
    assert wm.fold_budget(cfg).max_epochs == cfg.max_epochs // 3 == 20  # nothing known: a third, as before
    assert wm.fold_budget(cfg, 11).max_epochs == 11
    assert wm.fold_budget(cfg, 45).max_epochs == 20  # never more than a third
    assert wm.fold_budget(cfg, 0).max_epochs == 1
    assert wm.fold_budget(cfg, 11).max_samples == cfg.max_samples // 3

    rng = np.random.default_rng(0)
    cents = np.array([[40.0, -120.0], [45.0, -110.0], [35.0, -115.0]])
    y = np.arange(150) % 3
    X = (rng.normal(size=(150, 8)) + 1.5 * np.eye(3, 8)[y]).astype(np.float32)
    groups = np.arange(150) // 3 % 25  # 25 places
    cfg = TrainConfig(members=1, head_epochs=2, patience=3)
    targets = wm.classifier_targets(cents[y], cents, y, cfg)
    fit = wm.fit_classifier(X[:120], y[:120], X[120:], y[120:], 3, cfg, targets[:120])
    epochs = wm.trained_epochs(fit)
    assert epochs == round(fit.metrics["best_epoch"]) + 1 and 1 <= epochs < 20  # below the third, so the check below can fail
    seen: list[int] = []
    real_train = wm.train_classifier

    def recording(X, y, X_val, y_val, k, c, targets=None):
        seen.append(c.max_epochs)
        return real_train(X, y, X_val, y_val, k, c, targets)

    monkeypatch.setattr(wm, "train_classifier", recording)
    wm.fit_interpolation(fit, X[:120], y[:120], cents[y[:120]], groups[:120], cents, ["a", "b", "c"], "crossfit", cfg)
    assert seen == [min(epochs, 20)] * cfg.crossfit_folds
    linear = wm.fit_classifier(X[:120], y[:120], X[120:], y[120:], 3, TrainConfig(classifier="linear"), targets[:120])
    assert wm.trained_epochs(linear) is None  # no epochs to match


def test_the_feature_power_damps_bursty_channels_and_travels_with_the_model(tmp_path):
    from worldnet.models.predictor import load_worldnet, save_worldnet
    from worldnet.models.worldnet_model import Standardiser, signed_power

    X = np.array([[0.0, 4.0, -9.0], [1.0, 16.0, 0.25]], np.float32)
    np.testing.assert_allclose(signed_power(X, 0.5), [[0.0, 2.0, -3.0], [1.0, 4.0, 0.5]])
    assert signed_power(X, 1.0) is X
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            signed_power(X, bad)
    std = Standardiser.fit(X, 0.5)
    root = np.sqrt(np.abs(X)) * np.sign(X)
    np.testing.assert_allclose(std(X).numpy(), (root - root.mean(0)) / (root.std(0) + 1e-6), rtol=1e-5, atol=1e-6)
    again, Xt = Standardiser.fit_transform(X, 0.5)
    np.testing.assert_array_equal(again.mean, std.mean)
    np.testing.assert_array_equal(again.std, std.std)
    np.testing.assert_allclose(Xt.numpy(), std(X).numpy(), rtol=1e-6)

    rng = np.random.default_rng(0)
    cents = np.array([[40.0, -120.0], [45.0, -110.0]])
    F = rng.gamma(0.5, 2.0, size=(60, 16)).astype(np.float32)  # non-negative and bursty, as pooled ReLU features are
    y = np.arange(60) % 2
    wn = fit_worldnet(F, y, cents[y], y.astype(str), F[:6], y[:6], cents, ["A", "B"], cfg=TrainConfig(head_epochs=2, members=1))
    assert wn.standardiser.power == TrainConfig().feature_power == 0.5
    back, _, _ = load_worldnet(save_worldnet(wn, tmp_path / "m.pt", backbone="tiny_random"))
    assert back.standardiser.power == 0.5
    np.testing.assert_allclose(back.predict(F)[0], wn.predict(F)[0], atol=1e-4)
    # a model saved before the power existed holds no "power": it loads with the features as extracted
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    del blob["power"]
    torch.save(blob, tmp_path / "legacy.pt")
    legacy, _, _ = load_worldnet(tmp_path / "legacy.pt")
    assert legacy.standardiser.power == 1.0


def test_median_composition_answers_where_the_weight_is_not_between_the_peaks():

    cents = np.array([[48.85, 2.35], [50.1, 8.7], [52.5, 13.4], [40.7, -74.0]])  # three European cities and New York
    xyz = InterpolationHead(cents, 8).centroid_xyz
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    mean = compose(w, xyz, 0)[0].numpy()
    median = compose(w, xyz, 10)[0].numpy()
    # the weighted mean lands in the Atlantic between the continents; the median stays with the three European weights
    assert haversine_km(mean[0], mean[1], 50.1, 8.7) > 1000
    assert haversine_km(median[0], median[1], 50.1, 8.7) < 400
    one = compose(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), xyz, 10)[0].numpy()
    assert haversine_km(one[0], one[1], 50.1, 8.7) < 1  # all weight on one centroid: that centroid
    w.requires_grad_(True)
    compose(w, xyz, 10).sum().backward()  # differentiable: the head trains through it
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_the_median_is_for_worldwide_data_and_a_region_keeps_the_papers_mean():
    from worldnet.models.worldnet_model import median_steps_for

    rng = np.random.default_rng(0)
    region = np.c_[rng.uniform(32, 49, 300), rng.uniform(-124, -114, 300)]  # the US West
    world = np.c_[rng.uniform(-40, 60, 300), rng.uniform(-180, 180, 300)]
    assert median_steps_for(region) == 0 and median_steps_for(world) == 10
    head, _ = train_head(torch.full((20, 2), 0.5), world[:20], world[:2], TrainConfig(head_epochs=1))
    assert int(head.median_steps) == 10  # the head keeps what it was trained with, saved with its state
