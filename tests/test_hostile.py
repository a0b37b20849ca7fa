"""What worldnet promises about bad input, one test per promise (fixtures generated here, never hand-made files).

* A damaged or unusual file costs the rows it damages, never its good neighbours.
* Whatever is not used is listed in the rejects table with the reason, never silently left out.
* A user error is one line that says what to do (see ``tests/flows/test_cli_errors.py`` for the CLI).
"""

from __future__ import annotations

import io
import os
import shutil
import stat

import pytest
from PIL import Image

from worldnet.data.ingest import EmptyDatasetError, ingest, require_rows
from worldnet.data.shards import ShardSpec, frame_photo
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.io import write_bytes_atomic

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


def _as(fmt: str, jpeg: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_photo_in_another_format_under_a_jpg_name_is_read_like_any_photo(world, fmt):
    photo = sorted((world / "Images" / "Madrid").glob("*.jpg"))[0]
    photo.write_bytes(_as(fmt, photo.read_bytes()))
    manifest, rejects = ingest("gsv_cities", world)
    assert rejects.height == 0 and str(photo) in manifest["path"].to_list()
    framed = frame_photo(photo.read_bytes(), ShardSpec(width=32, height=24))  # the one preprocessing every path uses
    assert Image.open(io.BytesIO(framed)).size == (32, 24)


def test_a_file_that_is_no_photo_is_rejected_without_echoing_its_bytes(world):
    photo = sorted((world / "Images" / "Boston").glob("*.jpg"))[0]
    photo.write_text("password=hunter2\n")
    _, rejects = ingest("gsv_cities", world)
    (row,) = rejects.rows(named=True)
    assert row["reason"] == "not_an_image" and "hunter2" not in row["detail"] and "text" in row["detail"]


def test_a_csv_path_cannot_reach_outside_the_dataset_folder(tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8\xff top secret")
    data = tmp_path / "dataset"
    (data / "img").mkdir(parents=True)
    shutil.copy(secret, data / "img" / "ok.jpg")
    (data / "meta.csv").write_text(f"path,lat,lon\nimg/ok.jpg,1,2\n../secret.jpg,3,4\n{secret},5,6\n/etc/passwd,7,8\n")
    manifest, rejects = ingest("csv", data / "meta.csv")
    assert manifest["path"].to_list() == [str((data / "img" / "ok.jpg").resolve())]
    assert rejects["reason"].to_list() == ["path_outside_dataset"] * 3
    assert rejects["row"].to_list() == [3, 4, 5] and not any("secret" in d and "top" in d for d in rejects["detail"].to_list())


def test_an_empty_dataset_says_so_in_one_line_and_leaves_no_phantom_reject(world):
    for c in CITIES:
        csv = world / "Dataframes" / f"{c}.csv"
        csv.write_text(csv.read_text().splitlines()[0] + "\n")
    shutil.rmtree(world / "Images")
    manifest, rejects = ingest("gsv_cities", world)
    assert manifest.height == 0 and rejects.height == 0
    with pytest.raises(EmptyDatasetError, match="lists no photos .* header-only"):
        require_rows(manifest, rejects, str(world))


def test_a_dataset_whose_every_row_is_rejected_says_why_and_where(world):
    shutil.rmtree(world / "Images")
    manifest, rejects = ingest("gsv_cities", world)
    with pytest.raises(EmptyDatasetError, match=rf"all {_good_rows(world)} were rejected \({_good_rows(world)} missing_image\); see R"):
        require_rows(manifest, rejects, str(world), "R")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_artifacts_are_written_with_the_modes_the_umask_allows(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o666 & ~umask


def test_a_garbage_model_or_weights_file_is_one_line_and_never_retried(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.retry import retry_unless_user_error
    from worldnet.features.backbones import BadWeightsError, build_backbone
    from worldnet.models.predictor import NotAModelError, Predictor

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    res = CliRunner().invoke(app, ["predict", str(photo), "--model", str(garbage)])
    assert res.exit_code == 2 and "is not a worldnet model file" in res.output and "Traceback" not in res.output, res.output
    with pytest.raises(NotAModelError) as model_err:
        Predictor.load(garbage)
    pickled = tmp_path / "old.pth"
    pickled.write_bytes(b"\x80\x02" + os.urandom(100))  # looks like a legacy torch file at a glance, is not one
    with pytest.raises(BadWeightsError, match="not torchvision's VGG19 weights") as weights_err:
        build_backbone("vgg19", str(pickled))

    class _Failed:  # a Prefect state that failed with this exception
        def __init__(self, exc: BaseException) -> None:
            self.data = exc

    for err in (model_err.value, weights_err.value):
        assert retry_unless_user_error(None, None, _Failed(err)) is False
    assert retry_unless_user_error(None, None, _Failed(OSError("connection reset"))) is True


def test_predict_batch_lists_every_file_it_does_not_predict(tmp_path):
    from worldnet.models.batch import photo_table

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    jpeg = _jpeg()
    for name in ("a.jpg", "sub/b.webp", "c.AVIF", "d.png"):
        (folder / name).write_bytes(jpeg)
    for name in ("notes.txt", ".DS_Store", "sub/raw.CR2"):
        (folder / name).write_bytes(b"x")
    table, skipped = photo_table(folder)
    assert sorted(table["image_id"].to_list()) == ["a.jpg", "c.AVIF", "d.png", "sub/b.webp"]
    assert sorted(skipped["image_id"].to_list()) == [".DS_Store", "notes.txt", "sub/raw.CR2"]
    assert set(skipped["reason"].to_list()) == {"not_a_photo"}


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()
