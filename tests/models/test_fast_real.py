"""Real photos answer the same on the fast path (ONNX Runtime + numpy) as on the torch path (PyTorch end to end)."""

from __future__ import annotations

import numpy as np
import pytest

from worldnet.features.names import View
from worldnet.geo.sphere import haversine_km
from worldnet.models.fast import load_fast
from worldnet.models.predictor import Predictor, save_worldnet
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet

#: Centroids on five continents, so that the head composes toward the median (worldwide data).
CITIES = {
    "Madrid": (40.4, -3.7),
    "Bangkok": (13.7, 100.5),
    "Boston": (42.4, -71.1),
    "Lima": (-12.0, -77.0),
    "Nairobi": (-1.3, 36.8),
    "Sydney": (-33.9, 151.2),
    "Oslo": (59.9, 10.8),
    "Tokyo": (35.7, 139.7),
}


@pytest.mark.real_data
def test_real_photos_answer_alike_on_both_paths(tmp_path, shared_data):
    photos = sorted((shared_data / "osv5m_sample" / "images").glob("*.jpg"))[:10]
    if len(photos) < 10:
        pytest.skip(f"needs 10 photos under {shared_data / 'osv5m_sample' / 'images'}")
    # a model over EfficientNet-Lite0's 1280-d features, trained in seconds on random ones: the real backbone, the real graph
    # (each photo's cluster is a random direction's: real photos then spread over the clusters rather than falling in one)
    rng = np.random.default_rng(0)
    centroids = np.array(list(CITIES.values()))
    X = np.abs(rng.normal(size=(400, 1280))).astype(np.float32)
    y = np.argmax((X - X.mean(0)) @ rng.normal(size=(1280, len(CITIES))), axis=1)
    latlon = centroids[y] + rng.normal(scale=0.5, size=(len(y), 2))
    cfg = TrainConfig(max_epochs=3, head_epochs=20, members=2)
    wn = fit_worldnet(X, y, latlon, y.astype(str), X[:40], y[:40], centroids, list(CITIES), mode="in_sample", cfg=cfg)
    assert int(wn.head.median_steps) == 10  # worldwide: the head composes toward the median
    wn.frame, wn.view = (400, 300), View(None, False)
    model = save_worldnet(wn, tmp_path / "worldnet-crossfit.pt", backbone="efficientnet_lite0")
    fast = load_fast(model, graph_dirs=[tmp_path / "graphs"])  # exports the real graph once (PyTorch), then answers without it
    slow = Predictor.load(model, engine="torch")
    assert (fast.engine, slow.engine) == ("onnx", "torch")
    paths = [str(p) for p in photos]
    a, b = fast.predict_paths(paths), slow.predict_paths(paths)
    km = haversine_km([p.lat for p in a], [p.lon for p in a], [p.lat for p in b], [p.lon for p in b])
    assert km.max() < 1.0, km
    assert len({p.country for p in a}) >= 2  # the photos are told apart: the agreement is not one answer ten times
    for p, q in zip(a, b, strict=True):
        (top_a, pa), (top_b, _) = p.top_clusters[0], q.top_clusters[0]
        assert top_a == top_b or pa - p.top_clusters[1][1] < 1e-3, (p, q)
        assert abs(p.snapped_km - q.snapped_km) < 1.0
