"""The ``csv`` layout as datasets are shared: a folder with one CSV, places with several views, several datasets at once."""

import numpy as np
import polars as pl
import pytest
from PIL import Image

from worldnet.data.ingest import detect_kind, ingest, ingest_many, input_summary
from worldnet.data.split import make_splits, place_keys

CITIES = {"Paris": (48.85, 2.35), "Cairo": (30.04, 31.24), "Tokyo": (35.68, 139.69)}


def _photo(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path, quality=80)


def make_dataset(folder, places_per_city=6, views=4, seed=0, name="metadata.csv", dated=True):
    """``images/{city}/{place:05d}_{view}.jpg`` and one CSV, as ``street_world`` is laid out; every 3rd place undated."""
    rng = np.random.default_rng(seed)
    lines = ["path,lat,lon,city,place_id,heading,year,month"]
    for c, (city, (lat, lon)) in enumerate(CITIES.items()):
        for p in range(places_per_city):
            plat, plon = lat + rng.normal(0, 0.05), lon + rng.normal(0, 0.05)
            for v in range(views):
                rel = f"images/{city}/{p:05d}_{v}.jpg"
                _photo(folder / rel, seed * 1000 + c * 100 + p * 10 + v)
                year, month = ("", "") if (not dated or p % 3 == 0) else ("2019", "7")
                lines.append(f"{rel},{plat},{plon},{city},{p},{v * 90},{year},{month}")
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def test_a_folder_with_one_csv_is_the_csv_layout(tmp_path):
    data = make_dataset(tmp_path / "world")
    assert detect_kind(data) == "csv"
    manifest, rejects = ingest("auto", data)
    assert rejects.height == 0
    assert manifest.height == 3 * 6 * 4


def test_a_folder_with_two_csvs_asks_which(tmp_path):
    data = make_dataset(tmp_path / "world")
    (data / "other.csv").write_text("path,lat,lon\n")
    with pytest.raises(FileNotFoundError, match="name the one that lists the photos"):
        detect_kind(data)


def test_csv_keeps_place_heading_and_date_and_empty_means_unknown(tmp_path):
    manifest, rejects = ingest("auto", make_dataset(tmp_path / "world"))
    assert rejects.height == 0
    paris0 = manifest.filter((pl.col("city") == "Paris") & (pl.col("place_id") == 0)).sort("heading")
    assert paris0["heading"].to_list() == [0, 90, 180, 270]
    assert paris0["year"].null_count() == 4  # place 0 is undated: unknown, not a reject
    dated = manifest.filter(pl.col("place_id") == 1)
    assert set(dated["year"].to_list()) == {2019} and set(dated["month"].to_list()) == {7}
    # no image_id column: the id is the path inside the dataset, so two cities' 00000_0.jpg are two photos
    assert "images/Paris/00000_0.jpg" in manifest["image_id"].to_list()
    assert manifest["image_id"].n_unique() == manifest.height


def test_same_file_name_in_different_folders_loses_no_row(tmp_path):
    data = tmp_path / "w"
    lines = ["path,lat,lon,city"]
    for i, (city, (lat, lon)) in enumerate(CITIES.items()):
        _photo(data / "images" / city / "0.jpg", i)
        lines.append(f"images/{city}/0.jpg,{lat},{lon},{city}")
    (data / "photos.csv").write_text("\n".join(lines) + "\n")
    manifest, rejects = ingest("auto", data)
    assert manifest.height == 3 and rejects.height == 0


def test_a_bad_heading_is_a_reject_with_the_reason(tmp_path):
    data = make_dataset(tmp_path / "w", places_per_city=1, views=1)
    csv = data / "metadata.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace(",0,,", ",north,,")
    csv.write_text("\n".join(lines) + "\n")
    manifest, rejects = ingest("auto", data)
    assert manifest.height == 2
    assert rejects["reason"].to_list() == ["unparseable_row"] and "heading" in rejects["detail"][0]


def test_every_view_of_a_place_is_on_one_side_of_every_split(tmp_path):
    manifest, _ = ingest("auto", make_dataset(tmp_path / "w", places_per_city=10))
    splits = make_splits(manifest, n_unseen=1, seed=3)
    joined = manifest.join(splits, on="image_id").with_columns(key=pl.Series(place_keys(manifest)))
    for proto in ("seen", "unseen"):
        sides = joined.group_by("key").agg(pl.col(proto).n_unique().alias("n"))
        assert sides["n"].max() == 1, proto
    assert joined["seen"].n_unique() == 3  # train, val and test all used


def test_places_without_a_place_id_are_their_coordinates(tmp_path):
    frame = pl.DataFrame(
        {"image_id": ["a", "b", "c"], "city": ["X"] * 3, "lat": [1.0, 1.0, 2.0], "lon": [3.0, 3.0, 3.0], "place_id": [None, None, None]},
        schema_overrides={"place_id": pl.Int64},
    )
    keys = place_keys(frame)
    assert keys[0] == keys[1] != keys[2]


def test_several_datasets_read_together_with_counts(tmp_path):
    a = make_dataset(tmp_path / "alpha", places_per_city=2, views=2, seed=1)
    b = make_dataset(tmp_path / "beta", places_per_city=3, views=1, seed=2, dated=False)
    (b / "images" / "Paris" / "00000_0.jpg").write_bytes(b"not a photo")
    manifest, rejects, counts = ingest_many("auto", [str(a), str(b)])
    assert counts == {"alpha": (12, 12), "beta": (9, 8)}
    assert set(manifest["dataset"].to_list()) == {"alpha", "beta"}
    assert manifest["image_id"].n_unique() == manifest.height
    assert all(i.startswith(("alpha/", "beta/")) for i in manifest["image_id"].to_list())
    # place 0 of Paris in alpha and in beta are two places
    paris0 = manifest.filter((pl.col("city") == "Paris") & (pl.col("place_id") % 10**12 == 1))
    assert paris0["place_id"].n_unique() == 2
    line = input_summary(manifest.height, (rejects, "r.parquet"), manifest=manifest).line()
    assert "alpha 12 read, 12 kept" in line and "beta 9 read, 8 kept" in line


def test_several_datasets_need_distinct_names(tmp_path):
    a = make_dataset(tmp_path / "x" / "data", places_per_city=1, views=1)
    b = make_dataset(tmp_path / "y" / "data", places_per_city=1, views=1)
    with pytest.raises(ValueError, match="distinct folder names"):
        ingest_many("auto", [str(a), str(b)])


@pytest.mark.real_data
def test_street_world_folder_reads_as_csv_with_places(shared_data):
    world = shared_data / "street_world"
    if not world.is_dir():
        pytest.skip("../shared/data/street_world is absent")
    assert detect_kind(world) == "csv"
    manifest, rejects = ingest("auto", world)
    assert manifest.height > 5000 and manifest["place_id"].null_count() == 0
    splits = make_splits(manifest, seed=0)
    joined = manifest.join(splits, on="image_id").with_columns(key=pl.Series(place_keys(manifest)))
    for proto in ("seen", "unseen"):
        assert joined.group_by("key").agg(pl.col(proto).n_unique().alias("n"))["n"].max() == 1, proto
