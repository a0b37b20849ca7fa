"""A photo is framed once, the same way everywhere: shards keep its aspect, and predict sees what training saw."""

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from worldnet.data.shards import ShardSpec, frame_photo, infer_frame, shard_frame, write_shards
from worldnet.features.backbones import build_backbone, input_size_for
from worldnet.features.extract import extract_features, load_features
from worldnet.models.predictor import Predictor, save_worldnet


def _photo(path, size, seed=0, exif_orientation=None):
    """A photo with a left-right gradient and a random texture (so crops and rotations show in features)."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.clip(rng.normal(128, 40, (h, w, 3)) + np.linspace(-80, 80, w)[None, :, None], 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, quality=95, exif=exif)
    else:
        img.save(path, quality=95)
    return path


def test_the_backbone_input_keeps_the_frame_aspect():
    spec = build_backbone("efficientnet_lite0_random").spec
    assert input_size_for(spec, (400, 300)) == spec.input_size == (300, 400)  # the default 4:3 frame, as sharded
    assert input_size_for(spec, (600, 300)) == (300, 600)  # a 2:1 Street View frame reaches the model whole
    assert input_size_for(spec, (600, 300), 224) == (224, 448)  # Lite0's ImageNet height, same aspect
    assert input_size_for(spec, None, 224) == (224, 298)
    assert build_backbone("tiny_random", frame=(600, 300)).spec.input_size == (48, 96)
    with pytest.raises(ValueError, match="frame"):
        input_size_for(spec, (0, 300))


def test_the_frame_follows_the_photos_aspect(tmp_path):
    wide = [str(_photo(tmp_path / f"w{i}.jpg", (600, 300), i)) for i in range(5)]
    assert infer_frame(wide) == (600, 300)
    classic = [str(_photo(tmp_path / f"c{i}.jpg", (640, 480), i)) for i in range(5)]
    assert infer_frame(classic) == (400, 300)
    assert infer_frame([str(tmp_path / "missing.jpg")]) == (400, 300)  # nothing readable: the 4:3 default


def test_predict_sees_exactly_what_training_saw_and_exif_rotation_is_undone(tmp_path, tiny_worldnet):
    upright = _photo(tmp_path / "up.jpg", (120, 60), seed=3)
    # the same photo stored sideways with an EXIF tag saying "rotate 90° clockwise to view"
    sideways = tmp_path / "side.jpg"
    with Image.open(upright) as im:
        rot = im.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        rot.save(sideways, quality=95, exif=exif)
    table = pl.DataFrame(
        {
            "image_id": ["up"],
            "city": ["A"],
            "lat": [40.0],
            "lon": [-120.0],
            "continent": ["North America"],
            "seen": ["train"],
            "unseen": ["train"],
            "path": [str(upright)],
        }
    )
    frame = infer_frame([str(upright)], height=60)
    assert frame == (120, 60)
    write_shards(table, tmp_path / "shards", ShardSpec(shard_size=4, width=frame[0], height=frame[1]), workers=1, progress=False)
    assert shard_frame(tmp_path / "shards") == frame
    extract_features(build_backbone("tiny_random", frame=frame), tmp_path / "shards", tmp_path / "feats", progress=False)
    X_train, _ = load_features(tmp_path / "feats")

    wn = tiny_worldnet
    wn.frame = frame
    predictor = Predictor.load(save_worldnet(wn, tmp_path / "m.pt", backbone="tiny_random"))
    assert predictor.backbone.spec.input_size == (48, 96)
    X_pred = predictor.features([upright.read_bytes()])
    np.testing.assert_allclose(X_pred, X_train.astype(np.float32), atol=2e-3)  # features are stored as float16
    X_side = predictor.features([sideways.read_bytes()])
    assert np.corrcoef(X_side[0], X_pred[0])[0, 1] > 0.99
    a, b = predictor.predict_paths([str(upright), str(sideways)])
    assert abs(a.lat - b.lat) < 0.05 and abs(a.lon - b.lon) < 0.05


def test_frame_photo_crops_to_cover_the_frame(tmp_path):
    photo = _photo(tmp_path / "p.jpg", (640, 480))
    out = Image.open(io.BytesIO(frame_photo(photo.read_bytes(), ShardSpec(width=600, height=300))))
    assert out.size == (600, 300)
