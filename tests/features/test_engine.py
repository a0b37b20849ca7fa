"""The ONNX Runtime engine gives PyTorch's features, is exported once and checked, and falls back to PyTorch when it cannot serve."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from worldnet.data.ingest import ingest
from worldnet.data.shards import ShardSpec, write_shards
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.features import engine as engine_mod
from worldnet.features.backbones import Backbone, build_backbone
from worldnet.features.engine import OnnxBackbone, build_engine, onnx_name, weights_fingerprint
from worldnet.features.extract import extract_features, load_features
from worldnet.features.names import resolve_engine
from worldnet.geo.sphere import haversine_km
from worldnet.models.predictor import Predictor, save_worldnet
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet

FRAME = (200, 100)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    generate(SynthConfig(out=root / "world", cities=["Madrid", "Boston", "Bangkok"], per_city=6, size=(240, 120), seed=5), progress=False)
    manifest, _ = ingest("gsv_cities", root / "world")
    table = manifest.with_columns(seen=pl.lit("train"), unseen=pl.lit("train"))
    write_shards(table, root / "shards", ShardSpec(shard_size=8, width=FRAME[0], height=FRAME[1]), workers=1, progress=False)
    return root


def test_engines_resolve_by_device_and_refuse_what_cannot_run():
    assert resolve_engine("auto", "cpu") == "onnx" and resolve_engine("auto", "cuda") == "torch"
    assert resolve_engine("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_engine("onnx", "cuda")
    with pytest.raises(ValueError, match="engine='tensorrt' is unknown"):
        resolve_engine("tensorrt", "cpu")


def test_onnx_features_are_torchs_and_a_model_serves_on_either(shards, tmp_path):
    """Real Lite0 weights: cosine > 0.9999 per image, and worldNET's answers within 1 km across engines."""
    graphs = tmp_path / "graphs"
    torch_model = build_engine("efficientnet_lite0", frame=FRAME, engine="torch")
    onnx_model = build_engine("efficientnet_lite0", frame=FRAME, engine="onnx", graphs_dir=graphs)
    assert isinstance(torch_model, Backbone) and isinstance(onnx_model, OnnxBackbone)
    extract_features(torch_model, shards / "shards", tmp_path / "f_torch", progress=False)
    extract_features(onnx_model, shards / "shards", tmp_path / "f_onnx", progress=False)
    Xt, labels = load_features(tmp_path / "f_torch")
    Xo, labels_o = load_features(tmp_path / "f_onnx")
    assert labels.equals(labels_o)
    Xt, Xo = Xt.astype(np.float64), Xo.astype(np.float64)
    cos = (Xt * Xo).sum(1) / np.linalg.norm(Xt, axis=1) / np.linalg.norm(Xo, axis=1)
    assert cos.min() > 0.9999, cos.min()

    cents = labels.group_by("city", maintain_order=True).agg(pl.col("lat").mean(), pl.col("lon").mean())
    names = cents["city"].to_list()
    c = cents.select("lat", "lon").to_numpy()
    y = np.array([names.index(n) for n in labels["city"]])
    wn = fit_worldnet(
        Xt.astype(np.float32), y, c[y], y.astype(str), Xt[:6].astype(np.float32), y[:6], c, names, cfg=TrainConfig(head_epochs=3)
    )
    wn.frame = FRAME
    model_file = save_worldnet(wn, tmp_path / "m.pt", backbone="efficientnet_lite0")
    photos = [p.read_bytes() for p in sorted((shards / "world" / "Images").rglob("*.jpg"))[:6]]
    answers = {}
    for eng in ("torch", "onnx"):
        predictor = Predictor.load(model_file, engine=eng, graphs_dir=graphs)
        assert predictor.engine == eng
        ll = np.array([(p.lat, p.lon) for p in predictor.predict_features(predictor.features(photos), [str(i) for i in range(6)])])
        answers[eng] = ll
    km = haversine_km(answers["torch"][:, 0], answers["torch"][:, 1], answers["onnx"][:, 0], answers["onnx"][:, 1])
    assert km.max() < 1.0, km


def test_the_graph_is_exported_once_checked_and_reused(tmp_path, monkeypatch):
    graphs = tmp_path / "graphs"
    first = build_engine("tiny_random", frame=FRAME, engine="onnx", graphs_dir=graphs)
    spec = build_backbone("tiny_random", frame=FRAME).spec
    stored = graphs / onnx_name(spec, weights_fingerprint("tiny_random"))
    assert isinstance(first, OnnxBackbone) and stored.is_file() and first.path == str(stored)

    def no_export(*a, **k):  # a second build must read the stored graph
        raise AssertionError("exported again")

    monkeypatch.setattr(engine_mod, "export_onnx", no_export)
    again = build_engine("tiny_random", frame=FRAME, engine="onnx", graphs_dir=graphs)
    assert isinstance(again, OnnxBackbone)
    other = build_engine("tiny_random", frame=(300, 100), engine="torch", graphs_dir=graphs)  # another size: its own graph
    assert isinstance(other, Backbone)


def test_an_export_that_fails_its_check_is_not_stored_and_torch_serves(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_mod, "onnx_error", lambda backbone, engine: 0.5)
    graphs = tmp_path / "graphs"
    with pytest.warns(UserWarning, match="differs from PyTorch by 5.00e-01"):
        model = build_engine("tiny_random", frame=FRAME, engine="onnx", graphs_dir=graphs)
    assert isinstance(model, Backbone)
    assert not graphs.exists() or not any(graphs.iterdir())


def test_flat_features_run_on_torch(tmp_path):
    assert isinstance(build_engine("tiny_random", frame=FRAME, engine="auto", flat=True, graphs_dir=tmp_path), Backbone)


def test_full_batches_partial_batches_and_single_photos_agree(tmp_path):
    """Full batches run in the fixed-size session, the rest one by one in the single-photo one: same features either way."""
    from worldnet.features.engine import FIXED_BATCH, check_batch

    model = build_engine("tiny_random", frame=FRAME, engine="onnx", graphs_dir=tmp_path)
    assert isinstance(model, OnnxBackbone)
    x = np.concatenate([check_batch(model.spec, FIXED_BATCH), check_batch(model.spec, 5)])
    whole = model(x)  # one fixed batch, then 5 photos one at a time
    assert whole.shape == (FIXED_BATCH + 5, model.spec.dim)
    np.testing.assert_allclose(model(x[FIXED_BATCH:]), whole[FIXED_BATCH:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x[:1]), whole[:1], rtol=1e-5, atol=1e-6)


def test_exporting_leaves_the_callers_batch_norms_in_eval_mode():
    """The exporter restores its wrapper's mode recursively: a wrapper left training would switch shared modules."""
    bb = build_backbone("tiny_random")
    engine_mod.export_module(bb, bb.spec)
    assert not any(m.training for m in bb.modules())
