"""Protocol steps, grouped folds and cross-validation on small generated features."""

import numpy as np
import polars as pl
import pytest

from worldnet.data.cities import resolve_cities
from worldnet.evaluate import cross_validate, grouped_folds, metrics_table, run_protocol
from worldnet.geo.regions import continent_of
from worldnet.models.worldnet_model import TrainConfig

#: For tests of which rows go where (folds, roles, coverage): one MLP, a few epochs, two crossfit folds. What they
#: assert holds for any training; how well the models place photos is tested with the defaults.
PLUMBING = TrainConfig(members=1, max_epochs=5, head_epochs=10, crossfit_folds=2)


def _world(n_per=20, seed=0):
    """Features that carry a noisy signal of where each city is."""
    rng = np.random.default_rng(seed)
    cities = resolve_cities(["Madrid", "PRS", "Rome", "Boston", "Chicago", "Bangkok", "Osaka", "Melbourne"])
    rows, X = [], []
    for c in cities:
        for i in range(n_per):
            lat, lon = c.lat + rng.normal(0, 0.05), c.lon + rng.normal(0, 0.05)
            rows.append({"image_id": f"{c.name}-{i}", "city": c.name, "lat": lat, "lon": lon, "continent": str(continent_of(lat, lon))})
            X.append(np.r_[np.cos(np.radians([lat, lon])), np.sin(np.radians([lat, lon]))] + rng.normal(0, 0.3, 4))
    return np.array(X, np.float32), pl.DataFrame(rows)


def test_grouped_folds_keep_groups_together_and_balance():
    groups = np.repeat(np.arange(20), np.arange(1, 21))
    folds = grouped_folds(groups, 5, seed=3)
    for g in np.unique(groups):
        assert len(set(folds[groups == g].tolist())) == 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 20
    with pytest.raises(ValueError, match="groups cannot fill"):
        grouped_folds(np.array([1, 1, 2]), 3)


def test_cross_validation_predicts_every_image_once_per_model():
    X, labels = _world()
    res = cross_validate(X, labels, labels["city"].to_numpy(), n_folds=4, k=4, seed=0, cfg=PLUMBING)
    per_model = res.predictions.group_by("model").agg(pl.col("image_id").n_unique(), pl.len())
    assert (per_model["image_id"] == labels.height).all() and (per_model["len"] == labels.height).all()
    assert set(res.metrics["model"]) >= {"mean model", "worldNET", "worldNET (crossfit)"}
    assert res.predictions["fold"].n_unique() == 4


def test_cross_validation_early_stops_on_places_of_the_training_cities(monkeypatch):
    """Validation rows are places of cities the classifier trains on: a held-out city has no class to score."""
    import worldnet.evaluate as ev

    X, labels = _world()
    labels = labels.with_columns(place_id=pl.Series(np.arange(labels.height) // 2))  # two headings a place
    roles: list[pl.DataFrame] = []
    real = ev.run_protocol

    def recording(X, lab, protocol, **kw):
        roles.append(lab.select("city", "place_id", "unseen"))
        return real(X, lab, protocol, **kw)

    monkeypatch.setattr(ev, "run_protocol", recording)
    cross_validate(X, labels, labels["city"].to_numpy(), n_folds=4, k=4, cluster_strategy="city", seed=0, cfg=PLUMBING)
    assert len(roles) == 4
    for r in roles:
        train, val, test = (r.filter(pl.col("unseen") == s) for s in ("train", "val", "test"))
        assert val.height > 0 and set(val["city"]) <= set(train["city"])
        assert not set(test["city"]) & (set(train["city"]) | set(val["city"]))
        assert r.group_by("place_id").agg(pl.col("unseen").n_unique())["unseen"].max() == 1  # a place is never split
        assert 0.05 < val.height / (train.height + val.height) < 0.2


def test_seen_protocol_worldnet_beats_the_mean_model_on_informative_features():
    X, labels = _world(30)
    rng = np.random.default_rng(1)
    labels = labels.with_columns(seen=pl.Series(np.where(rng.random(labels.height) < 0.3, "test", "train")))
    res = run_protocol(X, labels, "seen", seed=0)
    m = dict(zip(res.metrics["model"], res.metrics["mean_km"], strict=True))
    assert m["worldNET"] < 0.5 * m["mean model"]


def test_metrics_table_matches_the_predictions():
    preds = pl.DataFrame(
        {"model": ["a", "a", "b"], "km": [1.0, 3.0, 5.0], "continent": ["Europe"] * 3, "true_continent": ["Europe", "Asia", "Asia"]}
    )
    t = metrics_table(preds)
    assert t["model"].to_list() == ["a", "b"]
    assert t["mean_km"].to_list() == [2.0, 5.0]
    assert t["continent_acc"].to_list() == [0.5, 0.0]


def test_places_of_several_photos_get_one_combined_answer_beside_the_per_photo_rows():
    X, labels = _world(n_per=24)
    # every two consecutive photos of a city are two views of one place: same coordinates, same place id
    labels = labels.with_columns(
        place_id=pl.Series(np.arange(labels.height) // 2, dtype=pl.Int64),
        lat=pl.col("lat").gather(np.arange(labels.height) // 2 * 2),
        lon=pl.col("lon").gather(np.arange(labels.height) // 2 * 2),
    )
    res = cross_validate(X, labels, labels["city"].to_numpy(), n_folds=4, k=4, seed=0)
    per_place = res.predictions.filter(pl.col("model") == "worldNET (per place)")
    per_photo = res.predictions.filter(pl.col("model") == "worldNET")
    assert per_photo.height == labels.height
    assert per_place.height == labels.height // 2
    assert per_place["km"].mean() <= per_photo["km"].mean() * 1.2
