"""One protocol's data and the steps that train on it: the pipeline's model stages, one function each.

Protocols (from the split table): ``seen``, unseen images of seen cities;
``unseen``, images of cities held out of training entirely. Each step takes a
:class:`ProtocolData` (train / validation / test rows with their features) and
returns what its stage saves; :mod:`worldnet.evaluate` scores the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from worldnet.clustering import assign_to_centroids, cluster_locations
from worldnet.data.split import place_keys
from worldnet.models.baselines import (
    BestConstant,
    MeanModel,
    fit_direct_regression,
    guess_model,
    nn_classifier,
    predict_direct_regression,
    random_guess,
)
from worldnet.models.worldnet_model import ClassifierFit, TrainConfig, WorldNet, classifier_targets, fit_classifier, fit_interpolation

#: The two protocols, titled as in the paper's Figure 4.
PROTOCOL_TITLES = {
    "seen": "Performance of models on unseen images of seen cities",
    "unseen": "Performance of models on unseen images of unseen cities",
}


@dataclass
class ProtocolData:
    """One protocol's train / validation / test rows: labels and features, aligned."""

    protocol: str
    train: pl.DataFrame
    val: pl.DataFrame
    test: pl.DataFrame
    X_train: np.ndarray
    X_val: np.ndarray
    X_test: np.ndarray

    @staticmethod
    def latlon(frame: pl.DataFrame) -> np.ndarray:
        return frame.select("lat", "lon").to_numpy()


def protocol_data(X: np.ndarray, labels: pl.DataFrame, protocol: str) -> ProtocolData:
    """Cut features and labels by the split table's ``protocol`` column.

    Raises:
        ValueError: Unknown protocol, or an empty train or test split.
    """
    if protocol not in PROTOCOL_TITLES:
        raise ValueError(f"unknown protocol {protocol!r}; choose seen or unseen")
    split = labels[protocol].to_numpy()
    tr, va, te = split == "train", split == "val", split == "test"
    if not tr.any() or not te.any():
        raise ValueError(f"protocol {protocol!r} has {tr.sum()} train and {te.sum()} test images; both must be > 0")
    f = labels.filter
    return ProtocolData(protocol, f(pl.Series(tr)), f(pl.Series(va)), f(pl.Series(te)), X[tr], X[va], X[te])


def cluster_labels(frame: pl.DataFrame, centroids: pl.DataFrame, strategy: str) -> np.ndarray:
    """Each row's cluster id given the centroids table (-1: a city with no centroid).

    ``auto`` follows what the centroids were made by (their ``strategy`` column).
    """
    if strategy == "auto":
        strategy = str(centroids["strategy"][0]) if "strategy" in centroids.columns and centroids.height else "kmeans"
    if strategy == "city":
        lookup = {n: i for i, n in enumerate(centroids["name"].to_list())}
        return np.array([lookup.get(c, -1) for c in frame["city"].to_list()], dtype=np.int64)
    return assign_to_centroids(frame["lat"].to_numpy(), frame["lon"].to_numpy(), centroids)


def cluster_step(data: ProtocolData, strategy: str = "city", k: int = 23, seed: int = 0) -> pl.DataFrame:
    """Centroids of the training locations (the ``cluster`` stage)."""
    centroids, _ = cluster_locations(data.train, strategy, k=k, seed=seed)
    return centroids


def train_classifier_step(
    data: ProtocolData, centroids: pl.DataFrame, strategy: str = "city", cfg: TrainConfig | None = None
) -> ClassifierFit:
    """The centroid classifier; validation rows whose city has a centroid score it (and early-stop the MLP)."""
    cfg = cfg or TrainConfig()
    y_tr = cluster_labels(data.train, centroids, strategy)
    y_va = cluster_labels(data.val, centroids, strategy)
    keep = y_va >= 0
    targets = classifier_targets(data.latlon(data.train), centroids.select("lat", "lon").to_numpy(), y_tr, cfg)
    return fit_classifier(data.X_train, y_tr, data.X_val[keep], y_va[keep], centroids.height, cfg, targets)


def crossfit_groups(frame: pl.DataFrame, protocol: str) -> np.ndarray:
    """What the crossfit head's folds hold out, mimicking the protocol's test images.

    ``unseen`` tests cities never trained on, so folds hold out whole cities;
    ``seen`` tests new places of known cities, so folds hold out whole places
    (:func:`~worldnet.data.split.place_keys`: every view of a location together).
    """
    if protocol == "seen":
        return place_keys(frame)
    return frame["city"].to_numpy()


#: The crossfit head fits on the training photos a fine-tuned backbone never trained on when there are at least this many.
MIN_HEAD_ROWS = 100


def head_rows_for(labels: pl.DataFrame, protocol: str, finetuned_rows: np.ndarray | None) -> np.ndarray | None:
    """Which of ``protocol``'s training rows the crossfit head fits on (None: all of them).

    A backbone fine-tuned on a photo has already separated it by place, so even
    an out-of-fold classifier is surer of it than of a new photo, and a head
    fitted there learns to trust the classifier too much. With the mask of the
    photos the backbone trained on (``finetuned_rows``, over ``labels``), the
    head fits on the rest of the training split (photos that are training here
    but validation or test in another protocol) when there are
    :data:`MIN_HEAD_ROWS` of them; else on all (and the report says so).
    """
    if finetuned_rows is None:
        return None
    train = labels[protocol].to_numpy() == "train"
    honest = ~np.asarray(finetuned_rows, bool)[train]
    return honest if honest.sum() >= MIN_HEAD_ROWS else None


def train_interpolation_step(
    data: ProtocolData,
    centroids: pl.DataFrame,
    fit: ClassifierFit,
    mode: str = "in_sample",
    strategy: str = "city",
    cfg: TrainConfig | None = None,
    head_rows: np.ndarray | None = None,
) -> WorldNet:
    """The interpolation head over the frozen classifier (``mode``: in_sample or crossfit; ``head_rows``: see
    :func:`~worldnet.models.worldnet_model.fit_interpolation`)."""
    return fit_interpolation(
        fit,
        data.X_train,
        cluster_labels(data.train, centroids, strategy),
        data.latlon(data.train),
        crossfit_groups(data.train, data.protocol),
        centroids.select("lat", "lon").to_numpy(),
        centroids["name"].to_list(),
        mode,
        cfg,
        outer_groups=data.train["city"].to_numpy() if data.protocol == "seen" else None,
        head_rows=head_rows,
    )


def train_baselines_step(data: ProtocolData, *, knn: int = 10, seed: int = 0) -> pl.DataFrame:
    """Fit every baseline on the train rows; their test predictions (image_id, model, lat, lon)."""
    ll_tr, n = data.latlon(data.train), data.test.height
    preds = {
        "mean model": MeanModel.fit(ll_tr).predict(n),
        "best constant": BestConstant.fit(ll_tr).predict(n),
        "guess model": guess_model(ll_tr, n, seed),
        "random guess": random_guess(n, seed),
    }
    reg, reg_std = fit_direct_regression(data.X_train, ll_tr, seed=seed)
    preds["direct regression"] = predict_direct_regression(reg, reg_std, data.X_test)
    preds["nn classifier"] = nn_classifier(data.X_train, ll_tr, data.X_test, k=knn, variant="weighted")
    preds["nn classifier (mean-shift)"] = nn_classifier(data.X_train, ll_tr, data.X_test, k=knn, variant="meanshift")
    return pl.concat(
        pl.DataFrame({"image_id": data.test["image_id"], "model": name, "lat": p[:, 0], "lon": p[:, 1]}) for name, p in preds.items()
    )
