"""Batch prediction flow: a folder of photos in, one predictions table out, bad photos listed."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli import app
from flows.predict import predict_batch
from tests.flows.conftest import NAMES
from worldnet.catalog import Catalog
from worldnet.data.synthetic import SynthConfig, generate


def test_predict_batch_predicts_every_good_photo_and_lists_the_bad(harness, model_file, tmp_path):
    photos = tmp_path / "photos"
    generate(SynthConfig(out=photos, cities=["Madrid", "Bangkok"], per_city=5, size=(64, 48)), progress=False)
    (photos / "Images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    n_photos = len(list(photos.rglob("*.jpg")))
    root = tmp_path / "root"
    out = predict_batch(str(photos), "b1", str(model_file), str(root), shard_size=4, progress=False)
    csvs = sorted(f.relative_to(photos).as_posix() for f in photos.rglob("*.csv"))  # not photos: listed, never silently left out
    assert out["photos"] == n_photos and out["predicted"] == n_photos - 1 and out["rejects"] == 1 + len(csvs)
    cat = Catalog.from_yaml(root, batch="b1")
    table = cat.load("batch_predictions")
    assert table.height == n_photos - 1 and table["image_id"].n_unique() == table.height
    assert table["lat"].is_between(-90, 90).all() and table["lon"].is_between(-180, 180).all()
    assert set(table["top_cluster"]) <= set(NAMES)
    rejects = cat.load("batch_rejects")
    assert rejects["image_id"].to_list() == [*csvs, "Images/broken.jpg"]
    assert rejects["reason"].to_list() == ["not_a_photo"] * len(csvs) + ["corrupt_image"]
    assert cat.path("batch_model").read_bytes() == model_file.read_bytes()
    # a rerun reuses every part and gives the same table
    again = predict_batch(str(photos), "b1", str(model_file), str(root), shard_size=4, progress=False)
    assert again["predicted"] == out["predicted"] and cat.load("batch_predictions").equals(table)


def test_predict_batch_cli_says_what_is_missing(harness, model_file, tmp_path):
    res = CliRunner().invoke(app, ["predict-batch", str(tmp_path / "nope"), "--model", str(model_file), "--root", str(tmp_path)])
    assert res.exit_code == 2 and "not a folder of photos" in res.output
    res = CliRunner().invoke(app, ["predict-batch", str(tmp_path), "--model", str(tmp_path / "x.pt"), "--root", str(tmp_path)])
    assert res.exit_code == 2 and "model file" in res.output
