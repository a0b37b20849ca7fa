"""Batch prediction flow: a folder of photos in, one predictions table out, bad photos listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from flows.predict import predict_batch
from tests.flows.conftest import NAMES
from worldnet.catalog import Catalog
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.models.predictor import Predictor


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
    # a rerun gives the same table
    again = predict_batch(str(photos), "b1", str(model_file), str(root), shard_size=4, progress=False)
    assert again["predicted"] == out["predicted"] and cat.load("batch_predictions").equals(table)


def test_predict_batch_cli_says_what_is_missing(harness, model_file, tmp_path):
    res = CliRunner().invoke(app, ["predict-batch", str(tmp_path / "nope"), "--model", str(model_file), "--root", str(tmp_path)])
    assert res.exit_code == 2 and "not a folder of photos" in res.output
    res = CliRunner().invoke(app, ["predict-batch", str(tmp_path), "--model", str(tmp_path / "x.pt"), "--root", str(tmp_path)])
    assert res.exit_code == 2 and "model file" in res.output


def _photo(path, colour, seed):
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour)[None, None, :] + rng.normal(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=92)
    return path


def test_predict_batch_answers_each_place_once(harness, model_file, tmp_path):
    photos = tmp_path / "photos"
    views = {"rome": ["rome/a.jpg", "rome/b.jpg", "rome/night/c.jpg"], "paris": ["paris/x.jpg"]}
    for i, rel in enumerate([*views["rome"], *views["paris"], "loose.jpg"]):
        _photo(photos / rel, (40 * i, 200 - 30 * i, 90), seed=i)
    (photos / "paris" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    root = tmp_path / "root"
    out = predict_batch(str(photos), "by-folder", str(model_file), str(root), shard_size=2, progress=False, by_folder=True)
    assert (out["places"], out["places_without_views"], out["unplaced"]) == (2, 0, 1)
    places = pl.read_parquet(out["places_file"])
    assert Path(out["places_file"]).parent == Path(out["predictions"]).parent
    assert places.select("place", "n_photos", "n_views").rows() == [("paris", 2, 1), ("rome", 3, 3)]
    assert places["views"].to_list() == [views["paris"], sorted(views["rome"])]
    predictor = Predictor.load(model_file)
    for row in places.iter_rows(named=True):  # the CLI's --place and the batch agree (features are float16 on both paths)
        alone = predictor.predict_place([str(photos / v) for v in row["views"]], top_k=1).prediction
        assert alone is not None and abs(alone.lat - row["lat"]) < 1e-3 and abs(alone.lon - row["lon"]) < 1e-3
        assert (row["country"], row["top_cluster"]) == (alone.country, alone.top_clusters[0][0])
    # a CSV names the places instead; the per-photo table is the same either way
    csv = tmp_path / "places.csv"
    csv.write_text("path,place\nrome/a.jpg,trip\nloose.jpg,trip\nparis/broken.jpg,lost\n")
    again = predict_batch(str(photos), "by-folder", str(model_file), str(root), shard_size=2, progress=False, places=str(csv))
    by_csv = pl.read_parquet(again["places_file"])
    assert by_csv.select("place", "n_photos", "n_views", "views").rows() == [
        ("lost", 1, 0, []),
        ("trip", 2, 2, ["loose.jpg", "rome/a.jpg"]),
    ]
    assert again["places_without_views"] == 1 and by_csv["lat"][0] is None
    assert pl.read_parquet(again["predictions"]).equals(pl.read_parquet(out["predictions"]))
    # without places, no table from an earlier run is left beside predictions it does not describe
    plain = predict_batch(str(photos), "by-folder", str(model_file), str(root), shard_size=2, progress=False)
    assert "places_file" not in plain and not Path(out["places_file"]).exists()


def test_predict_batch_cli_checks_places_before_any_work(harness, model_file, tmp_path):
    _photo(tmp_path / "photos" / "a.jpg", (90, 90, 90), seed=0)
    (tmp_path / "bad.csv").write_text("path,place\nmissing.jpg,x\n")
    base = ["predict-batch", str(tmp_path / "photos"), "--model", str(model_file), "--root", str(tmp_path / "root")]
    res = CliRunner().invoke(app, [*base, "--places", str(tmp_path / "bad.csv")])
    assert res.exit_code == 2 and "names 1 paths that are no photo under" in res.output
    res = CliRunner().invoke(app, [*base, "--places", str(tmp_path / "bad.csv"), "--by-folder"])
    assert res.exit_code == 2 and "give one" in res.output
    assert not (tmp_path / "root" / "06_predict").exists()


def test_predict_place_gives_one_answer_for_several_photos(model_file, tmp_path):
    a = _photo(tmp_path / "a.jpg", (200, 60, 50), seed=1)
    b = _photo(tmp_path / "b.jpg", (50, 80, 200), seed=2)
    base = ["predict", "--model", str(model_file), "--root", str(tmp_path / "root"), "--top-k", "3"]
    res = CliRunner().invoke(app, [*base, str(a), str(b), "--place", "--json"])
    assert res.exit_code == 0, res.output
    (line,) = res.stdout.strip().splitlines()  # one answer, not one per photo
    body = json.loads(line)
    assert body["status"] == "ok" and body["n_views"] == 2 and body["views_used"] == [str(a), str(b)]
    assert -90 <= body["lat"] <= 90 and [v["status"] for v in body["views"]] == ["ok", "ok"] and len(body["top_clusters"]) == 3
    each = [json.loads(x) for x in CliRunner().invoke(app, [*base, str(a), str(b), "--json"]).stdout.strip().splitlines()]
    assert [e["lat"] for e in each] == [v["lat"] for v in body["views"]]
    res = CliRunner().invoke(app, [*base, str(a), str(tmp_path / "gone.jpg"), "--place"])
    assert res.exit_code == 1 and "gone.jpg: no such file" in res.stderr and "place (1 of 2 photos: " in res.stdout
    res = CliRunner().invoke(app, [*base, str(tmp_path / "gone.jpg"), "--place"])
    assert res.exit_code == 1 and "no photo of the place could be read" in res.stderr and not res.stdout


def test_a_batch_is_rebuilt_for_the_photos_given_and_names_never_collide(harness, model_file, tmp_path):
    from flows.predict import batch_lock, default_batch_name
    from tasks.records import RootBusyError
    from tasks.tracking import tracking_root

    root = tmp_path / "root"
    photos = tmp_path / "a" / "photos"
    shots = [_photo(photos / f"{i}.jpg", (40 * i % 255, 90, 160), i) for i in range(10)]
    first = predict_batch(str(photos), "x", str(model_file), str(root), shard_size=4, progress=False)
    assert first["predicted"] == 10
    for p in shots[4:]:
        p.unlink()
    again = predict_batch(str(photos), "x", str(model_file), str(root), shard_size=4, progress=False)
    table = Catalog.from_yaml(root, batch="x").load("batch_predictions")
    assert again["photos"] == again["predicted"] == 4 and sorted(table["image_id"].to_list()) == [f"{i}.jpg" for i in range(4)]
    other = tmp_path / "b" / "photos"
    _photo(other / "z.jpg", (10, 200, 30), 99)
    predict_batch(str(other), "x", str(model_file), str(root), shard_size=4, progress=False)
    assert Catalog.from_yaml(root, batch="x").load("batch_predictions")["image_id"].to_list() == ["z.jpg"]
    # two folders called photos get two batches by default; a name in use by a running batch is refused
    assert default_batch_name(photos) != default_batch_name(other)
    assert default_batch_name(tmp_path / "My Photos").startswith("My-Photos-")
    with batch_lock(tracking_root(str(root)), "x"):
        try:
            predict_batch(str(other), "x", str(model_file), str(root), shard_size=4, progress=False)
        except RootBusyError as exc:
            assert "being predicted by another process" in str(exc)
        else:
            raise AssertionError("a second batch of the same name ran while the first held it")
