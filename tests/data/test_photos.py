"""Which files are photos, and how every path decodes one (``worldnet.data.photos``): fixtures generated here, fixed seeds."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worldnet.data.photos import MIN_SIDE, PhotoRejectedError, check_photo_size, is_catalog_root, list_photos, scan_photos, to_rgb8
from worldnet.data.shards import decode_resize
from worldnet.features.preprocess import decode_to_input

W, H = 64, 48


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _gradient16(top: int = 65535, seed: int = 0) -> np.ndarray:
    """A 16-bit left-right gradient from 0 to ``top``, with a little noise (so it is a picture, not a ramp)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, top, W)[None, :] + rng.normal(0, top / 200, (H, W))
    return np.clip(np.rint(ramp), 0, top).astype(np.uint16)


def _decoded(data: bytes) -> np.ndarray:
    """The photo as the shard stage decodes it, at its own size (no resampling, no crop)."""
    return np.asarray(decode_resize(data, W, H))


def test_a_16_bit_png_is_scaled_by_its_type_not_clipped():
    g = _gradient16()
    data = _encoded(g, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = _decoded(data)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()  # gray stays gray
    np.testing.assert_array_equal(rgb[..., 0], np.rint(g / 257).astype(np.uint8))  # 65535 -> 255, 257 -> 1
    assert rgb.min() <= 5 and rgb.max() >= 250 and (rgb == 255).mean() < 0.05  # Pillow's convert made it nearly all 255


def test_a_12_bit_image_in_a_16_bit_file_is_scaled_by_the_type_too():
    """Integer types are scaled by the type's range, not stretched: a dark 16-bit photo stays dark."""
    rgb = _decoded(_encoded(_gradient16(top=4095), "PNG"))
    assert rgb.max() == 16 and rgb.min() == 0


def test_a_16_bit_tiff_decodes_like_the_png():
    g = _gradient16(seed=1)
    np.testing.assert_array_equal(_decoded(_encoded(g, "TIFF")), _decoded(_encoded(g, "PNG")))


def test_a_float_tiff_is_stretched_by_its_finite_range():
    f = (np.linspace(-0.5, 2.0, W, dtype=np.float32)[None, :] * np.ones((H, 1), np.float32)).astype(np.float32)
    data = _encoded(f, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    rgb = _decoded(data)[..., 0]
    assert rgb[:, 0].max() == 0 and rgb[:, -1].min() == 255  # min -> 0, max -> 255
    assert (np.diff(rgb[0].astype(int)) >= 0).all() and len(np.unique(rgb)) >= W - 1  # a gradient, not two values
    unit = _decoded(_encoded(np.linspace(0, 1, W * H, dtype=np.float32).reshape(H, W), "TIFF"))
    assert unit.max() == 255 and unit.min() == 0  # a [0, 1] float photo was all 0 and 1 out of Pillow's convert: black


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_float_image_with_nan_or_inf_is_rejected_with_a_reason(bad):
    f = np.linspace(0, 1, W * H, dtype=np.float32).reshape(H, W)
    f[3, 5] = bad
    with pytest.raises(ValueError, match="nonfinite_pixels") as err:
        _decoded(_encoded(f, "TIFF"))
    assert isinstance(err.value, PhotoRejectedError) and err.value.reason == "nonfinite_pixels" and "1 NaN or infinite" in err.value.detail


def test_a_32_bit_integer_tiff_is_stretched_by_its_actual_range():
    i = np.linspace(-1_000_000, 3_000_000, W * H).reshape(H, W).astype(np.int32)
    data = _encoded(i, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    rgb = _decoded(data)
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) > 200


def test_an_i_mode_png_from_older_pillow_is_read_as_16_bit():
    """Pillow before 11 opens a 16-bit gray PNG in mode ``I``: PNG has no wider integers, so it is scaled by 1/257."""
    g = _gradient16(seed=2).astype(np.int32)
    img = Image.fromarray(g)
    assert img.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb8(img, "PNG"))[..., 0], np.rint(g / 257).astype(np.uint8))
    stretched = np.asarray(to_rgb8(img))[..., 0]  # without the format: by its range
    assert stretched.min() == 0 and stretched.max() == 255


def test_a_constant_float_image_is_black_not_a_division_by_zero():
    assert np.asarray(to_rgb8(Image.fromarray(np.full((H, W), 0.7, np.float32)))).max() == 0


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "1"])
def test_eight_bit_modes_convert_as_pillow_does(mode):
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).convert(mode)
    assert to_rgb8(img).tobytes() == img.convert("RGB").tobytes()


def test_the_feature_loaders_non_jpeg_path_scales_16_bit_too():
    arr = decode_to_input(_encoded(_gradient16(), "PNG"), (H, W))
    assert arr.dtype == np.uint8 and arr.min() <= 5 and arr.max() >= 250 and (arr == 255).mean() < 0.05


@pytest.mark.parametrize("size", [(1, 1), (10_000, 1), (1, 300), (MIN_SIDE - 1, MIN_SIDE)])
def test_a_photo_below_the_minimum_size_is_rejected_with_its_size(size):
    data = _encoded(np.full((size[1], size[0], 3), 120, np.uint8), "PNG")
    with pytest.raises(PhotoRejectedError) as err:
        decode_resize(data, W, H)
    assert err.value.reason == "image_too_small"
    assert f"{size[0]}x{size[1]}" in err.value.detail and f"at least {MIN_SIDE} px" in err.value.detail


def test_the_minimum_size_itself_is_a_photo():
    check_photo_size(Image.new("RGB", (MIN_SIDE, MIN_SIDE)))
    assert decode_resize(_encoded(np.full((MIN_SIDE, MIN_SIDE, 3), 9, np.uint8), "PNG"), W, H).size == (W, H)


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_catalog_roots_under_the_folder_are_neither_photos_nor_left_out(tmp_path):
    """``cd photos && worldnet predict-batch .`` with the default root ``.worldnet`` there must not predict its charts."""
    folder = tmp_path / "photos"
    png = _encoded(np.zeros((20, 20, 3), np.uint8), "PNG")
    for name in ("a.jpg", "trip/b.png", "trip/notes.txt", "reports/04_models/c.jpg"):  # one layer-like folder is the user's
        _touch(folder / name, png)
    # the default root inside the folder, as `worldnet run` leaves it
    for name in ("root_id.json", "mlflow.db", "05_reporting/report/seen_map.png", "06_predict/june/shards/shard-00000.parquet"):
        _touch(folder / ".worldnet" / name, png)
    # sibling roots under other names (--root runs/june ...), each found by one marker
    _touch(folder / "runs" / "june" / "root_id.json")
    _touch(folder / "runs" / "june" / "05_reporting" / "report" / "unseen_cdf.png", png)
    _touch(folder / "runs" / "records_only" / "_records" / "ingest.json")
    _touch(folder / "runs" / "records_only" / "chart.png", png)
    _touch(folder / "runs" / "tracking" / "mlflow.db")
    _touch(folder / "runs" / "tracking" / "mlruns" / "1" / "plot.png", png)
    _touch(folder / "runs" / "producers" / "producers.json")
    _touch(folder / "runs" / "producers" / "x.jpg", png)
    _touch(folder / "runs" / "layers" / "01_raw" / "rejects.parquet")
    _touch(folder / "runs" / "layers" / "05_reporting" / "report" / "map.png", png)

    photos, skipped = list_photos(folder)
    assert [p.relative_to(folder).as_posix() for p in photos] == ["a.jpg", "reports/04_models/c.jpg", "trip/b.png"]
    assert [p.relative_to(folder).as_posix() for p in skipped] == ["trip/notes.txt"]
    found = scan_photos(folder)
    assert [p.relative_to(folder).as_posix() for p in found.catalogs] == [
        ".worldnet",
        "runs/june",
        "runs/layers",
        "runs/producers",
        "runs/records_only",
        "runs/tracking",
    ]
    assert not is_catalog_root(folder / "reports") and not is_catalog_root(folder / "trip")


def test_a_catalog_root_given_as_the_folder_lists_nothing(tmp_path):
    root = tmp_path / "catalog"
    _touch(root / "root_id.json")
    _touch(root / "05_reporting" / "report" / "seen_map.png", _encoded(np.zeros((20, 20, 3), np.uint8), "PNG"))
    assert list_photos(root) == ([], [])
    assert scan_photos(root).catalogs == [root]
