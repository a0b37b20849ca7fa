"""How the backbone looks at a photo (height, mirror) is chosen once and travels with features and models."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from worldnet.data.shards import ShardSpec, write_shards
from worldnet.features.backbones import build_backbone, saved_view
from worldnet.features.engine import OnnxBackbone, build_engine, onnx_name, weights_fingerprint
from worldnet.features.extract import extract_features, feature_view, load_features, pending_shards, write_feature_frame
from worldnet.features.names import View, resolve_flip
from worldnet.features.preprocess import normalise_batch
from worldnet.geo.regions import one_driving_side
from worldnet.models.predictor import Predictor, load_worldnet, save_worldnet

FRAME = (120, 60)


def _photos(n: int, seed: int = 0) -> list[np.ndarray]:
    """Photos whose left and right halves differ (a gradient plus texture), so a mirror shows in unpooled features."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-90, 90, FRAME[0])[None, :, None]
    return [np.clip(rng.normal(128, 40, (FRAME[1], FRAME[0], 3)) + ramp, 0, 255).astype(np.uint8) for _ in range(n)]


def _shard(photos: list[np.ndarray], folder: Path) -> list[Path]:
    """Save ``photos`` as JPEGs of two cities and shard them at :data:`FRAME` into ``folder / "shards"``; their paths."""
    paths = [folder / f"p{i}.jpg" for i in range(len(photos))]
    for arr, path in zip(photos, paths, strict=True):
        Image.fromarray(arr).save(path, quality=95)
    n = len(photos)
    table = pl.DataFrame(
        {
            "image_id": [p.stem for p in paths],
            "city": ["A" if i % 2 == 0 else "B" for i in range(n)],
            "lat": [40.0 + 5 * (i % 2) + 0.1 * i for i in range(n)],
            "lon": [-120.0 + 10 * (i % 2) for i in range(n)],
            "continent": ["North America"] * n,
            "seen": ["train"] * n,
            "unseen": ["train"] * n,
            "path": [str(p) for p in paths],
        }
    )
    write_shards(table, folder / "shards", ShardSpec(shard_size=4, width=FRAME[0], height=FRAME[1]), workers=1, progress=False)
    return paths


def test_a_view_sets_the_input_height_and_refuses_impossible_ones():
    assert build_backbone("tiny_random", frame=FRAME, view=View(64)).spec.input_size == (64, 128)
    assert build_backbone("efficientnet_lite0_random", frame=(600, 300)).spec.input_size == (300, 600)
    with pytest.raises(ValueError, match="input_height="):
        View(8)


def test_the_mirror_is_averaged_in_only_where_every_photo_drives_on_one_side():
    us_west = (np.array([34.05, 47.6, 37.77]), np.array([-118.24, -122.33, -122.42]))  # Los Angeles, Seattle, San Francisco
    mixed = (np.array([51.5, 42.36]), np.array([-0.13, -71.06]))  # London and Boston
    left = (np.array([51.5, -37.81, 35.68]), np.array([-0.13, 144.96, 139.69]))  # London, Melbourne, Tokyo
    assert one_driving_side(*us_west) and one_driving_side(*left) and not one_driving_side(*mixed)
    assert resolve_flip("auto", lambda: one_driving_side(*us_west)) and not resolve_flip("auto", lambda: one_driving_side(*mixed))
    assert resolve_flip("on", lambda: False) and not resolve_flip("off", lambda: True)
    with pytest.raises(ValueError, match="flip='yes' is unknown"):
        resolve_flip("yes", lambda: True)


def test_flipped_features_do_not_change_when_the_photo_is_mirrored():
    plain = build_backbone("tiny_random", frame=FRAME)
    flipped = build_backbone("tiny_random", frame=FRAME, view=View(flip=True))
    x = torch.from_numpy(np.stack(_photos(3))).permute(0, 3, 1, 2).float() / 255
    mirror = x.flip(3)
    with torch.no_grad():
        assert not torch.allclose(plain(x), plain(mirror), atol=1e-4)  # the fixture can tell a mirror apart
        torch.testing.assert_close(flipped(x), flipped(mirror), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(flipped(x), (plain(x) + plain(mirror)) / 2, atol=1e-5, rtol=1e-5)
        assert flipped(x, flat=True).shape == plain(x, flat=True).shape  # flat maps are averaged aligned


def test_onnx_runs_the_flipped_view_as_torch_does_in_its_own_graph(tmp_path):
    view = View(flip=True)
    onnx = build_engine("tiny_random", frame=FRAME, view=view, engine="onnx", graphs_dir=tmp_path)
    torch_engine = build_engine("tiny_random", frame=FRAME, view=view, engine="torch")
    assert isinstance(onnx, OnnxBackbone) and onnx.path.endswith("-flip-u8-opset17.onnx")
    plain = build_backbone("tiny_random", frame=FRAME).spec
    assert onnx_name(plain, weights_fingerprint("tiny_random")) != onnx_name(onnx.spec, weights_fingerprint("tiny_random"))
    h, w = onnx.spec.input_size
    x = np.stack([np.asarray(Image.fromarray(p).resize((w, h))) for p in _photos(3)])
    with torch.no_grad():
        want = torch_engine(normalise_batch(torch.from_numpy(x), torch_engine.spec, channels_last=False)).numpy()
    np.testing.assert_allclose(onnx(x), want, atol=1e-4)


def test_features_of_another_view_are_made_again_and_the_view_is_recorded(tmp_path):
    _shard(_photos(4), tmp_path)
    plain = build_backbone("tiny_random", frame=FRAME)
    flipped = build_backbone("tiny_random", frame=FRAME, view=View(flip=True))
    extract_features(plain, tmp_path / "shards", tmp_path / "feats", progress=False)
    assert pending_shards(tmp_path / "shards", tmp_path / "feats", plain.spec) == []
    assert pending_shards(tmp_path / "shards", tmp_path / "feats", flipped.spec) != []  # never reused for another view
    write_feature_frame(tmp_path / "feats", FRAME, flipped.spec)
    assert feature_view(tmp_path / "feats", "tiny_random") == View(48, True)
    assert feature_view(tmp_path / "none", "efficientnet_lite0") == View(224, False)  # made before views: Lite0's old height


def test_a_model_predicts_with_the_view_it_was_trained_with(tmp_path, tiny_worldnet):
    view = View(64, True)
    paths = _shard(_photos(2, seed=5), tmp_path)
    extract_features(build_backbone("tiny_random", frame=FRAME, view=view), tmp_path / "shards", tmp_path / "feats", progress=False)
    X_train, _ = load_features(tmp_path / "feats")

    path = save_worldnet(tiny_worldnet, tmp_path / "m.pt", backbone="tiny_random", frame=FRAME, view=view)
    assert load_worldnet(path)[0].view == view
    for engine in ("torch", "onnx"):
        predictor = Predictor.load(path, engine=engine, graphs_dir=tmp_path / "graphs")
        assert predictor.backbone.spec.input_size == (64, 128) and predictor.backbone.spec.flip
        X_pred = predictor.features([p.read_bytes() for p in paths])
        np.testing.assert_allclose(X_pred, X_train.astype(np.float32), atol=2e-3)  # stored as float16


def test_a_model_saved_before_views_keeps_its_old_input():
    assert saved_view("efficientnet_lite0", None) == View(224, False)
    assert saved_view("efficientnet_lite2", None) == View(260, False)
    assert saved_view("tiny_random", None) == View(None, False)
    assert saved_view("efficientnet_lite0", {"height": 300, "flip": True}) == View(300, True)
