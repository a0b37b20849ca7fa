import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from worldnet.data.cities import GSV_CITIES
from worldnet.data.synthetic import SynthConfig, contact_sheet, generate
from worldnet.features.engine import build_engine
from worldnet.features.preprocess import to_array
from worldnet.geo import haversine_km, is_land

SMALL = ["Madrid", "Bangkok", "Melbourne"]


def _reference_reader(root: Path) -> list[tuple[dict[str, str], Path]]:
    """Read a GSV-Cities tree exactly as the official loader does: CSV rows → file names."""
    out = []
    for csv_path in sorted((root / "Dataframes").glob("*.csv")):
        city = csv_path.stem
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                name = (
                    f"{city}_{int(row['place_id']):07d}_{row['year']}_{int(row['month']):02d}_"
                    f"{int(row['northdeg']):03d}_{row['lat']}_{row['lon']}_{row['panoid']}.jpg"
                )
                out.append((row, root / "Images" / city / name))
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "world"
    generate(SynthConfig(out=root, cities=SMALL, per_city=12, size=(64, 48), seed=3), progress=False)
    return root


def test_layout_matches_official_naming(small_world):
    rows = _reference_reader(small_world)
    assert len(rows) == 36
    header = (small_world / "Dataframes" / "Madrid.csv").read_text().splitlines()[0]
    assert header == "place_id,year,month,northdeg,city_id,lat,lon,panoid"
    for row, path in rows:
        assert path.is_file(), path
        assert row["city_id"] == path.parent.name
    n_files = sum(1 for _ in (small_world / "Images").rglob("*.jpg"))
    assert n_files == len(rows)
    with Image.open(rows[0][1]) as im:
        assert im.size == (64, 48)


def test_places_on_land_near_centre_with_several_photos(small_world):
    rows = _reference_reader(small_world)
    lat = np.array([float(r["lat"]) for r, _ in rows])
    lon = np.array([float(r["lon"]) for r, _ in rows])
    assert is_land(lat, lon).all()
    centres = {c.name: c for c in GSV_CITIES}
    d = [haversine_km(float(r["lat"]), float(r["lon"]), centres[r["city_id"]].lat, centres[r["city_id"]].lon) for r, _ in rows]
    assert max(d) < 16
    per_place = {}
    for r, _ in rows:
        per_place.setdefault((r["city_id"], r["place_id"]), set()).add(r["northdeg"])
    assert max(len(v) for v in per_place.values()) == 4


def test_deterministic_and_seed_sensitive(small_world, tmp_path):
    again = tmp_path / "again"
    generate(SynthConfig(out=again, cities=SMALL, per_city=12, size=(64, 48), seed=3), progress=False)
    assert _hashes(again) == _hashes(small_world)
    other = tmp_path / "other"
    generate(SynthConfig(out=other, cities=SMALL, per_city=12, size=(64, 48), seed=4), progress=False)
    assert _hashes(other) != _hashes(small_world)


def test_eurocentric_by_default(tmp_path):
    s = generate(SynthConfig(out=tmp_path, cities=["Madrid", "Bangkok"], per_city=10, size=(32, 32)), progress=False)
    assert s.images_per_city["Madrid"] > 1.5 * s.images_per_city["Bangkok"]


def test_contact_sheet(small_world, tmp_path):
    png = contact_sheet(small_world, tmp_path / "sheet.png", per_city=3)
    with Image.open(png) as im:
        assert im.height == 3 * 90


def test_unknown_city_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown cities"):
        generate(SynthConfig(out=tmp_path, cities=["Atlantis"]), progress=False)


def test_geographic_structure_with_pretrained_features(tmp_path):
    """Nearby cities look alike, and cities are learnable but not trivially so."""
    root = tmp_path / "world"
    generate(SynthConfig(out=root, per_city=30, eurocentric=False, seed=0), progress=False)
    # the pipeline's CPU engine: EfficientNet-Lite0's ImageNet features as PyTorch gives them (checked on export, and
    # cosine > 0.9999 per photo in tests/features/test_engine.py), in well under half the time of PyTorch eager
    backbone = build_engine("efficientnet_lite0", engine="onnx", threads=2)
    feats, city, place = [], [], []
    for ci, c in enumerate(GSV_CITIES):
        files = sorted((root / "Images" / c.name).glob("*.jpg"))
        feats.append(backbone(np.stack([to_array(Image.open(f).convert("RGB"), backbone.spec) for f in files])))
        city += [ci] * len(files)
        place += [int(f.name.split("_")[1]) for f in files]
    X = np.concatenate(feats)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y, place_arr = np.array(city), np.array(place)
    test = place_arr % 2 == 0  # hold out whole places
    cent = np.stack([X[~test & (y == k)].mean(0) for k in range(23)])
    acc = float((np.argmax(X[test] @ cent.T, 1) == y[test]).mean())
    assert 0.40 <= acc <= 0.90, acc

    allc = np.stack([X[y == k].mean(0) for k in range(23)])
    fd = np.linalg.norm(allc[:, None] - allc[None], axis=-1)
    lat = np.array([c.lat for c in GSV_CITIES])
    lon = np.array([c.lon for c in GSV_CITIES])
    gd = haversine_km(lat[:, None], lon[:, None], lat[None], lon[None])
    iu = np.triu_indices(23, 1)
    rho = spearmanr(fd[iu], gd[iu]).statistic
    assert rho >= 0.3, rho
