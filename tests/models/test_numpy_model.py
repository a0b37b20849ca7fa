"""The numpy twin of a saved worldNET answers as the PyTorch model does (the answer path runs it without torch)."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch

from worldnet.features.names import View
from worldnet.geo.sphere import haversine_km
from worldnet.models.numpy_model import NotATwinError, read_twin, twin_path, twin_source
from worldnet.models.predictor import load_worldnet, predict_distributions, save_worldnet
from worldnet.models.worldnet_model import CentroidClassifier, InterpolationHead, Standardiser, WorldNet

DIM, K = 24, 7


def _model(kind: str, members: int, median_steps: int, slope: float, seed: int = 0) -> WorldNet:
    """A worldNET with random weights everywhere (no training: the arithmetic is what is compared)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    centroids = np.stack([rng.uniform(-60, 70, K), rng.uniform(-180, 180, K)], 1)
    clf = CentroidClassifier(DIM, K, 16, kind=kind, members=members).eval()
    head = InterpolationHead(centroids, 12, median_steps)
    with torch.no_grad():
        for p in head.mlp.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        head.temperature.fill_(1.3)
        head.temperature_slope.fill_(slope)
    std = Standardiser(rng.normal(size=DIM).astype(np.float32), rng.uniform(0.5, 2, DIM).astype(np.float32), 0.5)
    wn = WorldNet(std, clf, head.eval(), centroids, [f"c{i}" for i in range(K)], "crossfit", {"val_accuracy": 0.5})
    wn.frame, wn.view = (600, 300), View(None, True)
    return wn


@pytest.mark.parametrize(
    ("kind", "members", "median_steps", "slope"),
    [("mlp", 1, 0, 0.0), ("mlp", 5, 10, 0.8), ("linear", 1, 10, -0.4), ("mlp", 5, 0, 2.0), ("linear", 1, 0, 0.6)],
)
def test_the_twin_agrees_with_the_torch_model(tmp_path, kind, members, median_steps, slope):
    wn = _model(kind, members, median_steps, slope)
    path = save_worldnet(wn, tmp_path / "worldnet-crossfit.pt", backbone="efficientnet_lite0")
    assert twin_path(path).is_file()  # written beside the .pt, every time a model is saved
    torch_model, backbone, snap = load_worldnet(path)
    twin = read_twin(twin_path(path))
    assert (twin.backbone, twin.snap, twin.frame, twin.view) == (backbone, snap, (600, 300), View(None, True))
    assert twin.centroid_names == torch_model.centroid_names and twin.mode == "crossfit"
    X = np.random.default_rng(1).normal(size=(64, DIM)).astype(np.float32) * 3
    want_ll, want_p = torch_model.predict(X)
    got_ll, got_p = twin.predict(X)
    assert got_p.dtype == np.float32 and got_p.shape == want_p.shape
    np.testing.assert_allclose(got_p, want_p, atol=1e-4)
    km = haversine_km(got_ll[:, 0], got_ll[:, 1], want_ll[:, 0], want_ll[:, 1])
    assert km.max() < 1.0, km.max()
    # the head alone, on distributions (a place's combined views): the same
    flat = np.full((3, K), 1 / K, np.float32)
    sharp = np.eye(K, dtype=np.float32)[:3] * 0.9 + 0.1 / K
    for probs in (flat, sharp, want_p[:5]):
        a, b = twin.locate(probs), torch_model.locate(probs)
        assert haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1]).max() < 1.0
    p_twin = predict_distributions(twin, want_p[:4], list("abcd"), top_k=2)
    p_torch = predict_distributions(torch_model, want_p[:4], list("abcd"), top_k=2)
    assert [(p.country, [n for n, _ in p.top_clusters]) for p in p_twin] == [(p.country, [n for n, _ in p.top_clusters]) for p in p_torch]


def test_a_twin_names_the_model_file_it_was_made_from_and_holds_no_pickle(tmp_path):
    path = save_worldnet(_model("mlp", 2, 0, 0.3), tmp_path / "m.pt", backbone="tiny_random")
    import hashlib

    assert twin_source(twin_path(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
    with np.load(twin_path(path), allow_pickle=False) as z:  # every member is a plain array
        assert all(z[k].dtype != object for k in z.files)
        meta = json.loads(str(z["meta"]))
    assert meta["backbone"] == "tiny_random" and meta["members"] == 2
    # anything else is refused with one line, never unpickled
    bad = tmp_path / "bad.npz"
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([{"format": 1}], dtype=object))
    bad.write_bytes(buf.getvalue())
    for junk in (bad, tmp_path / "text.npz"):
        if junk.name == "text.npz":
            junk.write_text("not a zip")
        with pytest.raises(NotATwinError):
            read_twin(junk)
        assert twin_source(junk) is None
    (tmp_path / "pickled.npz").write_bytes(pickle.dumps({"meta": 1}))
    with pytest.raises(NotATwinError):
        read_twin(tmp_path / "pickled.npz")


def test_a_head_saved_before_the_slope_and_the_median_existed(tmp_path):
    """Old heads lack ``temperature_slope`` and ``median_steps``: both the torch load and the twin read them as 0."""
    wn = _model("mlp", 1, 0, 0.0)
    path = save_worldnet(wn, tmp_path / "old.pt", backbone="tiny_random")
    blob = torch.load(path, weights_only=True)
    del blob["head"]["temperature_slope"], blob["head"]["median_steps"]
    torch.save(blob, path)
    from worldnet.models.numpy_model import write_twin

    write_twin(twin_path(path), blob, "x")
    twin = read_twin(twin_path(path))
    assert (twin.temperature_slope, twin.median_steps) == (0.0, 0)
    X = np.random.default_rng(2).normal(size=(8, DIM)).astype(np.float32)
    a, b = twin.predict(X)[0], load_worldnet(path)[0].predict(X)[0]
    assert haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1]).max() < 1.0


def test_a_row_answers_the_same_whatever_it_is_batched_with(tmp_path):
    """Byte-identical answers for one photo alone and among others (``predict a.jpg`` and ``predict a.jpg b.jpg``)."""
    path = save_worldnet(_model("mlp", 5, 10, 0.8), tmp_path / "m.pt", backbone="tiny_random")
    twin = read_twin(twin_path(path))
    X = np.random.default_rng(3).normal(size=(40, DIM)).astype(np.float32)
    ll, p = twin.predict(X)
    for lo, hi in ((0, 1), (0, 2), (5, 6), (3, 40), (17, 33)):
        ll_part, p_part = twin.predict(X[lo:hi])
        np.testing.assert_array_equal(ll_part, ll[lo:hi])
        np.testing.assert_array_equal(p_part, p[lo:hi])
