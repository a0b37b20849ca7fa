"""What worldnet promises about bad input, one test per promise (fixtures generated here, never hand-made files).

* A damaged or unusual file costs the rows it damages, never its good neighbours.
* Whatever is not used is listed in the rejects table with the reason, never silently left out.
* A user error is one line that says what to do (see ``tests/flows/test_cli_errors.py`` for the CLI).
"""

from __future__ import annotations

import shutil

import pytest

from worldnet.data.ingest import ingest
from worldnet.data.synthetic import SynthConfig, generate

CITIES = ["Madrid", "Boston"]


@pytest.fixture()
def world(tmp_path):
    root = tmp_path / "world"
    generate(SynthConfig(out=root, cities=CITIES, per_city=8, size=(32, 24), seed=3), progress=False)
    return root


def _good_rows(root) -> int:
    return sum(len((root / "Dataframes" / f"{c}.csv").read_text().splitlines()) - 1 for c in CITIES)


def test_a_csv_saved_with_a_byte_order_mark_loses_no_row(world):
    n = _good_rows(world)
    csv = world / "Dataframes" / "Madrid.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # as Excel saves UTF-8
    manifest, rejects = ingest("gsv_cities", world)
    assert manifest.height == n and rejects.height == 0


def test_an_extra_column_loses_no_row(world):
    n = _good_rows(world)
    csv = world / "Dataframes" / "Boston.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",notes"] + [ln + ",checked by hand" for ln in lines[1:]]) + "\n")
    manifest, rejects = ingest("gsv_cities", world)
    assert manifest.height == n and rejects.height == 0


def test_a_header_that_cannot_be_read_says_how_many_rows_it_cost(world):
    csv = world / "Dataframes" / "Boston.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0].replace("lat", "latitude")] + lines[1:]) + "\n")
    manifest, rejects = ingest("gsv_cities", world)
    assert set(manifest["city"].to_list()) == {"Madrid"}
    (detail,) = rejects.filter(rejects["reason"] == "unparseable_row")["detail"].to_list()
    assert "lacks ['lat']" in detail and f"its {len(lines) - 1} data rows were not read" in detail


def test_photos_no_csv_row_names_are_listed(world):
    extra = world / "Images" / "Madrid" / "Madrid_9999999_2020_01_000_40.4_-3.7_notinthecsv.jpg"
    shutil.copy(next((world / "Images" / "Boston").glob("*.jpg")), extra)
    stray = world / "Images" / "Lisbon"  # a city folder without a Dataframes/Lisbon.csv
    stray.mkdir()
    shutil.copy(extra, stray / "lost.jpg")
    manifest, rejects = ingest("gsv_cities", world)
    unlisted = rejects.filter(rejects["reason"] == "unlisted_image")
    assert sorted(p.rsplit("/", 1)[1] for p in unlisted["path"].to_list()) == [
        "Madrid_9999999_2020_01_000_40.4_-3.7_notinthecsv.jpg",
        "lost.jpg",
    ]
    assert manifest.height == _good_rows(world)


def test_a_batch_name_cannot_escape_the_catalog_root(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    photos = tmp_path / "photos"
    photos.mkdir()
    for bad in ("../../x", "a/b", ".."):
        res = CliRunner().invoke(app, ["predict-batch", str(photos), "--name", bad, "--root", str(tmp_path / "root")])
        assert res.exit_code == 2 and "must be a plain name" in res.output, res.output
    assert not (tmp_path / "x").exists()
