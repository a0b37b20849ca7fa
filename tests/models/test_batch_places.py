"""predict-batch's places: which photos make a place (sub-folders or a CSV), and one answer per place from the parts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from worldnet.models.batch import PLACE_SCHEMA, csv_places, folder_places, photo_table, place_table
from worldnet.models.predictor import combine_views, predict_distributions
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet

CENTROIDS = np.array([[40.4, -3.7], [13.7, 100.5], [42.4, -71.1]])
NAMES = ["Madrid", "Bangkok", "Boston"]


@pytest.fixture
def folder(tmp_path):
    """Two places as sub-folders (one nested deeper), two loose photos, and a file that is no photo."""
    root = tmp_path / "photos"
    for rel in ["loose.jpg", "also.png", "rome/a.jpg", "rome/b.jpg", "paris/x.jpg", "paris/day2/y.jpg", "paris/notes.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\xff\xd8\xff")
    return root


def test_each_immediate_sub_folder_is_a_place_and_loose_photos_are_none(folder):
    table, _ = photo_table(folder)
    places = folder_places(table).sort("image_id")
    assert places.rows() == [("paris/day2/y.jpg", "paris"), ("paris/x.jpg", "paris"), ("rome/a.jpg", "rome"), ("rome/b.jpg", "rome")]


def test_a_csv_names_places_by_paths_relative_to_the_folder(folder, tmp_path):
    table, _ = photo_table(folder)
    csv = tmp_path / "places.csv"
    csv.write_text(f"path,place,note\nrome/a.jpg,Rome,x\n./loose.jpg, Rome ,y\n{folder / 'paris/x.jpg'},Paris,\nrome/a.jpg,Rome,again\n")
    assert sorted(csv_places(csv, folder, table).rows()) == [("loose.jpg", "Rome"), ("paris/x.jpg", "Paris"), ("rome/a.jpg", "Rome")]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("file,where\na.jpg,x\n", "needs the columns path and place"),
        ("path,place\nrome/a.jpg,\n", "line 2: every row needs a path and a place"),
        ("path,place\nrome/a.jpg,Rome\nrome/a.jpg,Paris\n", "line 3: rome/a.jpg is given two places, 'Rome' and 'Paris'"),
        ("path,place\n../elsewhere.jpg,Rome\n", "outside"),
        ("path,place\n/etc/passwd,Rome\n", "not under"),
        ("path,place\nrome/c.jpg,Rome\nparis/notes.txt,Paris\n", "names 2 paths that are no photo under"),
    ],
    ids=["columns", "empty-place", "two-places", "dot-dot", "absolute-outside", "no-such-photo"],
)
def test_a_wrong_places_csv_says_what_is_wrong(folder, tmp_path, text, words):
    table, _ = photo_table(folder)
    csv = tmp_path / "places.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        csv_places(csv, folder, table)
    with pytest.raises(FileNotFoundError, match="places file"):
        csv_places(tmp_path / "nope.csv", folder, table)


def test_each_place_is_answered_once_from_its_photos_distributions(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 32)).astype(np.float32)
    y = np.arange(60) % 3
    wn = fit_worldnet(
        X, y, CENTROIDS[y], y.astype(str), X[:9], y[:9], CENTROIDS, NAMES, cfg=TrainConfig(classifier="linear", head_epochs=5)
    )
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], np.float32)
    parts = tmp_path / "parts"
    parts.mkdir()
    for k, rows in enumerate([[0, 1], [2, 3]]):  # a place's photos may sit in different parts
        pl.DataFrame({"image_id": [f"p{i}" for i in rows]}).with_columns(
            pl.Series("probs", probs[rows], dtype=pl.Array(pl.Float32, 3))
        ).write_parquet(parts / f"pred-{k:05d}.parquet")
    places = pl.DataFrame({"image_id": ["p0", "p2", "p1", "gone", "lost"], "place": ["b", "b", "a", "a", "c"]})
    table = place_table(parts, places, wn, snap=False)
    assert table.schema == pl.Schema(PLACE_SCHEMA)
    assert table.select("place", "n_photos", "n_views", "views").rows() == [("a", 2, 1, ["p1"]), ("b", 2, 2, ["p0", "p2"]), ("c", 1, 0, [])]
    a, b = predict_distributions(wn, np.stack([probs[1], combine_views(probs[[0, 2]])]), ["a", "b"], top_k=1, snap=False)
    assert table.row(0, named=True)["lat"] == pytest.approx(a.lat, abs=1e-6) and table["lon"][1] == pytest.approx(b.lon, abs=1e-6)
    assert table["top_cluster"][1] == b.top_clusters[0][0] and table["top_p"][1] == pytest.approx(b.top_clusters[0][1])
    assert table.row(2, named=True)["lat"] is None and table.row(2, named=True)["country"] is None  # no readable photo
