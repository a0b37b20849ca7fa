"""Score every model on one protocol's test set: predictions, the paper's metrics table, cross-validation.

The training steps are in :mod:`worldnet.protocol`; :func:`run_protocol` runs
them and this module's scoring in one call (the notebook and benchmark entry
point), and :func:`cross_validate` does so per fold of a grouped k-fold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from worldnet.data.split import place_keys
from worldnet.geo.land import snap_to_land
from worldnet.geo.regions import continent_of
from worldnet.geo.sphere import haversine_km
from worldnet.head_modes import other_head_mode, resolve_head_mode
from worldnet.metrics import distance_summary
from worldnet.models.predictor import combine_views
from worldnet.models.worldnet_model import TrainConfig, WorldNet
from worldnet.protocol import (
    ProtocolData,
    cluster_step,
    head_rows_for,
    protocol_data,
    train_baselines_step,
    train_classifier_step,
    train_interpolation_step,
)

#: The report's row for worldNET answering once per place (its views' distributions combined), where places have several photos.
PER_PLACE = "worldNET (per place)"


#: Report rows, in the paper's order, then ours.
MODEL_ORDER = (
    "mean model",
    "best constant",
    "guess model",
    "random guess",
    "direct regression",
    "nn classifier",
    "nn classifier (mean-shift)",
    "worldNET (in-sample)",
    "worldNET (crossfit)",
    "worldNET",
    PER_PLACE,
)


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


def evaluate_step(
    data: ProtocolData,
    worldnets: dict[str, WorldNet],
    baselines: pl.DataFrame,
    centroids: pl.DataFrame,
    *,
    snap: bool = True,
    seed: int = 0,
) -> ProtocolResult:
    """Score worldNET (``worldnets["worldNET"]`` plus any other head) and the baselines on the test rows.

    worldNET predictions are snapped to land when ``snap``; how many moved and
    how far is reported. Baseline predictions are scored as they were made.
    """
    if "worldNET" not in worldnets:
        raise ValueError("worldnets must include the 'worldNET' model that is reported and registered")
    ll_te = data.latlon(data.test)
    ids = data.test["image_id"].to_list()
    preds: dict[str, np.ndarray] = {}
    for name in baselines["model"].unique(maintain_order=True).to_list():
        b = baselines.filter(pl.col("model") == name)
        if b["image_id"].to_list() != ids:
            raise ValueError(f"baseline predictions for {name!r} do not match the test images; rerun train_baselines")
        preds[name] = b.select("lat", "lon").to_numpy()
    snap_info: dict[str, float] = {}
    rows_of = {label: np.arange(len(ids)) for label in worldnets}
    for label, wn in worldnets.items():
        p, probs = wn.predict(data.X_test)
        if snap:
            s = snap_to_land(p[:, 0], p[:, 1])
            p = np.stack([s.lat, s.lon], 1)
            if label == "worldNET":
                snap_info = {
                    "snapped": float(s.moved.sum()),
                    "snapped_fraction": float(s.moved.mean()),
                    "snap_mean_km": float(s.moved_km[s.moved].mean()) if s.moved.any() else 0.0,
                    "snap_max_km": float(s.moved_km.max()),
                }
        preds[label] = p
        if label == "worldNET":
            per_place = place_predictions(wn, probs, place_keys(data.test), snap)
            if per_place is not None:
                rows_of[PER_PLACE], preds[PER_PLACE] = per_place

    true_cont = data.test["continent"].to_numpy()
    frames = []
    order = [m for m in MODEL_ORDER if m in preds] + [m for m in preds if m not in MODEL_ORDER]
    for name in order:
        p = preds[name]
        rows = rows_of.get(name, np.arange(len(ids)))
        truth, test = ll_te[rows], data.test[rows]
        km = haversine_km(truth[:, 0], truth[:, 1], p[:, 0], p[:, 1])
        cont = continent_of(p[:, 0], p[:, 1])
        frames.append(
            pl.DataFrame(
                {
                    "image_id": test["image_id"],
                    "city": test["city"],
                    "model": name,
                    "lat": p[:, 0],
                    "lon": p[:, 1],
                    "true_lat": truth[:, 0],
                    "true_lon": truth[:, 1],
                    "km": km,
                    "continent": cont,
                    "true_continent": true_cont[rows],
                }
            )
        )
    wn = worldnets["worldNET"]
    clf = {"val_accuracy": wn.metrics.get("val_accuracy", 0.0), "train_accuracy": wn.metrics.get("train_accuracy", 0.0)}
    predictions = pl.concat(frames)
    return ProtocolResult(data.protocol, predictions, metrics_table(predictions, seed=seed), wn, centroids, snap_info, clf)


def place_predictions(wn: WorldNet, probs: np.ndarray, places: np.ndarray, snap: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """One answer per place from its photos' distributions (:func:`~worldnet.models.predictor.combine_views`).

    Returns ``(row of each place's first photo, (P, 2) lat/lon)``, or None when no place has more than one photo
    (then the per-photo rows say it all).
    """
    uniq, first, inverse, counts = np.unique(places, return_index=True, return_inverse=True, return_counts=True)
    if counts.max(initial=0) < 2:
        return None
    combined = np.stack([combine_views(probs[inverse == i]) for i in range(len(uniq))])
    with torch.no_grad():
        latlon = wn.head(torch.from_numpy(combined.astype(np.float32))).numpy().astype(np.float64)
    if snap:
        s = snap_to_land(latlon[:, 0], latlon[:, 1])
        latlon = np.stack([s.lat, s.lon], 1)
    return first, latlon


def metrics_table(predictions: pl.DataFrame, *, seed: int = 0) -> pl.DataFrame:
    """One row of scores per model (in report order) from a predictions table."""
    rows = []
    for name in predictions["model"].unique(maintain_order=True).to_list():
        p = predictions.filter(pl.col("model") == name)
        summary = distance_summary(p["km"].to_numpy(), seed=seed)
        summary["continent_acc"] = float(np.mean(p["continent"].to_numpy() == p["true_continent"].to_numpy()))
        rows.append({"model": name, **summary})
    return pl.DataFrame(rows)


def grouped_folds(groups: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold id per row such that each group (e.g. a country) sits in exactly one fold.

    Groups are shuffled (seeded) and dealt largest-first to the currently
    smallest fold, so folds have similar sizes.

    Raises:
        ValueError: If there are fewer groups than folds.
    """
    uniq, counts = np.unique(groups, return_counts=True)
    if len(uniq) < n_folds:
        raise ValueError(f"{len(uniq)} groups cannot fill {n_folds} folds; use fewer folds")
    order = np.random.default_rng(seed).permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    sizes = np.zeros(n_folds, dtype=np.int64)
    fold_of: dict[object, int] = {}
    for i in order:
        f = int(np.argmin(sizes))
        fold_of[uniq[i]] = f
        sizes[f] += counts[i]
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def _pick_groups(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    uniq = np.unique(groups)
    n = int(round(fraction * len(uniq)))
    return np.random.default_rng(seed).choice(uniq, n, replace=False) if n else uniq[:0]


def cross_validate(
    X: np.ndarray,
    labels: pl.DataFrame,
    groups: np.ndarray,
    *,
    n_folds: int = 5,
    cluster_strategy: str = "kmeans",
    k: int = 8,
    head_mode: str = "in_sample",
    snap: bool = True,
    cfg: TrainConfig | None = None,
    knn: int = 10,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
    fold_features: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> ProtocolResult:
    """Grouped k-fold: every model scored on out-of-fold predictions, pooled over folds.

    ``progress(fold, n_folds, seconds)`` is called after each fold.
    ``fold_features(train, val)`` (masks over ``labels``), when given, makes
    each fold's features and says which photos made them: a backbone
    fine-tuned on the fold's training photos only, so that no fold is scored
    by a backbone that saw its test photos (``worldnet cv --finetune``).

    Each fold's test rows share no group with its training rows (folds grouped
    by country = "images of unseen countries"). For small real samples, e.g.
    OSV-5M's 121 photos, where one split would say little.

    Validation (``val_fraction``, which early-stops the classifier) is whole
    places of the training folds, as in the main protocol's unseen split. Whole
    groups would not do: with one centroid per city, a held-out city has no
    class to score, so its photos were neither trained on nor able to stop
    training (the classifier then ran all its epochs).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    folds = grouped_folds(groups, n_folds, seed)
    places = place_keys(labels)
    parts: list[pl.DataFrame] = []
    last: ProtocolResult | None = None
    for f in range(n_folds):
        t0 = time.perf_counter()
        # like the main protocol's unseen split: early-stop on held-out places (10%) of the training folds' cities
        val_places = _pick_groups(places[folds != f], val_fraction, seed + f)
        role = np.where(folds == f, "test", np.where(np.isin(places, val_places), "val", "train"))
        lab = labels.with_columns(unseen=pl.Series(role))
        k_f = min(k, int((folds != f).sum())) if cluster_strategy != "city" and k else k
        X_f, tuned = (X, None) if fold_features is None else fold_features(role == "train", role == "val")
        last = run_protocol(
            X_f,
            lab,
            "unseen",
            cluster_strategy=cluster_strategy,
            k=k_f,
            head_mode=head_mode,
            snap=snap,
            cfg=cfg,
            knn=knn,
            seed=seed,
            finetuned_rows=tuned,
        )
        parts.append(last.predictions.with_columns(fold=pl.lit(f)))
        if progress:
            progress(f, n_folds, time.perf_counter() - t0)
    predictions = pl.concat(parts)
    wn, cents = (last.worldnet, last.centroids) if last else (None, None)
    return ProtocolResult("unseen", predictions, metrics_table(predictions, seed=seed), wn, cents)  # type: ignore[arg-type]


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
    finetuned_rows: np.ndarray | None = None,
) -> ProtocolResult:
    """Every step of one protocol in one call: cluster, classifier, both heads, baselines, scores.

    The pipeline runs the same steps as separate stages; this is the notebook
    (and benchmark) entry point. ``finetuned_rows`` (a mask over ``labels``):
    the photos a fine-tuned backbone trained on; the crossfit head then fits on
    the other training photos (:func:`~worldnet.protocol.head_rows_for`).

    Raises:
        ValueError: If the protocol's train or test split is empty.
    """
    cfg = cfg or TrainConfig(seed=seed)
    head_mode = resolve_head_mode(head_mode, protocol)
    data = protocol_data(X, labels, protocol)
    centroids = cluster_step(data, cluster_strategy, k, seed)
    fit = train_classifier_step(data, centroids, cluster_strategy, cfg)
    other, other_label = other_head_mode(head_mode)
    rows = head_rows_for(labels, protocol, finetuned_rows)
    worldnets = {
        "worldNET": train_interpolation_step(
            data, centroids, fit, head_mode, cluster_strategy, cfg, rows if head_mode == "crossfit" else None
        ),
        other_label: train_interpolation_step(data, centroids, fit, other, cluster_strategy, cfg, rows if other == "crossfit" else None),
    }
    baselines = train_baselines_step(data, knn=knn, seed=seed)
    return evaluate_step(data, worldnets, baselines, centroids, snap=snap, seed=seed)
