"""What worldnet promises about bad input, one test per promise (fixtures generated here, never hand-made files).

* A damaged or unusual file costs the rows it damages, never its good neighbours.
* Whatever is not used is listed in the rejects table with the reason, never silently left out.
* A user error is one line that says what to do (see ``tests/flows/test_cli_errors.py`` for the CLI).

The cases that need a real run or a real server are tested beside their harness:

* a photo changed under its name, a corrupt feature shard: ``tests/flows/test_stage_records.py``;
* a batch folder rebuilt for the photos given, names that never collide, one batch of a name at a time:
  ``tests/flows/test_predict.py``;
* a damaged registered model refused, a moved catalog root predicting: ``tests/flows/test_pipeline_e2e.py``;
* options checked by name, a damaged MLflow store, a full disk, s3 without credentials, a busy port, ``synth``
  mistakes, ``--only`` reusing the recorded data root: ``tests/flows/test_cli_errors.py``;
* a request over its pixel budget, decoding outside the model lock: ``tests/flows/test_serve.py``.
"""

from __future__ import annotations

import io
import os
import shutil
import stat

import polars as pl
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
    with pytest.raises(EmptyDatasetError, match="holds no photo rows: give a GSV-Cities folder"):
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


def _encoded(arr, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _deep_photo(kind: str):
    """A 64×48 left-right gradient as a 16-bit gray PNG or a 32-bit float TIFF (fixed seed)."""
    import numpy as np

    ramp = np.linspace(0, 1, 64)[None, :] + np.random.default_rng(7).normal(0, 0.01, (48, 64))
    if kind == "png16":
        return _encoded(np.clip(np.rint(ramp * 65535), 0, 65535).astype(np.uint16), "PNG")
    return _encoded((ramp * 3.0 - 1.0).astype(np.float32), "TIFF")  # a float photo in [-1, 2]


@pytest.mark.parametrize("kind", ["png16", "float_tiff"])
def test_a_16_bit_or_float_photo_is_framed_by_its_range_not_clipped_to_a_blank_frame(kind):
    import numpy as np

    framed = np.asarray(Image.open(io.BytesIO(frame_photo(_deep_photo(kind), ShardSpec(width=64, height=48)))))
    assert framed.shape == (48, 64, 3)
    left, right = framed[:, :8].mean(), framed[:, -8:].mean()
    assert left < 25 and right > 230 and (framed == 255).mean() < 0.2, (left, right)  # the gradient survives


def _shard_rows(tmp_path, photos: dict[str, bytes]):
    import polars as pl

    rows = []
    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)
        row = {"image_id": name, "city": "Madrid", "lat": 40.4, "lon": -3.7, "continent": "Europe", "seen": "train", "unseen": "train"}
        rows.append({**row, "path": str(tmp_path / name)})
    return pl.DataFrame(rows)


def test_a_photo_too_small_or_with_nan_pixels_is_rejected_with_why_and_costs_no_neighbour(tmp_path):
    import numpy as np

    from worldnet.data.photos import MIN_SIDE
    from worldnet.data.schema import REJECT_REASONS
    from worldnet.data.shards import write_shards

    nan = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    nan[0, 0] = np.nan
    table = _shard_rows(
        tmp_path,
        {
            "dot.png": _encoded(np.full((1, 1, 3), 90, np.uint8), "PNG"),
            "line.png": _encoded(np.full((1, 10_000, 3), 90, np.uint8), "PNG"),
            "nan.tif": _encoded(nan, "TIFF"),
            "ok.png": _deep_photo("png16"),
        },
    )
    res = write_shards(table, tmp_path / "shards", ShardSpec(shard_size=8, width=64, height=48), workers=1, progress=False)
    assert res.index["rows"].to_list() == [1]
    got = {r["image_id"]: r for r in res.rejects.rows(named=True)}
    reasons = {k: r["reason"] for k, r in got.items()}
    assert reasons == {"dot.png": "image_too_small", "line.png": "image_too_small", "nan.tif": "nonfinite_pixels"}
    assert "1x1" in got["dot.png"]["detail"] and "10000x1" in got["line.png"]["detail"]
    assert f"at least {MIN_SIDE} px" in got["line.png"]["detail"]
    assert {"image_too_small", "nonfinite_pixels"} <= set(REJECT_REASONS)


def test_predict_refuses_a_photo_too_small_to_be_one(tmp_path):
    import numpy as np

    from worldnet.models.predictor import ImageInputError, read_photo

    for name, shape in (("dot.png", (1, 1, 3)), ("line.png", (1, 10_000, 3))):
        (tmp_path / name).write_bytes(_encoded(np.full(shape, 90, np.uint8), "PNG"))
        with pytest.raises(ImageInputError, match=rf"{name}: image_too_small: image is {shape[1]}x{shape[0]} px"):
            read_photo(tmp_path / name)


def test_predict_batch_never_takes_a_catalog_root_for_photos(tmp_path):
    """``cd photos && worldnet predict-batch .`` with the default root ``.worldnet`` inside: its charts are not the user's photos."""
    from worldnet.models.batch import photo_table

    folder = tmp_path / "photos"
    chart = _deep_photo("png16")
    for name in ("a.jpg", "sub/b.png", ".worldnet/05_reporting/report/seen_map.png", "old_run/05_reporting/report/unseen_cdf.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(chart)
    (folder / ".worldnet" / "root_id.json").write_text('{"root_id": "x"}')
    (folder / "old_run" / "root_id.json").write_text('{"root_id": "y"}')  # a catalog root under another name (--root old_run)
    table, skipped = photo_table(folder)
    assert sorted(table["image_id"].to_list()) == ["a.jpg", "sub/b.png"]
    assert skipped.height == 0  # not the user's files: not listed as left out either


def test_byte_identical_photos_are_reported_and_kept_on_one_side_of_every_split(world):
    from worldnet.data.ingest import input_summary
    from worldnet.data.split import make_splits

    madrid = sorted((world / "Images" / "Madrid").glob("*.jpg"))
    boston = sorted((world / "Images" / "Boston").glob("*.jpg"))
    for src, dst in zip(madrid[:3], boston[:3], strict=True):  # three Boston photos are copies of Madrid ones
        dst.write_bytes(src.read_bytes())
    manifest, rejects = ingest("gsv_cities", world)
    assert rejects.height == 0 and manifest.height == _good_rows(world)  # reported, never dropped
    twins = manifest.filter(manifest["duplicate_of"].is_not_null())
    assert twins.height == 6 and twins["duplicate_of"].n_unique() == 3
    assert "6 byte-identical photos in 3 groups, each kept on one side" in input_summary(manifest.height, manifest=manifest).line()
    for seed in range(5):
        splits = make_splits(manifest, n_unseen=1, seed=seed).join(manifest.select("image_id", "duplicate_of"), on="image_id")
        sides = splits.filter(splits["duplicate_of"].is_not_null()).group_by("duplicate_of").agg(pl.col("seen").n_unique().alias("n"))
        assert sides["n"].max() == 1


def test_a_dataset_of_linked_photos_is_read_and_fingerprinted(world, tmp_path):
    """A subset assembled with symlinks (no copies): every photo read, and the input hash names them inside the subset."""
    from tasks.records import content_hash
    from worldnet.storage import as_path

    subset = tmp_path / "subset"
    (subset / "Dataframes").mkdir(parents=True)
    for c in CITIES:
        (subset / "Dataframes" / f"{c}.csv").write_bytes((world / "Dataframes" / f"{c}.csv").read_bytes())
        (subset / "Images" / c).mkdir(parents=True)
        for photo in (world / "Images" / c).glob("*.jpg"):
            (subset / "Images" / c / photo.name).symlink_to(photo)
    manifest, rejects = ingest("gsv_cities", subset)
    assert manifest.height == _good_rows(world) and rejects.height == 0
    assert len(content_hash(as_path(subset), raw=True)) == 64
