"""Train every model on one protocol's split and score it on that protocol's test set.

Protocols (from the split table): ``seen`` — unseen images of seen cities;
``unseen`` — images of cities held out of training entirely.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from worldnet.clustering import assign_to_centroids, cluster_locations
from worldnet.geo.land import snap_to_land
from worldnet.geo.regions import continent_of
from worldnet.geo.sphere import haversine_km
from worldnet.metrics import distance_summary
from worldnet.models.baselines import (
    MeanModel,
    fit_direct_regression,
    guess_model,
    nn_classifier,
    predict_direct_regression,
    random_guess,
)
from worldnet.models.worldnet_model import TrainConfig, WorldNet, fit_worldnet

#: Report rows, in the paper's order, then ours.
MODEL_ORDER = (
    "mean model",
    "guess model",
    "random guess",
    "direct regression",
    "nn classifier",
    "nn classifier (mean-shift)",
    "worldNET (in-sample)",
    "worldNET",
)
PROTOCOL_TITLES = {
    "seen": "Performance of models on unseen images of seen cities",
    "unseen": "Performance of models on unseen images of unseen cities",
}


@dataclass
class ProtocolResult:
    """Predictions and scores of every model on one protocol."""

    protocol: str
    predictions: pl.DataFrame  # image_id, model, lat, lon, true_lat, true_lon, km, ...
    metrics: pl.DataFrame  # one row per model
    worldnet: WorldNet
    centroids: pl.DataFrame
    snap: dict[str, float] = field(default_factory=dict)
    classifier: dict[str, float] = field(default_factory=dict)


def _labels_for(labels: pl.DataFrame, centroids: pl.DataFrame, strategy: str) -> np.ndarray:
    if strategy == "city":
        lookup = {n: i for i, n in enumerate(centroids["name"].to_list())}
        return np.array([lookup.get(c, -1) for c in labels["city"].to_list()])
    return assign_to_centroids(labels["lat"].to_numpy(), labels["lon"].to_numpy(), centroids)


def run_protocol(
    X: np.ndarray,
    labels: pl.DataFrame,
    protocol: str,
    *,
    cluster_strategy: str = "city",
    k: int = 23,
    head_mode: str = "in_sample",
    snap: bool = True,
    cfg: TrainConfig | None = None,
    knn: int = 10,
    seed: int = 0,
) -> ProtocolResult:
    """Fit worldNET and the baselines on ``protocol``'s train split, score its test split.

    Raises:
        ValueError: If the protocol's train or test split is empty.
    """
    if protocol not in PROTOCOL_TITLES:
        raise ValueError(f"unknown protocol {protocol!r}; choose seen or unseen")
    cfg = cfg or TrainConfig(seed=seed)
    split = labels[protocol].to_numpy()
    tr, va, te = split == "train", split == "val", split == "test"
    if not tr.any() or not te.any():
        raise ValueError(f"protocol {protocol!r} has {tr.sum()} train and {te.sum()} test images; both must be > 0")
    L_tr, L_va, L_te = labels.filter(pl.Series(tr)), labels.filter(pl.Series(va)), labels.filter(pl.Series(te))
    centroids, y_tr = cluster_locations(L_tr, cluster_strategy, k=k, seed=seed)
    y_va = _labels_for(L_va, centroids, cluster_strategy)
    keep_va = y_va >= 0
    c_ll = centroids.select("lat", "lon").to_numpy()
    ll_tr = L_tr.select("lat", "lon").to_numpy()
    ll_te = L_te.select("lat", "lon").to_numpy()
    groups = L_tr["city"].to_numpy()
    names = centroids["name"].to_list()

    preds: dict[str, np.ndarray] = {}
    models: dict[str, WorldNet] = {}
    for mode, label in ((head_mode, "worldNET"), ("in_sample" if head_mode == "crossfit" else "crossfit", "worldNET (in-sample)" if head_mode == "crossfit" else "worldNET (crossfit)")):
        wn = fit_worldnet(X[tr], y_tr, ll_tr, groups, X[va][keep_va], y_va[keep_va], c_ll, names, mode, cfg)
        models[label] = wn
        preds[label] = wn.predict(X[te])[0]
    preds["mean model"] = MeanModel.fit(ll_tr).predict(int(te.sum()))
    preds["guess model"] = guess_model(ll_tr, int(te.sum()), seed)
    preds["random guess"] = random_guess(int(te.sum()), seed)
    reg, reg_std = fit_direct_regression(X[tr], ll_tr, seed=seed)
    preds["direct regression"] = predict_direct_regression(reg, reg_std, X[te])
    preds["nn classifier"] = nn_classifier(X[tr], ll_tr, X[te], k=knn, variant="weighted")
    preds["nn classifier (mean-shift)"] = nn_classifier(X[tr], ll_tr, X[te], k=knn, variant="meanshift")

    snap_info: dict[str, float] = {}
    if snap:
        for label in [m for m in preds if m.startswith("worldNET")]:
            s = snap_to_land(preds[label][:, 0], preds[label][:, 1])
            preds[label] = np.stack([s.lat, s.lon], 1)
            if label == "worldNET":
                snap_info = {
                    "snapped": float(s.moved.sum()),
                    "snapped_fraction": float(s.moved.mean()),
                    "snap_mean_km": float(s.moved_km[s.moved].mean()) if s.moved.any() else 0.0,
                    "snap_max_km": float(s.moved_km.max()),
                }

    true_cont = L_te["continent"].to_numpy()
    frames, rows = [], []
    order = [m for m in MODEL_ORDER if m in preds] + [m for m in preds if m not in MODEL_ORDER]
    for name in order:
        p = preds[name]
        km = haversine_km(ll_te[:, 0], ll_te[:, 1], p[:, 0], p[:, 1])
        cont = continent_of(p[:, 0], p[:, 1])
        summary = distance_summary(km, seed=seed)
        summary["continent_acc"] = float((cont == true_cont).mean())
        rows.append({"model": name, **summary})
        frames.append(
            pl.DataFrame(
                {
                    "image_id": L_te["image_id"],
                    "city": L_te["city"],
                    "model": name,
                    "lat": p[:, 0],
                    "lon": p[:, 1],
                    "true_lat": ll_te[:, 0],
                    "true_lon": ll_te[:, 1],
                    "km": km,
                    "continent": cont,
                    "true_continent": true_cont,
                }
            )
        )
    wn = models["worldNET"]
    clf = {"val_accuracy": wn.metrics.get("val_accuracy", 0.0), "train_accuracy": wn.metrics.get("train_accuracy", 0.0)}
    return ProtocolResult(protocol, pl.concat(frames), pl.DataFrame(rows), wn, centroids, snap_info, clf)
